//! The notifier's loops: planning, sending, signed webhooks. Each exposes
//! a `*_once(now)` step so tests drive it with any clock.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use elevate_core::Timestamp;
use elevate_store::audit::AuditFilter;
use elevate_store::outbox::{Cursor, Delivery, DeliveryOutcome};
use rand::Rng;
use tokio::sync::Notify;

use super::email::{Email, Mailer};
use super::link::{self, Claims, Decision};
use super::plan::{self, People};
use super::render::{self, Mail};
use super::{webhook, Settings};
use crate::engine::Broker;
use crate::error::ApiError;

/// The planner's cursor.
pub const PLANNER: &str = "notify";
/// Events planned per transaction.
const PLAN_BATCH: i64 = 200;
/// Deliveries sent at once.
const SEND_BATCH: usize = 32;
/// Webhook events posted per claim.
const WEBHOOK_BATCH: i64 = 100;
/// The longest any loop sleeps without looking again.
const IDLE_RECHECK: Duration = Duration::from_secs(1);

fn cursor_name(hook: &str) -> String {
    format!("webhook:{hook}")
}

pub struct Notifier {
    pub settings: Settings,
    mailer: Option<Mailer>,
    http: reqwest::Client,
    /// The key approval links are signed with (shared by replicas).
    link_key: Vec<u8>,
    /// Wakes the planner when events were written.
    plan_wake: Notify,
    /// Wakes the webhooks when events were written.
    hook_wake: Notify,
    /// Wakes the sender when deliveries were queued.
    send_wake: Notify,
}

impl Notifier {
    /// Prepares the channels and, when anything is configured, the
    /// cursors: a reader added now starts at the newest event.
    pub async fn new(settings: Settings, store: &elevate_store::Store) -> anyhow::Result<Notifier> {
        let mailer = match &settings.email {
            Some(s) => Some(Mailer::new(s).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let key = store
            .setting_or_init(link::KEY_SETTING, link::new_key)
            .await?;
        let link_key = hex::decode(&key).unwrap_or_else(|_| key.into_bytes());
        let now = Utc::now();
        if settings.any_channel() {
            store.ensure_cursor(PLANNER, now).await?;
        } else {
            // Mail and chat turned off: turned on again later, they start
            // from then, not with a flood of old news.
            store.drop_cursor(PLANNER).await?;
        }
        for hook in &settings.webhooks {
            store.ensure_cursor(&cursor_name(&hook.name), now).await?;
        }
        // A webhook removed from the config stops being followed (and
        // would otherwise show an ever-growing lag in the metrics).
        for c in store.cursors().await? {
            let configured = c
                .name
                .strip_prefix("webhook:")
                .is_none_or(|hook| settings.webhooks.iter().any(|w| w.name == hook));
            if !configured {
                store.drop_cursor(&c.name).await?;
            }
        }
        Ok(Notifier {
            settings,
            mailer,
            http: webhook::client(),
            link_key,
            plan_wake: Notify::new(),
            hook_wake: Notify::new(),
            send_wake: Notify::new(),
        })
    }

    /// New audit events were committed: the readers look at once.
    pub fn events_written(&self) {
        self.plan_wake.notify_one();
        self.hook_wake.notify_one();
    }

    /// The key approval links are signed with.
    pub fn link_key(&self) -> &[u8] {
        &self.link_key
    }

    /// The approve and reject links for `approver` on `request`.
    pub fn sign_links(
        &self,
        public_url: &str,
        request: &str,
        approver: &str,
        now: Timestamp,
    ) -> Option<(String, String, Timestamp)> {
        let expires = now + self.settings.link_ttl.as_chrono();
        let nonce = link::new_nonce();
        let mut claims = Claims {
            r: request.to_owned(),
            u: approver.to_owned(),
            d: Decision::Approve,
            e: expires.timestamp(),
            n: nonce,
        };
        let base = public_url.trim_end_matches('/');
        let approve = link::sign(&self.link_key, &claims).ok()?;
        claims.d = Decision::Reject;
        let reject = link::sign(&self.link_key, &claims).ok()?;
        Some((
            format!("{base}/links/{approve}"),
            format!("{base}/links/{reject}"),
            expires,
        ))
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let base_ms = 2_000u64.saturating_mul(1u64 << attempts.clamp(0, 20));
        let capped = base_ms.min(self.settings.retry_max_backoff.secs().saturating_mul(1000));
        let jitter = rand::rngs::OsRng.gen_range(0.8..1.2);
        Duration::from_millis(((capped.max(100) as f64) * jitter) as u64)
    }
}

// ---- planning ---------------------------------------------------------------

/// Plans the deliveries of events after the planner's cursor. Returns how
/// many events were planned.
pub async fn plan_once(b: &Arc<Broker>, now: Timestamp) -> Result<usize, ApiError> {
    let n = &b.notifier;
    if !n.settings.any_channel() {
        return Ok(0);
    }
    let Some(cursor) = b.store.claim_cursor(PLANNER, now, b.job_lease).await? else {
        return Ok(0);
    };
    match plan_claimed(b, &cursor).await {
        Ok(count) => {
            b.store.release_cursor(&cursor).await?;
            Ok(count)
        }
        Err(e) => {
            let at =
                now + chrono::Duration::from_std(n.backoff(cursor.attempts)).unwrap_or_default();
            tracing::warn!(error = %e.log_text(), "planning notifications failed; retrying");
            b.store.retry_cursor(&cursor, at, &e.log_text()).await?;
            Err(e)
        }
    }
}

async fn plan_claimed(b: &Arc<Broker>, cursor: &Cursor) -> Result<usize, ApiError> {
    let settings = &b.notifier.settings;
    let mut cursor = cursor.clone();
    let mut planned = 0;
    let people = People::load(b).await?;
    loop {
        let events = b
            .store
            .audit_events(&AuditFilter {
                after_seq: Some(cursor.last_seq),
                limit: Some(PLAN_BATCH),
                ..AuditFilter::default()
            })
            .await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(planned);
        };
        let mut deliveries = Vec::new();
        for rec in &events {
            deliveries.extend(plan::plan(b, settings, &people, rec).await?);
        }
        let now = Utc::now();
        let mut tx = b.store.begin().await?;
        if !tx.advance_cursor(&cursor, last).await? {
            // Another replica holds the cursor now; it plans these.
            return Ok(planned);
        }
        for d in &deliveries {
            tx.insert_delivery(d, now).await?;
        }
        tx.commit().await?;
        if !deliveries.is_empty() {
            b.notifier.send_wake.notify_one();
        }
        planned += events.len();
        cursor.last_seq = last;
    }
}

// ---- sending ------------------------------------------------------------------

/// Sends due deliveries. Returns how many were attempted.
pub async fn send_once(b: &Arc<Broker>, now: Timestamp) -> Result<usize, ApiError> {
    let claimed = b
        .store
        .claim_deliveries(now, b.job_lease, SEND_BATCH)
        .await?;
    let count = claimed.len();
    let mut running = tokio::task::JoinSet::new();
    for d in claimed {
        let b = Arc::clone(b);
        running.spawn(async move {
            let limit = b.job_lease / 2;
            let outcome = match tokio::time::timeout(limit, send(&b, &d)).await {
                Ok(r) => r,
                Err(_) => Err((false, "no answer in time".to_owned())),
            };
            (d, outcome)
        });
    }
    let mut outcomes = Vec::with_capacity(count);
    while let Some(joined) = running.join_next().await {
        let Ok((d, outcome)) = joined else {
            continue;
        };
        let n = &b.notifier;
        let kind = d.channel.split(':').next().unwrap_or("other").to_owned();
        let recorded = match outcome {
            Ok(()) => {
                b.metrics.notification(&kind, "sent");
                DeliveryOutcome::Sent
            }
            Err((permanent, why)) => {
                let now = Utc::now();
                let give_up =
                    permanent || now - d.created_at >= n.settings.give_up_after.as_chrono();
                if give_up {
                    b.metrics.notification(&kind, "abandoned");
                    tracing::error!(delivery = d.id, channel = %d.channel, event = %d.event, error = %why,
                        "notification given up");
                    DeliveryOutcome::Abandoned { error: why }
                } else {
                    b.metrics.notification(&kind, "retry");
                    tracing::warn!(delivery = d.id, channel = %d.channel, event = %d.event, error = %why,
                        "notification not delivered; retrying");
                    let wait =
                        chrono::Duration::from_std(n.backoff(d.attempts)).unwrap_or_default();
                    DeliveryOutcome::Retry {
                        at: now + wait,
                        error: why,
                    }
                }
            }
        };
        outcomes.push((d, recorded));
    }
    b.store.record_deliveries(&outcomes, Utc::now()).await?;
    Ok(count)
}

/// Sends one delivery. `Err((permanent, why))`.
async fn send(b: &Broker, d: &Delivery) -> Result<(), (bool, String)> {
    let n = &b.notifier;
    if d.channel == "email" {
        let Some(mailer) = &n.mailer else {
            return Err((true, "e-mail is no longer configured".into()));
        };
        let mail: Mail = serde_json::from_str(&d.doc)
            .map_err(|e| (true, format!("stored message unreadable: {e}")))?;
        let email = with_links(b, &mail, Utc::now()).await;
        return mailer
            .send(&email)
            .await
            .map_err(|e| (e.permanent, e.message));
    }
    if let Some(name) = d.channel.strip_prefix("chat:") {
        let Some(chat) = n.settings.chats.iter().find(|c| c.name == name) else {
            return Err((
                true,
                format!("chat channel \"{name}\" is no longer configured"),
            ));
        };
        let resp = n
            .http
            .post(&chat.url)
            .timeout(Duration::from_secs(15))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(d.doc.clone())
            .send()
            .await
            .map_err(|e| (false, webhook::describe(&e)))?;
        let status = resp.status();
        return if status.is_success() {
            Ok(())
        } else {
            // 4xx other than throttling: the payload or the URL is wrong,
            // and sending it again will not help.
            let permanent = status.is_client_error()
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                && status != reqwest::StatusCode::REQUEST_TIMEOUT;
            Err((permanent, format!("the chat service answered {status}")))
        };
    }
    Err((true, format!("unknown channel \"{}\"", d.channel)))
}

/// The message with fresh approval links in place of the mark, while the
/// request still waits for a decision; a message delayed past the
/// decision says so instead of offering links.
async fn with_links(b: &Broker, mail: &Mail, now: Timestamp) -> Email {
    let mut email = mail.email.clone();
    let Some(who) = mail.approve_as.as_deref() else {
        return email;
    };
    let waiting = match elevate_core::values::RequestId::parse(&mail.request) {
        Ok(id) => matches!(
            b.store.get_request(&id).await,
            Ok(Some(s)) if matches!(s.request.state, elevate_core::request::State::Pending { .. })
        ),
        Err(_) => false,
    };
    let links = waiting
        .then(|| {
            b.notifier
                .sign_links(&b.public_url, &mail.request, who, now)
        })
        .flatten();
    let (text, html) = match links {
        Some((approve, reject, expires)) => {
            render::links_section(&approve, &reject, &expires.to_rfc3339())
        }
        None => {
            let note =
                "This request no longer waits for a decision: open it to see where it stands.";
            (note.to_owned(), format!("<p><strong>{note}</strong></p>"))
        }
    };
    email.text = email.text.replace(render::LINKS_MARK, &text);
    email.html = email.html.replace(render::LINKS_MARK, &html);
    email
}

// ---- signed webhooks ----------------------------------------------------------

/// Posts due events to every webhook. Returns how many were accepted.
pub async fn webhooks_once(b: &Arc<Broker>, now: Timestamp) -> Result<usize, ApiError> {
    let mut accepted = 0;
    for hook in &b.notifier.settings.webhooks {
        let name = cursor_name(&hook.name);
        // The lease runs from the claim: an earlier hook may have taken
        // a while.
        let now = now.max(Utc::now());
        let Some(cursor) = b.store.claim_cursor(&name, now, b.job_lease).await? else {
            continue;
        };
        let started = std::time::Instant::now();
        let events = b
            .store
            .audit_events(&AuditFilter {
                after_seq: Some(cursor.last_seq),
                limit: Some(WEBHOOK_BATCH),
                ..AuditFilter::default()
            })
            .await?;
        let mut last_ok = None;
        let mut failure = None;
        for rec in &events {
            // Stay well inside the lease, a slow receiver included: past
            // it, another replica may start on the same events.
            let Some(left) = (b.job_lease / 2).checked_sub(started.elapsed()) else {
                break;
            };
            let posted = tokio::time::timeout(left, webhook::post(&b.notifier.http, hook, rec))
                .await
                .unwrap_or_else(|_| Err("no answer in time".to_owned()));
            match posted {
                Ok(()) => {
                    last_ok = Some(rec.seq);
                    b.metrics.notification("webhook", "sent");
                }
                Err(why) => {
                    b.metrics.notification("webhook", "retry");
                    failure = Some(why);
                    break;
                }
            }
        }
        if let Some(seq) = last_ok {
            accepted += events.iter().filter(|e| e.seq <= seq).count();
            let mut tx = b.store.begin().await?;
            tx.advance_cursor(&cursor, seq).await?;
            tx.commit().await?;
        }
        match failure {
            Some(why) => {
                let attempts = if last_ok.is_some() {
                    0
                } else {
                    cursor.attempts
                };
                let at = Utc::now()
                    + chrono::Duration::from_std(b.notifier.backoff(attempts)).unwrap_or_default();
                tracing::warn!(webhook = %hook.name, error = %why, "webhook event not accepted; retrying");
                let mut c = cursor.clone();
                c.attempts = attempts;
                b.store.retry_cursor(&c, at, &why).await?;
            }
            None => {
                b.store.release_cursor(&cursor).await?;
            }
        }
    }
    Ok(accepted)
}

// ---- loops --------------------------------------------------------------------

/// Plans deliveries whenever events were written; returns when
/// `shutdown` fires.
pub async fn run_planner(b: Arc<Broker>, shutdown: crate::Shutdown) {
    loop {
        if let Err(e) = plan_once(&b, Utc::now()).await {
            tracing::error!(error = %e.log_text(), "notification planning step failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(IDLE_RECHECK) => {}
            _ = b.notifier.plan_wake.notified() => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Posts events to the signed webhooks whenever events were written, on
/// its own so a slow receiver never delays mail; returns when `shutdown`
/// fires.
pub async fn run_webhooks(b: Arc<Broker>, shutdown: crate::Shutdown) {
    if b.notifier.settings.webhooks.is_empty() {
        shutdown.wait().await;
        return;
    }
    loop {
        let posted = match webhooks_once(&b, Utc::now()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e.log_text(), "webhook step failed");
                0
            }
        };
        // A full batch accepted: more may be waiting.
        if posted >= WEBHOOK_BATCH as usize {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(IDLE_RECHECK) => {}
            _ = b.notifier.hook_wake.notified() => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Finished deliveries are kept this long, for metrics and for anyone
/// looking into what was sent.
const KEEP_FINISHED: chrono::Duration = chrono::Duration::days(30);

/// Sends deliveries as they become due; returns when `shutdown` fires.
pub async fn run_sender(b: Arc<Broker>, shutdown: crate::Shutdown) {
    let mut pruned_at = std::time::Instant::now();
    loop {
        if pruned_at.elapsed() > Duration::from_secs(3600) {
            pruned_at = std::time::Instant::now();
            if let Err(e) = b.store.prune_deliveries(Utc::now() - KEEP_FINISHED).await {
                tracing::warn!(error = %e, "cannot prune finished deliveries");
            }
        }
        let sent = match send_once(&b, Utc::now()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e.log_text(), "notification sending step failed");
                0
            }
        };
        if sent > 0 {
            continue;
        }
        let sleep = match b.store.next_delivery_at().await {
            Ok(Some(next)) => (next - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            _ => IDLE_RECHECK,
        };
        let sleep = sleep.clamp(Duration::from_millis(5), IDLE_RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = b.notifier.send_wake.notified() => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Notification gauges read from the store, for `/metrics`.
pub async fn render_metrics(store: &elevate_store::Store, out: &mut String) {
    let _ = writeln!(out, "# HELP elevate_notifications Deliveries by channel and state (queued, sent, abandoned), over the stored history.");
    let _ = writeln!(out, "# TYPE elevate_notifications gauge");
    let _ = writeln!(out, "# HELP elevate_notification_attempts Delivery attempts by channel, over the stored history (more attempts than deliveries means retries).");
    let _ = writeln!(out, "# TYPE elevate_notification_attempts gauge");
    if let Ok(rows) = store.delivery_counts().await {
        let mut attempts = std::collections::BTreeMap::new();
        for (channel, state, n, tries) in rows {
            let _ = writeln!(
                out,
                "elevate_notifications{{channel=\"{}\",state=\"{}\"}} {n}",
                crate::metrics::label(&channel),
                crate::metrics::label(&state)
            );
            *attempts.entry(channel).or_insert(0) += tries;
        }
        for (channel, tries) in attempts {
            let _ = writeln!(
                out,
                "elevate_notification_attempts{{channel=\"{}\"}} {tries}",
                crate::metrics::label(&channel)
            );
        }
    }
    let head = store.audit_head_seq().await.unwrap_or(0);
    let _ = writeln!(out, "# HELP elevate_outbox_lag_events Audit events a reader (the notification planner, each signed webhook) has not handled yet.");
    let _ = writeln!(out, "# TYPE elevate_outbox_lag_events gauge");
    let _ = writeln!(
        out,
        "# HELP elevate_outbox_failures Consecutive failed attempts at a reader's next event."
    );
    let _ = writeln!(out, "# TYPE elevate_outbox_failures gauge");
    if let Ok(cursors) = store.cursors().await {
        for c in cursors {
            let name = crate::metrics::label(&c.name);
            let _ = writeln!(
                out,
                "elevate_outbox_lag_events{{reader=\"{name}\"}} {}",
                (head - c.last_seq).max(0)
            );
            let _ = writeln!(
                out,
                "elevate_outbox_failures{{reader=\"{name}\"}} {}",
                c.attempts
            );
        }
    }
}

// ---- `elevate notify-test` ------------------------------------------------------

/// Sends one test message through every configured channel, now, without
/// the store: an e-mail to `to` (when given), a post to each chat channel
/// and a signed `elevate.test` event (seq 0, never part of the audit
/// chain) to each webhook. Returns each channel's outcome.
pub async fn send_test(
    settings: &Settings,
    to: Option<&str>,
    public_url: &str,
) -> Vec<(String, Result<(), String>)> {
    let mut out = Vec::new();
    let headline = "elevate test message: this channel works";
    match (&settings.email, to) {
        (Some(smtp), Some(to)) => {
            let sent = match Mailer::new(smtp) {
                Ok(m) => m
                    .send(&Email {
                        to: to.to_owned(),
                        to_name: None,
                        subject: format!("[elevate] {headline}"),
                        text: format!("{headline}.\n\nSent by `elevate notify-test` for {public_url}.\n"),
                        html: format!(
                            "<!DOCTYPE html><html><body><p>{}.</p><p>Sent by <code>elevate notify-test</code> for {}.</p></body></html>",
                            crate::web_auth::escape_html(headline),
                            crate::web_auth::escape_html(public_url)
                        ),
                        thread: None,
                    })
                    .await
                    .map_err(|e| e.message),
                Err(e) => Err(e),
            };
            out.push((format!("e-mail to {to}"), sent));
        }
        (Some(_), None) => out.push(("e-mail".into(), Err("not tried: give --to ADDRESS".into()))),
        (None, _) => {}
    }
    let http = webhook::client();
    for c in &settings.chats {
        let payload = match c.format {
            super::ChatFormat::Slack => serde_json::json!({ "text": headline }),
            super::ChatFormat::Teams => render::teams_message(
                serde_json::json!([{"type": "TextBlock", "text": headline, "wrap": true}]),
                serde_json::json!([]),
            ),
        };
        let posted = match http
            .post(&c.url)
            .timeout(Duration::from_secs(15))
            .json(&payload)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("the chat service answered {}", r.status())),
            Err(e) => Err(webhook::describe(&e)),
        };
        out.push((format!("chat {}", c.name), posted));
    }
    for hook in &settings.webhooks {
        let rec = elevate_store::audit::AuditRecord {
            seq: 0,
            at: Utc::now(),
            actor: "system".into(),
            action: "elevate.test".into(),
            request: None,
            details: serde_json::json!({ "message": headline, "public_url": public_url }),
            prev_hash: String::new(),
            hash: String::new(),
        };
        out.push((
            format!("webhook {}", hook.name),
            webhook::post(&http, hook, &rec).await,
        ));
    }
    out
}
