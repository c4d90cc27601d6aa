//! Request access: pick from what I am eligible for (searchable, paged, so
//! catalogs with hundreds of thousands of choices stay usable), then a form
//! with the duration, start, justification, ticket and break-glass.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{NaiveDateTime, Utc};
use elevate_core::browse::BrowseFilter;
use elevate_core::policy::EligibleRole;
use elevate_core::values::Span;
use elevate_core::{DomainError, Timestamp};
use maud::{html, Markup};

use super::{
    check_post, csrf_field, error_page, page, page_with_status, redirect, Form, Nav, Viewer,
};
use crate::api::AppState;
use crate::engine::CreateInput;
use crate::error::ApiError;

/// Choices shown per page.
const PAGE_SIZE: usize = 50;
/// The duration offered first, when the eligibility allows that long.
const DEFAULT_DURATION_SECS: u64 = 3600;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/request", get(choose))
        .route("/request/new", get(form).post(submit))
}

fn query(raw: Option<String>) -> Form {
    Form::parse(raw.unwrap_or_default().as_bytes())
}

/// `/request/new?target=…&resource=…&role=…` for a choice.
fn new_link(e: &EligibleRole) -> String {
    let enc = crate::oidc::url_encode;
    format!(
        "/request/new?target={}&resource={}&role={}",
        enc(e.target.as_str()),
        enc(e.resource.as_str()),
        enc(e.role.as_str())
    )
}

async fn choose(State(b): State<AppState>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let q = query(q);
    let text = q.get("q").unwrap_or("");
    let target = q.get("target").unwrap_or("");
    let role = q.get("role").unwrap_or("");
    let tag = q.get("tag").unwrap_or("");
    let page_no: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let filter = BrowseFilter::from_input(text, target, role, tag);
    let offset = (page_no - 1).saturating_mul(PAGE_SIZE);
    let found = b
        .catalog()
        .browse_eligible(&v.p, Utc::now(), &filter, offset, PAGE_SIZE);
    let last_page = found.total.div_ceil(PAGE_SIZE).max(1);
    let enc = crate::oidc::url_encode;
    let page_link = |n: usize| {
        format!(
            "/request?q={}&target={}&role={}&tag={}&page={n}",
            enc(text),
            enc(target),
            enc(role),
            enc(tag)
        )
    };
    let body = html! {
        form.filters #filters method="get" action="/request" role="search" {
            div {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(text) placeholder="account, OU path, tag or role";
            }
            div {
                label for="target" { "Target" }
                select #target name="target" {
                    option value="" selected[target.is_empty()] { "All targets" }
                    @for t in &found.targets {
                        option value=(t) selected[t.as_str() == target] { (t) }
                    }
                }
            }
            div {
                label for="role" { "Role" }
                input #role type="text" name="role" value=(role);
            }
            div {
                label for="tag" { "Tag" }
                input #tag type="text" name="tag" value=(tag) placeholder="key or key=value";
            }
            div { button type="submit" { "Filter" } }
        }
        p.muted aria-live="polite" {
            (found.total) " choice" @if found.total != 1 { "s" } " match"
            @if found.total == 1 { "es" }
            @if found.total > PAGE_SIZE { " — page " (page_no) " of " (last_page) }
            "."
        }
        @if found.total == 0 {
            p.notice {
                @if text.is_empty() && target.is_empty() && role.is_empty() && tag.is_empty() {
                    "You are not eligible for any role right now. Ask an administrator for an eligibility."
                } @else {
                    "Nothing you may request matches this filter."
                }
            }
        } @else {
            table.list {
                caption.muted { "What you may request" }
                thead { tr {
                    th scope="col" { "Target" }
                    th scope="col" { "Resource" }
                    th scope="col" { "Role" }
                    th scope="col" { "Up to" }
                    th scope="col" { "Terms" }
                    th scope="col" { span.muted { "Action" } }
                } }
                tbody {
                    @for e in &found.entries {
                        tr {
                            td { (e.target) @if e.dry_run { " " span.badge { "dry-run" } } }
                            td { (e.resource_path) }
                            td { (e.role) }
                            td { (e.max_duration) }
                            td { (terms(e)) }
                            td { a.request-link href=(new_link(e)) aria-label={"Request " (e.role) " on " (e.resource_path)} { "Request" } }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_no > 1 { a href=(page_link(page_no - 1)) rel="prev" { "← Previous" } }
                @if page_no < last_page { a href=(page_link(page_no + 1)) rel="next" { "Next →" } }
            }
        }
    };
    page(Some(&v), Nav::Request, "Request access", body)
}

fn terms(e: &EligibleRole) -> Markup {
    html! {
        @if e.approval_required { "approval" } @else { "no approval" }
        @if e.ticket_required { ", ticket" }
        @if e.step_up { ", fresh MFA sign-in" }
        @if e.break_glass { ", break-glass allowed" }
    }
}

/// What the form holds, to show again after a refusal.
#[derive(Default)]
struct Draft {
    duration: String,
    start_later: bool,
    start: String,
    tz_offset: String,
    reason: String,
    ticket: String,
    break_glass: bool,
}

/// A refusal to show, next to its field when it has one.
struct Problem {
    field: Option<&'static str>,
    message: String,
    step_up: bool,
}

fn field_of(e: &ApiError) -> Option<&'static str> {
    match e {
        ApiError::Domain(d) => match d {
            DomainError::Invalid { field, .. } => Some(match *field {
                "reason" => "reason",
                "ticket" => "ticket",
                "start" => "start",
                _ => "duration",
            }),
            DomainError::DurationTooLong { .. } | DomainError::DurationTooShort { .. } => {
                Some("duration")
            }
            DomainError::TicketRequired => Some("ticket"),
            DomainError::BreakGlassNotAllowed | DomainError::BreakGlassScheduled => {
                Some("break_glass")
            }
            DomainError::StartInPast(_) | DomainError::StartTooFar(_) => Some("start"),
            _ => None,
        },
        _ => None,
    }
}

fn choice_of(b: &AppState, v: &Viewer, q: &Form) -> Result<EligibleRole, Box<Response>> {
    let (Some(target), Some(resource), Some(role)) =
        (q.get("target"), q.get("resource"), q.get("role"))
    else {
        return Err(Box::new(super::message_page(
            Some(v),
            StatusCode::BAD_REQUEST,
            "Not possible",
            "invalid_query",
            "Choose what to request from the list first (target, resource and role are missing).",
        )));
    };
    b.catalog()
        .eligible_role(&v.p, Utc::now(), target, resource, role)
        .ok_or_else(|| {
            Box::new(super::message_page(
                Some(v),
                StatusCode::FORBIDDEN,
                "Not eligible",
                "not_eligible",
                &format!("You are not eligible for role \"{role}\" on {target}/{resource}."),
            ))
        })
}

async fn form(State(b): State<AppState>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let q = query(q);
    let choice = match choice_of(&b, &v, &q) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let default = Span::from_secs(DEFAULT_DURATION_SECS.min(choice.max_duration.secs()));
    let draft = Draft {
        duration: default.to_string(),
        ..Draft::default()
    };
    render_form(&b, &v, &choice, &draft, None, StatusCode::OK)
}

fn render_form(
    b: &AppState,
    v: &Viewer,
    e: &EligibleRole,
    d: &Draft,
    problem: Option<&Problem>,
    status: StatusCode,
) -> Response {
    let err = |field: &str| {
        problem
            .filter(|p| p.field == Some(field))
            .map(|p| p.message.as_str())
    };
    let invalid = |field: &str| err(field).map(|_| "true");
    let described = |field: &'static str, hint: &'static str| {
        if err(field).is_some() {
            format!("{field}-error {hint}")
        } else {
            hint.to_owned()
        }
    };
    let requirement = b
        .catalog()
        .approval_requirement(&e.target, &e.resource, &e.role);
    let min = b.catalog().limits.min_duration;
    let body = html! {
        dl.kv {
            dt { "Target" } dd { (e.target) " (" (e.target_kind) ")" @if e.dry_run { " " span.badge { "dry-run: nothing real is changed" } } }
            dt { "Resource" } dd { (e.resource_path) }
            dt { "Role" } dd { (e.role) }
            dt { "Approval" } dd {
                @if !e.approval_required { "not needed: access starts at once" }
                @else if let Some(q) = &requirement {
                    (q.quorum) " approval" @if q.quorum > 1 { "s" } " from "
                    (q.approvers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))
                } @else { "needed, but no approval policy covers it (the request will be refused)" }
            }
        }
        @if let Some(p) = problem.filter(|p| p.field.is_none()) {
            div.notice.error role="alert" {
                p { (p.message) }
                @if p.step_up {
                    p { a href={"/auth/login?step_up=1&next=" (crate::oidc::url_encode(&new_link(e)))} { "Sign in again with multi-factor authentication" } }
                }
            }
        }
        form #request-form method="post" action=(new_link(e)) novalidate {
            (csrf_field(v))
            label for="duration" { "Duration" }
            input #duration type="text" name="duration" value=(d.duration) required
                aria-invalid=[invalid("duration")] aria-describedby=(described("duration", "duration-hint"));
            p #duration-hint .muted { "For example 30m, 1h30m or 2h. Between " (min) " and " (e.max_duration) "." }
            @if let Some(m) = err("duration") { p #duration-error .field-error { (m) } }

            fieldset {
                legend { "Start" }
                input #start-now type="radio" name="start_mode" value="now" checked[!d.start_later];
                label.inline for="start-now" { "As soon as approved" }
                input #start-later type="radio" name="start_mode" value="later" checked[d.start_later];
                label.inline for="start-later" { "Later, at" }
                input #start type="datetime-local" name="start" value=(d.start)
                    aria-label="Start time" aria-invalid=[invalid("start")] aria-describedby=(described("start", "start-hint"));
                input type="hidden" name="tz_offset" value=(d.tz_offset);
                p #start-hint .muted { "In your time zone (UTC when JavaScript is off)." }
                @if let Some(m) = err("start") { p #start-error .field-error { (m) } }
            }

            label for="reason" { "Justification" }
            textarea #reason name="reason" required rows="4"
                aria-invalid=[invalid("reason")] aria-describedby=(described("reason", "reason-hint")) { (d.reason) }
            p #reason-hint .muted { "Why you need this access; any language. Approvers and auditors read it." }
            @if let Some(m) = err("reason") { p #reason-error .field-error { (m) } }

            label for="ticket" { "Ticket" @if e.ticket_required { " (required)" } @else { span.muted { " (optional)" } } }
            input #ticket type="text" name="ticket" value=(d.ticket) required[e.ticket_required]
                aria-invalid=[invalid("ticket")] aria-describedby=[err("ticket").map(|_| "ticket-error")];
            @if let Some(m) = err("ticket") { p #ticket-error .field-error { (m) } }

            @if e.break_glass {
                div.warning-box {
                    input #break_glass type="checkbox" name="break_glass" value="1" checked[d.break_glass]
                        aria-describedby="break-glass-warning";
                    label.inline for="break_glass" { strong { "Break-glass" } }
                    p #break-glass-warning {
                        "Emergency only: access is granted at once, without approval. Every admin and approver is told, "
                        "and the grant stays flagged until an approver reviews it."
                    }
                    @if let Some(m) = err("break_glass") { p .field-error { (m) } }
                }
            }
            div.actions { button type="submit" { "Submit request" } a.button.secondary href="/request" { "Back to the list" } }
        }
    };
    page_with_status(Some(v), Nav::Request, status, "New request", body)
}

/// A `datetime-local` value in the browser's time zone (`tz_offset`
/// minutes east of UTC, filled in by app.js; UTC without it).
fn start_time(raw: &str, tz_offset: &str) -> Result<Timestamp, ApiError> {
    let bad = || {
        ApiError::Domain(DomainError::invalid(
            "start",
            "pick a date and time, like 2026-12-01 15:30",
        ))
    };
    let naive = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M"))
        .map_err(|_| bad())?;
    let offset_min: i64 = match tz_offset.trim() {
        "" => 0,
        o => o
            .parse()
            .ok()
            .filter(|m: &i64| m.abs() <= 18 * 60)
            .ok_or_else(bad)?,
    };
    Ok(naive.and_utc() - chrono::Duration::minutes(offset_min))
}

async fn submit(
    State(b): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(resp) = check_post(&v, &headers, &form) {
        return resp;
    }
    let choice = match choice_of(&b, &v, &query(q)) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let draft = Draft {
        duration: form.get("duration").unwrap_or("").trim().to_owned(),
        start_later: form.get("start_mode") == Some("later"),
        start: form.get("start").unwrap_or("").to_owned(),
        tz_offset: form.get("tz_offset").unwrap_or("").to_owned(),
        reason: form.get("reason").unwrap_or("").to_owned(),
        ticket: form.get("ticket").unwrap_or("").trim().to_owned(),
        break_glass: form.checked("break_glass"),
    };
    let start = if draft.start_later {
        match start_time(draft.start.trim(), &draft.tz_offset) {
            Ok(t) => Some(t),
            Err(e) => return refused(&b, &v, &choice, &draft, &e),
        }
    } else {
        None
    };
    let input = CreateInput {
        target: choice.target.to_string(),
        resource: choice.resource.to_string(),
        role: choice.role.to_string(),
        duration: draft.duration.clone(),
        start,
        reason: draft.reason.clone(),
        ticket: Some(draft.ticket.clone()).filter(|t| !t.is_empty()),
        break_glass: draft.break_glass,
    };
    match b.create(&v.p, input).await {
        Ok(created) => redirect(&format!("/requests/{}?created=1", created.request.id)),
        Err(e) if e.status().is_server_error() => error_page(Some(&v), &e),
        Err(e) => refused(&b, &v, &choice, &draft, &e),
    }
}

fn refused(b: &AppState, v: &Viewer, e: &EligibleRole, d: &Draft, err: &ApiError) -> Response {
    let problem = Problem {
        field: field_of(err),
        message: err.message(),
        step_up: err.code() == "step_up_required",
    };
    let status = match err.status() {
        // A step-up is a page to act on, not an authentication failure of
        // this browser's session.
        StatusCode::UNAUTHORIZED => StatusCode::FORBIDDEN,
        s => s,
    };
    render_form(b, v, e, d, Some(&problem), status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_are_read_in_the_browsers_time_zone() {
        let utc = |s: &str| chrono::DateTime::parse_from_rfc3339(s).map(|t| t.to_utc());
        assert_eq!(
            start_time("2026-12-01T15:30", "").ok(),
            utc("2026-12-01T15:30:00Z").ok()
        );
        // Tokyo is 540 minutes east of UTC.
        assert_eq!(
            start_time("2026-12-01T15:30", "540").ok(),
            utc("2026-12-01T06:30:00Z").ok()
        );
        assert_eq!(
            start_time("2026-12-01T15:30", "-300").ok(),
            utc("2026-12-01T20:30:00Z").ok()
        );
        for (raw, tz) in [
            ("", ""),
            ("tomorrow", ""),
            ("2026-12-01T15:30", "x"),
            ("2026-12-01T15:30", "5000"),
        ] {
            assert_eq!(
                start_time(raw, tz).err().map(|e| e.code()),
                Some("invalid_input"),
                "{raw} {tz}"
            );
        }
    }
}
