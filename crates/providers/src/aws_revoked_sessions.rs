//! The inline role policies that cut off the sessions of grants ended
//! early (`revoke_sessions = true` on an `aws-sts` target).
//!
//! STS credentials cannot be recalled; a deny in the role's own policy
//! stops them working. AWS's "revoke active sessions" denies every session
//! of the role issued before a moment, other people's included. elevate
//! tags each session it issues with `elevate-request` (the grant's request
//! id), so a deny can name exactly the grant that was revoked:
//!
//! ```json
//! {"Sid": "ElevateRevoked", "Effect": "Deny", "Action": "*", "Resource": "*",
//!  "Condition": {"StringEquals": {"aws:PrincipalTag/elevate-request": "r-…"}}}
//! ```
//!
//! Each revoked grant gets an inline policy of its own, named
//! `elevate-revoked-<until>-<request id>`. IAM has no conditional write,
//! so one shared document edited by several replicas (or read back from
//! an eventually consistent IAM) could lose a revocation; a policy per
//! grant is written whole, once, and writing it again changes nothing.
//! `<until>` is when every session of the grant has expired (the earlier
//! of the grant's window end and `max_session` after the revocation, plus
//! [`GRACE`]): policies past it are deleted when the next revocation on
//! the role is written, so a role carries only the denies still needed.

use chrono::{DateTime, Duration, NaiveDateTime, Timelike, Utc};
use serde_json::json;

/// The start of the name of every policy elevate writes for this.
pub const POLICY_PREFIX: &str = "elevate-revoked-";
/// The session tag naming the grant (set on every `AssumeRole`).
pub const REQUEST_TAG: &str = "elevate-request";
/// Sessions are bounded by the grant's window on elevate's clock; AWS's
/// clock and the call's latency may put an expiry a little later. A deny
/// is kept this long past the window.
pub const GRACE: Duration = Duration::minutes(15);
const UNTIL_FORMAT: &str = "%Y%m%dT%H%MZ";

/// When the deny for a grant whose window ends at `window_end` may go:
/// every session it could match has expired by then (to the minute,
/// rounded up).
pub fn until(window_end: DateTime<Utc>) -> DateTime<Utc> {
    let t = window_end + GRACE + Duration::minutes(1);
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// `t` rounded up to the hour.
pub fn until_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let down = t
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t);
    if down == t {
        t
    } else {
        down + Duration::hours(1)
    }
}

/// The account id in an IAM ARN (`arn:aws:iam::ACCOUNT:role/…`).
pub fn account_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// The policy's name: IAM allows `[A-Za-z0-9+=,.@_-]`, up to 128
/// characters; anything else in the id (elevate's ids have none) becomes
/// `_`.
pub fn policy_name(request_id: &str, until: DateTime<Utc>) -> String {
    let id: String = request_id
        .chars()
        .take(96)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{POLICY_PREFIX}{}-{id}", until.format(UNTIL_FORMAT))
}

/// Whether `name` is a policy elevate wrote for `request_id`.
pub fn is_for(name: &str, request_id: &str) -> bool {
    until_of(name).is_some() && {
        let any_until = policy_name(request_id, DateTime::<Utc>::UNIX_EPOCH);
        let suffix = &any_until[POLICY_PREFIX.len() + 14..];
        name.len() == POLICY_PREFIX.len() + 14 + suffix.len() && name.ends_with(suffix)
    }
}

/// The `until` of a policy elevate wrote; `None` for any other policy.
pub fn until_of(name: &str) -> Option<DateTime<Utc>> {
    let rest = name.strip_prefix(POLICY_PREFIX)?;
    let stamp = rest.get(..14)?;
    NaiveDateTime::parse_from_str(stamp, UNTIL_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// Whether `name` is a policy of elevate's that no session needs any more.
pub fn expired(name: &str, now: DateTime<Utc>) -> bool {
    until_of(name).is_some_and(|until| until <= now)
}

/// The policy document denying every session tagged with `tag` (the
/// request id as it was put on the sessions).
pub fn document(tag: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ElevateRevoked",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"StringEquals": {format!("aws:PrincipalTag/{REQUEST_TAG}"): tag}},
        }],
    })
    .to_string()
}

/// IAM returns policy documents URL-encoded (RFC 3986); an emulator may
/// not. A document is JSON, so one that does not start with `{` is
/// decoded.
pub fn decode_document(raw: &str) -> String {
    if raw.trim_start().starts_with('{') {
        return raw.to_owned();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The role name IAM's role-policy calls take, from
/// `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
pub fn role_name(arn: &str) -> Option<&str> {
    let (_, rest) = arn.split_once(":role/")?;
    rest.rsplit('/').next().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_deny_outlives_the_window_by_the_grace_rounded_up_to_the_minute() {
        let end = at("2026-12-02T14:05:30Z");
        let until = until(end);
        assert_eq!(until, at("2026-12-02T14:21:00Z"));
        assert!(until >= end + GRACE);
        let name = policy_name("r-abc123", until);
        assert_eq!(name, "elevate-revoked-20261202T1421Z-r-abc123");
        assert_eq!(until_of(&name), Some(until));
        assert!(!expired(&name, at("2026-12-02T14:20:59Z")));
        assert!(expired(&name, at("2026-12-02T14:21:00Z")));
    }

    #[test]
    fn hours_round_up_and_accounts_come_from_the_arn() {
        assert_eq!(
            until_hour(at("2026-12-02T14:05:30Z")),
            at("2026-12-02T15:00:00Z")
        );
        assert_eq!(
            until_hour(at("2026-12-02T14:00:00Z")),
            at("2026-12-02T14:00:00Z")
        );
        assert_eq!(
            account_of("arn:aws:iam::111122223333:role/Admin"),
            Some("111122223333")
        );
        assert_eq!(account_of("arn:aws:iam:::role/Admin"), None);
        assert_eq!(account_of("Admin"), None);
    }

    #[test]
    fn a_policy_is_known_by_its_request_whatever_its_until() {
        let name = policy_name("r-abc", at("2026-12-02T14:21:00Z"));
        assert!(is_for(&name, "r-abc"));
        assert!(!is_for(&name, "r-ab"));
        assert!(!is_for(&name, "c"));
        assert!(!is_for("Operators-r-abc", "r-abc"));
    }

    #[test]
    fn other_policies_are_never_taken_for_elevate_s() {
        for name in [
            "Operators",
            "elevate-revoked-",
            "elevate-revoked-soon-r-1",
            "elevate-revoked-2026120X-r-1",
        ] {
            assert_eq!(until_of(name), None, "{name}");
            assert!(!expired(name, at("2030-01-01T00:00:00Z")), "{name}");
        }
    }

    #[test]
    fn names_keep_to_iam_s_characters_and_length() {
        let until = at("2026-12-02T14:21:00Z");
        let name = policy_name("r-1/../é x", until);
        assert_eq!(name, "elevate-revoked-20261202T1421Z-r-1_..___x");
        let long = policy_name(&"r".repeat(400), until);
        assert!(long.len() <= 128, "{}", long.len());
        assert!(long
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)));
    }

    #[test]
    fn the_document_denies_everything_to_sessions_with_the_request_tag() -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_str(&document("r-abc")).map_err(|e| e.to_string())?;
        let s = &v["Statement"][0];
        assert_eq!(v["Version"], "2012-10-17");
        assert_eq!(s["Effect"], "Deny");
        assert_eq!(s["Action"], "*");
        assert_eq!(s["Resource"], "*");
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:PrincipalTag/elevate-request"],
            "r-abc"
        );
        Ok(())
    }

    #[test]
    fn documents_are_decoded_when_url_encoded() {
        let doc = r#"{"Statement": [{"Sid": "A b+c"}]}"#;
        assert_eq!(decode_document(doc), doc);
        let encoded = "%7B%22Statement%22%3A%20%5B%7B%22Sid%22%3A%20%22A%20b%2Bc%22%7D%5D%7D";
        assert_eq!(decode_document(encoded), doc);
        // A stray percent sign is kept, not a panic.
        assert_eq!(decode_document("%7B%zz%"), "{%zz%");
    }

    #[test]
    fn role_names_come_from_the_arn_without_the_path() {
        assert_eq!(
            role_name("arn:aws:iam::111122223333:role/Admin"),
            Some("Admin")
        );
        assert_eq!(
            role_name("arn:aws:iam::111122223333:role/teams/ops/Admin"),
            Some("Admin")
        );
        assert_eq!(role_name("arn:aws:iam::111122223333:user/Admin"), None);
        assert_eq!(role_name("arn:aws:iam::111122223333:role/"), None);
    }
}
