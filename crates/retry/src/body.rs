//! [`ReplayBody`]: an HTTP body buffered up to a cap so the request can be sent again.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

/// The default cap of [`ReplayBody::buffer`]: 64 KiB.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

pin_project! {
    /// An HTTP body that can be replayed when it fit under a cap.
    ///
    /// Streaming bodies (`axum::body::Body`, `hyper::body::Incoming`) cannot be cloned, so a
    /// request carrying one could never be retried. [`ReplayBody::buffer`] reads the body up
    /// to a cap (default 64 KiB): a body that ends within the cap is kept in memory and every
    /// attempt sends a copy (a reference-counted `Bytes`, not a memory copy). A bigger body is
    /// not buffered further: the part already read is sent first, then the rest streams
    /// through, and the request is sent once, never retried (buffering it whole would let one
    /// large upload hold arbitrary memory for the length of the retries).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use http_body_util::{BodyExt, Full};
    /// use staunch_retry::ReplayBody;
    ///
    /// let small = ReplayBody::buffer(Full::new(bytes::Bytes::from("hello")), 1024).await.unwrap();
    /// let copy = small.try_clone().expect("fits under the cap");
    /// assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
    ///
    /// let big = ReplayBody::buffer(Full::new(bytes::Bytes::from(vec![0u8; 2048])), 1024).await.unwrap();
    /// assert!(big.try_clone().is_none()); // sent once
    /// assert_eq!(big.collect().await.unwrap().to_bytes().len(), 2048);
    /// # }
    /// ```
    pub struct ReplayBody<B> {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
        #[pin]
        rest: Option<B>,
        replayable: bool,
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("buffered", &self.data.as_ref().map_or(0, Bytes::len))
            .field("replayable", &self.replayable)
            .finish_non_exhaustive()
    }
}

impl<B> ReplayBody<B> {
    /// A replayable body holding `data`.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        Self {
            data: Some(data.into()),
            trailers: None,
            rest: None,
            replayable: true,
        }
    }

    /// Whether the whole body is in memory, so the request can be sent again.
    pub fn is_replayable(&self) -> bool {
        self.replayable
    }

    /// A copy for another attempt, or `None` when the body was bigger than its cap.
    pub fn try_clone(&self) -> Option<Self> {
        self.replayable.then(|| Self {
            data: self.data.clone(),
            trailers: self.trailers.clone(),
            rest: None,
            replayable: true,
        })
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
{
    /// Reads `body` up to `cap` bytes. A body that ends within the cap becomes replayable;
    /// a longer one keeps what was read and streams the rest, once.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future loses the body.
    pub async fn buffer(mut body: B, cap: usize) -> Result<Self, B::Error> {
        let mut buf = BytesMut::new();
        let mut trailers = None;
        loop {
            let Some(frame) = body.frame().await else {
                return Ok(Self {
                    data: Some(buf.freeze()),
                    trailers,
                    rest: None,
                    replayable: true,
                });
            };
            let frame = match frame?.into_data() {
                Ok(mut data) => {
                    buf.extend_from_slice(&data.copy_to_bytes(data.remaining()));
                    if buf.len() > cap {
                        tracing::trace!(cap, "request body exceeds the replay cap: sent once");
                        return Ok(Self {
                            data: Some(buf.freeze()),
                            trailers,
                            rest: Some(body),
                            replayable: false,
                        });
                    }
                    continue;
                }
                Err(frame) => frame,
            };
            if let Ok(t) = frame.into_trailers() {
                trailers = Some(t);
            }
        }
    }
}

/// Buffers the body of `req` (see [`ReplayBody::buffer`]) so the request can be retried.
pub async fn buffer_request<B>(
    req: http::Request<B>,
    cap: usize,
) -> Result<http::Request<ReplayBody<B>>, B::Error>
where
    B: Body + Unpin,
{
    let (parts, body) = req.into_parts();
    let body = ReplayBody::buffer(body, cap).await?;
    Ok(http::Request::from_parts(parts, body))
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if let Some(data) = this.data.take()
            && !data.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(rest) = this.rest.as_mut().as_pin_mut() {
            return match rest.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty)
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.data.as_ref().map_or(0, Bytes::len) as u64;
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            Some(rest) => {
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + buffered);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}
