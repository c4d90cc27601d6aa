//! My requests, one request in full (with every action its viewer may
//! take), the start page, and the fingerprints pages poll to refresh
//! themselves when what they show changes.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use elevate_core::request::{Kind, Review, State as RState};
use elevate_core::values::{Comment, RequestId};
use elevate_store::{AuditFilter, RequestFilter, StoredRequest};
use maud::{html, Markup};
use sha2::{Digest, Sha256};

use super::{
    break_glass_badge, check_post, csrf_field, error_page, page, redirect, remaining, state_badge,
    time, Form, Nav, Viewer,
};
use crate::api::AppState;
use crate::engine::Broker;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/requests", get(mine))
        .route("/requests/{id}", get(detail))
        .route("/requests/{id}/{action}", post(act))
        .route("/live/{what}", get(live))
        .route("/live/requests/{id}", get(live_one))
}

/// Non-terminal states, in the order a request goes through them.
const OPEN: [&str; 5] = ["pending", "scheduled", "approved", "active", "ending"];
/// How many ended requests "My requests" shows.
const RECENT_ENDED: i64 = 50;

/// Where a request's resource sits, e.g. `prod/orders`.
pub(super) fn resource_path(b: &Broker, s: &StoredRequest) -> String {
    let r = &s.request;
    b.catalog()
        .targets
        .get(&r.target)
        .map_or_else(|| r.resource.to_string(), |t| t.path(&r.resource))
}

/// What a list shows of a request, hashed: a page polls for it and
/// reloads when it changes.
pub fn fingerprint_of(rows: &[StoredRequest]) -> String {
    let mut h = Sha256::new();
    for s in rows {
        let r = &s.request;
        h.update(r.id.as_str().as_bytes());
        h.update(r.state.name().as_bytes());
        h.update(r.approvals.len().to_le_bytes());
        h.update([
            matches!(r.review, Review::Awaiting) as u8,
            (s.removal_failures > 0) as u8,
            (s.apply_failures > 0) as u8,
        ]);
        if let Some(w) = r.state.window() {
            h.update(w.ends_at.timestamp().to_le_bytes());
        }
    }
    hex::encode(&h.finalize()[..12])
}

/// The element `app.js` watches.
pub fn watcher(what: &str, fp: &str) -> Markup {
    html! { div hidden data-watch={"/live/" (what)} data-fingerprint=(fp) {} }
}

async fn my_open(b: &Broker, v: &Viewer) -> Result<Vec<StoredRequest>, ApiError> {
    Ok(b.store
        .list_requests(&RequestFilter {
            requester: Some(v.p.name.to_string()),
            states: OPEN.iter().map(|s| s.to_string()).collect(),
            limit: Some(1000),
        })
        .await?)
}

/// Requests waiting for `v`'s decision: in their scope, not theirs, not
/// yet approved by them.
pub async fn waiting_for(b: &Broker, v: &Viewer) -> Result<Vec<StoredRequest>, ApiError> {
    let rows = b
        .store
        .list_requests(&RequestFilter {
            requester: None,
            states: vec!["pending".into()],
            limit: Some(10_000),
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|s| {
            let r = &s.request;
            r.requester != v.p.name
                && !r.approvals.iter().any(|a| a.by == v.p.name)
                // With the fallback approvers once it was escalated.
                && b.requirement_of(r).is_some_and(|q| q.allows(&v.p))
        })
        .collect())
}

/// Acknowledgements an approver owes: break-glass grants in their scope.
async fn awaiting_review(b: &Broker, v: &Viewer) -> Result<Vec<StoredRequest>, ApiError> {
    let rows = b
        .store
        .list_requests(&RequestFilter {
            requester: None,
            states: Vec::new(),
            limit: Some(2000),
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|s| {
            s.request.review == Review::Awaiting
                && (v.admin
                    || b.catalog()
                        .approval_requirement(
                            &s.request.target,
                            &s.request.resource,
                            &s.request.role,
                        )
                        .is_some_and(|q| q.allows(&v.p)))
        })
        .collect())
}

/// Grants being applied, active or being removed that `v` may see: their
/// own, those they approve, or all for admins and auditors. The active
/// access page lists these; its watcher fingerprints them.
pub async fn active_in_scope(b: &Broker, v: &Viewer) -> Result<Vec<StoredRequest>, ApiError> {
    let rows = b
        .store
        .list_requests(&RequestFilter {
            requester: None,
            states: vec!["approved".into(), "active".into(), "ending".into()],
            limit: Some(10_000),
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|s| b.can_see(&v.p, &s.request))
        .collect())
}

// ---- the start page ----------------------------------------------------------

pub async fn dashboard(b: &Broker, v: &Viewer) -> Response {
    let (open, waiting, review) =
        match tokio::try_join!(my_open(b, v), waiting_for(b, v), awaiting_review(b, v)) {
            Ok(x) => x,
            Err(e) => return error_page(Some(v), &e),
        };
    let active: Vec<&StoredRequest> = open
        .iter()
        .filter(|s| {
            matches!(
                s.request.state,
                RState::Active { .. } | RState::Approved { .. } | RState::Ending { .. }
            )
        })
        .collect();
    let pending = open.len() - active.len();
    let mut watched = open.clone();
    watched.extend(waiting.iter().cloned());
    let body = html! {
        (watcher("home", &fingerprint_of(&watched)))
        p { "Signed in as " strong { (v.p.name) }
            @if !v.p.groups.is_empty() {
                " (" (v.p.groups.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(", ")) ")"
            }
            @if v.admin { " " span.badge { "admin" } }
            @if v.auditor { " " span.badge { "auditor" } }
        }
        div.grid {
            section.card {
                h2 { "Your access now" }
                @if active.is_empty() { p.muted { "Nothing is granted to you right now." } }
                ul {
                    @for s in &active {
                        li {
                            a href={"/requests/" (s.request.id)} { (s.request.role) " on " (resource_path(b, s)) }
                            " " (state_badge(&s.request.state))
                            @if let Some(w) = s.request.state.window() { " " (remaining(w.ends_at)) }
                        }
                    }
                }
                p { a.button href="/request" { "Request access" } }
            }
            section.card {
                h2 { "Your open requests" }
                p { (pending) " waiting for approval or their start. " a href="/requests" { "My requests" } }
            }
            section.card {
                h2 { "Waiting for you" }
                p { (waiting.len()) " request" @if waiting.len() != 1 { "s" } " to decide. " a href="/approvals" { "Approvals" } }
                @if !review.is_empty() {
                    p.notice.warn { (review.len()) " break-glass grant" @if review.len() != 1 { "s" } " awaiting your review." }
                }
            }
        }
    };
    page(Some(v), Nav::Home, "elevate", body)
}

// ---- my requests ------------------------------------------------------------------

async fn mine(State(b): State<AppState>, v: Viewer) -> Response {
    let open = match my_open(&b, &v).await {
        Ok(o) => o,
        Err(e) => return error_page(Some(&v), &e),
    };
    let ended = match b
        .store
        .list_requests(&RequestFilter {
            requester: Some(v.p.name.to_string()),
            states: [
                "ended",
                "revoked",
                "rejected",
                "cancelled",
                "expired",
                "failed",
                "extended",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            limit: Some(RECENT_ENDED),
        })
        .await
    {
        Ok(e) => e,
        Err(e) => return error_page(Some(&v), &e.into()),
    };
    let section = |title: &str, states: &[&str], empty: &str| {
        let rows: Vec<&StoredRequest> = open
            .iter()
            .filter(|s| states.contains(&s.request.state.name()))
            .collect();
        html! {
            section {
                h2 { (title) " " span.muted { "(" (rows.len()) ")" } }
                @if rows.is_empty() { p.muted { (empty) } } @else { (table(&b, &v, &rows)) }
            }
        }
    };
    let ended_rows: Vec<&StoredRequest> = ended.iter().collect();
    let body = html! {
        (watcher("mine", &fingerprint_of(&open)))
        p { a.button href="/request" { "Request access" } }
        (section("Pending", &["pending"], "No request is waiting for approval."))
        (section("Scheduled", &["scheduled"], "Nothing is scheduled."))
        (section("Active", &["approved", "active", "ending"], "Nothing is granted to you right now."))
        section {
            h2 { "Ended " span.muted { "(last " (RECENT_ENDED) ")" } }
            @if ended_rows.is_empty() { p.muted { "Nothing yet." } } @else { (table(&b, &v, &ended_rows)) }
        }
    };
    page(Some(&v), Nav::Requests, "My requests", body)
}

/// A table of requests with the quick actions the requester has.
fn table(b: &Broker, v: &Viewer, rows: &[&StoredRequest]) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Request" }
                th scope="col" { "Resource" }
                th scope="col" { "Role" }
                th scope="col" { "State" }
                th scope="col" { "Window" }
                th scope="col" { "Justification" }
                th scope="col" { span.muted { "Actions" } }
            } }
            tbody {
                @for s in rows {
                    @let r = &s.request;
                    tr {
                        td { a href={"/requests/" (r.id)} { (r.id) } br; span.muted { (time(r.created_at)) } }
                        td { (r.target) "/" (resource_path(b, s)) }
                        td { (r.role) @if r.break_glass { " " (break_glass_badge()) } }
                        td { (state_badge(&r.state)) br; span.muted { (crate::api::status_text(s)) } }
                        td {
                            @if let Some(w) = r.state.window() {
                                (time(w.starts_at)) " – " (time(w.ends_at))
                                @if matches!(r.state, RState::Active { .. }) { br; (remaining(w.ends_at)) }
                            } @else { (r.duration) }
                        }
                        td.justification { (r.justification.as_str()) }
                        td {
                            @if r.requester == v.p.name {
                                @if matches!(r.state, RState::Pending { .. } | RState::Scheduled { .. }) {
                                    form.inline method="post" action={"/requests/" (r.id) "/cancel"} {
                                        (csrf_field(v))
                                        button.secondary type="submit" { "Cancel request" }
                                    }
                                }
                                @if matches!(r.state, RState::Active { .. } | RState::Approved { .. }) {
                                    form.inline method="post" action={"/requests/" (r.id) "/revoke"}
                                        data-confirm="End this access now?" {
                                        (csrf_field(v))
                                        button.danger type="submit" { "Deactivate now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- one request --------------------------------------------------------------------

fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(raw).map_err(ApiError::from)
}

async fn load(b: &Broker, v: &Viewer, raw: &str) -> Result<StoredRequest, ApiError> {
    let id = parse_id(raw)?;
    let s = b.load(&id).await?;
    if !b.can_see(&v.p, &s.request) {
        return Err(ApiError::NotFound);
    }
    Ok(s)
}

async fn detail(
    State(b): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let s = match load(&b, &v, &id).await {
        Ok(s) => s,
        Err(e) => return error_page(Some(&v), &e),
    };
    let q = Form::parse(q.unwrap_or_default().as_bytes());
    let events = b
        .store
        .audit_events(&AuditFilter {
            request: Some(s.request.id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap_or_default();
    let extensions = b
        .store
        .extensions_of(&s.request.id)
        .await
        .unwrap_or_default();
    // Who was told, and whether it reached them: addresses are personal,
    // so admins and auditors only.
    let deliveries = if v.sees_all() {
        b.store
            .deliveries(Some(s.request.id.as_str()))
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let r = &s.request;
    let requirement = b.requirement_of(r);
    let mine = r.requester == v.p.name;
    let approver = !mine && requirement.as_ref().is_some_and(|q| q.allows(&v.p));
    let pending = matches!(r.state, RState::Pending { .. });
    let running = matches!(r.state, RState::Active { .. } | RState::Approved { .. });
    let done = q.get("done");
    let catalog = b.catalog();
    let target = catalog.targets.get(&r.target);
    let body = html! {
        (watcher(&format!("requests/{}", r.id), &fingerprint_of(std::slice::from_ref(&s))))
        @if q.get("created").is_some() {
            p.notice.ok role="status" {
                @if pending { "Request created. Its approvers have been asked." }
                @else { "Request created." }
            }
        }
        @if let Some(d) = done { p.notice.ok role="status" { "Done: " (d) "." } }
        p {
            span #state class={"badge state-" (r.state.name())} { (r.state.name()) }
            @let status = crate::api::status_text(&s);
            // The badge already says the state; add only what it does not.
            @let more = status.strip_prefix(r.state.name()).unwrap_or(&status).trim_start_matches([',', ';', ':', ' ']);
            @if !more.is_empty() { " " span.muted { (more) } }
            @if r.break_glass { " " (break_glass_badge()) }
            @if target.is_some_and(|t| t.dry_run) { " " span.badge { "dry-run" } }
        }
        dl.kv {
            dt { "Requester" } dd { (r.requester) }
            dt { "Resource" } dd { (r.target) "/" (resource_path(&b, &s)) }
            dt { "Role" } dd { (r.role) }
            dt { "Duration" } dd { (r.duration) }
            @if let Kind::Extension { of } = &r.kind {
                dt { "Extends" } dd { a href={"/requests/" (of)} { (of) } }
            }
            dt { "Justification" } dd.justification { (r.justification.as_str()) }
            dt { "Ticket" } dd { @if let Some(t) = &r.ticket { (t.as_str()) } @else { span.muted { "none" } } }
            dt { "Created" } dd { (time(r.created_at)) }
            @if let Some(start) = r.requested_start { dt { "Asked to start" } dd { (time(start)) } }
            @if let RState::Pending { expires_at } = &r.state { dt { "Expires if undecided" } dd { (time(*expires_at)) } }
            @if let Some(w) = r.state.window() {
                dt { "Window" } dd {
                    (time(w.starts_at)) " – " (time(w.ends_at))
                    @if matches!(r.state, RState::Active { .. }) { " · " (remaining(w.ends_at)) }
                }
            }
            @if let RState::Active { since, .. } = &r.state { dt { "Active since" } dd { (time(*since)) } }
            dt { "Approvals" } dd {
                @if let Some(q) = &requirement {
                    (r.approvals.len()) " of " (q.quorum) " needed, from "
                    (q.approvers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))
                } @else { "no approval policy" }
                @if !r.approvals.is_empty() {
                    ul { @for a in &r.approvals {
                        li { (a.by) " approved " (time(a.at))
                            @if !a.comment.as_str().is_empty() { ": " q { (a.comment.as_str()) } } }
                    } }
                }
            }
            @match &r.state {
                RState::Rejected { by, comment, at } => {
                    dt { "Rejected" } dd { "by " (by) " " (time(*at)) @if !comment.as_str().is_empty() { ": " q { (comment.as_str()) } } }
                }
                RState::Revoked { by, reason, at, .. } => {
                    dt { "Revoked" } dd { "by " (by) " " (time(*at)) @if !reason.as_str().is_empty() { ": " q { (reason.as_str()) } } }
                }
                RState::Cancelled { by, reason, at } => {
                    dt { "Cancelled" } dd { "by " (by.to_string()) " " (time(*at)) ": " (reason) }
                }
                RState::Failed { reason, at, .. } => {
                    dt { "Failed" } dd { (time(*at)) ": " (reason) }
                }
                _ => {}
            }
            @match &r.review {
                Review::Awaiting => { dt { "Review" } dd { "break-glass, awaiting an approver's review" } }
                Review::Acknowledged { by, at, comment } => {
                    dt { "Review" } dd { "acknowledged by " (by) " " (time(*at)) @if !comment.as_str().is_empty() { ": " q { (comment.as_str()) } } }
                }
                Review::NotNeeded => {}
            }
        }
        @if approver && pending {
            section.card #decide {
                h2 { "Your decision" }
                form method="post" action={"/requests/" (r.id) "/approve"} {
                    (csrf_field(&v))
                    label for="comment" { "Comment " span.muted { "(required to reject)" } }
                    textarea #comment name="comment" rows="2" {}
                    div.actions {
                        button type="submit" { "Approve" }
                        button.danger type="submit" formaction={"/requests/" (r.id) "/reject"} { "Reject" }
                    }
                }
            }
        }
        @if mine && matches!(r.state, RState::Pending { .. } | RState::Scheduled { .. }) {
            form.inline method="post" action={"/requests/" (r.id) "/cancel"} {
                (csrf_field(&v))
                button.secondary type="submit" { "Cancel request" }
            }
        }
        // Targets that hand out sessions (aws-sts): the console, one
        // click away. Credentials stay on the CLI (`elevate creds`), where
        // they go into a shell rather than onto a page.
        @if mine && matches!(r.state, RState::Active { .. }) && b.providers.get(&r.target).is_some_and(|p| p.sessions().is_some()) {
            form.inline method="post" action={"/requests/" (r.id) "/console"} {
                (csrf_field(&v))
                button type="submit" { "Open the AWS console" }
            }
            p.muted { "Temporary credentials for the command line: " code { "elevate creds " (r.id) } }
        }
        @if mine && running {
            form.inline method="post" action={"/requests/" (r.id) "/revoke"} data-confirm="End this access now?" {
                (csrf_field(&v))
                button.danger type="submit" { "Deactivate now" }
            }
        }
        @if !mine && (approver || v.admin) && (running || matches!(r.state, RState::Scheduled { .. })) {
            section.card {
                h2 { "Revoke" }
                form method="post" action={"/requests/" (r.id) "/revoke"} data-confirm="Revoke this access now?" {
                    (csrf_field(&v))
                    label for="revoke-comment" { "Reason" }
                    textarea #revoke-comment name="comment" rows="2" {}
                    div.actions { button.danger type="submit" { "Revoke" } }
                }
            }
        }
        @if r.review == Review::Awaiting && (approver || v.admin) {
            section.card {
                h2 { "Review break-glass use" }
                form method="post" action={"/requests/" (r.id) "/acknowledge"} {
                    (csrf_field(&v))
                    label for="ack-comment" { "Comment" }
                    textarea #ack-comment name="comment" rows="2" {}
                    div.actions { button type="submit" { "Acknowledge" } }
                }
            }
        }
        @if mine && matches!(r.state, RState::Active { .. }) && r.kind == Kind::Access {
            section.card {
                h2 { "Extend" }
                form method="post" action={"/requests/" (r.id) "/extend"} {
                    (csrf_field(&v))
                    label for="extend-duration" { "Add" }
                    input #extend-duration type="text" name="duration" value="30m" required;
                    label for="extend-reason" { "Justification" }
                    textarea #extend-reason name="reason" rows="2" required {}
                    label for="extend-ticket" { "Ticket " span.muted { "(if required)" } }
                    input #extend-ticket type="text" name="ticket";
                    div.actions { button.secondary type="submit" { "Ask for more time" } }
                }
            }
        }
        @if !extensions.is_empty() {
            h2 { "Extensions" }
            ul { @for e in &extensions {
                li { a href={"/requests/" (e.request.id)} { (e.request.id) } " +" (e.request.duration) " " (state_badge(&e.request.state)) }
            } }
        }
        h2 { "History" }
        ol.timeline {
            @for e in &events {
                li { (time(e.at)) " · " strong { (e.action) } " by " (e.actor) }
            }
        }
        @if v.sees_all() { p { a href={"/audit/requests/" (r.id)} { "Full audit timeline" } } }
        @if !deliveries.is_empty() {
            h2 { "Notifications" }
            table {
                thead { tr { th { "Event" } th { "Channel" } th { "To" } th { "State" } th { "Attempts" } th { "Last error" } } }
                tbody { @for d in &deliveries {
                    tr {
                        td { (d.event) }
                        td { (d.channel) }
                        td { (d.recipient) }
                        td { (d.state) }
                        td { (d.attempts) }
                        td { (d.last_error.as_deref().unwrap_or("")) }
                    }
                } }
            }
        }
        p { a href="/requests" { "← My requests" } " · " a href="/approvals" { "Approvals" } }
    };
    let title = format!("Request {}", r.id);
    page(Some(&v), Nav::None, &title, body)
}

/// The actions of the detail page and the lists.
async fn act(
    State(b): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(resp) = check_post(&v, &headers, &form) {
        return resp;
    }
    if action == "console" {
        // Straight to AWS's sign-in URL: a session is issued now, for the
        // requester only, with every check the API makes.
        let issued = match parse_id(&id) {
            Ok(rid) => {
                b.issue_session(&v.p, &rid, crate::sessions::SessionKind::Console, None)
                    .await
            }
            Err(e) => Err(e),
        };
        return match issued {
            // A link, not a redirect: the page's form-action policy
            // ('self') would stop a form's redirect to AWS, and a person's
            // click on a link is what it should be anyway.
            Ok(crate::sessions::Issued {
                console_url: Some(url),
                session,
            }) => {
                let body = html! {
                    section.card {
                        h2 { "Your AWS console session is ready" }
                        p { a.button href=(url) rel="noreferrer" { "Open the AWS console" } }
                        p.muted {
                            "The sign-in link works once, for 15 minutes. The session ends at "
                            (session.expiration.to_rfc3339()) ", never after your access ends."
                        }
                        p { a href={"/requests/" (id)} { "← Back to the request" } }
                    }
                };
                page(Some(&v), Nav::None, "AWS console", body)
            }
            Ok(_) => error_page(Some(&v), &ApiError::NotFound),
            Err(e) => error_page(Some(&v), &e),
        };
    }
    let result = run_action(&b, &v, &id, &action, &form).await;
    match result {
        Ok((id, done)) => {
            // Back to where the button was: a list, or the request.
            let back = form
                .get("back")
                .filter(|p| matches!(*p, "/approvals" | "/requests" | "/active"))
                .map(|p| format!("{p}?done={done}&id={id}"))
                .unwrap_or_else(|| format!("/requests/{id}?done={done}"));
            redirect(&back)
        }
        // A decision that needs a fresh multi-factor sign-in: offer it,
        // coming back to the request to decide again.
        Err(e) if e.code() == "step_up_required" => super::step_up_page(
            &v,
            &e.message(),
            &format!("/requests/{}", crate::oidc::url_encode(&id)),
        ),
        Err(e) => error_page(Some(&v), &e),
    }
}

async fn run_action(
    b: &Broker,
    v: &Viewer,
    id: &str,
    action: &str,
    form: &Form,
) -> Result<(RequestId, &'static str), ApiError> {
    let id = parse_id(id)?;
    let comment =
        || Comment::parse(form.get("comment").unwrap_or("").trim()).map_err(ApiError::from);
    let done = match action {
        "approve" => {
            b.approve(&v.p, &id, comment()?).await?;
            "approved"
        }
        "reject" => {
            b.reject(&v.p, &id, comment()?).await?;
            "rejected"
        }
        "cancel" => {
            b.cancel(&v.p, &id, comment()?).await?;
            "cancelled"
        }
        "revoke" => {
            let r = b.revoke(&v.p, &id, comment()?).await?;
            if r.request.requester == v.p.name {
                "deactivated"
            } else {
                "revoked"
            }
        }
        "acknowledge" => {
            b.acknowledge(&v.p, &id, comment()?).await?;
            "acknowledged"
        }
        "extend" => {
            let ext = b
                .extend(
                    &v.p,
                    &id,
                    form.get("duration").unwrap_or("").trim(),
                    form.get("reason").unwrap_or(""),
                    form.text("ticket").as_deref(),
                )
                .await?;
            return Ok((ext.request.id, "extension requested"));
        }
        _ => return Err(ApiError::NotFound),
    };
    Ok((id, done))
}

// ---- live updates --------------------------------------------------------------------

/// The fingerprint of what a page shows, as plain text, for `app.js`.
async fn live(State(b): State<AppState>, headers: HeaderMap, Path(what): Path<String>) -> Response {
    // A 401, not a redirect to sign in: a script polls this, and must stop
    // rather than start sign-ins in the background.
    let Some(v) = super::viewer_of(&b, &headers).await else {
        return (StatusCode::UNAUTHORIZED, "signed out").into_response();
    };
    let rows = match what.as_str() {
        "mine" => my_open(&b, &v).await,
        "approvals" => waiting_for(&b, &v).await,
        "home" => match tokio::try_join!(my_open(&b, &v), waiting_for(&b, &v)) {
            Ok((mut a, w)) => {
                a.extend(w);
                Ok(a)
            }
            Err(e) => Err(e),
        },
        "active" => active_in_scope(&b, &v).await,
        _ => Err(ApiError::NotFound),
    };
    match rows {
        Ok(rows) => text(fingerprint_of(&rows)),
        Err(e) => (e.status(), e.code()).into_response(),
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn live_one(
    State(b): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(v) = super::viewer_of(&b, &headers).await else {
        return (StatusCode::UNAUTHORIZED, "signed out").into_response();
    };
    match load(&b, &v, &id).await {
        Ok(s) => text(fingerprint_of(std::slice::from_ref(&s))),
        Err(e) => (e.status(), e.code()).into_response(),
    }
}
