//! Which HTTP call each command makes.
//!
//! Every client command but `login` and `logout` (see `login`) is exactly
//! one call. Working it out is a pure
//! function of the command and "now", so argument mistakes (a bad time)
//! surface before any network traffic, and the mapping to the API is tested
//! without a server.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::args::{AuditAction, ClientCommand, TargetsAction};
use crate::error::CliError;
use crate::time::{parse_since, parse_start, to_wire};

/// One call to the API, relative to `{url}/api/v1`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Path segments, each encoded on its own.
    pub(crate) path: Vec<String>,
    pub(crate) query: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Method {
    /// A JSON answer.
    Get,
    /// Line-delimited JSON copied to the output as it arrives.
    GetStream,
    Post(Value),
}

impl Call {
    fn get(path: &[&str]) -> Self {
        Self {
            method: Method::Get,
            path: segments(path),
            query: Vec::new(),
        }
    }

    fn post(path: &[&str], body: Value) -> Self {
        Self {
            method: Method::Post(body),
            path: segments(path),
            query: Vec::new(),
        }
    }

    fn query(mut self, name: &str, value: impl Into<String>) -> Self {
        self.query.push((name.to_string(), value.into()));
        self
    }
}

fn segments(path: &[&str]) -> Vec<String> {
    path.iter().map(|segment| segment.to_string()).collect()
}

/// A body holding `comment` only when one was given: absent and `null` mean
/// the same to the server's optional field, and absent also suits a server
/// that defaults a missing string.
fn comment_body(comment: Option<&String>) -> Value {
    let mut body = Map::new();
    if let Some(comment) = comment {
        body.insert("comment".to_string(), Value::String(comment.clone()));
    }
    Value::Object(body)
}

/// A session body holding `duration` only when one was given.
fn duration_body(duration: Option<&String>) -> Value {
    let mut body = Map::new();
    if let Some(duration) = duration {
        body.insert("duration".to_string(), Value::String(duration.clone()));
    }
    Value::Object(body)
}

/// The call `command` makes, or why its arguments are wrong.
pub(crate) fn plan(command: &ClientCommand, now: DateTime<Utc>) -> Result<Call, CliError> {
    let call = match command {
        ClientCommand::Request {
            target,
            resource,
            role,
            duration,
            start,
            reason,
            ticket,
            break_glass,
        } => {
            let start = match start {
                Some(start) => parse_start(start, now)?.map(to_wire),
                None => None,
            };
            Call::post(
                &["requests"],
                json!({
                    "target": target,
                    "resource": resource,
                    "role": role,
                    "duration": duration,
                    "start": start,
                    "reason": reason,
                    "ticket": ticket,
                    "break_glass": break_glass,
                }),
            )
        }
        ClientCommand::Approve { id, comment } => {
            Call::post(&["requests", id, "approve"], comment_body(comment.as_ref()))
        }
        ClientCommand::Reject { id, comment } => {
            Call::post(&["requests", id, "reject"], comment_body(Some(comment)))
        }
        ClientCommand::Cancel { id } => Call::post(&["requests", id, "cancel"], json!({})),
        ClientCommand::Revoke { id, comment } => {
            Call::post(&["requests", id, "revoke"], comment_body(comment.as_ref()))
        }
        ClientCommand::Deactivate { id } => {
            Call::post(&["requests", id, "revoke"], comment_body(None))
        }
        ClientCommand::Extend {
            id,
            duration,
            reason,
            ticket,
        } => Call::post(
            &["requests", id, "extend"],
            json!({"duration": duration, "reason": reason, "ticket": ticket}),
        ),
        ClientCommand::Creds { id, duration, .. } => Call::post(
            &["requests", id, "credentials"],
            duration_body(duration.as_ref()),
        ),
        ClientCommand::Console { id, duration } => Call::post(
            &["requests", id, "console"],
            duration_body(duration.as_ref()),
        ),
        ClientCommand::Acknowledge { id, comment } => Call::post(
            &["requests", id, "acknowledge"],
            comment_body(comment.as_ref()),
        ),
        ClientCommand::Show { id } => Call::get(&["requests", id]),
        ClientCommand::Requests {
            mine: _,
            pending,
            all,
            state,
        } => {
            let scope = if *pending {
                "pending"
            } else if *all {
                "all"
            } else {
                "mine"
            };
            let call = Call::get(&["requests"]).query("scope", scope);
            match state {
                Some(state) => call.query("state", state.as_str()),
                None => call,
            }
        }
        ClientCommand::Grants { active, all } => Call::get(&["grants"])
            .query("active", active.to_string())
            .query("scope", if *all { "all" } else { "mine" }),
        ClientCommand::Eligible {
            search,
            target,
            role,
            tag,
            limit,
            offset,
        } => {
            let mut call = Call::get(&["eligible"]);
            for (name, value) in [
                ("q", search.clone()),
                ("target", target.clone()),
                ("role", role.clone()),
                ("tag", tag.clone()),
                ("limit", limit.map(|l| l.to_string())),
                ("offset", offset.map(|o| o.to_string())),
            ] {
                if let Some(value) = value {
                    call = call.query(name, value);
                }
            }
            call
        }
        ClientCommand::Whoami => Call::get(&["me"]),
        ClientCommand::Targets { action } => match action {
            TargetsAction::Refresh { target } => {
                Call::post(&["targets", target, "refresh"], json!({}))
            }
            TargetsAction::Reconcile { target } => {
                Call::post(&["targets", target, "reconcile"], json!({}))
            }
            TargetsAction::Reconciliation { target } => {
                Call::get(&["targets", target, "reconciliation"])
            }
        },
        // Flows of their own, which `run` starts before planning a call.
        ClientCommand::Login { .. } | ClientCommand::Logout => {
            return Err(CliError::InvalidArgument(
                "login and logout are not a single API call".to_string(),
            ))
        }
        ClientCommand::Audit {
            action: Some(AuditAction::Verify),
            ..
        } => Call::get(&["audit", "verify"]),
        ClientCommand::Audit {
            action: Some(AuditAction::Export),
            ..
        } => Call {
            method: Method::GetStream,
            path: segments(&["audit", "export"]),
            query: Vec::new(),
        },
        ClientCommand::Audit {
            action: None,
            since,
            request,
            limit,
        } => {
            let mut call = Call::get(&["audit"]);
            if let Some(since) = since {
                call = call.query("since", to_wire(parse_since(since, now)?));
            }
            if let Some(request) = request {
                call = call.query("request", request.as_str());
            }
            if let Some(limit) = limit {
                call = call.query("limit", limit.to_string());
            }
            call
        }
    };
    Ok(call)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap()
    }

    fn id() -> String {
        "r-abcd2345efgh".to_string()
    }

    fn path(call: &Call) -> String {
        call.path.join("/")
    }

    #[test]
    fn request_posts_every_field_with_start_in_utc() {
        let command = ClientCommand::Request {
            target: "pg-prod".into(),
            resource: "orders".into(),
            role: "orders_writer".into(),
            duration: "1h30m".into(),
            start: Some("+30m".into()),
            reason: "障害対応".into(),
            ticket: None,
            break_glass: false,
        };
        let call = plan(&command, now()).unwrap();
        assert_eq!(path(&call), "requests");
        assert_eq!(
            call.method,
            Method::Post(json!({
                "target": "pg-prod",
                "resource": "orders",
                "role": "orders_writer",
                "duration": "1h30m",
                "start": "2026-11-24T08:30:00Z",
                "reason": "障害対応",
                "ticket": null,
                "break_glass": false,
            }))
        );
    }

    #[test]
    fn request_without_start_sends_null() {
        let command = ClientCommand::Request {
            target: "t".into(),
            resource: "r".into(),
            role: "x".into(),
            duration: "1h".into(),
            start: None,
            reason: "why".into(),
            ticket: Some("OPS-1".into()),
            break_glass: true,
        };
        let Method::Post(body) = plan(&command, now()).unwrap().method else {
            panic!("not a post");
        };
        assert_eq!(body["start"], Value::Null);
        assert_eq!(body["ticket"], "OPS-1");
        assert_eq!(body["break_glass"], true);
    }

    #[test]
    fn bad_start_fails_before_any_call() {
        let command = ClientCommand::Request {
            target: "t".into(),
            resource: "r".into(),
            role: "x".into(),
            duration: "1h".into(),
            start: Some("next tuesday".into()),
            reason: "why".into(),
            ticket: None,
            break_glass: false,
        };
        let error = plan(&command, now()).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("invalid --start \"next tuesday\""));
    }

    #[test]
    fn decisions_post_to_their_own_endpoint() {
        let cases = [
            (
                ClientCommand::Approve {
                    id: id(),
                    comment: None,
                },
                "requests/r-abcd2345efgh/approve",
                json!({}),
            ),
            (
                ClientCommand::Approve {
                    id: id(),
                    comment: Some("ok".into()),
                },
                "requests/r-abcd2345efgh/approve",
                json!({"comment": "ok"}),
            ),
            (
                ClientCommand::Reject {
                    id: id(),
                    comment: "no".into(),
                },
                "requests/r-abcd2345efgh/reject",
                json!({"comment": "no"}),
            ),
            (
                ClientCommand::Cancel { id: id() },
                "requests/r-abcd2345efgh/cancel",
                json!({}),
            ),
            (
                ClientCommand::Revoke {
                    id: id(),
                    comment: Some("done".into()),
                },
                "requests/r-abcd2345efgh/revoke",
                json!({"comment": "done"}),
            ),
            (
                ClientCommand::Deactivate { id: id() },
                "requests/r-abcd2345efgh/revoke",
                json!({}),
            ),
            (
                ClientCommand::Acknowledge {
                    id: id(),
                    comment: Some("seen".into()),
                },
                "requests/r-abcd2345efgh/acknowledge",
                json!({"comment": "seen"}),
            ),
            (
                ClientCommand::Extend {
                    id: id(),
                    duration: "30m".into(),
                    reason: "more".into(),
                    ticket: None,
                },
                "requests/r-abcd2345efgh/extend",
                json!({"duration": "30m", "reason": "more", "ticket": null}),
            ),
        ];
        for (command, expected_path, expected_body) in cases {
            let call = plan(&command, now()).unwrap();
            assert_eq!(path(&call), expected_path, "{command:?}");
            assert_eq!(call.method, Method::Post(expected_body), "{command:?}");
        }
    }

    #[test]
    fn requests_default_to_mine() {
        let command = ClientCommand::Requests {
            mine: false,
            pending: false,
            all: false,
            state: None,
        };
        let call = plan(&command, now()).unwrap();
        assert_eq!(call.query, vec![("scope".to_string(), "mine".to_string())]);
    }

    #[test]
    fn requests_pass_scope_and_state() {
        let command = ClientCommand::Requests {
            mine: false,
            pending: true,
            all: false,
            state: Some("pending".into()),
        };
        let call = plan(&command, now()).unwrap();
        assert_eq!(
            call.query,
            vec![
                ("scope".to_string(), "pending".to_string()),
                ("state".to_string(), "pending".to_string())
            ]
        );
    }

    #[test]
    fn grants_always_say_active_and_scope() {
        let call = plan(
            &ClientCommand::Grants {
                active: true,
                all: false,
            },
            now(),
        )
        .unwrap();
        assert_eq!(path(&call), "grants");
        assert_eq!(
            call.query,
            vec![
                ("active".to_string(), "true".to_string()),
                ("scope".to_string(), "mine".to_string())
            ]
        );
    }

    #[test]
    fn audit_since_a_duration_is_sent_as_a_utc_time() {
        let command = ClientCommand::Audit {
            action: None,
            since: Some("1h".into()),
            request: Some(id()),
            limit: Some(20),
        };
        let call = plan(&command, now()).unwrap();
        assert_eq!(path(&call), "audit");
        assert_eq!(
            call.query,
            vec![
                ("since".to_string(), "2026-11-24T07:00:00Z".to_string()),
                ("request".to_string(), id()),
                ("limit".to_string(), "20".to_string()),
            ]
        );
    }

    #[test]
    fn audit_verify_and_export_have_their_own_endpoints() {
        let verify = ClientCommand::Audit {
            action: Some(AuditAction::Verify),
            since: None,
            request: None,
            limit: None,
        };
        assert_eq!(path(&plan(&verify, now()).unwrap()), "audit/verify");
        let export = ClientCommand::Audit {
            action: Some(AuditAction::Export),
            since: None,
            request: None,
            limit: None,
        };
        let call = plan(&export, now()).unwrap();
        assert_eq!(path(&call), "audit/export");
        assert_eq!(call.method, Method::GetStream);
    }

    #[test]
    fn eligible_filters_become_query_parameters() {
        let call = plan(
            &ClientCommand::Eligible {
                search: Some("prod admin".into()),
                target: None,
                role: Some("Billing".into()),
                tag: Some("env=prod".into()),
                limit: Some(50),
                offset: Some(100),
            },
            now(),
        )
        .unwrap();
        assert_eq!(path(&call), "eligible");
        let q: Vec<(&str, &str)> = call
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            q,
            [
                ("q", "prod admin"),
                ("role", "Billing"),
                ("tag", "env=prod"),
                ("limit", "50"),
                ("offset", "100")
            ]
        );
    }

    #[test]
    fn reads_go_to_their_endpoints() {
        assert_eq!(path(&plan(&ClientCommand::Whoami, now()).unwrap()), "me");
        assert_eq!(
            path(
                &plan(
                    &ClientCommand::Eligible {
                        search: None,
                        target: None,
                        role: None,
                        tag: None,
                        limit: None,
                        offset: None,
                    },
                    now()
                )
                .unwrap()
            ),
            "eligible"
        );
        assert_eq!(
            path(&plan(&ClientCommand::Show { id: id() }, now()).unwrap()),
            "requests/r-abcd2345efgh"
        );
    }
}
