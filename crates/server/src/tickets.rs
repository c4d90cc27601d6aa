//! Ticket systems: at request time elevate asks a configured change or
//! incident system whether the ticket named in the request is open.
//!
//! The HTTP contract (see `docs/automation.md`): `GET` the configured URL
//! with `{ticket}` replaced by the URL-encoded reference, with
//! `Authorization: Bearer TOKEN` when a token is configured and
//! `Accept: application/json`. The system answers
//! - `200` with a JSON object: the ticket is open when the boolean at
//!   `open_field` is `true`, or when the string at `status_field` is one of
//!   `open_values` (compared case-insensitively). Fields may be dotted
//!   paths into nested objects (`fields.status.name`).
//! - `404`: no such ticket.
//!
//! Anything else (another status, a redirect, a timeout, no connection, an
//! answer without the field) is "could not confirm", and the request is
//! refused: deny by default. The token is never logged or shown.

use std::time::Duration;

use elevate_core::values::{Name, Ticket};
use elevate_core::DomainError;
use serde::Serialize;
use serde_json::Value;

/// How to read a ticket system's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenWhen {
    /// The boolean at this field is `true`.
    Field(String),
    /// The string at this field is one of these (lowercased).
    Status { field: String, values: Vec<String> },
}

/// A ticket system as configured (`[[ticket_systems]]`).
#[derive(Clone)]
pub struct TicketSystemSettings {
    pub name: Name,
    /// Contains `{ticket}`.
    pub url: String,
    pub token: Option<String>,
    pub timeout: Duration,
    pub open_when: OpenWhen,
    /// A field whose text is recorded as the status, also with
    /// `OpenWhen::Field` (when given).
    pub status_field: Option<String>,
}

impl std::fmt::Debug for TicketSystemSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSystemSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("open_when", &self.open_when)
            .field("status_field", &self.status_field)
            .finish()
    }
}

/// A ticket system ready to be asked.
pub struct TicketSystem {
    pub settings: TicketSystemSettings,
    http: reqwest::Client,
}

/// What the ticket system said, recorded in the `request.created` event
/// as `ticket_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TicketAnswer {
    pub system: String,
    pub ticket: String,
    pub open: bool,
    /// The status text the system gave, when it gave one.
    pub status: Option<String>,
}

/// RFC 3986 percent-encoding of everything but the unreserved characters,
/// so a ticket reference can never change the URL's path or query.
pub fn encode_component(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value at a dotted path (`a.b.c`) of a JSON object.
fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl TicketSystem {
    pub fn new(settings: TicketSystemSettings) -> Result<TicketSystem, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect could carry the token elsewhere; the contract is
            // one GET that answers.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("ticket system {}: {e}", settings.name))?;
        Ok(TicketSystem { settings, http })
    }

    /// The URL asked for `ticket`.
    pub fn url_for(&self, ticket: &Ticket) -> String {
        self.settings
            .url
            .replace("{ticket}", &encode_component(ticket.as_str()))
    }

    /// Asks whether `ticket` is open. `Ok` only for an open ticket; the
    /// error says why not (closed, unknown, or the system could not be
    /// asked), with a stable code.
    pub async fn confirm_open(&self, ticket: &Ticket) -> Result<TicketAnswer, DomainError> {
        let system = self.settings.name.to_string();
        let unavailable = |reason: String| DomainError::TicketSystemUnavailable {
            system: system.clone(),
            ticket: ticket.as_str().to_owned(),
            reason,
        };
        // "." and ".." would be read as path steps, even percent-encoded
        // (URL parsers treat %2E%2E as ".."), and name no ticket anyway.
        if ticket.as_str().trim_matches('.').is_empty() {
            return Err(DomainError::TicketUnknown {
                system,
                ticket: ticket.as_str().to_owned(),
            });
        }
        let mut call = self
            .http
            .get(self.url_for(ticket))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.settings.token {
            call = call.bearer_auth(token);
        }
        let response = call.send().await.map_err(|e| {
            let reason = if e.is_timeout() {
                format!("no answer within {}s", self.settings.timeout.as_secs_f64())
            } else if e.is_connect() {
                "cannot connect".to_owned()
            } else {
                "the call failed".to_owned()
            };
            // Without the URL, which may carry a key.
            let error = e.to_string();
            let error = match e.url() {
                Some(u) => error.replace(u.as_str(), "(url)"),
                None => error,
            };
            tracing::warn!(system = %self.settings.name, ticket = %ticket.as_str(), %error, "ticket system not reachable; request refused");
            unavailable(reason)
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(DomainError::TicketUnknown {
                system,
                ticket: ticket.as_str().to_owned(),
            });
        }
        if !status.is_success() {
            tracing::warn!(system = %self.settings.name, ticket = %ticket.as_str(), %status, "ticket system answered with an error; request refused");
            return Err(unavailable(format!("it answered HTTP {}", status.as_u16())));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| unavailable("its answer is not JSON".into()))?;
        let status_text = self
            .settings
            .status_field
            .as_deref()
            .and_then(|f| at_path(&body, f))
            .and_then(text_of);
        let open = match &self.settings.open_when {
            OpenWhen::Field(field) => match at_path(&body, field) {
                Some(Value::Bool(b)) => *b,
                _ => {
                    return Err(unavailable(format!(
                        "its answer has no boolean \"{field}\""
                    )))
                }
            },
            OpenWhen::Status { field, values } => match status_text.as_deref() {
                Some(s) => values.contains(&s.to_lowercase()),
                None => return Err(unavailable(format!("its answer has no status \"{field}\""))),
            },
        };
        if !open {
            return Err(DomainError::TicketNotOpen {
                system,
                ticket: ticket.as_str().to_owned(),
                status: status_text.unwrap_or_else(|| "closed".into()),
            });
        }
        Ok(TicketAnswer {
            system,
            ticket: ticket.as_str().to_owned(),
            open,
            status: status_text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_references_are_encoded_so_they_stay_one_path_segment() {
        assert_eq!(encode_component("CHG-123"), "CHG-123");
        assert_eq!(encode_component("../admin?x=1"), "..%2Fadmin%3Fx%3D1");
        assert_eq!(encode_component("変更 1"), "%E5%A4%89%E6%9B%B4%201");
    }

    #[test]
    fn dotted_paths_reach_into_nested_objects() {
        let v = serde_json::json!({"fields": {"status": {"name": "Open"}}, "open": true});
        assert_eq!(
            at_path(&v, "fields.status.name").and_then(text_of),
            Some("Open".into())
        );
        assert_eq!(at_path(&v, "open"), Some(&Value::Bool(true)));
        assert_eq!(at_path(&v, "fields.nope"), None);
    }
}
