//! The words of each message: e-mail (plain text and HTML), Slack and
//! Microsoft Teams.
//!
//! What people typed (the reason, comments) is carried verbatim in any
//! language; e-mail is UTF-8 throughout and HTML escapes it. Approval
//! links are not in the stored message: the sender signs fresh ones at
//! the moment it sends (see [`LINKS_MARK`]), so no queued message holds
//! a usable link.

use elevate_core::principal::Principal;
use elevate_core::request::{Request, State};
use elevate_store::audit::AuditRecord;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::email::Email;
use super::ChatFormat;
use crate::engine::Broker;
use crate::web_auth::escape_html;

/// How involved a recipient is; decides the wording. Ordered: one
/// address in several roles gets the message of the highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Requester,
    Admin,
    Approver,
    /// An approver asked to decide: the message carries approval links.
    Decider,
}

/// Stands where the approval links go, in both bodies.
pub const LINKS_MARK: &str = "\u{27e6}elevate:approval-links\u{27e7}";

/// A queued e-mail: the message, and for whom links are signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mail {
    pub email: Email,
    /// The approver the links are for (`None`: no links).
    pub approve_as: Option<String>,
    pub request: String,
}

fn who(rec: &AuditRecord) -> String {
    match rec.actor.strip_prefix("user:") {
        Some(u) => u.to_owned(),
        None => "elevate".to_owned(),
    }
}

fn detail<'a>(rec: &'a AuditRecord, field: &str) -> Option<&'a str> {
    rec.details.get(field).and_then(|v| v.as_str())
}

/// One line saying what happened, for subjects and chat.
pub fn headline(rec: &AuditRecord, key: &str, r: &Request) -> String {
    let what = format!("{} on {}/{}", r.role, r.target, r.resource);
    let rq = r.requester.as_str();
    match key {
        "request.created" => format!("{rq} asks for {what}"),
        super::BREAK_GLASS_USED => {
            format!("BREAK-GLASS: {rq} took {what} without approval")
        }
        "request.approved" => match rec.details.get("auto_approval") {
            Some(a) => format!(
                "{rq}'s request for {what} was approved automatically (rule \"{}\")",
                a.get("rule").and_then(|v| v.as_str()).unwrap_or("?")
            ),
            None => format!("{rq}'s request for {what} was approved by {}", who(rec)),
        },
        "request.approval_recorded" => {
            format!(
                "{} approved {rq}'s request for {what}; more approvals needed",
                who(rec)
            )
        }
        "request.rejected" => format!("{rq}'s request for {what} was rejected by {}", who(rec)),
        "request.cancelled" => format!("{rq}'s request for {what} was cancelled"),
        "request.expired" => {
            format!("{rq}'s request for {what} expired without a decision")
        }
        "request.reminded" => format!("Reminder: {rq}'s request for {what} awaits a decision"),
        "request.escalated" => {
            format!("Escalated: {rq}'s request for {what} has had no decision")
        }
        "grant.starting" => format!("{rq}'s grant of {what} is starting"),
        "grant.activated" => format!("{rq} now holds {what}"),
        "grant.failed" => format!("{rq}'s grant of {what} FAILED"),
        "grant.window_ended" => format!("{rq}'s grant of {what} has reached its end"),
        "grant.ending_soon" => format!("{rq}'s grant of {what} ends soon"),
        "grant.revoked" => format!("{rq}'s grant of {what} was revoked by {}", who(rec)),
        "grant.deactivated" => format!("{rq} gave up {what}"),
        "grant.removed" => format!("{rq} no longer holds {what}"),
        "grant.removal_failing" => {
            format!("Removing {what} from {rq} is FAILING; elevate keeps retrying")
        }
        "grant.extended" => format!("{rq}'s grant of {what} was extended"),
        "break_glass.acknowledged" => {
            format!(
                "{rq}'s break-glass use of {what} was reviewed by {}",
                who(rec)
            )
        }
        other => format!("{other}: {rq}, {what}"),
    }
}

/// The sentence addressed to one recipient, under the headline.
fn lead(key: &str, role: Role) -> &'static str {
    match (key, role) {
        (_, Role::Decider) => {
            "Your decision is needed. Use a link below (you will be asked to sign in and confirm) or open the request."
        }
        ("request.created", Role::Requester) => {
            "Your request was submitted. You will hear when it is decided."
        }
        (super::BREAK_GLASS_USED, _) => {
            "Break-glass access was taken without prior approval. Review it now."
        }
        (_, Role::Requester) => "This is about your request.",
        (_, Role::Approver) => {
            "You are an approver of this scope. Nothing is needed from you unless stated."
        }
        (_, Role::Admin) => "You receive this as an administrator of elevate.",
    }
}

/// The facts of a request, as (label, value) pairs.
fn facts(rec: &AuditRecord, r: &Request) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Request", r.id.to_string()),
        ("Requester", r.requester.to_string()),
        ("Target", r.target.to_string()),
        ("Resource", r.resource.to_string()),
        ("Role", r.role.to_string()),
        ("Duration", r.duration.to_string()),
        ("Reason", r.justification.as_str().to_owned()),
    ];
    if let Some(t) = &r.ticket {
        f.push(("Ticket", t.as_str().to_owned()));
    }
    if r.break_glass {
        f.push(("Break-glass", "yes".into()));
    }
    if let Some(w) = r.state.window() {
        f.push((
            "Window",
            format!("{} – {}", w.starts_at.to_rfc3339(), w.ends_at.to_rfc3339()),
        ));
    }
    if let State::Pending { expires_at } = r.state {
        f.push(("Decide before", expires_at.to_rfc3339()));
    }
    for field in ["comment", "reason", "error"] {
        if let Some(v) = detail(rec, field) {
            let label = match field {
                "comment" => "Comment",
                "reason" => "Why",
                _ => "Error",
            };
            f.push((label, v.to_owned()));
        }
    }
    if let Some(at) = detail(rec, "ends_at") {
        f.push(("Ends at", at.to_owned()));
    }
    f.push(("Event", format!("{} (#{})", rec.action, rec.seq)));
    f
}

pub fn request_url(b: &Broker, r: &Request) -> String {
    format!("{}/requests/{}", b.public_url.trim_end_matches('/'), r.id)
}

pub fn email(
    b: &Broker,
    rec: &AuditRecord,
    key: &str,
    r: &Request,
    to: &Principal,
    role: Role,
) -> Mail {
    let headline = headline(rec, key, r);
    let lead = lead(key, role);
    let facts = facts(rec, r);
    let url = request_url(b, r);
    let links = role == Role::Decider;

    let width = facts.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut text = format!("{headline}\n\n{lead}\n\n");
    for (k, v) in &facts {
        // Multi-line reasons stay readable: continuation lines indented.
        let v = v.replace('\n', &format!("\n{:width$}  ", ""));
        text.push_str(&format!("{k:width$}  {v}\n"));
    }
    text.push_str(&format!("\nOpen the request: {url}\n"));
    if links {
        text.push('\n');
        text.push_str(LINKS_MARK);
        text.push('\n');
    }
    text.push_str("\n-- \nelevate, just-in-time access\n");

    let mut html = html_start(&headline, lead);
    html.push_str("<table cellpadding=\"4\" style=\"border-collapse:collapse\">");
    for (k, v) in &facts {
        html.push_str(&format!(
            "<tr><th align=\"left\" valign=\"top\">{}</th><td style=\"white-space:pre-wrap\">{}</td></tr>",
            escape_html(k),
            escape_html(v)
        ));
    }
    html.push_str(&format!(
        "</table><p><a href=\"{}\">Open the request in elevate</a></p>",
        escape_html(&url)
    ));
    if links {
        html.push_str(LINKS_MARK);
    }
    html.push_str("<p style=\"color:#666\">elevate, just-in-time access</p></body></html>");

    Mail {
        email: addressed(to, &headline, text, html, r.id.to_string()),
        approve_as: links.then(|| to.name.to_string()),
        request: r.id.to_string(),
    }
}

/// The HTML body up to the message's own content: title, headline, lead.
fn html_start(headline: &str, lead: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif;line-height:1.4\">\
         <h2 style=\"font-size:1.15em\">{}</h2><p>{}</p>",
        escape_html(headline),
        escape_html(headline),
        escape_html(lead)
    )
}

/// A message to `to` about `headline`, in the conversation `thread`.
fn addressed(to: &Principal, headline: &str, text: String, html: String, thread: String) -> Email {
    Email {
        to: to
            .email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        to_name: to.display_name.clone(),
        subject: format!("[elevate] {headline}"),
        text,
        html,
        thread: Some(thread),
    }
}

/// The approval links, for the text and the HTML body.
pub fn links_section(approve: &str, reject: &str, expires: &str) -> (String, String) {
    let text = format!(
        "Approve: {approve}\nReject:  {reject}\n(Each link opens a confirmation page after sign-in; it works once, until {expires}.)"
    );
    let html = format!(
        "<p><a href=\"{}\" style=\"font-weight:bold\">Approve…</a> &nbsp; <a href=\"{}\">Reject…</a></p>\
         <p style=\"color:#666\">Each link opens a confirmation page after sign-in; it works once, until {}.</p>",
        escape_html(approve),
        escape_html(reject),
        escape_html(expires)
    );
    (text, html)
}

/// A chat message in the incoming-webhook format of `format`.
pub fn chat(b: &Broker, rec: &AuditRecord, key: &str, r: &Request, format: ChatFormat) -> Value {
    let headline = headline(rec, key, r);
    let url = request_url(b, r);
    let facts: Vec<(&str, String)> = facts(rec, r)
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "Event"))
        .collect();
    match format {
        // Slack incoming webhooks: `text` is the notification fallback;
        // Block Kit blocks carry the layout. Slack's mrkdwn treats only
        // &, < and > specially.
        ChatFormat::Slack => {
            let esc = slack_escape;
            let fields: Vec<Value> = facts
                .iter()
                .take(10) // Slack allows at most 10 fields per section.
                .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{}*\n{}", k, esc(v))}))
                .collect();
            json!({
                "text": esc(&headline),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", esc(&headline))}},
                    {"type": "section", "fields": fields},
                    {"type": "actions", "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "Open in elevate"}, "url": url}
                    ]}
                ]
            })
        }
        // Teams incoming webhooks (Workflows) take a message with an
        // Adaptive Card attachment.
        ChatFormat::Teams => {
            // Adaptive Cards render Markdown in text and facts: what
            // people typed must not become a link or emphasis there.
            let facts: Vec<Value> = facts
                .iter()
                .map(|(k, v)| json!({"title": k, "value": markdown_escape(v)}))
                .collect();
            teams_message(
                json!([
                    {"type": "TextBlock", "text": markdown_escape(&headline), "weight": "Bolder", "wrap": true},
                    {"type": "FactSet", "facts": facts}
                ]),
                json!([
                    {"type": "Action.OpenUrl", "title": "Open in elevate", "url": url}
                ]),
            )
        }
    }
}

/// A Teams incoming-webhook message: one Adaptive Card with `body` and
/// `actions`.
pub fn teams_message(body: Value, actions: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
                "actions": actions
            }
        }]
    })
}

/// Slack's mrkdwn treats only `&`, `<` and `>` specially (`<url|text>` is
/// a link).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A backslash before the characters that make Markdown links, code and
/// emphasis, so typed text shows as typed and links only where elevate
/// puts them.
fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '~' | '<' | '>'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One line per assignment found outside elevate, for every channel.
fn finding_lines(rec: &AuditRecord) -> Vec<String> {
    let findings = rec
        .details
        .get("unmanaged")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    findings
        .iter()
        .map(|f| {
            let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("?");
            let who = f
                .get("principal_name")
                .and_then(Value::as_str)
                .unwrap_or_else(|| text("principal_id"));
            let account = match f.get("resource_name").and_then(Value::as_str) {
                Some(name) => format!("{name} ({})", text("resource")),
                None => text("resource").to_owned(),
            };
            let kind = text("principal_type").to_lowercase();
            let state = if f.get("removed").and_then(Value::as_bool) == Some(true) {
                " (removed by elevate)"
            } else if let Some(e) = f.get("error").and_then(Value::as_str) {
                return format!(
                    "{kind} {who}: {} on {account} (removing it failed: {e})",
                    text("role")
                );
            } else {
                ""
            };
            format!("{kind} {who}: {} on {account}{state}", text("role"))
        })
        .collect()
}

/// The line saying what a target event found.
pub fn target_headline(rec: &AuditRecord, target: &str) -> String {
    let n = rec
        .details
        .get("unmanaged")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    match n {
        0 => format!("no access outside elevate is left on {target}"),
        1 => format!("1 assignment on {target} was not given through elevate"),
        n => format!("{n} assignments on {target} were not given through elevate"),
    }
}

fn admin_url(b: &Broker) -> String {
    format!("{}/admin", b.public_url.trim_end_matches('/'))
}

/// The mail to an admin about a target event (access found outside
/// elevate by reconciliation).
pub fn target_email(b: &Broker, rec: &AuditRecord, target: &str, to: &Principal) -> Mail {
    let headline = target_headline(rec, target);
    let lines = finding_lines(rec);
    let lead = if lines.is_empty() {
        "The last reconciliation found no assignment that elevate did not make."
    } else {
        "Reconciliation found access on the target that no grant of elevate accounts for. Check who gave it and why; with reconcile = \"remove\" elevate removes it itself."
    };
    let url = admin_url(b);
    let mut text = format!("{headline}\n\n{lead}\n\n");
    for l in &lines {
        text.push_str(&format!("- {l}\n"));
    }
    text.push_str(&format!(
        "\nThe report: elevate targets reconciliation {target}, or {url}\n\n-- \nelevate, just-in-time access\n"
    ));
    let mut html = html_start(&headline, lead);
    html.push_str("<ul>");
    for l in &lines {
        html.push_str(&format!("<li>{}</li>", escape_html(l)));
    }
    html.push_str(&format!(
        "</ul><p><a href=\"{}\">Open the administration page</a></p>\
         <p style=\"color:#666\">elevate, just-in-time access</p></body></html>",
        escape_html(&url)
    ));
    Mail {
        // One conversation per target in mail programs.
        email: addressed(to, &headline, text, html, format!("target-{target}")),
        approve_as: None,
        request: String::new(),
    }
}

/// The chat message about a target event.
pub fn target_chat(b: &Broker, rec: &AuditRecord, target: &str, format: ChatFormat) -> Value {
    let headline = target_headline(rec, target);
    let lines = finding_lines(rec);
    let url = admin_url(b);
    match format {
        ChatFormat::Slack => {
            let esc = slack_escape;
            let list: String = lines
                .iter()
                .take(20)
                .map(|l| format!("• {}\n", esc(l)))
                .collect();
            let mut blocks = vec![
                json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", esc(&headline))}}),
            ];
            if !list.is_empty() {
                blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": list}}));
            }
            blocks.push(json!({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open in elevate"}, "url": url}
            ]}));
            json!({"text": esc(&headline), "blocks": blocks})
        }
        ChatFormat::Teams => {
            let mut body = vec![
                json!({"type": "TextBlock", "text": markdown_escape(&headline), "weight": "Bolder", "wrap": true}),
            ];
            for l in lines.iter().take(20) {
                body.push(json!({"type": "TextBlock", "text": markdown_escape(l), "wrap": true}));
            }
            teams_message(
                Value::Array(body),
                json!([{"type": "Action.OpenUrl", "title": "Open in elevate", "url": url}]),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_text_cannot_become_links_in_chat() {
        assert_eq!(
            markdown_escape("[Approve](https://evil.example) *now*"),
            "\\[Approve\\]\\(https://evil.example\\) \\*now\\*"
        );
        assert_eq!(markdown_escape("障害対応"), "障害対応");
        assert_eq!(
            slack_escape("<https://evil.example|Approve> & more"),
            "&lt;https://evil.example|Approve&gt; &amp; more"
        );
    }
}
