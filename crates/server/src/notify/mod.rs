//! Telling people: e-mail, chat webhooks, signed event webhooks, and the
//! approval links mailed to approvers.
//!
//! Everything starts from the audit chain (see `elevate_store::outbox`):
//! nothing on the request path waits for a mail server or a receiver.
//!
//! - The **planner** reads events after its cursor, decides who hears of
//!   each ([`Settings::routes`], the routing matrix) and queues one
//!   delivery per recipient and channel, in one transaction with the
//!   cursor's move, so an event is planned exactly once.
//! - The **sender** claims due deliveries and sends them; failures are
//!   retried with capped exponential backoff until `give_up_after`, and
//!   counted in `/metrics`.
//! - Each **signed webhook** follows the chain with its own cursor and
//!   POSTs every event, in order, signed (see [`webhook`]).

pub mod email;
pub mod link;
pub mod plan;
pub mod render;
pub mod run;
pub mod webhook;

use std::collections::BTreeMap;
use std::time::Duration;

use elevate_core::values::{Name, Span};

/// Who hears of an event by e-mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Audience {
    /// The person who asked.
    Requester,
    /// The approvers of the request's scope, but never the requester, and
    /// not whoever caused the event (they know).
    Approvers,
    /// Every admin.
    Admins,
    /// The fallback approvers a request was escalated to.
    Escalation,
}

impl Audience {
    pub const ALL: [Audience; 4] = [
        Audience::Requester,
        Audience::Approvers,
        Audience::Admins,
        Audience::Escalation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Requester => "requester",
            Audience::Approvers => "approvers",
            Audience::Admins => "admins",
            Audience::Escalation => "escalation",
        }
    }

    pub fn parse(s: &str) -> Option<Audience> {
        Audience::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Where one kind of event goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    pub email: Vec<Audience>,
    /// Posted to every chat channel whose scope covers the request.
    pub chat: bool,
}

/// The routable events: every audit action, plus `break_glass.used`, the
/// creation of a break-glass request, routed on its own so it can be loud.
pub const EVENTS: [&str; 22] = [
    "request.created",
    "request.approval_recorded",
    "request.approved",
    "request.rejected",
    "request.cancelled",
    "request.expired",
    "request.reminded",
    "request.escalated",
    "grant.starting",
    "grant.activated",
    "grant.failed",
    "grant.window_ended",
    "grant.ending_soon",
    "grant.revoked",
    "grant.deactivated",
    "grant.removed",
    "grant.removal_failing",
    "grant.extended",
    "grant.session_issued",
    "break_glass.acknowledged",
    BREAK_GLASS_USED,
    TARGET_UNMANAGED_ACCESS,
];

/// Events about a target, not a request: only admins can be told of them.
pub const TARGET_UNMANAGED_ACCESS: &str = "target.unmanaged_access";

pub const BREAK_GLASS_USED: &str = "break_glass.used";

/// The routing matrix when the config changes nothing: whoever must act
/// or must stop acting hears at once; the rest stays in the audit trail.
pub fn default_routes() -> BTreeMap<String, Route> {
    use Audience::*;
    let r = |email: &[Audience], chat: bool| Route {
        email: email.to_vec(),
        chat,
    };
    [
        // Approvers to act; the requester a copy of what they asked.
        ("request.created", r(&[Approvers, Requester], true)),
        // Outcomes to the requester, and to the other approvers so that
        // nobody acts on a request already handled.
        ("request.approved", r(&[Requester, Approvers], true)),
        ("request.rejected", r(&[Requester, Approvers], true)),
        ("request.cancelled", r(&[Requester, Approvers], true)),
        ("request.expired", r(&[Requester, Approvers], true)),
        ("request.reminded", r(&[Approvers], false)),
        ("request.escalated", r(&[Escalation], true)),
        ("grant.activated", r(&[Requester], true)),
        ("grant.ending_soon", r(&[Requester], false)),
        ("grant.revoked", r(&[Requester, Approvers], true)),
        ("grant.removed", r(&[Requester], false)),
        ("grant.extended", r(&[Requester], false)),
        ("grant.failed", r(&[Requester, Approvers, Admins], true)),
        (
            "grant.removal_failing",
            r(&[Requester, Approvers, Admins], true),
        ),
        (BREAK_GLASS_USED, r(&[Admins, Approvers, Requester], true)),
        // Access given outside elevate, found by reconciliation (and when
        // that changes): for those who run the broker. Not to chat unless
        // routed there: a channel's readers are not known to be admins.
        (TARGET_UNMANAGED_ACCESS, r(&[Admins], false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The message format a chat incoming webhook accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFormat {
    Slack,
    Teams,
}

#[derive(Clone)]
pub struct ChatChannel {
    pub name: String,
    pub format: ChatFormat,
    /// The incoming-webhook URL: whoever has it can post, so it is a
    /// secret (never logged).
    pub url: String,
    /// Only requests on these targets; empty = every request.
    pub targets: Vec<Name>,
}

#[derive(Clone)]
pub struct WebhookSettings {
    pub name: String,
    pub url: String,
    /// The HMAC key (never logged).
    pub secret: String,
    pub timeout: Duration,
}

// The URL of a chat webhook and a webhook's key are secrets: never in
// debug output.
impl std::fmt::Debug for ChatChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatChannel")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("url", &"[redacted]")
            .field("targets", &self.targets)
            .finish()
    }
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `[notifications]`, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub email: Option<email::SmtpSettings>,
    pub chats: Vec<ChatChannel>,
    pub webhooks: Vec<WebhookSettings>,
    pub routes: BTreeMap<String, Route>,
    /// Lead time of the "ending soon" notice; `None` sends none.
    pub ending_soon: Option<Span>,
    /// How long an approval link in an e-mail stays valid.
    pub link_ttl: Span,
    /// A delivery still failing this long after it was queued is given up
    /// (and counted as such).
    pub give_up_after: Span,
    /// Longest wait between two attempts of a failing delivery.
    pub retry_max_backoff: Span,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            email: None,
            chats: Vec::new(),
            webhooks: Vec::new(),
            routes: default_routes(),
            ending_soon: Some(Span::from_secs(10 * 60)),
            // Short: a reminder or escalation mails fresh links.
            link_ttl: Span::from_secs(4 * 3600),
            give_up_after: Span::from_secs(24 * 3600),
            retry_max_backoff: Span::from_secs(10 * 60),
        }
    }
}

impl Settings {
    /// Whether anything is configured to send to.
    pub fn any_channel(&self) -> bool {
        self.email.is_some() || !self.chats.is_empty()
    }
}
