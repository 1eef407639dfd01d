//! The `Idempotency-Key` header value: an sf-string (`"..."`) or, leniently, a bare token.

use std::fmt;

/// Why an `Idempotency-Key` header was refused (answered with 400 and this reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The request carries no key and the route requires one.
    Missing,
    /// The request carries the header more than once.
    Repeated,
    /// The key is empty (`""` or a blank header).
    Empty,
    /// The key is longer than the configured `max_key_len`.
    TooLong,
    /// The value holds a byte outside printable ASCII (0x20..=0x7e), or a bare value holds a
    /// space, quote or backslash.
    NotAscii,
    /// A quoted value without its closing quote, with text after it, or with a backslash
    /// before anything but `"` or `\`.
    Malformed,
}

impl KeyError {
    /// The reason sent to the client in the 400 response's body.
    pub fn reason(self) -> &'static str {
        match self {
            KeyError::Missing => "this request needs an Idempotency-Key header",
            KeyError::Repeated => "the Idempotency-Key header must appear once",
            KeyError::Empty => "the Idempotency-Key must not be empty",
            KeyError::TooLong => "the Idempotency-Key is longer than this server accepts",
            KeyError::NotAscii => "the Idempotency-Key must be printable ASCII",
            KeyError::Malformed => {
                "the Idempotency-Key must be a quoted string (\"...\") or a bare token"
            }
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for KeyError {}

/// Reads a key from a header value, at most `max_len` characters once unquoted.
///
/// The draft (draft-ietf-httpapi-idempotency-key-header) makes the value a structured-field
/// string: `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`, with `\"` and `\\` as
/// its only escapes. Many clients send the bare value (`Idempotency-Key: 8e03978e-...`), so a
/// value without quotes is accepted too when it holds no space, quote or backslash. Either way
/// the key is printable ASCII. Surrounding spaces are ignored.
pub fn parse_key(value: &[u8], max_len: usize) -> Result<String, KeyError> {
    let value = trim(value);
    let key = if let [b'"', inner @ ..] = value {
        unquote(inner)?
    } else {
        if value
            .iter()
            .any(|&b| !(0x21..=0x7e).contains(&b) || b == b'"' || b == b'\\')
        {
            return Err(KeyError::NotAscii);
        }
        // Printable ASCII, so one char per byte.
        value.iter().map(|&b| char::from(b)).collect()
    };
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > max_len {
        Err(KeyError::TooLong)
    } else {
        Ok(key)
    }
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// The inside of an sf-string, after its opening quote.
fn unquote(inner: &[u8]) -> Result<String, KeyError> {
    let mut key = String::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&c @ (b'"' | b'\\')) => key.push(char::from(c)),
                Some(&c) if !(0x20..=0x7e).contains(&c) => return Err(KeyError::NotAscii),
                _ => return Err(KeyError::Malformed),
            },
            b'"' => {
                return if bytes.next().is_none() {
                    Ok(key)
                } else {
                    Err(KeyError::Malformed)
                };
            }
            0x20..=0x7e => key.push(char::from(b)),
            _ => return Err(KeyError::NotAscii),
        }
    }
    Err(KeyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_keys_are_read() {
        let uuid = "8e03978e-40d5-43e8-bc93-6894a57f9324";
        assert_eq!(
            parse_key(format!("\"{uuid}\"").as_bytes(), 255).unwrap(),
            uuid
        );
        assert_eq!(parse_key(uuid.as_bytes(), 255).unwrap(), uuid);
        assert_eq!(parse_key(b"  \"a b\"\t", 255).unwrap(), "a b");
        assert_eq!(parse_key(br#""a\"b\\c""#, 255).unwrap(), r#"a"b\c"#);
        assert_eq!(
            parse_key(b"saga-1:charge:action", 255).unwrap(),
            "saga-1:charge:action"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert_eq!(parse_key(b"", 255), Err(KeyError::Empty));
        assert_eq!(parse_key(b"\"\"", 255), Err(KeyError::Empty));
        assert_eq!(parse_key(b"   ", 255), Err(KeyError::Empty));
        assert_eq!(parse_key(b"abcd", 3), Err(KeyError::TooLong));
        assert_eq!(parse_key(b"\"abcd\"", 3), Err(KeyError::TooLong));
        assert_eq!(parse_key("clé".as_bytes(), 255), Err(KeyError::NotAscii));
        assert_eq!(
            parse_key("\"clé\"".as_bytes(), 255),
            Err(KeyError::NotAscii)
        );
        assert_eq!(parse_key(b"a b", 255), Err(KeyError::NotAscii));
        assert_eq!(parse_key(b"\"abc", 255), Err(KeyError::Malformed));
        assert_eq!(parse_key(b"\"ab\"c", 255), Err(KeyError::Malformed));
        assert_eq!(parse_key(br#""a\n""#, 255), Err(KeyError::Malformed));
        assert_eq!(parse_key(b"\"a\\", 255), Err(KeyError::Malformed));
        assert!(!KeyError::Malformed.reason().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic_to_printable_ascii(
            value in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            max in 0usize..40,
        ) {
            if let Ok(key) = parse_key(&value, max) {
                proptest::prop_assert!(!key.is_empty() && key.len() <= max);
                proptest::prop_assert!(key.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            }
        }

        #[test]
        fn quoting_round_trips(key in "[ -~]{1,40}") {
            let quoted = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
            // Spaces at the edges of a quoted key are part of it.
            proptest::prop_assert_eq!(parse_key(quoted.as_bytes(), 64).unwrap(), key);
        }
    }
}
