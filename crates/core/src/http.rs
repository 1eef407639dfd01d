//! Classification of HTTP responses by status code.

use std::fmt;
use std::ops::RangeInclusive;

use http::StatusCode;

use crate::{Classify, Outcome};

const WORDS: usize = 16; // 16 * 64 = 1024 bits, enough for every status code (100..=999).

/// Classifies HTTP responses by status: a configurable set of statuses are failures.
///
/// By default every 5xx and `429 Too Many Requests` is a failure, every other response a
/// success (a 404 means the dependency is up and answering), a transport error a failure, and
/// a cancelled call ignored. It classifies `http::Response<B>` for any body and error type, so
/// it works for hyper and axum clients and any tower HTTP stack; with the `reqwest` feature it
/// also classifies `reqwest::Response`.
///
/// The set is a fixed-size bitmap: classification is one bit test, with no allocation.
///
/// ```
/// use http::{Response, StatusCode};
/// use staunch_core::{Classify, HttpStatus, Outcome};
///
/// let c = HttpStatus::new();
/// let res = |s: u16| Ok::<_, ()>(Response::builder().status(s).body(()).unwrap());
/// assert_eq!(c.classify(&res(200)), Outcome::Success);
/// assert_eq!(c.classify(&res(404)), Outcome::Success);
/// assert_eq!(c.classify(&res(429)), Outcome::Failure);
/// assert_eq!(c.classify(&res(503)), Outcome::Failure);
///
/// // 501 Not Implemented will not heal by itself: do not trip on it. Do trip on 408.
/// let c = HttpStatus::new()
///     .not_failure(StatusCode::NOT_IMPLEMENTED)
///     .failure(StatusCode::REQUEST_TIMEOUT);
/// assert_eq!(c.classify(&res(501)), Outcome::Success);
/// assert_eq!(c.classify(&res(408)), Outcome::Failure);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HttpStatus {
    failures: [u64; WORDS],
    error: Outcome,
    cancelled: Outcome,
}

impl HttpStatus {
    /// 5xx and 429 are failures; transport errors fail; cancellation is ignored.
    pub fn new() -> Self {
        Self::empty()
            .failures(500..=599)
            .failure(StatusCode::TOO_MANY_REQUESTS)
    }

    /// No status is a failure; add some with [`failure`](Self::failure) and
    /// [`failures`](Self::failures). Transport errors still fail.
    pub const fn empty() -> Self {
        Self {
            failures: [0; WORDS],
            error: Outcome::Failure,
            cancelled: Outcome::Ignored,
        }
    }

    /// Counts `status` as a failure.
    pub fn failure(mut self, status: StatusCode) -> Self {
        self.set(status.as_u16(), true);
        self
    }

    /// Counts every status in `range` as a failure (e.g. `500..=599`). Numbers outside
    /// `100..=999` are not statuses and are skipped.
    pub fn failures(mut self, range: RangeInclusive<u16>) -> Self {
        for code in range {
            self.set(code, true);
        }
        self
    }

    /// No longer counts `status` as a failure.
    pub fn not_failure(mut self, status: StatusCode) -> Self {
        self.set(status.as_u16(), false);
        self
    }

    /// Sets the outcome of a transport error (no response at all; default
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

    /// Whether a response with this status counts as a failure.
    #[inline]
    pub fn is_failure(&self, status: StatusCode) -> bool {
        let code = usize::from(status.as_u16());
        self.failures[code / 64] & (1 << (code % 64)) != 0
    }

    /// The outcome of a response with this status.
    #[inline]
    pub fn classify_status(&self, status: StatusCode) -> Outcome {
        if self.is_failure(status) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    fn set(&mut self, code: u16, on: bool) {
        if !(100..=999).contains(&code) {
            return;
        }
        let code = usize::from(code);
        let bit = 1 << (code % 64);
        if on {
            self.failures[code / 64] |= bit;
        } else {
            self.failures[code / 64] &= !bit;
        }
    }
}

impl Default for HttpStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HttpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Codes<'a>(&'a HttpStatus);
        impl fmt::Debug for Codes<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(
                        (100u16..=999).filter(|c| {
                            StatusCode::from_u16(*c).is_ok_and(|s| self.0.is_failure(s))
                        }),
                    )
                    .finish()
            }
        }
        f.debug_struct("HttpStatus")
            .field("failures", &Codes(self))
            .field("error", &self.error)
            .field("cancelled", &self.cancelled)
            .finish()
    }
}

impl<B, E> Classify<http::Response<B>, E> for HttpStatus {
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(res) => self.classify_status(res.status()),
            Err(_) => self.error,
        }
    }

    fn classify_cancelled(&self) -> Outcome {
        self.cancelled
    }
}

#[cfg(feature = "reqwest")]
impl<E> Classify<reqwest::Response, E> for HttpStatus {
    #[inline]
    fn classify(&self, result: &Result<reqwest::Response, E>) -> Outcome {
        match result {
            // reqwest 0.13 re-exports `http::StatusCode`, so the bitmap applies directly.
            Ok(res) => self.classify_status(res.status()),
            Err(_) => self.error,
        }
    }

    fn classify_cancelled(&self) -> Outcome {
        self.cancelled
    }
}
