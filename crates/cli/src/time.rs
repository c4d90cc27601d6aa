//! Time arguments: `--start` and `--since`.
//!
//! People type times in a few ways; the server only ever sees RFC 3339 in
//! UTC. Parsing happens before any HTTP call so a typo never reaches the
//! server, and "now" is an argument so tests use fixed instants.
//!
//! * `--start`: an RFC 3339 time (`2026-11-24T09:00:00Z`, or with an
//!   offset), a delay from now (`+30m`, `in 1h30m`), or `now`.
//! * `--since`: a duration meaning "the last ..." (`1h`, `2d`), or an
//!   RFC 3339 time.
//!
//! Durations are a sequence of `<number><unit>` with units `s`, `m`, `h`,
//! `d`, `w`, e.g. `1h30m`.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::error::CliError;

/// An instant as the server wants it: RFC 3339, UTC, whole seconds.
pub(crate) fn to_wire(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses `--start`. `Ok(None)` means "start now" (sent as `null`).
pub(crate) fn parse_start(
    text: &str,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, CliError> {
    let invalid = || {
        CliError::InvalidArgument(format!(
            "invalid --start {text:?}: expected an RFC 3339 time like 2026-11-24T09:00:00Z, \
             a delay like +30m or \"in 1h\", or \"now\""
        ))
    };
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let delay = trimmed
        .strip_prefix('+')
        .or_else(|| strip_prefix_ignore_case(trimmed, "in "));
    if let Some(delay) = delay {
        let delay = parse_duration(delay.trim()).ok_or_else(invalid)?;
        return now.checked_add_signed(delay).map(Some).ok_or_else(invalid);
    }
    parse_rfc3339(trimmed).map(Some).ok_or_else(invalid)
}

/// Parses `--since`: either how far back to look, or a point in time.
pub(crate) fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CliError> {
    let invalid = || {
        CliError::InvalidArgument(format!(
            "invalid --since {text:?}: expected a duration like 1h (meaning the last hour) \
             or an RFC 3339 time like 2026-11-24T09:00:00Z"
        ))
    };
    let trimmed = text.trim();
    if let Some(back) = parse_duration(trimmed) {
        return now.checked_sub_signed(back).ok_or_else(invalid);
    }
    parse_rfc3339(trimmed).ok_or_else(invalid)
}

fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|instant| instant.with_timezone(&Utc))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `1h30m`-style durations; `None` if malformed, empty or absurdly large.
fn parse_duration(text: &str) -> Option<TimeDelta> {
    if text.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        let mut chars = rest[digits..].chars();
        let unit_seconds = match chars.next()? {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(unit_seconds)?)?;
        rest = chars.as_str();
    }
    TimeDelta::try_seconds(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap()
    }

    fn wire(result: Result<Option<DateTime<Utc>>, CliError>) -> Option<String> {
        result.unwrap().map(to_wire)
    }

    #[test]
    fn start_accepts_rfc3339_in_utc() {
        let start = parse_start("2026-11-24T09:00:00Z", now());
        assert_eq!(wire(start).as_deref(), Some("2026-11-24T09:00:00Z"));
    }

    #[test]
    fn start_with_an_offset_is_sent_in_utc() {
        let start = parse_start("2026-11-24T18:00:00+09:00", now());
        assert_eq!(wire(start).as_deref(), Some("2026-11-24T09:00:00Z"));
    }

    #[test]
    fn start_accepts_a_plus_delay() {
        let start = parse_start("+30m", now());
        assert_eq!(wire(start).as_deref(), Some("2026-11-24T08:30:00Z"));
    }

    #[test]
    fn start_accepts_in_and_a_compound_delay() {
        assert_eq!(
            wire(parse_start("in 1h", now())).as_deref(),
            Some("2026-11-24T09:00:00Z")
        );
        assert_eq!(
            wire(parse_start("In 1h30m", now())).as_deref(),
            Some("2026-11-24T09:30:00Z")
        );
    }

    #[test]
    fn start_now_means_no_scheduled_start() {
        assert_eq!(parse_start("now", now()).unwrap(), None);
    }

    #[test]
    fn garbage_start_is_a_clear_error() {
        for text in [
            "tomorrow",
            "+",
            "in ",
            "+30",
            "+30x",
            "2026-11-24",
            "in -5m",
            "",
        ] {
            let error = parse_start(text, now()).unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with("invalid --start"), "{message}");
            assert!(message.contains("RFC 3339"), "{message}");
            assert!(!message.contains('\n'));
        }
    }

    #[test]
    fn absurd_delay_is_an_error_not_an_overflow() {
        assert!(parse_start("+99999999999999999w", now()).is_err());
        assert!(parse_start("+9223372036854775807s", now()).is_err());
    }

    #[test]
    fn since_a_duration_means_the_last_stretch_of_time() {
        let since = parse_since("1h", now()).unwrap();
        assert_eq!(to_wire(since), "2026-11-24T07:00:00Z");
        let since = parse_since("2d", now()).unwrap();
        assert_eq!(to_wire(since), "2026-11-22T08:00:00Z");
    }

    #[test]
    fn since_accepts_rfc3339() {
        let since = parse_since("2026-11-01T00:00:00-05:00", now()).unwrap();
        assert_eq!(to_wire(since), "2026-11-01T05:00:00Z");
    }

    #[test]
    fn garbage_since_is_a_clear_error() {
        for text in ["yesterday", "1 hour", "h", "-1h", ""] {
            let message = parse_since(text, now()).unwrap_err().to_string();
            assert!(message.starts_with("invalid --since"), "{message}");
        }
    }
}
