//! Times as the API shows and takes them: RFC 3339 in UTC (`2025-01-31T12:00:00Z`), the same
//! in every route; inputs also take Unix seconds, for scripts that compute them.

use crate::error::ApiError;
use std::time::{Duration, UNIX_EPOCH};

/// The last second RFC 3339 can write (9999-12-31T23:59:59Z): later times are refused as
/// inputs and shown as this one.
pub(crate) const LATEST: i64 = 253_402_300_799;

/// `unix_seconds` as `2025-01-31T12:00:00Z`.
pub(crate) fn rfc3339(unix_seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(unix_seconds.clamp(0, LATEST) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `unix_ms` as `2025-01-31T12:00:00.123Z`, for the request log's finer times.
pub(crate) fn rfc3339_millis(unix_ms: i64) -> String {
    let ms = unix_ms.clamp(0, LATEST * 1000 + 999);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

/// A time in a request body: an RFC 3339 string or a number of Unix seconds.
#[derive(Debug, Clone)]
pub(crate) enum TimeInput {
    UnixSeconds(i64),
    Text(String),
}

impl<'de> serde::Deserialize<'de> for TimeInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimeInputVisitor)
    }
}

/// Reads either shape, and says which two are expected when neither comes (an untagged
/// enum would only say that no variant matched).
struct TimeInputVisitor;

impl serde::de::Visitor<'_> for TimeInputVisitor {
    type Value = TimeInput;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a UTC time such as \"2030-01-31T12:00:00Z\" or Unix seconds")
    }

    fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<TimeInput, E> {
        Ok(TimeInput::UnixSeconds(seconds))
    }

    fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<TimeInput, E> {
        i64::try_from(seconds)
            .map(TimeInput::UnixSeconds)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(seconds), &self))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TimeInput, E> {
        Ok(TimeInput::Text(text.to_owned()))
    }
}

impl TimeInput {
    /// The time in Unix seconds; `field` names it in the error.
    pub(crate) fn unix_seconds(&self, field: &str) -> Result<i64, ApiError> {
        match self {
            Self::UnixSeconds(seconds) if *seconds > LATEST => Err(ApiError::BadRequest(format!(
                "`{field}` is after 9999-12-31T23:59:59Z ({LATEST} in Unix seconds)"
            ))),
            Self::UnixSeconds(seconds) => Ok(*seconds),
            Self::Text(text) => parse_rfc3339(text).map(|ms| ms.div_euclid(1000)).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{field}` must be a UTC time such as `2030-01-31T12:00:00Z` or Unix seconds"
                ))
            }),
        }
    }
}

/// `text` (RFC 3339 in UTC: `Z` or no offset) in Unix milliseconds; `None` if it is not such
/// a time.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    let since_epoch = time.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc_with_and_without_milliseconds() {
        assert_eq!(rfc3339(1_738_324_800), "2025-01-31T12:00:00Z");
        assert_eq!(rfc3339_millis(1_738_324_800_123), "2025-01-31T12:00:00.123Z");
        // Never a time before the epoch or after 9999, whatever a row holds (past 9999 the
        // formatter fails, which `to_string` turns into a panic).
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(LATEST), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(LATEST + 1), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn inputs_take_rfc3339_or_unix_seconds_and_name_the_field_otherwise() {
        let parse = |json: &str| serde_json::from_str::<TimeInput>(json).expect("a time input");
        assert_eq!(parse("1738324800").unix_seconds("at").ok(), Some(1_738_324_800));
        assert_eq!(
            parse("\"2025-01-31T12:00:00Z\"").unix_seconds("at").ok(),
            Some(1_738_324_800)
        );
        let error = parse("253402300800")
            .unix_seconds("expiresAt")
            .expect_err("year 10000");
        assert!(error.to_string().contains("after 9999"), "{error}");
        let error = parse("\"tomorrow\"")
            .unix_seconds("expiresAt")
            .expect_err("not a time");
        assert!(error.to_string().contains("`expiresAt`"), "{error}");
        assert_eq!(parse_rfc3339("2025-01-31T12:00:00.5Z"), Some(1_738_324_800_500));
        let wrong_type = serde_json::from_str::<TimeInput>("true").expect_err("a boolean");
        assert!(
            wrong_type.to_string().contains("a UTC time such as"),
            "{wrong_type}"
        );
        // Another offset is refused rather than read as UTC.
        assert_eq!(parse_rfc3339("2025-01-31T12:00:00+02:00"), None);
    }
}
