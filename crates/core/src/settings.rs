//! Building blocks for settings read from files (feature `serde`): durations in human form,
//! and sections that are tables only.
//!
//! Every staunch layer crate describes its settings as plain data (`BreakerConfig`,
//! `BulkheadConfig`, ...) built by the layer's own builder; with their `serde` features
//! those types read from any serde format through the pieces here, so a file reads the same
//! whichever crate a section belongs to:
//!
//! - durations are written in human form (`"250ms"`, `"30s"`, `"1m 30s"`, via `humantime`):
//!   [`duration`] and [`duration::option`], for `#[serde(with = "...")]`;
//! - a section is a table and nothing else. serde's derive also accepts a sequence and fills
//!   the fields in declaration order, so `payment = ["1s", "500ms"]` would silently set the
//!   first two fields; [`tables!`](crate::tables) derives `Deserialize` over a type's derived
//!   code (`#[serde(remote = "Self")]`) through a visitor that accepts a map only.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};

#[doc(hidden)]
pub mod __private {
    pub use serde;
}

/// `#[serde(with = "staunch_core::settings::duration")]`: a `Duration` in human form.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as `"1s 500ms"`.
    ///
    /// # Errors
    ///
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Reads `"250ms"`, `"30s"`, `"1m 30s"`.
    ///
    /// # Errors
    ///
    /// Text that is not a duration, naming the expected form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "invalid duration {text:?} ({e}); write it like \"250ms\", \"30s\" or \"1m 30s\""
            ))
        })
    }

    /// `#[serde(with = "staunch_core::settings::duration::option")]`: an optional duration.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes the duration in human form, or none.
        ///
        /// # Errors
        ///
        /// The serializer's.
        #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional duration in human form.
        ///
        /// # Errors
        ///
        /// Text that is not a duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Human(#[serde(with = "super")] Duration);
            Ok(Option::<Human>::deserialize(d)?.map(|Human(d)| d))
        }
    }
}

/// A settings type read from a table only; implemented by [`tables!`](crate::tables).
pub trait Table<'de>: Sized {
    /// What the table holds, for the "invalid type" message: `"a table of bulkhead settings"`.
    const WHAT: &'static str;

    /// The derived code, fed the table's entries.
    ///
    /// # Errors
    ///
    /// The derived code's.
    fn from_entries<D: Deserializer<'de>>(entries: D) -> Result<Self, D::Error>;
}

/// Reads a `T` from a map; anything else is an "invalid type" error naming what was expected.
///
/// # Errors
///
/// Anything but a map, or the entries' own errors.
pub fn table<'de, T: Table<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    struct OnlyMaps<T>(PhantomData<T>);

    impl<'de, T: Table<'de>> Visitor<'de> for OnlyMaps<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::WHAT)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::from_entries(MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_map(OnlyMaps(PhantomData))
}

/// A key that is not a setting of a tagged section's kind: "unknown field `size` for a time
/// window, expected one of `kind`, `duration`, `buckets`".
pub fn foreign_key<E: serde::de::Error>(
    key: &'static str,
    kind: &str,
    expected: &'static [&'static str],
) -> E {
    let expected: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
    E::custom(format_args!(
        "unknown field `{key}` for {kind}, expected one of {}",
        expected.join(", ")
    ))
}

/// Implements [`Table`], `Deserialize` (a table only) and, with `serialize`, `Serialize` over
/// the code `#[derive(Serialize, Deserialize)] #[serde(remote = "Self")]` generated:
///
/// ```ignore
/// staunch_core::tables! {
///     BreakerConfig: "a table of circuit breaker settings", serialize;
/// }
/// ```
#[macro_export]
macro_rules! tables {
    ($($ty:ident: $what:literal $(, $ser:ident)?;)*) => {$(
        impl<'de> $crate::settings::Table<'de> for $ty {
            const WHAT: &'static str = $what;

            fn from_entries<D>(entries: D) -> ::core::result::Result<Self, D::Error>
            where
                D: $crate::settings::__private::serde::Deserializer<'de>,
            {
                // The inherent function `remote = "Self"` derived, not this trait's.
                $ty::deserialize(entries)
            }
        }

        impl<'de> $crate::settings::__private::serde::Deserialize<'de> for $ty {
            fn deserialize<D>(d: D) -> ::core::result::Result<Self, D::Error>
            where
                D: $crate::settings::__private::serde::Deserializer<'de>,
            {
                $crate::settings::table(d)
            }
        }

        $($crate::tables!(@$ser $ty);)?
    )*};
    (@serialize $ty:ident) => {
        impl $crate::settings::__private::serde::Serialize for $ty {
            fn serialize<S>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error>
            where
                S: $crate::settings::__private::serde::Serializer,
            {
                $ty::serialize(self, s)
            }
        }
    };
}
