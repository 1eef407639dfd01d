//! The W3C trace context a saga was started under, kept in its log so every step attempt,
//! also one resumed after a restart on another instance, belongs to the caller's trace.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::context::Phase;

/// The length of a version `00` `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;
/// The longest `tracestate` kept (the W3C limit for what a vendor must propagate).
const MAX_TRACESTATE_LEN: usize = 512;
/// The most `tracestate` list members kept (the W3C limit).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A W3C trace context (`traceparent`, and `tracestate` when there is one), as a saga stores
/// it in its `started` event.
///
/// Only a valid `traceparent` makes one: version `00`, exactly 55 characters, lowercase hex,
/// a trace id and a parent id that are not all zeros. A `tracestate` is kept only when it is
/// well formed too (at most 512 characters and 32 `key=value` members); a malformed one is
/// dropped and the `traceparent` kept, as the W3C recommendation says.
///
/// ```
/// use staunch_saga::TraceContext;
///
/// let tc = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")?;
/// assert_eq!(tc.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(tc.parent_id(), "00f067aa0ba902b7");
/// assert!(tc.sampled());
/// assert!(TraceContext::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_err());
/// # Ok::<(), staunch_saga::TraceContextError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "StoredTrace")]
pub struct TraceContext {
    traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
}

/// Why a `traceparent` or `tracestate` was refused. Each message names the header and the
/// rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceContextError {
    /// Not 55 characters (a version `00` `traceparent` is exactly that long).
    #[error("traceparent: must be 55 characters long (version 00), not {len}")]
    Length {
        /// The length given, in bytes.
        len: usize,
    },
    /// A version other than `00` (`ff` is never valid; later versions are not read).
    #[error("traceparent: version must be 00")]
    Version,
    /// A field is not lowercase hex, or the fields are not separated by `-`.
    #[error("traceparent: `{field}` must be lowercase hex in its place, separated by `-`")]
    Format {
        /// `version`, `trace-id`, `parent-id` or `trace-flags`.
        field: &'static str,
    },
    /// The trace id or the parent id is all zeros.
    #[error("traceparent: `{field}` must not be all zeros")]
    Zero {
        /// `trace-id` or `parent-id`.
        field: &'static str,
    },
    /// A malformed `tracestate`.
    #[error("tracestate: {rule}")]
    Tracestate {
        /// The rule it broke.
        rule: &'static str,
    },
}

impl TraceContext {
    /// Parses a `traceparent` header value (surrounding spaces and tabs allowed, as in an
    /// HTTP header).
    ///
    /// Errors: any deviation from a version `00` `traceparent`, named in the error.
    pub fn parse(traceparent: &str) -> Result<Self, TraceContextError> {
        let tp = traceparent.trim_matches([' ', '\t']);
        let b = tp.as_bytes();
        // Checked before the length, so a later version gets the error that says so.
        if b.len() >= 2 && is_lower_hex(&b[..2]) && &b[..2] != b"00" {
            return Err(TraceContextError::Version);
        }
        if b.len() != TRACEPARENT_LEN {
            return Err(TraceContextError::Length { len: b.len() });
        }
        let fields = [
            ("version", 0..2),
            ("trace-id", 3..35),
            ("parent-id", 36..52),
            ("trace-flags", 53..55),
        ];
        for (field, range) in fields {
            let sep_ok = range.start == 0 || b[range.start - 1] == b'-';
            if !sep_ok || !is_lower_hex(&b[range]) {
                return Err(TraceContextError::Format { field });
            }
        }
        for (field, range) in [("trace-id", 3..35), ("parent-id", 36..52)] {
            if b[range].iter().all(|&c| c == b'0') {
                return Err(TraceContextError::Zero { field });
            }
        }
        Ok(Self {
            traceparent: tp.to_owned(),
            tracestate: None,
        })
    }

    /// This context with a `tracestate` header value (surrounding spaces and tabs allowed).
    /// An empty one (or one of only spaces and commas) means none.
    ///
    /// Errors: longer than 512 characters, more than 32 members, or a member that is not
    /// `key=value` as the W3C grammar has it; the context is then unchanged (pass it on
    /// without a `tracestate`).
    pub fn with_tracestate(mut self, tracestate: &str) -> Result<Self, TraceContextError> {
        self.tracestate = check_tracestate(tracestate)?;
        Ok(self)
    }

    /// The `traceparent` as stored: `00-{trace id}-{parent id}-{flags}`.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate`, if one was given and well formed.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id: 32 lowercase hex digits.
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The caller's span id (the `traceparent`'s parent id): 16 lowercase hex digits.
    pub fn parent_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// The trace flags: 2 lowercase hex digits.
    pub fn flags(&self) -> &str {
        &self.traceparent[53..55]
    }

    /// Whether the caller sampled the trace (flag `01`).
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(self.flags(), 16).is_ok_and(|f| f & 1 == 1)
    }

    /// The `traceparent` for a call made by one attempt of a step: this trace id and flags,
    /// and the span id [`step_span_id`] gives for the attempt.
    pub fn child_traceparent(
        &self,
        saga_id: &str,
        step: &str,
        phase: Phase,
        attempt: u32,
    ) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id(),
            step_span_id(saga_id, step, phase, attempt),
            self.flags()
        )
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent)
    }
}

impl std::str::FromStr for TraceContext {
    type Err = TraceContextError;

    fn from_str(traceparent: &str) -> Result<Self, Self::Err> {
        Self::parse(traceparent)
    }
}

/// The span id of one attempt of a step: 16 lowercase hex digits, never all zeros.
///
/// It is the 64-bit FNV-1a hash of the saga id, the step name, the phase (`action` or
/// `compensate`) and the attempt number (decimal), each preceded by its length as 8
/// little-endian bytes, passed through the `SplitMix64` finalizer (`1` if that gives zero). So
/// it is the same on every instance and every build, and a participant, a log line and the
/// engine agree on which attempt made a call.
pub fn step_span_id(saga_id: &str, step: &str, phase: Phase, attempt: u32) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let attempt = attempt.to_string();
    let mut h = OFFSET;
    for part in [saga_id, step, phase.as_str(), attempt.as_str()] {
        let len = (part.len() as u64).to_le_bytes();
        for &byte in len.iter().chain(part.as_bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(PRIME);
        }
    }
    // SplitMix64's finalizer: FNV's low bits mix poorly, this spreads every input bit.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    format!("{:016x}", h.max(1))
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// A well-formed `tracestate` as given (trimmed), `None` when it has no member.
fn check_tracestate(tracestate: &str) -> Result<Option<String>, TraceContextError> {
    let bad = |rule| Err(TraceContextError::Tracestate { rule });
    let ts = tracestate.trim_matches([' ', '\t']);
    if ts.len() > MAX_TRACESTATE_LEN {
        return bad("must be at most 512 characters");
    }
    let mut members = 0;
    let mut keys: Vec<&str> = Vec::new();
    for member in ts.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        members += 1;
        if members > MAX_TRACESTATE_MEMBERS {
            return bad("must have at most 32 members");
        }
        let Some((key, value)) = member.split_once('=') else {
            return bad("every member must be `key=value`");
        };
        if !valid_key(key) {
            return bad(
                "a key must be lowercase letters, digits and `_-*/`, with one optional `@`",
            );
        }
        if !valid_value(value) {
            return bad("a value must be 1 to 256 printable characters without `,` or `=`");
        }
        if keys.contains(&key) {
            return bad("a key must not repeat");
        }
        keys.push(key);
    }
    Ok((members > 0).then(|| ts.to_owned()))
}

/// `simple-key` or `tenant-id@system-id` of the W3C grammar.
fn valid_key(key: &str) -> bool {
    let part = |s: &str, max: usize, first_digit: bool| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= max
            && (b[0].is_ascii_lowercase() || (first_digit && b[0].is_ascii_digit()))
            && b.iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => part(key, 256, false),
        Some((tenant, system)) => part(tenant, 241, true) && part(system, 14, false),
    }
}

fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.last() != Some(&b' ')
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// The stored form, checked again when read: a row is never trusted as it is.
#[derive(Deserialize)]
struct StoredTrace {
    traceparent: String,
    #[serde(default)]
    tracestate: Option<String>,
}

impl TryFrom<StoredTrace> for TraceContext {
    type Error = TraceContextError;

    fn try_from(stored: StoredTrace) -> Result<Self, Self::Error> {
        let tc = Self::parse(&stored.traceparent)?;
        // A bad `tracestate` loses only itself, as at start.
        Ok(match stored.tracestate {
            Some(ts) => tc.clone().with_tracestate(&ts).unwrap_or(tc),
            None => tc,
        })
    }
}

/// The `trace` of a stored `started` event: a value that is not a valid trace context is
/// dropped (with a debug event) instead of making the whole row unreadable, so a damaged or
/// hostile trace never quarantines a saga; the saga just runs without it.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TraceContext>, D::Error> {
    let Some(value) = Option::<serde_json::Value>::deserialize(d)? else {
        return Ok(None);
    };
    match serde_json::from_value::<TraceContext>(value) {
        Ok(tc) => Ok(Some(tc)),
        Err(error) => {
            tracing::debug!(%error, "ignoring the stored trace context of a saga: it is not valid");
            Ok(None)
        }
    }
}

/// The trace context a [`StartOptions`](crate::StartOptions) carries: a malformed header is
/// dropped here, with a debug event naming the saga and the rule, and the saga starts anyway.
/// An empty `traceparent` (a header that was not there) is no trace, without an event.
pub(crate) fn accept(
    saga_id: &str,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<TraceContext> {
    let traceparent = traceparent.filter(|tp| !tp.trim_matches([' ', '\t']).is_empty())?;
    let tc = match TraceContext::parse(traceparent) {
        Ok(tc) => tc,
        Err(error) => {
            tracing::debug!(saga_id, %error, "ignoring a malformed traceparent");
            return None;
        }
    };
    let Some(ts) = tracestate else {
        return Some(tc);
    };
    match tc.clone().with_tracestate(ts) {
        Ok(tc) => Some(tc),
        Err(error) => {
            tracing::debug!(saga_id, %error, "ignoring a malformed tracestate");
            Some(tc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses_into_its_fields() {
        let tc = TraceContext::parse(TP).unwrap();
        assert_eq!(tc.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tc.parent_id(), "00f067aa0ba902b7");
        assert_eq!(tc.flags(), "01");
        assert!(tc.sampled());
        assert_eq!(tc.to_string(), TP);
        let padded = TraceContext::parse(&format!(" \t{TP} ")).unwrap();
        assert_eq!(padded, tc);
        let unsampled = TraceContext::parse(&TP.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn every_malformed_traceparent_is_refused_by_the_rule_it_breaks() {
        use TraceContextError::*;
        let cases: Vec<(String, TraceContextError)> = vec![
            (String::new(), Length { len: 0 }),
            (TP[..54].to_owned(), Length { len: 54 }),
            (format!("{TP}-"), Length { len: 56 }),
            ("x".repeat(10 * 1024), Length { len: 10 * 1024 }),
            (TP.replacen("00", "ff", 1), Version),
            (TP.replacen("00", "01", 1), Version),
            (TP.to_uppercase(), Format { field: "trace-id" }),
            (TP.replacen("00", "0G", 1), Format { field: "version" }),
            (TP.replace("4bf9", "4BF9"), Format { field: "trace-id" }),
            (TP.replace("-00f0", "_00f0"), Format { field: "parent-id" }),
            (
                TP.replace("a902b7", "a902bz"),
                Format { field: "parent-id" },
            ),
            (
                TP.replace("-01", "-0x"),
                Format {
                    field: "trace-flags",
                },
            ),
            (
                format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
                Zero { field: "trace-id" },
            ),
            (
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", "0".repeat(16)),
                Zero { field: "parent-id" },
            ),
            // Non-ASCII of the right byte length.
            (TP.replace("4b", "é"), Format { field: "trace-id" }),
        ];
        for (input, expected) in cases {
            assert_eq!(TraceContext::parse(&input), Err(expected), "{input:.80}");
        }
    }

    #[test]
    fn tracestate_is_kept_only_when_well_formed() {
        let tc = TraceContext::parse(TP).unwrap();
        let ok = tc
            .clone()
            .with_tracestate(" rojo=00f067aa0ba902b7, congo=t61rcWkgMzE , t@vendor=x ")
            .unwrap();
        assert_eq!(
            ok.tracestate(),
            Some("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE , t@vendor=x")
        );
        assert_eq!(
            tc.clone().with_tracestate(" , ").unwrap().tracestate(),
            None
        );
        for bad in [
            "novalue".to_owned(),
            "Upper=1".to_owned(),
            "a=1,a=2".to_owned(),
            "a=".to_owned(),
            "a=b=c".to_owned(),
            "a=x\u{7f}".to_owned(),
            format!("a={}", "v".repeat(600)),
            (0..33)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(","),
        ] {
            assert!(
                matches!(
                    tc.clone().with_tracestate(&bad),
                    Err(TraceContextError::Tracestate { .. })
                ),
                "{bad:.80}"
            );
        }
    }

    #[test]
    fn step_span_ids_are_stable_distinct_and_never_zero() {
        // Frozen: a change here changes the span ids participants see for the same attempt.
        assert_eq!(
            step_span_id("order-7", "charge", Phase::Action, 1),
            "d730d8baa217fa5c"
        );
        let mut seen = std::collections::HashSet::new();
        for saga in ["a", "ab", "b"] {
            for step in ["", "b", "charge"] {
                for phase in [Phase::Action, Phase::Compensate] {
                    for attempt in [1, 2, 10, u32::MAX] {
                        let id = step_span_id(saga, step, phase, attempt);
                        assert_eq!(id.len(), 16);
                        assert!(is_lower_hex(id.as_bytes()) && id != "0000000000000000");
                        assert!(seen.insert(id));
                    }
                }
            }
        }
        // Length prefixes keep field boundaries apart.
        assert_ne!(
            step_span_id("ab", "c", Phase::Action, 1),
            step_span_id("a", "bc", Phase::Action, 1)
        );
    }

    #[test]
    fn a_child_traceparent_keeps_the_trace_id_and_flags() {
        let tc = TraceContext::parse(TP).unwrap();
        let child = tc.child_traceparent("order-7", "charge", Phase::Action, 1);
        let child = TraceContext::parse(&child).unwrap();
        assert_eq!(child.trace_id(), tc.trace_id());
        assert_eq!(child.flags(), tc.flags());
        assert_eq!(
            child.parent_id(),
            step_span_id("order-7", "charge", Phase::Action, 1)
        );
    }

    #[test]
    fn a_stored_trace_is_checked_again_and_a_bad_one_is_dropped() {
        #[derive(Deserialize)]
        struct Row {
            #[serde(default, deserialize_with = "lenient")]
            trace: Option<TraceContext>,
        }
        let read = |json: &str| serde_json::from_str::<Row>(json).unwrap().trace;
        let good = format!(r#"{{"trace":{{"traceparent":"{TP}","tracestate":"a=1"}}}}"#);
        let tc = read(&good).unwrap();
        assert_eq!((tc.traceparent(), tc.tracestate()), (TP, Some("a=1")));
        assert_eq!(
            serde_json::to_string(&tc).unwrap(),
            format!(r#"{{"traceparent":"{TP}","tracestate":"a=1"}}"#)
        );
        assert!(read("{}").is_none());
        assert!(read(r#"{"trace":null}"#).is_none());
        assert!(read(r#"{"trace":5}"#).is_none());
        assert!(read(r#"{"trace":{"traceparent":"00-zz"}}"#).is_none());
        let upper = format!(r#"{{"trace":{{"traceparent":"{}"}}}}"#, TP.to_uppercase());
        assert!(read(&upper).is_none());
        let bad_state = format!(r#"{{"trace":{{"traceparent":"{TP}","tracestate":"=x"}}}}"#);
        assert_eq!(read(&bad_state).unwrap().tracestate(), None);
    }
}
