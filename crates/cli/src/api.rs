//! What the server answers, as the client reads it.
//!
//! Deliberately lenient: every struct defaults missing fields and ignores
//! unknown ones, states and kinds stay strings, and times keep their raw text
//! next to the parsed instant. A newer server that adds a field, a state or
//! a slightly different time format must not break an older CLI; the worst
//! case is a blank or raw cell in a table.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// A time from the server: parsed when it is RFC 3339, raw text otherwise.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "String")]
pub(crate) struct Timestamp {
    pub(crate) raw: String,
    pub(crate) instant: Option<DateTime<Utc>>,
}

impl From<String> for Timestamp {
    fn from(raw: String) -> Self {
        let instant = DateTime::parse_from_rfc3339(raw.trim())
            .ok()
            .map(|instant| instant.with_timezone(&Utc));
        Self { raw, instant }
    }
}

/// `GET /me`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Me {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) email: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) display_name: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) groups: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) admin: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) auditor: bool,
    /// How this call was authenticated; absent from older servers.
    pub(crate) auth: Option<AuthView>,
}

/// `GET /me`'s `auth`: how the caller proved who they are, and until when.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuthView {
    /// "token", "oidc" or "session".
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) method: String,
    pub(crate) issuer: Option<String>,
    pub(crate) expires_at: Option<Timestamp>,
    /// The authentication context the identity provider vouched for.
    pub(crate) acr: Option<String>,
    /// The authentication methods used (`pwd`, `otp`, `hwk`, ...).
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) amr: Vec<String>,
    pub(crate) auth_time: Option<Timestamp>,
}

/// `GET /eligible`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EligibleList {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) eligible: Vec<Eligible>,
    /// How many match in all (more than `eligible` holds when paged).
    pub(crate) total: Option<u64>,
}

/// One thing the caller may request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Eligible {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) target: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) target_kind: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) dry_run: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) resource: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) resource_path: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) role: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) max_duration: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) approval_required: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) ticket_required: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) break_glass: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) eligibility: String,
    pub(crate) not_after: Option<Timestamp>,
}

/// `GET /requests`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RequestList {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) requests: Vec<RequestView>,
}

/// `GET /grants`: the same view as requests, for those that were granted.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GrantList {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) grants: Vec<RequestView>,
}

/// A request (or extension request) and where it stands. `attempts`,
/// `events` and `extensions` are only filled by `GET /requests/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RequestView {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) kind: String,
    pub(crate) extends: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) requester: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) target: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) target_kind: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) dry_run: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) resource: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) resource_path: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) role: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) justification: String,
    pub(crate) ticket: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) duration: String,
    pub(crate) requested_start: Option<Timestamp>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) break_glass: bool,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) review: String,
    pub(crate) created_at: Option<Timestamp>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) state: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) status: String,
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) starts_at: Option<Timestamp>,
    pub(crate) ends_at: Option<Timestamp>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) approvals: Vec<Approval>,
    pub(crate) quorum: Option<u64>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) approvers: Vec<String>,
    pub(crate) decided_by: Option<String>,
    pub(crate) decision_comment: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) attempts: Vec<Attempt>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) events: Vec<AuditEvent>,
    /// Extension requests of this grant; sent by `GET /requests/{id}`
    /// beyond the documented contract, shown when present.
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) extensions: Vec<RequestView>,
}

/// One approval given to a request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Approval {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) by: String,
    pub(crate) at: Option<Timestamp>,
    pub(crate) comment: Option<String>,
}

/// One attempt to apply or remove a grant on its target.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Attempt {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) kind: String,
    pub(crate) at: Option<Timestamp>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) outcome: String,
    pub(crate) error: Option<String>,
}

/// `GET /audit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditList {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) events: Vec<AuditEvent>,
}

/// One link of the hash-chained audit trail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditEvent {
    pub(crate) seq: Value,
    pub(crate) at: Option<Timestamp>,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) actor: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) action: String,
    pub(crate) request: Option<String>,
    pub(crate) details: Value,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) prev_hash: String,
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) hash: String,
}

/// `GET /audit/verify`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuditVerification {
    #[serde(deserialize_with = "null_as_default")]
    pub(crate) ok: bool,
    pub(crate) events: Value,
    pub(crate) head: Option<String>,
    pub(crate) broken_at: Value,
    pub(crate) problem: Option<String>,
}

/// Reads `null` like a missing field, so a server that sends `null` for an
/// empty string or list does not break the client.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// `value` read as `T`, or a protocol error naming what was expected.
pub(crate) fn read<T: serde::de::DeserializeOwned>(
    value: &Value,
    what: &str,
) -> Result<T, crate::CliError> {
    T::deserialize(value).map_err(|error| {
        crate::CliError::Protocol(format!(
            "cannot read {what}: {}",
            crate::text::one_line(&error.to_string())
        ))
    })
}

/// A number or string from the server shown as text; blank when absent.
pub(crate) fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_view_tolerates_missing_and_unknown_fields() {
        let view: RequestView = read(
            &json!({"id": "r-1", "state": "pending", "colour": "blue", "quorum": 2}),
            "request",
        )
        .unwrap();
        assert_eq!(view.id, "r-1");
        assert_eq!(view.quorum, Some(2));
        assert!(view.approvals.is_empty());
        assert_eq!(view.ends_at, None);
    }

    #[test]
    fn nulls_are_read_as_absent() {
        let view: RequestView = read(
            &json!({"id": "r-1", "ticket": null, "ends_at": null, "resource_path": null, "approvals": null}),
            "request",
        )
        .unwrap();
        assert_eq!(view.ticket, None);
        assert_eq!(view.ends_at, None);
    }

    #[test]
    fn unparseable_times_keep_their_text() {
        let view: RequestView = read(&json!({"ends_at": "soonish"}), "request").unwrap();
        let ends_at = view.ends_at.unwrap();
        assert_eq!(ends_at.raw, "soonish");
        assert_eq!(ends_at.instant, None);
    }

    #[test]
    fn a_wrongly_typed_field_is_a_protocol_error() {
        let error = read::<Me>(&json!({"groups": "dba"}), "your identity").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("unexpected answer from elevate: cannot read your identity"));
    }
}
