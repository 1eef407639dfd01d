//! Status rules: [`StatusRange`] (what a setting says) and the bit set a policy checks.

use std::fmt;
use std::ops::RangeInclusive;

use staunch_core::ConfigError;

/// A range of response statuses that trigger a fallback: one status (`503`), a class
/// (`"5xx"`) or a range (`"500-504"`).
///
/// In settings files it is written as a number or a string; the builder takes a `u16` or a
/// `RangeInclusive<u16>`. Statuses must lie within `100..=599` with `first <= last`, which
/// the policy's `build()` checks (a [`ConfigError`] naming `statuses` otherwise).
///
/// ```
/// use staunch_fallback::StatusRange;
///
/// assert_eq!(StatusRange::from(503), StatusRange::new(503, 503));
/// assert_eq!(StatusRange::from(500..=599), StatusRange::class(5));
/// assert_eq!("5xx".parse::<StatusRange>().unwrap(), StatusRange::new(500, 599));
/// assert_eq!("502-504".parse::<StatusRange>().unwrap().to_string(), "502-504");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusRange {
    first: u16,
    last: u16,
}

impl StatusRange {
    /// The statuses `first..=last` (checked when the policy is built).
    pub const fn new(first: u16, last: u16) -> Self {
        Self { first, last }
    }

    /// The class `digit`xx, e.g. `class(5)` for `500..=599`.
    pub const fn class(digit: u16) -> Self {
        let first = digit.saturating_mul(100);
        Self {
            first,
            last: first.saturating_add(99),
        }
    }

    /// The first status of the range.
    pub const fn first(&self) -> u16 {
        self.first
    }

    /// The last status of the range.
    pub const fn last(&self) -> u16 {
        self.last
    }

    fn check(self) -> Result<(), ConfigError> {
        if self.first < 100 || self.last > 599 || self.first > self.last {
            return Err(ConfigError::new(
                "statuses",
                format!("must be HTTP statuses within 100..=599, first <= last (got {self})"),
            ));
        }
        Ok(())
    }
}

impl From<u16> for StatusRange {
    fn from(status: u16) -> Self {
        Self::new(status, status)
    }
}

impl From<RangeInclusive<u16>> for StatusRange {
    fn from(range: RangeInclusive<u16>) -> Self {
        Self::new(*range.start(), *range.end())
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else if self.first.is_multiple_of(100) && self.last == self.first.saturating_add(99) {
            write!(f, "{}xx", self.first / 100)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A status range written as text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseStatusRangeError(String);

impl fmt::Display for ParseStatusRangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid status range {:?}: write a status (503), a class (\"5xx\") or a range (\"500-504\")",
            self.0
        )
    }
}

impl std::error::Error for ParseStatusRangeError {}

impl std::str::FromStr for StatusRange {
    type Err = ParseStatusRangeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParseStatusRangeError(text.to_owned());
        let t = text.trim();
        let number = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
        if let Some(digit) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
            let digit = number(digit)?;
            if digit > 9 {
                return Err(bad());
            }
            return Ok(Self::class(digit));
        }
        if let Some((first, last)) = t.split_once('-') {
            return Ok(Self::new(number(first)?, number(last)?));
        }
        Ok(Self::from(number(t)?))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for StatusRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;

        impl serde::de::Visitor<'_> for Visit {
            type Value = StatusRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status (503), a class (\"5xx\") or a range (\"500-504\")")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StatusRange, E> {
                u16::try_from(v)
                    .map(StatusRange::from)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StatusRange, E> {
                u16::try_from(v)
                    .map(StatusRange::from)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StatusRange, E> {
                v.parse().map_err(E::custom)
            }
        }

        d.deserialize_any(Visit)
    }
}

/// The statuses `100..=599` as bits: checking a response is one shift and one mask.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StatusSet([u64; 8]);

impl StatusSet {
    /// The union of `ranges`, or the first bad one's error.
    pub(crate) fn of(ranges: &[StatusRange]) -> Result<Self, ConfigError> {
        let mut set = StatusSet::default();
        for range in ranges {
            range.check()?;
            for status in range.first..=range.last {
                let i = usize::from(status - 100);
                set.0[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(set)
    }

    #[inline]
    pub(crate) fn contains(&self, status: u16) -> bool {
        let Some(i) = status.checked_sub(100).map(usize::from) else {
            return false;
        };
        self.0
            .get(i / 64)
            .is_some_and(|word| word & (1 << (i % 64)) != 0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        write!(f, "StatusSet({count} statuses)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_holds_exactly_its_ranges() {
        let set = StatusSet::of(&[StatusRange::class(5), 429.into()]).unwrap();
        for status in 0..=1000u16 {
            let expected = (500..=599).contains(&status) || status == 429;
            assert_eq!(set.contains(status), expected, "{status}");
        }
        assert!(StatusSet::of(&[]).unwrap().is_empty());
    }

    #[test]
    fn bad_ranges_are_refused_by_name() {
        for bad in [
            StatusRange::new(99, 200),
            StatusRange::new(500, 600),
            StatusRange::new(504, 500),
            StatusRange::class(6),
            StatusRange::from(0),
            StatusRange::from(u16::MAX),
        ] {
            let err = StatusSet::of(&[bad]).unwrap_err();
            assert_eq!(err.field(), "statuses", "{bad}");
            assert!(err.rule().contains(&bad.to_string()), "{err}");
        }
    }

    #[test]
    fn text_forms_read_and_print_back() {
        for text in ["503", "5xx", "500-504", "1xx"] {
            let range: StatusRange = text.parse().unwrap();
            assert_eq!(range.to_string(), text);
        }
        for bad in ["", "x", "5x", "10xx", "500-", "-3", "70000"] {
            assert!(bad.parse::<StatusRange>().is_err(), "{bad}");
        }
    }
}
