//! Active access: every grant that holds (or is about to hold) a role now,
//! in the viewer's scope, and revoking one.
//!
//! Scope is the broker's own visibility rule ([`Broker::can_see`]):
//! admins and auditors see every grant, approvers also the grants they
//! approve, everyone else their own. The Revoke button is shown only to
//! those the engine lets revoke (admins, approvers in scope, and the
//! requester, whose "revoke" ends their own access early); the engine
//! checks again on POST, so the button is a convenience, not the guard.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use elevate_core::request::{Kind, Review, State as RState};
use elevate_core::values::{Comment, RequestId};
use elevate_store::{RequestFilter, StoredRequest};
use maud::{html, Markup};

use super::{
    break_glass_badge, check_post, csrf_field, error_page, page, redirect, remaining, state_badge,
    time, Form, Nav, Viewer,
};
use crate::api::AppState;
use crate::engine::Broker;
use crate::error::ApiError;

/// Rows shown per section; a filter narrows a longer list.
const SHOWN: usize = 500;

/// Enough for every grant that can hold a role at once in any real
/// deployment; the page says when the list was cut.
const LOADED: i64 = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/active", get(list))
        .route("/active/{id}/revoke", post(revoke))
}

/// A grant as this page shows it.
struct Row<'a> {
    stored: &'a StoredRequest,
    path: String,
    dry_run: bool,
    /// The viewer may revoke it (or, as its requester, end it early).
    can_revoke: bool,
}

async fn list(State(b): State<AppState>, v: Viewer, RawQuery(query): RawQuery) -> Response {
    let query = Form::parse(query.unwrap_or_default().as_bytes());
    let filter = query.text("q");
    let revoked = query
        .get("revoked")
        .and_then(|raw| RequestId::parse(raw).ok());
    let stored = match b
        .store
        .list_requests(&RequestFilter {
            requester: None,
            states: ["scheduled", "approved", "active", "ending"]
                .map(String::from)
                .to_vec(),
            limit: Some(LOADED),
        })
        .await
    {
        Ok(s) => s,
        Err(e) => return error_page(Some(&v), &ApiError::from(e)),
    };
    let truncated = stored.len() as i64 >= LOADED;
    let needle = filter.as_deref().map(str::to_lowercase);
    let mut current = Vec::new();
    let mut later = Vec::new();
    for s in &stored {
        let r = &s.request;
        if r.kind != Kind::Access || !b.can_see(&v.p, r) {
            continue;
        }
        let row = row(&b, &v, s);
        if let Some(n) = &needle {
            let hay = [
                r.requester.as_str(),
                r.target.as_str(),
                r.resource.as_str(),
                row.path.as_str(),
                r.role.as_str(),
            ];
            if !hay.iter().any(|h| h.to_lowercase().contains(n.as_str())) {
                continue;
            }
        }
        if matches!(r.state, RState::Scheduled { .. }) {
            later.push(row);
        } else {
            current.push(row);
        }
    }
    // Soonest to end first (what needs attention), soonest to start first.
    let ends = |row: &Row| row.stored.request.state.window().map(|w| w.ends_at);
    let starts = |row: &Row| row.stored.request.state.window().map(|w| w.starts_at);
    current.sort_by_key(|r| ends(r));
    later.sort_by_key(|r| starts(r));

    let scope = if v.sees_all() {
        "Every grant in effect, as you are an administrator or auditor."
    } else {
        "Your own grants and the grants you approve."
    };
    let body = html! {
        @if let Some(id) = &revoked {
            p.notice.ok role="status" {
                "Revoked " a href={"/requests/" (id)} { (id) } ". "
                "A grant already applied shows as ending until the target confirms the role is removed."
            }
        }
        p.muted { (scope) }
        form.filters method="get" action="/active" role="search" {
            div {
                label for="q" { "Filter by person, resource or role" }
                input #q type="search" name="q" value=[filter.as_deref()];
            }
            button type="submit" { "Filter" }
            @if filter.is_some() {
                a href="/active" { "Clear" }
            }
        }
        @if truncated {
            p.notice.warn {
                "Only the newest " (LOADED) " grants were loaded; use the API or the audit trail for older ones."
            }
        }
        h2 { "In effect now (" (current.len()) ")" }
        @if current.is_empty() {
            p.muted { "Nothing is granted right now." }
        } @else {
            (table(&v, &current, false))
        }
        h2 { "Starting later (" (later.len()) ")" }
        @if later.is_empty() {
            p.muted { "No scheduled grants." }
        } @else {
            (table(&v, &later, true))
        }
    };
    page(Some(&v), Nav::Active, "Active access", body)
}

fn row<'a>(b: &Broker, v: &Viewer, s: &'a StoredRequest) -> Row<'a> {
    let r = &s.request;
    let catalog = b.catalog();
    let target = catalog.targets.get(&r.target);
    let revocable = match &r.state {
        RState::Scheduled { .. } => true,
        RState::Approved { window } | RState::Active { window, .. } => window.ends_at > Utc::now(),
        _ => false,
    };
    let may = r.requester == v.p.name
        || v.admin
        || b.catalog()
            .approval_requirement(&r.target, &r.resource, &r.role)
            .is_some_and(|q| q.allows(&v.p));
    Row {
        stored: s,
        path: target.map_or_else(|| r.resource.to_string(), |t| t.path(&r.resource)),
        dry_run: target.is_some_and(|t| t.dry_run),
        can_revoke: revocable && may,
    }
}

/// What the state means right now, beyond its name.
fn status_note(s: &StoredRequest) -> Option<String> {
    match &s.request.state {
        RState::Approved { .. } if s.apply_failures > 0 => Some(format!(
            "target failing ({} attempt(s), retrying)",
            s.apply_failures
        )),
        RState::Approved { .. } => Some("being applied".into()),
        RState::Ending { .. } if s.removal_failures > 0 => Some(format!(
            "revocation failing ({} attempt(s), retrying)",
            s.removal_failures
        )),
        RState::Ending { .. } => Some("being removed".into()),
        _ => None,
    }
}

fn table(v: &Viewer, rows: &[Row], scheduled: bool) -> Markup {
    html! {
        table.list {
            thead {
                tr {
                    th scope="col" { "Request" }
                    th scope="col" { "Requester" }
                    th scope="col" { "Target" }
                    th scope="col" { "Resource" }
                    th scope="col" { "Role" }
                    th scope="col" { "Reason" }
                    th scope="col" { (if scheduled { "Starts" } else { "Since" }) }
                    th scope="col" { "Ends" }
                    th scope="col" { "State" }
                    th scope="col" { "Flags" }
                    th scope="col" { span.muted { "Action" } }
                }
            }
            tbody {
                @for row in rows.iter().take(SHOWN) {
                    (table_row(v, row))
                }
            }
        }
        @if rows.len() > SHOWN {
            p.muted { "Showing " (SHOWN) " of " (rows.len()) "; filter to narrow the list." }
        }
    }
}

fn table_row(v: &Viewer, row: &Row) -> Markup {
    let r = &row.stored.request;
    let window = r.state.window();
    let since = match &r.state {
        RState::Active { since, .. } => Some(*since),
        _ => window.map(|w| w.starts_at),
    };
    let own = r.requester == v.p.name;
    let (label, confirm) = if own {
        (
            "End my access",
            format!("End your {} access on {} now?", r.role, row.path),
        )
    } else {
        (
            "Revoke",
            format!(
                "Revoke {}'s {} access on {} now? The role is removed at once.",
                r.requester, r.role, row.path
            ),
        )
    };
    html! {
        tr {
            td { a href={"/requests/" (r.id)} { (r.id) } }
            td { (r.requester) }
            td { (r.target) }
            td { (row.path) }
            td { (r.role) }
            td.justification title=(r.justification.as_str()) { (excerpt(r.justification.as_str())) }
            td { @if let Some(t) = since { (time(t)) } }
            td {
                @if let Some(w) = window {
                    (time(w.ends_at)) br; (remaining(w.ends_at))
                }
            }
            td {
                (state_badge(&r.state))
                @if let Some(note) = status_note(row.stored) {
                    br; span.muted { (note) }
                }
            }
            td {
                @if r.break_glass { (break_glass_badge()) " " }
                @if r.review == Review::Awaiting { span.badge { "awaiting review" } " " }
                @if row.dry_run { span.badge { "dry-run" } }
            }
            td {
                @if row.can_revoke {
                    form.inline method="post" action={"/active/" (r.id) "/revoke"} data-confirm=(confirm) {
                        (csrf_field(v))
                        input type="text" name="comment" maxlength="1000"
                            aria-label={"Reason for ending " (r.id) " (optional)"}
                            placeholder="Reason (optional)";
                        button.danger type="submit" { (label) }
                    }
                }
            }
        }
    }
}

/// The start of a long justification; the whole text is in the tooltip
/// and on the request's page.
fn excerpt(text: &str) -> String {
    const CHARS: usize = 140;
    if text.chars().count() <= CHARS {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(CHARS).collect();
        cut.push('…');
        cut
    }
}

async fn revoke(
    State(b): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(refused) = check_post(&v, &headers, &form) {
        return refused;
    }
    let id = match RequestId::parse(&id) {
        Ok(id) => id,
        Err(e) => return error_page(Some(&v), &e.into()),
    };
    let comment = match Comment::parse(form.text("comment").as_deref().unwrap_or("")) {
        Ok(c) => c,
        Err(e) => return error_page(Some(&v), &e.into()),
    };
    match b.revoke(&v.p, &id, comment).await {
        Ok(_) => redirect(&format!("/active?revoked={id}")),
        Err(e) => error_page(Some(&v), &e),
    }
}
