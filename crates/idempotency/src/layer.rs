//! [`IdempotencyLayer`]: wraps a server's service with an [`IdempotencyStore`].

use tower_layer::Layer;

use crate::config::Idempotency;
use crate::rebuild::ViaFrom;
use crate::scope::{KeyScope, Unscoped};
use crate::service::IdempotencyService;
use crate::store::IdempotencyStore;

/// Applies [`IdempotencyService`] to a server's service: requests with an `Idempotency-Key`
/// run once and repeats get the stored response.
#[derive(Debug, Clone)]
pub struct IdempotencyLayer<St, Sc = Unscoped, R = ViaFrom> {
    store: St,
    settings: Idempotency,
    scope: Sc,
    rebuild: R,
}

impl<St: IdempotencyStore> IdempotencyLayer<St> {
    /// A layer keeping keys in `store`, with `settings`, keys unscoped.
    pub fn new(store: St, settings: Idempotency) -> Self {
        IdempotencyLayer {
            store,
            settings,
            scope: Unscoped,
            rebuild: ViaFrom,
        }
    }
}

impl<St, Sc, R> IdempotencyLayer<St, Sc, R> {
    /// Scopes keys by `scope` (per tenant, per user).
    pub fn with_scope<Sc2: KeyScope>(self, scope: Sc2) -> IdempotencyLayer<St, Sc2, R> {
        IdempotencyLayer {
            store: self.store,
            settings: self.settings,
            scope,
            rebuild: self.rebuild,
        }
    }

    /// Hands the handler the request body it read through `rebuild`, for a body type that is
    /// not `From<Bytes>` (tonic's); see [`RebuildBody`](crate::RebuildBody).
    pub fn rebuild_body<R2>(self, rebuild: R2) -> IdempotencyLayer<St, Sc, R2> {
        IdempotencyLayer {
            store: self.store,
            settings: self.settings,
            scope: self.scope,
            rebuild,
        }
    }
}

impl<S, St: Clone, Sc: Clone, R: Clone> Layer<S> for IdempotencyLayer<St, Sc, R> {
    type Service = IdempotencyService<S, St, Sc, R>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(
            inner,
            self.store.clone(),
            self.settings.clone(),
            self.scope.clone(),
        )
        .rebuild_body(self.rebuild.clone())
    }
}
