//! Approvals: what waits for my decision, with everything needed to decide
//! (requester, resource, role, duration, justification, ticket, who else
//! approved and the quorum), and what I decided before.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use elevate_core::request::{Review, State as RState};
use elevate_core::Timestamp;
use elevate_store::{RequestFilter, StoredRequest};
use maud::html;

use super::requests::{resource_path, waiting_for, watcher};
use super::{
    break_glass_badge, csrf_field, error_page, page, state_badge, time, Form, Nav, Viewer,
};
use crate::api::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/approvals", get(approvals))
}

/// How far back "what I decided" looks.
const DECIDED_SCAN: i64 = 2000;
const DECIDED_SHOWN: usize = 50;

/// `v`'s decision on a request, if they made one.
fn decision_of(s: &StoredRequest, v: &Viewer) -> Option<(&'static str, Timestamp)> {
    let r = &s.request;
    if let RState::Rejected { by, at, .. } = &r.state {
        if *by == v.p.name {
            return Some(("rejected", *at));
        }
    }
    if let RState::Revoked { by, at, .. } = &r.state {
        if *by == v.p.name && r.requester != v.p.name {
            return Some(("revoked", *at));
        }
    }
    if let Review::Acknowledged { by, at, .. } = &r.review {
        if *by == v.p.name {
            return Some(("acknowledged", *at));
        }
    }
    r.approvals
        .iter()
        .find(|a| a.by == v.p.name)
        .map(|a| ("approved", a.at))
}

async fn approvals(State(b): State<AppState>, v: Viewer, RawQuery(q): RawQuery) -> Response {
    let q = Form::parse(q.unwrap_or_default().as_bytes());
    let waiting = match waiting_for(&b, &v).await {
        Ok(w) => w,
        Err(e) => return error_page(Some(&v), &e),
    };
    let recent = match b
        .store
        .list_requests(&RequestFilter {
            requester: None,
            states: Vec::new(),
            limit: Some(DECIDED_SCAN),
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return error_page(Some(&v), &e.into()),
    };
    let mut decided: Vec<(&StoredRequest, &'static str, Timestamp)> = recent
        .iter()
        .filter_map(|s| decision_of(s, &v).map(|(d, at)| (s, d, at)))
        .collect();
    decided.sort_by_key(|d| std::cmp::Reverse(d.2));
    decided.truncate(DECIDED_SHOWN);
    let fp = super::requests::fingerprint_of(&waiting);
    let body = html! {
        (watcher("approvals", &fp))
        @if let (Some(done), Some(id)) = (q.get("done"), q.get("id")) {
            p.notice.ok role="status" { "Request " a href={"/requests/" (id)} { (id) } ": " (done) "." }
        }
        h2 { "Waiting for you " span.muted { "(" (waiting.len()) ")" } }
        @if waiting.is_empty() {
            p.muted { "Nothing waits for your decision." }
        }
        @for s in &waiting {
            @let r = &s.request;
            @let req = b.requirement_of(r);
            article.card {
                h3 { a href={"/requests/" (r.id)} { (r.role) " on " (r.target) "/" (resource_path(&b, s)) } " "
                    @if r.break_glass { (break_glass_badge()) } }
                dl.kv {
                    dt { "Requester" } dd { (r.requester) }
                    dt { "Duration" } dd { (r.duration)
                        @if let Some(start) = r.requested_start { ", from " (time(start)) } @else { ", from approval" } }
                    dt { "Justification" } dd.justification { (r.justification.as_str()) }
                    dt { "Ticket" } dd { @if let Some(t) = &r.ticket { (t.as_str()) } @else { span.muted { "none" } } }
                    dt { "Approvals" } dd {
                        (r.approvals.len()) " of " (req.as_ref().map_or(1, |q| q.quorum))
                        @if !r.approvals.is_empty() {
                            " (" (r.approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>().join(", ")) ")"
                        }
                    }
                    dt { "Requested" } dd { (time(r.created_at)) }
                    @if let RState::Pending { expires_at } = &r.state { dt { "Expires" } dd { (time(*expires_at)) } }
                }
                form method="post" action={"/requests/" (r.id) "/approve"} {
                    (csrf_field(&v))
                    input type="hidden" name="back" value="/approvals";
                    label for={"comment-" (r.id)} { "Comment " span.muted { "(required to reject)" } }
                    textarea id={"comment-" (r.id)} name="comment" rows="2" {}
                    div.actions {
                        button type="submit" { "Approve" }
                        button.danger type="submit" formaction={"/requests/" (r.id) "/reject"} { "Reject" }
                    }
                }
            }
        }
        h2 { "What you decided " span.muted { "(latest " (DECIDED_SHOWN) ")" } }
        @if decided.is_empty() {
            p.muted { "No decisions yet." }
        } @else {
            table.list {
                thead { tr {
                    th scope="col" { "Request" } th scope="col" { "Requester" } th scope="col" { "Resource" }
                    th scope="col" { "Role" } th scope="col" { "Your decision" } th scope="col" { "Now" }
                } }
                tbody {
                    @for (s, d, at) in &decided {
                        @let r = &s.request;
                        tr {
                            td { a href={"/requests/" (r.id)} { (r.id) } }
                            td { (r.requester) }
                            td { (r.target) "/" (resource_path(&b, s)) }
                            td { (r.role) }
                            td { (d) " " (time(*at)) }
                            td { (state_badge(&r.state)) }
                        }
                    }
                }
            }
        }
    };
    page(Some(&v), Nav::Approvals, "Approvals", body)
}
