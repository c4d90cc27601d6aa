//! Approval links from e-mail: `/links/TOKEN` (see `notify::link`).
//!
//! - `GET` needs a session (it sends the browser to sign in and back) and
//!   only shows what the link would do, with a confirmation form. Mail
//!   scanners and link previews that fetch it change nothing.
//! - `POST` from the signed-in approver named in the link, with the
//!   session's CSRF token, records the decision exactly as the approvals
//!   page would (quorum, self-approval, step-up and scope checks all
//!   apply) and spends the link in the same transaction.
//!
//! The sign-in redirect carries the link's path as where to come back
//! to, so a token can sit in a sign-in in progress for its few minutes;
//! it is useless without the session of the approver it names.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use elevate_core::request::State as RState;
use elevate_core::values::{Comment, RequestId};
use maud::html;

use super::{
    check_post, csrf_field, error_page, message_page, page, redirect, step_up_page, Form, Nav,
    Viewer,
};
use crate::api::AppState;
use crate::error::ApiError;
use crate::notify::link::{self, Claims, Decision, LinkError};

pub fn routes() -> Router<AppState> {
    Router::new().route("/links/{token}", get(show).post(decide))
}

fn refused(v: &Viewer, e: &LinkError) -> Response {
    let status = match e {
        LinkError::Invalid => StatusCode::BAD_REQUEST,
        LinkError::Expired | LinkError::Used => StatusCode::GONE,
    };
    message_page(Some(v), status, "Link not usable", e.code(), e.message())
}

/// The link's claims, if it is genuine, unexpired, unspent and meant for
/// the viewer; otherwise the page that says why not.
async fn check(b: &AppState, v: &Viewer, token: &str) -> Result<Claims, Response> {
    let claims =
        link::verify(b.notifier.link_key(), token, Utc::now()).map_err(|e| refused(v, &e))?;
    match b.store.link_spent(&claims.n).await {
        Ok(false) => {}
        Ok(true) => return Err(refused(v, &LinkError::Used)),
        Err(e) => return Err(error_page(Some(v), &ApiError::from(e))),
    }
    if claims.u != v.p.name.as_str() {
        return Err(message_page(
            Some(v),
            StatusCode::FORBIDDEN,
            "Not your link",
            "link_other_user",
            &format!(
                "This link was sent to {}, and you are signed in as {}. Nothing was changed. \
                 Sign out and in as the person it was sent to, or open the request from elevate.",
                claims.u, v.p.name
            ),
        ));
    }
    Ok(claims)
}

async fn show(State(b): State<AppState>, v: Viewer, Path(token): Path<String>) -> Response {
    let claims = match check(&b, &v, &token).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let Ok(id) = RequestId::parse(&claims.r) else {
        return refused(&v, &LinkError::Invalid);
    };
    let stored = match b.load(&id).await {
        Ok(s) if b.can_see(&v.p, &s.request) => s,
        Ok(_) => return error_page(Some(&v), &ApiError::NotFound),
        Err(e) => return error_page(Some(&v), &e),
    };
    let r = &stored.request;
    let href = format!("/requests/{}", r.id);
    if !matches!(r.state, RState::Pending { .. }) {
        return page(
            Some(&v),
            Nav::None,
            "Already decided",
            html! {
                h1 { "Already decided" }
                p { "This request is " strong { (r.state.name()) } " and needs no decision now. Nothing was changed." }
                p { a href=(href) { "Open the request" } }
            },
        );
    }
    let (verb, title) = match claims.d {
        Decision::Approve => ("Approve", "Approve this request?"),
        Decision::Reject => ("Reject", "Reject this request?"),
    };
    page(
        Some(&v),
        Nav::None,
        title,
        html! {
            h1 { (title) }
            p { "Nothing has been decided yet. Check the request, then confirm." }
            dl.kv {
                dt { "Requester" } dd { (r.requester.as_str()) }
                dt { "Access" } dd { (r.role.as_str()) " on " (r.target.as_str()) "/" (r.resource.as_str()) }
                dt { "Duration" } dd { (r.duration.to_string()) }
                dt { "Justification" } dd.justification { (r.justification.as_str()) }
                @if let Some(t) = &r.ticket { dt { "Ticket" } dd { (t.as_str()) } }
                @if r.break_glass { dt { "Break-glass" } dd { "yes" } }
            }
            form method="post" action=(format!("/links/{token}")) {
                (csrf_field(&v))
                label for="comment" {
                    "Comment "
                    @if claims.d == Decision::Reject { span.muted { "(required to reject)" } }
                }
                textarea id="comment" name="comment" rows="3" required[claims.d == Decision::Reject] {}
                p { button type="submit" name="confirm" value=(claims.d.as_str()) { (verb) } }
            }
            p { a href=(href) { "Open the full request instead" } }
        },
    )
}

async fn decide(
    State(b): State<AppState>,
    v: Viewer,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(resp) = check_post(&v, &headers, &form) {
        return resp;
    }
    let claims = match check(&b, &v, &token).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    // The button pressed must be the decision the link offers.
    if form.get("confirm") != Some(claims.d.as_str()) {
        return message_page(
            Some(&v),
            StatusCode::BAD_REQUEST,
            "Not confirmed",
            "link_not_confirmed",
            "The decision was not confirmed on the page. Nothing was changed.",
        );
    }
    let Ok(id) = RequestId::parse(&claims.r) else {
        return refused(&v, &LinkError::Invalid);
    };
    let comment = match Comment::parse(form.get("comment").unwrap_or("")) {
        Ok(c) => c,
        Err(e) => return error_page(Some(&v), &ApiError::from(e)),
    };
    // Spent in the decision's own transaction: of two confirmations one
    // acts, and a decision refused (a step-up needed, already decided)
    // leaves the link usable.
    let spend = Some((claims.n.as_str(), claims.expires_at()));
    let done = match claims.d {
        Decision::Approve => b.approve_spending(&v.p, &id, comment, spend).await,
        Decision::Reject => b.reject_spending(&v.p, &id, comment, spend).await,
    };
    match done {
        Ok(_) => redirect(&format!("/requests/{id}?decided=1")),
        Err(e) if e.code() == "link_used" => refused(&v, &LinkError::Used),
        // Back to this page after a fresh sign-in; the link still works.
        Err(e) if e.code() == "step_up_required" => {
            step_up_page(&v, &e.message(), &format!("/links/{token}"))
        }
        Err(e) => error_page(Some(&v), &e),
    }
}
