//! The audit trail in the browser, for auditors and admins: the event
//! history with filters (newest first, a page at a time), whether the hash
//! chain still verifies, one request's events as a timeline, and the same
//! filtered history as CSV or JSON Lines downloads.
//!
//! Filters travel as GET query parameters so a filtered view can be
//! bookmarked and its exports linked. Input that does not parse re-renders
//! the page with the problem next to its field (400), never a 500.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use elevate_core::request::Action;
use elevate_core::values::{RequestId, UserName};
use elevate_core::Timestamp;
use elevate_store::audit::AuditSearch;
use elevate_store::{AuditFilter, AuditRecord, Verification};
use futures_util::StreamExt;
use maud::{html, Markup};
use serde_json::Value;

use super::{
    error_page, message_page, page, page_with_status, secure_headers, time, Form, Nav, Viewer,
};
use crate::api::AppState;
use crate::error::ApiError;

/// Events shown per page.
const PAGE: i64 = 100;
/// Events read per step of an export: a long history never sits in memory
/// whole.
const EXPORT_PAGE: i64 = 5000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audit", get(audit_page))
        .route("/audit/requests/{id}", get(timeline_page))
        .route("/audit/export.csv", get(export_csv))
        .route("/audit/export.jsonl", get(export_jsonl))
}

/// The audit trail names people and shows every justification: only
/// auditors and admins read it, as in the API. The refusal page for
/// anyone else.
pub(super) fn refusal_unless_auditor(v: &Viewer) -> Option<Response> {
    (!v.sees_all()).then(|| {
        message_page(
            Some(v),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "forbidden",
            "Only auditors and administrators may read the audit trail and its insights.",
        )
    })
}

// ---- filters ----------------------------------------------------------------

/// Every action, for the filter's choices.
const ACTIONS: [Action; 21] = [
    Action::RequestCreated,
    Action::ApprovalRecorded,
    Action::RequestApproved,
    Action::RequestRejected,
    Action::RequestCancelled,
    Action::RequestExpired,
    Action::GrantStarting,
    Action::GrantActivated,
    Action::GrantFailed,
    Action::GrantWindowEnded,
    Action::GrantRevoked,
    Action::GrantDeactivated,
    Action::GrantRemoved,
    Action::GrantExtended,
    Action::BreakGlassAcknowledged,
    Action::RequestReminded,
    Action::RequestEscalated,
    Action::GrantEndingSoon,
    Action::GrantRemovalFailing,
    Action::GrantSessionIssued,
    Action::TargetUnmanagedAccess,
];

/// A new action fails to compile here until it is added to [`ACTIONS`].
const _: fn(Action) = |a| match a {
    Action::RequestCreated
    | Action::ApprovalRecorded
    | Action::RequestApproved
    | Action::RequestRejected
    | Action::RequestCancelled
    | Action::RequestExpired
    | Action::GrantStarting
    | Action::GrantActivated
    | Action::GrantFailed
    | Action::GrantWindowEnded
    | Action::GrantRevoked
    | Action::GrantDeactivated
    | Action::GrantRemoved
    | Action::GrantExtended
    | Action::BreakGlassAcknowledged
    | Action::RequestReminded
    | Action::RequestEscalated
    | Action::GrantEndingSoon
    | Action::GrantRemovalFailing
    | Action::GrantSessionIssued
    | Action::TargetUnmanagedAccess => {}
};

/// The filters as typed, to refill the form and build links.
#[derive(Default)]
struct Typed {
    since: String,
    until: String,
    actor: String,
    action: String,
    request: String,
}

impl Typed {
    fn read(form: &Form) -> Typed {
        let text = |name: &str| form.text(name).unwrap_or_default();
        Typed {
            since: text("since"),
            until: text("until"),
            actor: text("actor"),
            action: text("action"),
            request: text("request"),
        }
    }

    /// The query string for these filters, plus `before` when paging.
    fn query(&self, before: Option<i64>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("since", &self.since),
            ("until", &self.until),
            ("actor", &self.actor),
            ("action", &self.action),
            ("request", &self.request),
        ] {
            if !value.is_empty() {
                q.append_pair(name, value);
            }
        }
        if let Some(b) = before {
            q.append_pair("before", &b.to_string());
        }
        q.finish()
    }

    fn is_empty(&self) -> bool {
        self.query(None).is_empty()
    }
}

/// A problem with one field of a filter form, shown next to it.
pub(super) struct FieldError {
    pub field: &'static str,
    pub message: String,
}

pub(super) fn error_for<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.as_str())
}

/// A date (`2026-11-24`, the whole day in UTC), a UTC time without zone
/// (`2026-11-24T09:00`, as `datetime-local` inputs send) or an RFC 3339
/// time. As the end of a range (`until`), a bare date includes that day.
pub(super) fn parse_instant(raw: &str, end_of_range: bool) -> Result<Timestamp, String> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let day = if end_of_range {
            day.succ_opt()
        } else {
            Some(day)
        };
        if let Some(start) = day.and_then(|d| d.and_hms_opt(0, 0, 0)) {
            return Ok(start.and_utc());
        }
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(t.and_utc());
        }
    }
    Err(format!(
        "\"{raw}\" is not a date like 2026-11-24 or a time like 2026-11-24T09:00:00Z"
    ))
}

/// The stored form of an actor typed as `alice`, `user:alice` or `system`.
fn parse_actor(raw: &str) -> Result<String, String> {
    if raw == "system" {
        return Ok(raw.to_owned());
    }
    let name = raw.strip_prefix("user:").unwrap_or(raw);
    UserName::parse(name)
        .map(|n| format!("user:{n}"))
        .map_err(|_| format!("\"{raw}\" is not a user name (like alice) or \"system\""))
}

/// Parsed filters, or every problem found in them.
fn parse_filters(form: &Form, typed: &Typed) -> Result<AuditSearch, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut search = AuditSearch::default();
    let mut fail = |field: &'static str, message: String| {
        errors.push(FieldError { field, message });
    };
    if !typed.since.is_empty() {
        match parse_instant(&typed.since, false) {
            Ok(t) => search.since = Some(t),
            Err(m) => fail("since", m),
        }
    }
    if !typed.until.is_empty() {
        match parse_instant(&typed.until, true) {
            Ok(t) => search.until = Some(t),
            Err(m) => fail("until", m),
        }
    }
    if let (Some(since), Some(until)) = (search.since, search.until) {
        if until <= since {
            fail("until", "must be later than \"since\"".into());
        }
    }
    if !typed.actor.is_empty() {
        match parse_actor(&typed.actor) {
            Ok(a) => search.actor = Some(a),
            Err(m) => fail("actor", m),
        }
    }
    if !typed.action.is_empty() {
        match ACTIONS.iter().find(|a| a.as_str() == typed.action) {
            Some(a) => search.action = Some(a.as_str().to_owned()),
            None => fail(
                "action",
                format!("\"{}\" is not one of the actions listed", typed.action),
            ),
        }
    }
    if !typed.request.is_empty() {
        match RequestId::parse(&typed.request) {
            Ok(id) => search.request = Some(id.to_string()),
            Err(_) => fail(
                "request",
                format!(
                    "\"{}\" is not a request id (like r-abcd2345efgh)",
                    typed.request
                ),
            ),
        }
    }
    if let Some(raw) = form.text("before") {
        match raw.parse::<i64>() {
            Ok(n) if n > 0 => search.before_seq = Some(n),
            _ => fail("before", format!("\"{raw}\" is not an event number")),
        }
    }
    if errors.is_empty() {
        Ok(search)
    } else {
        Err(errors)
    }
}

fn query_form(query: Option<String>) -> Form {
    Form::parse(query.unwrap_or_default().as_bytes())
}

// ---- the history page -----------------------------------------------------------

async fn audit_page(State(b): State<AppState>, v: Viewer, RawQuery(query): RawQuery) -> Response {
    if let Some(refused) = refusal_unless_auditor(&v) {
        return refused;
    }
    let form = query_form(query);
    let typed = Typed::read(&form);
    let search = match parse_filters(&form, &typed) {
        Ok(s) => s,
        Err(errors) => {
            return page_with_status(
                Some(&v),
                Nav::Audit,
                StatusCode::BAD_REQUEST,
                "Audit trail",
                html! {
                    p.notice.error role="alert" {
                        "The filters could not be used: fix the fields marked below."
                    }
                    (filter_form(&typed, &errors))
                    @if let Some(m) = error_for(&errors, "before") {
                        p.field-error { "Page: " (m) " " a href={"/audit?" (typed.query(None))} { "Start from the newest events" } }
                    }
                },
            );
        }
    };
    let before = search.before_seq;
    let verification = chain_check(&b, form.get("verify") == Some("now")).await;
    let events = match b
        .store
        .search_audit(&AuditSearch {
            newest_first: true,
            limit: Some(PAGE + 1),
            ..search
        })
        .await
    {
        Ok(events) => events,
        Err(e) => return error_page(Some(&v), &ApiError::from(e)),
    };
    let more = events.len() as i64 > PAGE;
    let shown = &events[..events.len().min(PAGE as usize)];
    let older = shown.last().filter(|_| more).map(|e| e.seq);
    let exports = typed.query(None);
    let suffix = if exports.is_empty() {
        String::new()
    } else {
        format!("?{exports}")
    };
    page(
        Some(&v),
        Nav::Audit,
        "Audit trail",
        html! {
            (chain_status(verification))
            (filter_form(&typed, &[]))
            p {
                "Download "
                @if typed.is_empty() { "the whole trail" } @else { "every event matching these filters" }
                ", oldest first: "
                a href={"/audit/export.csv" (suffix)} download { "CSV" }
                " · "
                a href={"/audit/export.jsonl" (suffix)} download { "JSON Lines" }
            }
            @if shown.is_empty() {
                p.muted { "No events match." }
            } @else {
                (event_table(shown))
            }
            (pager(&typed, before, older))
        },
    )
}

/// Whether the hash chain still verifies, shown above everything else.
/// How long the audit page reuses a chain check before walking the chain
/// again (the page says when it checked, and can check now).
const CHAIN_CHECK_REUSE_SECS: i64 = 60;

/// The audit chain's verification: the last one if recent (and not
/// `fresh`), otherwise a new walk of the whole chain.
async fn chain_check(
    b: &AppState,
    fresh: bool,
) -> Result<(Timestamp, Verification), elevate_store::StoreError> {
    let mut last = b.audit_checked.lock().await;
    let now = chrono::Utc::now();
    if let Some((at, v)) = last.as_ref() {
        if !fresh && (now - *at).num_seconds() < CHAIN_CHECK_REUSE_SECS {
            return Ok((*at, v.clone()));
        }
    }
    let v = b.store.verify_audit().await?;
    *last = Some((now, v.clone()));
    Ok((now, v))
}

fn chain_status(result: Result<(Timestamp, Verification), elevate_store::StoreError>) -> Markup {
    let checked = |at: Timestamp| {
        html! {
            " Checked " (super::time(at)) ". " a href="/audit?verify=now" { "Check again now" }
        }
    };
    match result {
        Ok((at, v)) if v.ok => html! {
            p.notice.ok role="status" {
                strong { "Audit chain verified." }
                " All " (v.events) " events link to the one before them and match their hashes."
                @if let Some(head) = &v.head {
                    " Head hash: " code title=(head) { (head.get(..16).unwrap_or(head)) "…" }
                }
                (checked(at))
            }
        },
        Ok((at, v)) => html! {
            div.notice.error role="alert" {
                p {
                    strong { "Audit chain broken" }
                    @if let Some(seq) = v.broken_at {
                        " at event " (seq)
                    }
                    ". "
                    (v.problem.as_deref().unwrap_or("The chain does not verify."))
                }
                @if let Some(seq) = v.broken_at {
                    p {
                        "Events before event " (seq) " still verify; nothing from it on can be trusted "
                        "until the cause is found. "
                        a href={"/audit?before=" (seq.saturating_add(1))} { "Show the events up to the break" }
                    }
                }
                p { (checked(at)) }
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "audit chain verification failed to run");
            html! {
                p.notice.warn role="status" {
                    "The audit chain could not be checked just now; reload to try again."
                }
            }
        }
    }
}

/// A labelled text field of a filter form, with its error (if any) next
/// to it.
pub(super) fn text_field(
    errors: &[FieldError],
    name: &'static str,
    label: &str,
    value: &str,
    placeholder: &str,
) -> Markup {
    let error = error_for(errors, name);
    let error_id = format!("{name}-error");
    html! {
        div {
            label for=(name) { (label) }
            input type="text" id=(name) name=(name) value=(value) placeholder=(placeholder)
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| error_id.as_str())];
            @if let Some(m) = error {
                p.field-error id=(error_id) { (m) }
            }
        }
    }
}

fn filter_form(typed: &Typed, errors: &[FieldError]) -> Markup {
    let field = |name: &'static str, label: &str, value: &str, placeholder: &str| {
        text_field(errors, name, label, value, placeholder)
    };
    let action_error = error_for(errors, "action");
    html! {
        form.filters method="get" action="/audit" aria-label="Filter events" {
            (field("since", "Since", &typed.since, "2026-11-24 or RFC 3339"))
            (field("until", "Until", &typed.until, "2026-11-30 (inclusive)"))
            (field("actor", "Actor", &typed.actor, "alice or system"))
            div {
                label for="action" { "Action" }
                select id="action" name="action"
                    aria-invalid=[action_error.map(|_| "true")]
                    aria-describedby=[action_error.map(|_| "action-error")] {
                    option value="" selected[typed.action.is_empty()] { "any" }
                    @for a in ACTIONS {
                        option value=(a.as_str()) selected[typed.action == a.as_str()] { (a.as_str()) }
                    }
                }
                @if let Some(m) = action_error {
                    p.field-error id="action-error" { (m) }
                }
            }
            (field("request", "Request", &typed.request, "r-abcd2345efgh"))
            div {
                button type="submit" { "Filter" }
                " "
                a href="/audit" { "Clear" }
            }
        }
    }
}

fn event_table(events: &[AuditRecord]) -> Markup {
    html! {
        table.list {
            caption.muted { "Newest first" }
            thead {
                tr {
                    th.num scope="col" { "#" }
                    th scope="col" { "Time" }
                    th scope="col" { "Actor" }
                    th scope="col" { "Action" }
                    th scope="col" { "Request" }
                    th scope="col" { "Details" }
                }
            }
            tbody {
                @for e in events {
                    tr {
                        td.num { (e.seq) }
                        td { (time(e.at)) }
                        td { (e.actor) }
                        td { code { (e.action) } }
                        td {
                            @if let Some(r) = &e.request {
                                a href={"/requests/" (r)} { (r) }
                                br;
                                a.muted href={"/audit/requests/" (r)} { "timeline" }
                            } @else {
                                span.muted { "—" }
                            }
                        }
                        td { (details(&e.details)) }
                    }
                }
            }
        }
    }
}

fn pager(typed: &Typed, before: Option<i64>, older: Option<i64>) -> Markup {
    html! {
        nav.pager aria-label="Pages" {
            @if before.is_some() {
                a href={"/audit?" (typed.query(None))} { "« Newest" }
            }
            @if let Some(seq) = older {
                a href={"/audit?" (typed.query(Some(seq)))} rel="next" { "Older ›" }
            }
        }
    }
}

/// Details in one line: what people wrote first, then `key: value`
/// pairs; a nested state or kind shows only its name, the rest compact.
/// Empty values are left out. The whole JSON stays one click away.
/// Escaped like every interpolated value.
fn details(value: &Value) -> Markup {
    let Value::Object(map) = value else {
        return html! { (scalar(value)) };
    };
    const WRITTEN: [&str; 3] = ["justification", "comment", "reason"];
    let written = WRITTEN.iter().filter_map(|k| map.get(*k).map(|v| (*k, v)));
    let rest = map
        .iter()
        .filter(|(k, _)| !WRITTEN.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v));
    let shown: Vec<(&str, String)> = written
        .chain(rest)
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, scalar(v)))
        .filter(|(_, text)| !text.is_empty())
        .collect();
    html! {
        @for (key, text) in &shown {
            span { span.muted { (key) ":" } " " (text) } " "
        }
        details {
            summary.muted { "JSON" }
            code { (value.to_string()) }
        }
    }
}

/// A value in a few words: strings as written, a tagged object (a state,
/// a kind) by its tag, lists of words joined, anything else as JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(map) => ["state", "type", "outcome"]
            .iter()
            .find_map(|tag| map.get(*tag).and_then(Value::as_str))
            .map_or_else(|| v.to_string(), str::to_owned),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

// ---- one request's timeline -------------------------------------------------------

async fn timeline_page(State(b): State<AppState>, v: Viewer, Path(id): Path<String>) -> Response {
    if let Some(refused) = refusal_unless_auditor(&v) {
        return refused;
    }
    let id = match RequestId::parse(&id) {
        Ok(id) => id,
        Err(_) => return error_page(Some(&v), &ApiError::NotFound),
    };
    let events = match b
        .store
        .audit_events(&AuditFilter {
            request: Some(id.to_string()),
            ..AuditFilter::default()
        })
        .await
    {
        Ok(events) => events,
        Err(e) => return error_page(Some(&v), &ApiError::from(e)),
    };
    if events.is_empty() {
        return error_page(Some(&v), &ApiError::NotFound);
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("request", id.as_str())
        .finish();
    page(
        Some(&v),
        Nav::Audit,
        &format!("Timeline of {id}"),
        html! {
            p {
                a href={"/requests/" (id)} { "The request itself" }
                " · "
                a href={"/audit?" (query)} { "These events in the audit trail" }
                " · download "
                a href={"/audit/export.csv?" (query)} download { "CSV" }
                " · "
                a href={"/audit/export.jsonl?" (query)} download { "JSON Lines" }
            }
            ol.timeline {
                @for e in &events {
                    li {
                        (time(e.at)) " "
                        strong { code { (e.action) } }
                        " by " (e.actor)
                        span.muted { " (event " (e.seq) ")" }
                        br;
                        (details(&e.details))
                    }
                }
            }
        },
    )
}

// ---- exports ----------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Format {
    Csv,
    JsonLines,
}

async fn export_csv(State(b): State<AppState>, v: Viewer, RawQuery(query): RawQuery) -> Response {
    export(b, &v, query, Format::Csv)
}

async fn export_jsonl(State(b): State<AppState>, v: Viewer, RawQuery(query): RawQuery) -> Response {
    export(b, &v, query, Format::JsonLines)
}

/// The filtered trail in chain order, streamed page by page like the API's
/// export.
fn export(b: AppState, v: &Viewer, query: Option<String>, format: Format) -> Response {
    if let Some(refused) = refusal_unless_auditor(v) {
        return refused;
    }
    let form = query_form(query);
    let typed = Typed::read(&form);
    let search = match parse_filters(&form, &typed) {
        Ok(s) => AuditSearch {
            // Exports always run in chain order from the start.
            before_seq: None,
            newest_first: false,
            ..s
        },
        Err(errors) => {
            let text = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            return message_page(
                Some(v),
                StatusCode::BAD_REQUEST,
                "Not possible",
                "invalid_query",
                &format!("The export filters could not be used: {text}."),
            );
        }
    };
    let header_row = match format {
        Format::Csv => csv_row(&CSV_HEADER.map(str::to_owned)),
        Format::JsonLines => String::new(),
    };
    let pages = futures_util::stream::unfold(
        (b.store.clone(), search, 0_i64, false),
        move |(store, search, after, done)| async move {
            if done {
                return None;
            }
            let page = AuditSearch {
                after_seq: Some(after),
                limit: Some(EXPORT_PAGE),
                ..search.clone()
            };
            match store.search_audit(&page).await {
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    let last = events.last().map_or(after, |e| e.seq);
                    let finished = (events.len() as i64) < EXPORT_PAGE;
                    let chunk = match format {
                        Format::Csv => events.iter().map(csv_line).collect::<String>(),
                        Format::JsonLines => events.iter().map(json_line).collect::<String>(),
                    };
                    Some((
                        Ok::<_, std::io::Error>(chunk),
                        (store, search, last, finished),
                    ))
                }
                Err(e) => {
                    // Headers are gone already: end the body early; the
                    // missing last line tells the reader it is incomplete.
                    tracing::error!(error = %e, "audit export failed part-way");
                    Some((
                        Err(std::io::Error::other("audit export failed")),
                        (store, search, after, true),
                    ))
                }
            }
        },
    );
    let body = futures_util::stream::iter([Ok(header_row)])
        .chain(pages)
        .filter(|chunk| std::future::ready(!matches!(chunk, Ok(c) if c.is_empty())));
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::JsonLines => ("application/x-ndjson; charset=utf-8", "jsonl"),
    };
    let filename = format!(
        "elevate-audit-{}.{extension}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    let mut resp = (
        [(header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(body),
    )
        .into_response();
    secure_headers(&mut resp);
    let headers = resp.headers_mut();
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One event per line, as the API's export writes it.
fn json_line(e: &AuditRecord) -> String {
    match serde_json::to_string(e) {
        Ok(mut line) => {
            line.push('\n');
            line
        }
        // Cannot happen for these types; a line short is still visible.
        Err(err) => {
            tracing::error!(error = %err, seq = e.seq, "audit event not encodable");
            String::new()
        }
    }
}

const CSV_HEADER: [&str; 10] = [
    "seq",
    "at",
    "actor",
    "action",
    "request",
    "justification",
    "comment",
    "details",
    "prev_hash",
    "hash",
];

/// One event as a CSV record. The free text people wrote (justification,
/// comment or reason) gets its own columns so a spreadsheet can sort and
/// filter by it; `details` keeps the whole event as JSON.
fn csv_line(e: &AuditRecord) -> String {
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| e.details.get(*k).and_then(Value::as_str))
            .unwrap_or("")
            .to_owned()
    };
    csv_row(&[
        e.seq.to_string(),
        e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        e.actor.clone(),
        e.action.clone(),
        e.request.clone().unwrap_or_default(),
        text(&["justification"]),
        text(&["comment", "reason"]),
        e.details.to_string(),
        e.prev_hash.clone(),
        e.hash.clone(),
    ])
}

fn csv_row(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// One RFC 4180 field. A field a spreadsheet would take as a formula
/// (OWASP "CSV injection": it starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return) is prefixed with `'` so it shows as text instead of
/// running; spreadsheets in Japanese locales also accept the full-width
/// forms of those signs, so they are treated alike. Fields holding a
/// comma, quote or line break are quoted, quotes doubled.
fn csv_field(raw: &str) -> String {
    let formula = raw.starts_with(['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠']);
    let text = if formula {
        format!("'{raw}")
    } else {
        raw.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("本番DBの障害対応"), "本番DBの障害対応");
    }

    #[test]
    fn csv_fields_that_look_like_formulas_become_text() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("\rx"), "\"'\rx\"");
        assert_eq!(csv_field("＝1+1"), "'＝1+1");
        assert_eq!(csv_field("a=b"), "a=b");
    }

    #[test]
    fn times_are_dates_or_rfc3339() {
        let day = parse_instant("2026-11-24", false).unwrap();
        assert_eq!(day.to_rfc3339(), "2026-11-24T00:00:00+00:00");
        let end = parse_instant("2026-11-24", true).unwrap();
        assert_eq!(end.to_rfc3339(), "2026-11-25T00:00:00+00:00");
        let t = parse_instant("2026-11-24T09:00:00+09:00", false).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-24T00:00:00+00:00");
        assert!(parse_instant("2026-11-24T09:30", false).is_ok());
        assert!(parse_instant("yesterday", false).is_err());
        assert!(parse_instant("2026-02-30", false).is_err());
    }

    #[test]
    fn details_show_what_people_wrote_first_and_states_by_name() {
        let html = details(&serde_json::json!({
            "approvals": 1,
            "comment": "",
            "justification": "<b>fix</b>",
            "kind": { "type": "access" },
            "ticket": null,
            "approvers": ["group:dba", "user:bob"],
            "state": { "state": "active", "window": { "ends_at": "x" } },
        }))
        .into_string();
        let (line, json) = html.split_once("<details>").unwrap();
        assert_eq!(
            line,
            "<span><span class=\"muted\">justification:</span> &lt;b&gt;fix&lt;/b&gt;</span> \
             <span><span class=\"muted\">approvals:</span> 1</span> \
             <span><span class=\"muted\">approvers:</span> group:dba, user:bob</span> \
             <span><span class=\"muted\">kind:</span> access</span> \
             <span><span class=\"muted\">state:</span> active</span> "
        );
        assert!(json.contains("&quot;ends_at&quot;:&quot;x&quot;"));
    }

    #[test]
    fn actors_are_typed_as_names() {
        assert_eq!(parse_actor("alice").unwrap(), "user:alice");
        assert_eq!(parse_actor("user:Alice").unwrap(), "user:alice");
        assert_eq!(parse_actor("system").unwrap(), "system");
        assert!(parse_actor("group:x").is_err());
    }
}
