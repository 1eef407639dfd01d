//! [`IdempotencyBody`]: the response body the layer answers with.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use staunch_core::BoxError;

pin_project! {
    /// A response body from the layer: the handler's own body (after the part read to store
    /// it, if any), a stored or refusal body (with its trailers, if any), or a body that
    /// failed while being stored.
    #[derive(Debug)]
    pub struct IdempotencyBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Inner { prefix: Option<Bytes>, #[pin] body: B },
        Failed { prefix: Option<Bytes>, error: Option<BoxError> },
    }
}

impl<B> IdempotencyBody<B> {
    /// A body of these bytes.
    pub(crate) fn full(data: Bytes) -> Self {
        Self::full_with_trailers(data, HeaderMap::new())
    }

    /// A body of these bytes, then these trailers (none when empty).
    pub(crate) fn full_with_trailers(data: Bytes, trailers: HeaderMap) -> Self {
        IdempotencyBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
                trailers: (!trailers.is_empty()).then_some(trailers),
            },
        }
    }

    /// The handler's body, after `prefix` (already read from it).
    pub(crate) fn inner(prefix: Bytes, body: B) -> Self {
        IdempotencyBody {
            kind: Kind::Inner {
                prefix: (!prefix.is_empty()).then_some(prefix),
                body,
            },
        }
    }

    /// `prefix`, then `error` (the handler's body failed after it).
    pub(crate) fn failed(prefix: Bytes, error: BoxError) -> Self {
        IdempotencyBody {
            kind: Kind::Failed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                error: Some(error),
            },
        }
    }
}

impl<B> Body for IdempotencyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data, trailers } => Poll::Ready(
                data.take()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers))
                    .map(Ok),
            ),
            KindProj::Inner { prefix, body } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                body.poll_frame(cx).map_err(Into::into)
            }
            KindProj::Failed { prefix, error } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                Poll::Ready(error.take().map(Err))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { prefix, body } => prefix.is_none() && body.is_end_stream(),
            Kind::Failed { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { prefix, body } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(extra));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
            Kind::Failed { .. } => SizeHint::new(),
        }
    }
}
