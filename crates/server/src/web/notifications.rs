//! `/admin/notifications`: where elevate sends what, and whether it gets
//! there. For admins and auditors: the channels configured (never their
//! secrets), how far each reader of the audit trail has got, deliveries by
//! state, and the latest ones that failed with their error.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;

use super::{error_page, message_page, page, Nav, Viewer};
use crate::api::AppState;
use crate::error::ApiError;
use crate::notify::ChatFormat;

/// Failed deliveries listed at most.
const TROUBLED_SHOWN: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/notifications", get(overview))
}

/// Scheme and host of a URL, for showing where a webhook goes without a
/// path or query that may carry a token.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("{}://{h}", u.scheme())))
        .unwrap_or_else(|| "(unreadable URL)".into())
}

async fn overview(State(b): State<AppState>, v: Viewer) -> Response {
    if !v.sees_all() {
        return message_page(
            Some(&v),
            StatusCode::FORBIDDEN,
            "Not allowed",
            "forbidden",
            "Only admins and auditors see the notification settings.",
        );
    }
    let loaded = async {
        Ok::<_, ApiError>((
            b.store.cursors().await?,
            b.store.audit_head_seq().await?,
            b.store.delivery_counts().await?,
            b.store.troubled_deliveries(TROUBLED_SHOWN).await?,
        ))
    }
    .await;
    let (cursors, head, counts, troubled) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(Some(&v), &e),
    };
    let s = &b.notifier.settings;
    let body = html! {
        h1 { "Notifications" }
        p { a href="/admin" { "← Administration" } " · " a href="/metrics" { "Metrics" } }
        h2 { "Channels" }
        @if !s.any_channel() && s.webhooks.is_empty() {
            p { "Nothing is configured: add " code { "[notifications]" } " to the config (see docs/notifications.md)." }
        }
        dl.kv {
            dt { "E-mail" }
            dd { @match &s.email {
                Some(e) => { (e.host) ":" (e.port) " as " (e.from) }
                None => { "not configured" }
            } }
            @for c in &s.chats {
                dt { "Chat " (c.name) }
                dd {
                    (match c.format { ChatFormat::Slack => "Slack", ChatFormat::Teams => "Microsoft Teams" })
                    @if c.targets.is_empty() { ", every target" } @else {
                        ", targets " (c.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "))
                    }
                }
            }
            @for w in &s.webhooks {
                dt { "Webhook " (w.name) }
                dd { "signed events to " (host_of(&w.url)) }
            }
            dt { "Ending-soon notice" }
            dd { @match s.ending_soon { Some(l) => { (l.to_string()) " before the end" } None => { "off" } } }
            dt { "Approval links valid for" }
            dd { (s.link_ttl.to_string()) }
        }
        h2 { "Readers of the audit trail" }
        @if cursors.is_empty() {
            p.muted { "None yet." }
        } @else {
            table {
                thead { tr { th { "Reader" } th { "Handled up to" } th { "Behind" } th { "Failures in a row" } th { "Last error" } } }
                tbody { @for c in &cursors {
                    tr {
                        td { (c.name) }
                        td { "#" (c.last_seq) }
                        td { ((head - c.last_seq).max(0)) " events" }
                        td { (c.attempts) }
                        td { (c.last_error.as_deref().unwrap_or("")) }
                    }
                } }
            }
        }
        h2 { "Deliveries" }
        @if counts.is_empty() {
            p.muted { "None yet." }
        } @else {
            table {
                thead { tr { th { "Channel" } th { "State" } th { "Messages" } th { "Attempts" } } }
                tbody { @for (channel, state, n, tries) in &counts {
                    tr { td { (channel) } td { (state) } td { (n) } td { (tries) } }
                } }
            }
        }
        h2 { "Failing or given up (latest " (TROUBLED_SHOWN) ")" }
        @if troubled.is_empty() {
            p.muted { "None." }
        } @else {
            table {
                thead { tr { th { "Event" } th { "Channel" } th { "To" } th { "State" } th { "Attempts" } th { "Error" } } }
                tbody { @for d in &troubled {
                    tr {
                        td { "#" (d.audit_seq) " " (d.event) }
                        td { (d.channel) }
                        td { (d.recipient) }
                        td { (d.state) }
                        td { (d.attempts) }
                        td { (d.last_error.as_deref().unwrap_or("")) }
                    }
                } }
            }
        }
    };
    page(Some(&v), Nav::Admin, "Notifications", body)
}
