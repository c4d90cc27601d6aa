//! The inline role policy that cuts off the sessions of grants ended
//! early (`revoke_sessions = true` on an `aws-sts` target).
//!
//! STS credentials cannot be recalled; a deny in the role's own policy
//! stops them working. AWS's "revoke active sessions" denies every session
//! of the role issued before a moment, other people's included. elevate
//! tags each session it issues with `elevate-request` (the grant's request
//! id), so the deny names exactly the grants that were revoked:
//!
//! ```json
//! {"Sid": "ElevateRevoked2026120214", "Effect": "Deny", "Action": "*", "Resource": "*",
//!  "Condition": {"StringEquals": {"aws:PrincipalTag/elevate-request": ["r-…", "r-…"]}}}
//! ```
//!
//! One statement per hour of revocations (the `Sid` carries the hour), so
//! the policy stays small; a statement is dropped once every session it
//! could match has expired (AWS caps a role session at 12 hours).
//! Statements of other `Sid`s in the policy are kept as they are.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

/// The name of elevate's inline policy on each role.
pub const POLICY_NAME: &str = "elevate-revoked-sessions";
/// The session tag naming the grant (set on every `AssumeRole`).
pub const REQUEST_TAG: &str = "elevate-request";
const SID_PREFIX: &str = "ElevateRevoked";
/// A role session lasts at most 12 hours (AWS's cap on a role's maximum
/// session duration); one more hour covers the statement's own hour.
const KEEP: Duration = Duration::hours(13);

fn condition_key() -> String {
    format!("aws:PrincipalTag/{REQUEST_TAG}")
}

/// The hour a statement of ours stands for, from its `Sid`.
fn hour_of(sid: &str) -> Option<DateTime<Utc>> {
    let digits = sid.strip_prefix(SID_PREFIX)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let naive =
        chrono::NaiveDateTime::parse_from_str(&format!("{digits}0000"), "%Y%m%d%H%M%S").ok()?;
    Some(naive.and_utc())
}

fn sid_for(now: DateTime<Utc>) -> String {
    format!("{SID_PREFIX}{}", now.format("%Y%m%d%H"))
}

/// The request ids a statement of ours denies.
fn ids_of(statement: &Value) -> Vec<&str> {
    match &statement["Condition"]["StringEquals"][condition_key()] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The statements of a policy document; `Statement` may be one object or
/// a list.
fn statements(doc: &Value) -> Result<Vec<Value>, String> {
    match &doc["Statement"] {
        Value::Array(items) => Ok(items.clone()),
        Value::Object(_) => Ok(vec![doc["Statement"].clone()]),
        Value::Null => Ok(Vec::new()),
        _ => Err("its Statement is neither a statement nor a list".into()),
    }
}

fn parse(doc: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(doc).map_err(|e| format!("it is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("it is not a JSON object".into());
    }
    Ok(v)
}

/// Whether the policy denies the sessions of `request_id`.
pub fn denies(doc: &str, request_id: &str) -> bool {
    let Ok(v) = parse(doc) else {
        return false;
    };
    statements(&v).is_ok_and(|all| {
        all.iter().any(|s| {
            s["Effect"] == "Deny"
                && s["Sid"].as_str().and_then(hour_of).is_some()
                && ids_of(s).contains(&request_id)
        })
    })
}

/// The policy with `request_id`'s sessions denied and statements older
/// than any live session dropped; `None` when it already denies them
/// (nothing to write). `current` is the policy as read (`None`: the role
/// has none yet). An error says why the current policy cannot be used.
pub fn with_revoked(
    current: Option<&str>,
    request_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, String> {
    if current.is_some_and(|doc| denies(doc, request_id)) {
        return Ok(None);
    }
    let mut doc = match current {
        Some(text) => parse(text)?,
        None => json!({"Version": "2012-10-17"}),
    };
    let sid = sid_for(now);
    let mut kept = Vec::new();
    let mut added = false;
    for mut s in statements(&doc)? {
        let ours = s["Sid"].as_str().and_then(hour_of);
        match ours {
            Some(hour) if hour + KEEP < now => continue,
            Some(_) if s["Sid"] == sid.as_str() => {
                let mut ids: Vec<Value> = ids_of(&s).into_iter().map(Value::from).collect();
                ids.push(Value::from(request_id));
                s["Condition"] = condition(ids);
                added = true;
            }
            _ => {}
        }
        kept.push(s);
    }
    if !added {
        kept.push(json!({
            "Sid": sid,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": condition(vec![Value::from(request_id)]),
        }));
    }
    let Some(object) = doc.as_object_mut() else {
        return Err("it is not a JSON object".into());
    };
    object.insert("Statement".into(), Value::Array(kept));
    serde_json::to_string(&doc)
        .map(Some)
        .map_err(|e| format!("cannot write it: {e}"))
}

fn condition(ids: Vec<Value>) -> Value {
    let mut equals = Map::new();
    equals.insert(condition_key(), Value::Array(ids));
    json!({ "StringEquals": equals })
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
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
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

/// The role name PutRolePolicy takes, from `arn:aws:iam::ACCOUNT:role/PATH/NAME`.
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

    fn parsed(doc: &str) -> Value {
        serde_json::from_str(doc).unwrap_or(Value::Null)
    }

    #[test]
    fn a_first_revocation_creates_a_deny_naming_the_request() {
        let now = at("2026-12-02T14:05:00Z");
        let doc = with_revoked(None, "r-abc", now)
            .ok()
            .flatten()
            .unwrap_or_default();
        let v = parsed(&doc);
        assert_eq!(v["Version"], "2012-10-17");
        let s = &v["Statement"][0];
        assert_eq!(s["Sid"], "ElevateRevoked2026120214");
        assert_eq!(s["Effect"], "Deny");
        assert_eq!(s["Action"], "*");
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:PrincipalTag/elevate-request"],
            json!(["r-abc"])
        );
        assert!(denies(&doc, "r-abc"));
        assert!(!denies(&doc, "r-other"));
    }

    #[test]
    fn revocations_in_one_hour_share_a_statement_and_repeats_write_nothing() {
        let now = at("2026-12-02T14:05:00Z");
        let one = with_revoked(None, "r-1", now)
            .ok()
            .flatten()
            .unwrap_or_default();
        let two = with_revoked(Some(&one), "r-2", now + Duration::minutes(30))
            .ok()
            .flatten()
            .unwrap_or_default();
        let v = parsed(&two);
        assert_eq!(v["Statement"].as_array().map(Vec::len), Some(1));
        assert!(denies(&two, "r-1") && denies(&two, "r-2"));
        assert_eq!(with_revoked(Some(&two), "r-1", now), Ok(None));
        // The next hour gets its own statement.
        let three = with_revoked(Some(&two), "r-3", now + Duration::hours(1))
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(
            parsed(&three)["Statement"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn statements_older_than_any_session_are_dropped_and_others_kept() {
        let foreign =
            json!({"Sid": "Operators", "Effect": "Deny", "Action": "s3:*", "Resource": "*"});
        let old = json!({"Sid": "ElevateRevoked2026120100", "Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/elevate-request": "r-old"}}});
        let recent = json!({"Sid": "ElevateRevoked2026120204", "Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalTag/elevate-request": ["r-recent"]}}});
        let current =
            json!({"Version": "2012-10-17", "Statement": [foreign, old, recent]}).to_string();
        // 2026-12-01 00:00 + 13 h has passed; 04:00 + 13 h has not.
        let now = at("2026-12-02T14:05:00Z");
        assert!(denies(&current, "r-old"), "a single string is read too");
        let doc = with_revoked(Some(&current), "r-new", now)
            .ok()
            .flatten()
            .unwrap_or_default();
        let sids: Vec<String> = parsed(&doc)["Statement"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["Sid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            sids,
            [
                "Operators",
                "ElevateRevoked2026120204",
                "ElevateRevoked2026120214"
            ]
        );
        assert!(denies(&doc, "r-recent") && denies(&doc, "r-new") && !denies(&doc, "r-old"));
    }

    #[test]
    fn a_policy_that_is_not_a_policy_is_refused_with_the_reason() {
        let now = at("2026-12-02T14:05:00Z");
        assert!(with_revoked(Some("not json"), "r-1", now).is_err());
        assert!(with_revoked(Some("[1]"), "r-1", now).is_err());
        assert!(with_revoked(Some(r#"{"Statement": 3}"#), "r-1", now).is_err());
        // A policy with no statements yet is fine.
        assert!(with_revoked(Some(r#"{"Version": "2012-10-17"}"#), "r-1", now).is_ok());
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
