//! [`IdempotencyLayer`]: wraps a server's service with an [`IdempotencyStore`].

use tower_layer::Layer;

use crate::config::Idempotency;
use crate::scope::{KeyScope, Unscoped};
use crate::service::IdempotencyService;
use crate::store::IdempotencyStore;

/// Applies [`IdempotencyService`] to a server's service: requests with an `Idempotency-Key`
/// run once and repeats get the stored response.
#[derive(Debug, Clone)]
pub struct IdempotencyLayer<St, Sc = Unscoped> {
    store: St,
    settings: Idempotency,
    scope: Sc,
}

impl<St: IdempotencyStore> IdempotencyLayer<St> {
    /// A layer keeping keys in `store`, with `settings`, keys unscoped.
    pub fn new(store: St, settings: Idempotency) -> Self {
        IdempotencyLayer {
            store,
            settings,
            scope: Unscoped,
        }
    }
}

impl<St, Sc> IdempotencyLayer<St, Sc> {
    /// Scopes keys by `scope` (per tenant, per user).
    pub fn with_scope<Sc2: KeyScope>(self, scope: Sc2) -> IdempotencyLayer<St, Sc2> {
        IdempotencyLayer {
            store: self.store,
            settings: self.settings,
            scope,
        }
    }
}

impl<S, St: Clone, Sc: Clone> Layer<S> for IdempotencyLayer<St, Sc> {
    type Service = IdempotencyService<S, St, Sc>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(
            inner,
            self.store.clone(),
            self.settings.clone(),
            self.scope.clone(),
        )
    }
}
