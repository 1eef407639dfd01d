//! Classification of gRPC calls by status code (the `tonic` feature).

use std::fmt;

use tonic::Code;

use crate::{Classify, Outcome};

/// Every gRPC status code, in wire order (0..=16).
const ALL_CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

/// Classifies gRPC calls by status code: a configurable set of codes are failures.
///
/// Default failures: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL` and
/// `UNKNOWN`, the codes that say the server is unhealthy or overloaded. Codes that describe the
/// request (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, ...) are successes: the server
/// answered correctly. A cancelled call is ignored.
///
/// It classifies:
/// - `Result<tonic::Response<T>, tonic::Status>`, the result of a generated client's method;
/// - `Result<http::Response<B>, E>`, what a tower layer around a tonic `Channel` sees. Such a
///   layer reads `grpc-status` from the response headers (a "trailers-only" response, which is
///   how servers report most errors); a response whose status travels in the trailers is a
///   success at this level. A transport error (`E`) is a failure.
///
/// ```
/// use staunch_core::{Classify, GrpcStatus, Outcome};
/// use tonic::{Code, Status};
///
/// let c = GrpcStatus::new();
/// let failed = |code| Err::<tonic::Response<()>, _>(Status::new(code, "x"));
/// assert_eq!(c.classify(&failed(Code::Unavailable)), Outcome::Failure);
/// assert_eq!(c.classify(&failed(Code::NotFound)), Outcome::Success);
///
/// let c = GrpcStatus::new().failure(Code::Aborted).not_failure(Code::Internal);
/// assert_eq!(c.classify(&failed(Code::Aborted)), Outcome::Failure);
/// assert_eq!(c.classify(&failed(Code::Internal)), Outcome::Success);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GrpcStatus {
    failures: u32,
    error: Outcome,
    cancelled: Outcome,
}

impl GrpcStatus {
    /// The default failure codes (see the type's docs); cancellation is ignored.
    pub fn new() -> Self {
        Self::empty()
            .failure(Code::Unavailable)
            .failure(Code::DeadlineExceeded)
            .failure(Code::ResourceExhausted)
            .failure(Code::Internal)
            .failure(Code::Unknown)
    }

    /// No code is a failure; transport errors still fail.
    pub const fn empty() -> Self {
        Self {
            failures: 0,
            error: Outcome::Failure,
            cancelled: Outcome::Ignored,
        }
    }

    /// Counts `code` as a failure.
    pub fn failure(mut self, code: Code) -> Self {
        self.failures |= bit(code);
        self
    }

    /// No longer counts `code` as a failure.
    pub fn not_failure(mut self, code: Code) -> Self {
        self.failures &= !bit(code);
        self
    }

    /// Sets the outcome of a transport error seen at the HTTP level (default
    /// [`Outcome::Failure`]).
    pub const fn error_as(mut self, outcome: Outcome) -> Self {
        self.error = outcome;
        self
    }

    /// Sets the outcome of a cancelled call (default [`Outcome::Ignored`]).
    pub const fn cancelled_as(mut self, outcome: Outcome) -> Self {
        self.cancelled = outcome;
        self
    }

    /// Whether `code` counts as a failure.
    #[inline]
    pub fn is_failure(&self, code: Code) -> bool {
        self.failures & bit(code) != 0
    }

    /// The outcome of a call that ended with `code`.
    #[inline]
    pub fn classify_code(&self, code: Code) -> Outcome {
        if self.is_failure(code) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

#[inline]
fn bit(code: Code) -> u32 {
    1 << (code as i32 as u32 & 31)
}

impl Default for GrpcStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GrpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Codes<'a>(&'a GrpcStatus);
        impl fmt::Debug for Codes<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(ALL_CODES.iter().filter(|c| self.0.is_failure(**c)))
                    .finish()
            }
        }
        f.debug_struct("GrpcStatus")
            .field("failures", &Codes(self))
            .field("error", &self.error)
            .field("cancelled", &self.cancelled)
            .finish()
    }
}

impl<T> Classify<tonic::Response<T>, tonic::Status> for GrpcStatus {
    #[inline]
    fn classify(&self, result: &Result<tonic::Response<T>, tonic::Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) => self.classify_code(status.code()),
        }
    }

    fn classify_cancelled(&self) -> Outcome {
        self.cancelled
    }
}

impl<B, E> Classify<http::Response<B>, E> for GrpcStatus {
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(res) => match grpc_status_header(res.headers()) {
                Some(code) => self.classify_code(code),
                // No status yet: it travels in the trailers, after a healthy 200 response. A
                // non-200 HTTP status from a gRPC server means a proxy or the server failed.
                None if res.status() == http::StatusCode::OK => Outcome::Success,
                None => self.classify_code(code_for_http_status(res.status())),
            },
            Err(_) => self.error,
        }
    }

    fn classify_cancelled(&self) -> Outcome {
        self.cancelled
    }
}

/// Reads a `grpc-status` header; an absent or malformed one is `None`.
fn grpc_status_header(headers: &http::HeaderMap) -> Option<Code> {
    static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    let value = headers.get(&GRPC_STATUS)?.to_str().ok()?;
    let n: i32 = value.trim().parse().ok()?;
    ALL_CODES.get(usize::try_from(n).ok()?).copied()
}

/// The gRPC code a client reports for a non-200 HTTP status (the gRPC HTTP/2 mapping).
fn code_for_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_res(status: u16, grpc: Option<&str>) -> Result<http::Response<()>, ()> {
        let mut b = http::Response::builder().status(status);
        if let Some(g) = grpc {
            b = b.header("grpc-status", g);
        }
        Ok(b.body(()).unwrap())
    }

    #[test]
    fn codes_cover_the_wire_numbers() {
        for (i, code) in ALL_CODES.iter().enumerate() {
            assert_eq!(*code as i32, i32::try_from(i).unwrap());
        }
    }

    #[test]
    fn default_failures_are_the_documented_five() {
        let c = GrpcStatus::new();
        let failing: Vec<Code> = ALL_CODES.into_iter().filter(|x| c.is_failure(*x)).collect();
        assert_eq!(
            failing,
            vec![
                Code::Unknown,
                Code::DeadlineExceeded,
                Code::ResourceExhausted,
                Code::Internal,
                Code::Unavailable
            ]
        );
    }

    #[test]
    fn headers_are_read_at_the_http_level() {
        let c = GrpcStatus::new();
        assert_eq!(c.classify(&http_res(200, Some("14"))), Outcome::Failure);
        assert_eq!(c.classify(&http_res(200, Some("5"))), Outcome::Success);
        assert_eq!(c.classify(&http_res(200, Some("0"))), Outcome::Success);
        assert_eq!(c.classify(&http_res(200, None)), Outcome::Success);
        // Malformed values are not a status; the HTTP 200 stands.
        assert_eq!(c.classify(&http_res(200, Some("banana"))), Outcome::Success);
        assert_eq!(c.classify(&http_res(200, Some("99"))), Outcome::Success);
        // A proxy's 503 maps to UNAVAILABLE.
        assert_eq!(c.classify(&http_res(503, None)), Outcome::Failure);
        assert_eq!(
            c.classify(&Err::<http::Response<()>, _>(())),
            Outcome::Failure
        );
    }
}
