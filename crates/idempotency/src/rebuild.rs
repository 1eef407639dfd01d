//! [`RebuildBody`]: how the layer hands the handler the request body it has read.

use bytes::Bytes;

/// Makes the handler's request body of type `B` from the bytes the layer read to fingerprint
/// it. The default, [`ViaFrom`], takes any body that is `From<Bytes>` (axum's `Body`,
/// `Full<Bytes>`); any `Fn(Bytes) -> B` is one too, for a body type without that
/// conversion, e.g. tonic's:
///
/// ```
/// use staunch_idempotency::{Idempotency, IdempotencyLayer, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // For `tonic::transport::Server::builder().layer(layer)`.
/// let layer = IdempotencyLayer::new(MemoryStore::new(), Idempotency::default())
///     .rebuild_body(|bytes| tonic::body::Body::new(http_body_util::Full::new(bytes)));
/// # let _ = layer; }
/// ```
pub trait RebuildBody<B>: Clone + Send + Sync + 'static {
    /// The body holding `bytes`.
    fn rebuild(&self, bytes: Bytes) -> B;
}

/// The default [`RebuildBody`]: `B::from(bytes)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ViaFrom;

impl<B: From<Bytes>> RebuildBody<B> for ViaFrom {
    fn rebuild(&self, bytes: Bytes) -> B {
        B::from(bytes)
    }
}

impl<B, F> RebuildBody<B> for F
where
    F: Fn(Bytes) -> B + Clone + Send + Sync + 'static,
{
    fn rebuild(&self, bytes: Bytes) -> B {
        self(bytes)
    }
}
