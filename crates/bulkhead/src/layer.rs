//! The tower layer that puts a [`Bulkhead`] in front of a service.

use staunch_core::AnyError;
use tower_layer::Layer;

use crate::bulkhead::Bulkhead;
use crate::service::BulkheadService;

/// Applies a [`Bulkhead`] to a service; every service it wraps shares the bulkhead.
///
/// The classifier (default [`AnyError`]) only matters for an adaptive bulkhead: it decides
/// which results count as failures and lower the limit.
///
/// ```
/// use std::time::Duration;
/// use staunch_bulkhead::{Bulkhead, BulkheadFull};
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let bulkhead = Bulkhead::builder("inventory").max_concurrent(1).build()?;
/// let mut svc = ServiceBuilder::new()
///     .layer(bulkhead.layer())
///     .service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) });
///
/// // A readied service holds the only permit...
/// let mut first = svc.clone();
/// first.ready().await?;
/// // ...so another call is rejected from `call` (readiness itself never fails).
/// let err = svc.ready().await?.call(1).await.unwrap_err();
/// assert!(err.is::<BulkheadFull>());
/// assert_eq!(first.call(21).await?, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer<C = AnyError> {
    bulkhead: Bulkhead,
    classifier: C,
}

impl BulkheadLayer {
    /// A layer over `bulkhead`, classifying results with [`AnyError`].
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self {
            bulkhead,
            classifier: AnyError::new(),
        }
    }
}

impl<C> BulkheadLayer<C> {
    /// Uses `classifier` to decide which results are failures for an adaptive limit (e.g.
    /// `staunch_core::HttpStatus` for HTTP clients).
    pub fn classify<C2>(self, classifier: C2) -> BulkheadLayer<C2> {
        BulkheadLayer {
            bulkhead: self.bulkhead,
            classifier,
        }
    }

    /// The bulkhead every wrapped service shares.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// Holds each permit until the HTTP response body has been read to the end (or dropped),
    /// not just until the response head arrives.
    #[cfg(feature = "http")]
    pub fn hold_until_body_end(self) -> crate::body::HttpBulkheadLayer<C> {
        crate::body::HttpBulkheadLayer::new(self.bulkhead, self.classifier)
    }
}

impl<S, C: Clone> Layer<S> for BulkheadLayer<C> {
    type Service = BulkheadService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone(), self.classifier.clone())
    }
}
