//! Durations written as strings: `250ms`, `0.25s`, `5s`, `1m`, `1h`.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every duration error shows, so users see the accepted form.
pub const DURATION_HINT: &str = "expected e.g. 250ms, 0.25s, 5s, 1m, 1h";

/// A `std::time::Duration` read from a string with a unit (ms, s, m, h).
///
/// `Deref`s to `Duration`. A zero duration means "disabled" wherever the
/// format documents that; [`ConfigDuration::non_zero`] expresses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// `None` for `0s` (the "disabled" value), else the duration.
    pub fn non_zero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl Deref for ConfigDuration {
    type Target = Duration;

    fn deref(&self) -> &Duration {
        &self.0
    }
}

impl From<Duration> for ConfigDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<ConfigDuration> for Duration {
    fn from(d: ConfigDuration) -> Self {
        d.0
    }
}

/// Parses `<integer or decimal><unit>` with unit one of ms, s, m, h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: {DURATION_HINT}");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let unit_nanos: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return Err(bad()),
    };
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    let valid_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !valid_digits(int_part) || !valid_digits(frac_part) {
        return Err(bad());
    }
    if number.ends_with('.') || frac_part.len() > 9 {
        return Err(bad());
    }
    let int: u128 = int_part.parse().map_err(|_| bad())?;
    let mut nanos = int.checked_mul(unit_nanos).ok_or_else(bad)?;
    let mut scale = unit_nanos;
    for digit in frac_part.bytes() {
        scale /= 10;
        nanos += u128::from(digit - b'0') * scale;
    }
    if scale == 0 && frac_part.bytes().any(|d| d != b'0') {
        return Err(format!(
            "invalid duration {text:?}: finer than a nanosecond"
        ));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    let sub = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// The shortest exact rendering, so `/config_dump` round-trips.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000 * MS;
    for (unit, size) in [("h", 3_600 * S), ("m", 60 * S), ("s", S), ("ms", MS)] {
        if nanos.is_multiple_of(size) {
            return format!("{}{unit}", nanos / size);
        }
    }
    let whole = nanos / S;
    let frac = format!("{:09}", nanos % S);
    format!("{whole}.{}s", frac.trim_end_matches('0'))
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = ConfigDuration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration string ({DURATION_HINT})")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
        parse_duration(v).map(ConfigDuration).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigDuration, E> {
        Err(E::custom(plain_number(&v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigDuration, E> {
        Err(E::custom(plain_number(&v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigDuration, E> {
        Err(E::custom(plain_number(&v.to_string())))
    }
}

fn plain_number(v: &str) -> String {
    format!("invalid duration {v}: a plain number has no unit; {DURATION_HINT}")
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)$",
            "description": "A duration: integer or decimal number followed by ms, s, m or h.",
            "examples": ["250ms", "0.25s", "5s", "1m", "1h"]
        })
    }
}

#[cfg(test)]
#[path = "duration_tests.rs"]
mod tests;
