//! What a store keeps per key: the request's fingerprint and the response to replay.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

/// A digest of the parts of a request that must match for a repeat to be replayed (method,
/// path, query and body by default; see [`FingerprintParts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request from its parts, as the layer computes it.
    pub fn of(
        parts: FingerprintParts,
        method: &http::Method,
        uri: &http::Uri,
        body: &[u8],
    ) -> Self {
        let mut hash = Sha256::new();
        // Each part is length-prefixed, so no two different requests hash the same input.
        let mut part = |tag: u8, bytes: &[u8]| {
            hash.update([tag]);
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        if parts.method {
            part(b'm', method.as_str().as_bytes());
        }
        if parts.path {
            part(b'p', uri.path().as_bytes());
        }
        if parts.query {
            part(b'q', uri.query().unwrap_or("").as_bytes());
        }
        if parts.body {
            part(b'b', body);
        }
        Fingerprint(hash.finalize().into())
    }

    /// Reads a stored fingerprint; `None` unless it is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Fingerprint)
    }
}

/// Which parts of a request its fingerprint covers (default: all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[allow(clippy::struct_excessive_bools)]
pub struct FingerprintParts {
    /// The HTTP method.
    pub method: bool,
    /// The URI path.
    pub path: bool,
    /// The URI query string.
    pub query: bool,
    /// A SHA-256 digest of the request body (the layer reads the body, up to
    /// `max_request_body`, before the handler sees it).
    pub body: bool,
}

impl Default for FingerprintParts {
    fn default() -> Self {
        FingerprintParts {
            method: true,
            path: true,
            query: true,
            body: true,
        }
    }
}

/// A response as stored for replay: status, the headers chosen to keep, the whole body and
/// its trailers (gRPC's `grpc-status` and `grpc-message` travel there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: StatusCode,
    /// The headers kept (the layer keeps those named in `stored_headers`, and on a gRPC
    /// response also `content-type` and the `grpc-status` family).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The trailers, all of them; empty when the response sent none (then none are
    /// replayed).
    pub trailers: HeaderMap,
}

/// The `content-type` of gRPC requests and responses (`application/grpc+proto` and the like
/// are gRPC too).
pub(crate) const GRPC_CONTENT_TYPE: &str = "application/grpc";

impl StoredResponse {
    /// A response with this status and body and no headers.
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        StoredResponse {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
            trailers: HeaderMap::new(),
        }
    }

    /// A successful gRPC reply carrying one encoded message (e.g. `prost`'s
    /// `encode_to_vec()`), as a tonic server sends it: `200`, `content-type:
    /// application/grpc`, the message framed (uncompressed) and the trailer `grpc-status: 0`.
    /// For a handler that records its reply with `finish_in`.
    pub fn grpc(message: impl AsRef<[u8]>) -> Self {
        let message = message.as_ref();
        let mut body = Vec::with_capacity(5 + message.len());
        body.push(0);
        // A gRPC frame's length is a u32: a larger message cannot be sent at all.
        body.extend_from_slice(
            &u32::try_from(message.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        body.extend_from_slice(message);
        let mut response = StoredResponse::new(StatusCode::OK, body).with_header(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(GRPC_CONTENT_TYPE),
        );
        response.trailers.insert(GRPC_STATUS, HeaderValue::from(0));
        response
    }

    /// A gRPC error reply, as a tonic server sends a `Status`: a trailers-only response
    /// (`200`, `content-type: application/grpc`, `grpc-status: code` and the percent-encoded
    /// `grpc-message` in the headers, no body). For a handler that records a refusal with
    /// `finish_in`.
    pub fn grpc_error(code: i32, message: &str) -> Self {
        StoredResponse::new(StatusCode::OK, Bytes::new())
            .with_header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(GRPC_CONTENT_TYPE),
            )
            .with_header(GRPC_STATUS, HeaderValue::from(code))
            .with_header(GRPC_MESSAGE, grpc_message(message))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Adds a trailer.
    pub fn with_trailer(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.trailers.append(name, value);
        self
    }
}

/// gRPC's status code header (or trailer).
pub(crate) const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// gRPC's status message header (or trailer), percent-encoded.
pub(crate) const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRPC's binary status details header (or trailer).
pub(crate) const GRPC_STATUS_DETAILS: HeaderName =
    HeaderName::from_static("grpc-status-details-bin");

/// `message` as a `grpc-message` value: percent-encoded outside printable ASCII, and `%`
/// itself, as the gRPC HTTP/2 protocol says.
pub(crate) fn grpc_message(message: &str) -> HeaderValue {
    use std::fmt::Write;
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    // Only printable ASCII is left, which every header value accepts.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What a store holds for a finished key.
// The stored response is the common case and is moved once or twice per request; a box
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The response, to replay.
    Stored(StoredResponse),
    /// The request was processed but its response body was over `max_stored_body`, so there
    /// is nothing to replay.
    NotStored {
        /// The status it was answered with.
        status: StatusCode,
    },
}

/// Encodes headers for storage: for each one, the name's length (u16), the name, the value's
/// length (u32) and the value, all big-endian.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
        // Header names and values are far below these bounds (hyper caps them well before).
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Decodes [`encode_headers`]' output, refusing anything malformed (a damaged row).
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<HeaderMap, &'static str> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if bytes.len() < n {
            return Err("headers are truncated");
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head)
    }
    let mut headers = HeaderMap::new();
    while !bytes.is_empty() {
        let len = take(&mut bytes, 2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let name = HeaderName::from_bytes(take(&mut bytes, len)?)
            .map_err(|_| "a header name is invalid")?;
        let len = take(&mut bytes, 4)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let value = HeaderValue::from_bytes(take(&mut bytes, len)?)
            .map_err(|_| "a header value is invalid")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Reads a stored status code, refusing anything outside 100..=999.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn decode_status(status: i64) -> Result<StatusCode, &'static str> {
    u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or("the status code is invalid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_damage_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        let bytes = encode_headers(&headers);
        assert_eq!(decode_headers(&bytes).unwrap(), headers);
        for cut in 1..bytes.len() {
            // Every strict prefix ends inside a header: refused, never a panic.
            let _ = decode_headers(&bytes[..cut]);
        }
        assert!(decode_headers(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_headers(&[0, 1, b' ', 0, 0, 0, 0]).is_err());
        assert!(decode_status(99).is_err());
        assert!(decode_status(-1).is_err());
        assert!(decode_status(1 << 40).is_err());
        assert_eq!(decode_status(201).unwrap(), StatusCode::CREATED);
    }

    #[test]
    fn grpc_replies_are_framed_and_messages_percent_encoded() {
        let reply = StoredResponse::grpc(b"ab");
        assert_eq!(&reply.body[..], &[0, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(reply.trailers["grpc-status"], "0");
        assert_eq!(reply.headers["content-type"], "application/grpc");
        let error = StoredResponse::grpc_error(9, "100% caf\u{e9}");
        assert_eq!(error.headers["grpc-status"], "9");
        assert_eq!(error.headers["grpc-message"], "100%25 caf%C3%A9");
        assert!(error.body.is_empty() && error.trailers.is_empty());
    }

    #[test]
    fn fingerprints_cover_the_chosen_parts() {
        let all = FingerprintParts::default();
        let post = http::Method::POST;
        let uri: http::Uri = "/orders?x=1".parse().unwrap();
        let base = Fingerprint::of(all, &post, &uri, b"{}");
        assert_eq!(base, Fingerprint::of(all, &post, &uri, b"{}"));
        assert_ne!(base, Fingerprint::of(all, &post, &uri, b"{ }"));
        assert_ne!(base, Fingerprint::of(all, &http::Method::PUT, &uri, b"{}"));
        let other: http::Uri = "/orders?x=2".parse().unwrap();
        assert_ne!(base, Fingerprint::of(all, &post, &other, b"{}"));
        let no_query = FingerprintParts {
            query: false,
            ..all
        };
        assert_eq!(
            Fingerprint::of(no_query, &post, &uri, b"{}"),
            Fingerprint::of(no_query, &post, &other, b"{}")
        );
        assert_eq!(Fingerprint::from_slice(&base.0), Some(base));
        assert_eq!(Fingerprint::from_slice(&[0; 31]), None);
    }

    proptest::proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_headers(&bytes);
        }
    }
}
