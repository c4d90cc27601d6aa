//! `[notifications]`: where elevate tells people what happens.
//!
//! ```toml
//! [notifications]
//! ending_soon = "10m"
//!
//! [notifications.email]
//! host = "smtp.example.com"
//! port = 587
//! security = "starttls"          # none | starttls | tls
//! username = "elevate"
//! password_file = "smtp-password"
//! from = "elevate <elevate@example.com>"
//!
//! [[notifications.chat]]
//! name = "sre"
//! format = "slack"               # slack | teams
//! url_file = "slack-webhook-url"
//! targets = ["prod-db"]
//!
//! [[notifications.webhooks]]
//! name = "siem"
//! url = "https://siem.example.com/elevate"
//! secret_file = "siem-secret"
//!
//! [notifications.routes]
//! "request.created" = { email = ["approvers"], chat = true }
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::notify::{self, email, Audience, ChatFormat, Route};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotificationsSection {
    email: Option<EmailSection>,
    #[serde(default)]
    chat: Vec<ChatSection>,
    #[serde(default)]
    webhooks: Vec<WebhookSection>,
    #[serde(default)]
    routes: BTreeMap<String, RouteSection>,
    /// Lead time of the "your grant ends soon" notice; "off" for none.
    ending_soon: Option<String>,
    link_ttl: Option<String>,
    give_up_after: Option<String>,
    retry_max_backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailSection {
    host: String,
    port: Option<u16>,
    security: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
    from: String,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatSection {
    name: String,
    format: String,
    url: Option<String>,
    url_file: Option<String>,
    url_env: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSection {
    name: String,
    url: String,
    secret: Option<String>,
    secret_file: Option<String>,
    secret_env: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSection {
    #[serde(default)]
    email: Vec<String>,
    #[serde(default)]
    chat: bool,
}

/// The shortest HMAC key accepted: a guessable key makes signatures
/// worthless.
const MIN_SECRET_BYTES: usize = 16;

fn http_url(raw: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if u.host_str().is_none() {
        return Err("has no host".into());
    }
    Ok(u)
}

impl Checker {
    pub(super) fn notifications(
        &mut self,
        section: Option<&NotificationsSection>,
        base: Option<&Path>,
        targets: &BTreeMap<Name, Target>,
    ) -> Option<notify::Settings> {
        let mut out = notify::Settings::default();
        let Some(n) = section else {
            return Some(out);
        };
        let line = None;
        let loc = "notifications.";
        let mut ok = true;
        let mut span = |c: &mut Checker, field: &'static str, raw: &Option<String>| match raw {
            Some(r) => match c.span(line, loc, field, r) {
                Some(s) => Some(Some(s)),
                None => {
                    ok = false;
                    None
                }
            },
            None => Some(None),
        };
        // "off" (or a zero length) sends no "ending soon" notice.
        let ending_soon_off = n
            .ending_soon
            .as_deref()
            .map(str::trim)
            .is_some_and(|v| matches!(v, "off" | "none" | "0" | "0s" | "0m"));
        if ending_soon_off {
            out.ending_soon = None;
        } else if let Some(Some(s)) = span(self, "ending_soon", &n.ending_soon) {
            out.ending_soon = Some(s);
        }
        if let Some(Some(s)) = span(self, "link_ttl", &n.link_ttl) {
            out.link_ttl = s;
        }
        if let Some(Some(s)) = span(self, "give_up_after", &n.give_up_after) {
            out.give_up_after = s;
        }
        if let Some(Some(s)) = span(self, "retry_max_backoff", &n.retry_max_backoff) {
            out.retry_max_backoff = s;
        }
        if out.link_ttl.secs() < 60 || out.link_ttl.secs() > 7 * 86_400 {
            self.error(
                line,
                "notifications.link_ttl",
                "must be between 1m and 7d: a link must outlive a short absence, not a week",
            );
            ok = false;
        }

        if let Some(e) = &n.email {
            match self.email(line, e, base) {
                Some(s) => out.email = Some(s),
                None => ok = false,
            }
        }

        let mut names = BTreeSet::new();
        for (i, c) in n.chat.iter().enumerate() {
            let loc = format!("notifications.chat[{i}].");
            if !names.insert(c.name.clone()) || c.name.trim().is_empty() {
                self.error(
                    line,
                    format!("{loc}name"),
                    format!("\"{}\" is empty or used twice", c.name),
                );
                ok = false;
            }
            let format = match c.format.as_str() {
                "slack" => Some(ChatFormat::Slack),
                "teams" => Some(ChatFormat::Teams),
                other => {
                    self.error(
                        line,
                        format!("{loc}format"),
                        format!("\"{other}\" is not a chat format: use \"slack\" or \"teams\""),
                    );
                    None
                }
            };
            let url = match self.secret(line, &loc, "url", [&c.url, &c.url_file, &c.url_env], base)
            {
                Some(Some(u)) => match http_url(&u) {
                    Ok(_) => Some(u),
                    // The URL is a secret: the message does not repeat it.
                    Err(why) => {
                        self.error(line, format!("{loc}url"), format!("the webhook URL {why}"));
                        None
                    }
                },
                Some(None) => {
                    self.error(
                        line,
                        format!("{loc}url"),
                        "give the incoming-webhook URL as url, url_file or url_env",
                    );
                    None
                }
                None => None,
            };
            let mut scope = Vec::new();
            for t in &c.targets {
                match Name::parse("target", t) {
                    Ok(name) if targets.contains_key(&name) => scope.push(name),
                    _ => {
                        self.error(
                            line,
                            format!("{loc}targets"),
                            format!("unknown target \"{t}\""),
                        );
                        ok = false;
                    }
                }
            }
            match (format, url) {
                (Some(format), Some(url)) => out.chats.push(notify::ChatChannel {
                    name: c.name.clone(),
                    format,
                    url,
                    targets: scope,
                }),
                _ => ok = false,
            }
        }

        let mut names = BTreeSet::new();
        for (i, w) in n.webhooks.iter().enumerate() {
            let loc = format!("notifications.webhooks[{i}].");
            if !names.insert(w.name.clone()) || w.name.trim().is_empty() {
                self.error(
                    line,
                    format!("{loc}name"),
                    format!("\"{}\" is empty or used twice", w.name),
                );
                ok = false;
            }
            if let Err(why) = http_url(&w.url) {
                self.error(line, format!("{loc}url"), format!("\"{}\" {why}", w.url));
                ok = false;
            }
            let secret = match self.secret(
                line,
                &loc,
                "secret",
                [&w.secret, &w.secret_file, &w.secret_env],
                base,
            ) {
                Some(Some(s)) if s.len() >= MIN_SECRET_BYTES => Some(s),
                Some(Some(_)) => {
                    self.error(
                        line,
                        format!("{loc}secret"),
                        format!("must be at least {MIN_SECRET_BYTES} bytes (use e.g. `openssl rand -hex 32`)"),
                    );
                    None
                }
                Some(None) => {
                    self.error(
                        line,
                        format!("{loc}secret"),
                        "every webhook is signed: give secret, secret_file or secret_env",
                    );
                    None
                }
                None => None,
            };
            let timeout = match &w.timeout {
                Some(raw) => self.span(line, &loc, "timeout", raw),
                None => Some(Span::from_secs(10)),
            };
            match (secret, timeout) {
                (Some(secret), Some(timeout)) => out.webhooks.push(notify::WebhookSettings {
                    name: w.name.clone(),
                    url: w.url.clone(),
                    secret,
                    timeout: Duration::from_secs(timeout.secs().clamp(1, 300)),
                }),
                _ => ok = false,
            }
        }

        for (event, r) in &n.routes {
            let loc = format!("notifications.routes.\"{event}\"");
            if !notify::EVENTS.contains(&event.as_str()) {
                self.error(
                    line,
                    loc,
                    format!(
                        "unknown event \"{event}\"; events are: {}",
                        notify::EVENTS.join(", ")
                    ),
                );
                ok = false;
                continue;
            }
            let mut email = Vec::new();
            for a in &r.email {
                match Audience::parse(a) {
                    // A target's event has no requester or approvers.
                    Some(a)
                        if event == notify::TARGET_UNMANAGED_ACCESS && a != Audience::Admins =>
                    {
                        self.error(
                            line,
                            format!("{loc}.email"),
                            format!(
                                "\"{}\" is about a target, not a request: only admins can be told of it",
                                event
                            ),
                        );
                        ok = false;
                    }
                    Some(a) if !email.contains(&a) => email.push(a),
                    Some(_) => {}
                    None => {
                        self.error(
                            line,
                            format!("{loc}.email"),
                            format!(
                                "unknown audience \"{a}\"; use requester, approvers, admins or escalation"
                            ),
                        );
                        ok = false;
                    }
                }
            }
            out.routes.insert(
                event.clone(),
                Route {
                    email,
                    chat: r.chat,
                },
            );
        }
        if out.email.is_none() && n.routes.values().any(|r| !r.email.is_empty()) {
            self.warn(
                line,
                "notifications.routes",
                "routes send e-mail but [notifications.email] is not configured: no mail is sent",
            );
        }
        ok.then_some(out)
    }

    fn email(
        &mut self,
        line: Option<usize>,
        e: &EmailSection,
        base: Option<&Path>,
    ) -> Option<email::SmtpSettings> {
        let loc = "notifications.email.";
        let mut ok = true;
        let security = match e.security.as_deref().unwrap_or("starttls") {
            "none" => email::Security::None,
            "starttls" => email::Security::StartTls,
            "tls" => email::Security::Tls,
            other => {
                self.error(
                    line,
                    format!("{loc}security"),
                    format!("\"{other}\" is not one of none, starttls, tls"),
                );
                ok = false;
                email::Security::StartTls
            }
        };
        if e.host.trim().is_empty() {
            self.error(line, format!("{loc}host"), "is empty");
            ok = false;
        }
        let port = e.port.unwrap_or(match security {
            email::Security::Tls => 465,
            email::Security::StartTls => 587,
            email::Security::None => 25,
        });
        if port == 0 {
            self.error(line, format!("{loc}port"), "must not be 0");
            ok = false;
        }
        if e.from.parse::<lettre::message::Mailbox>().is_err() {
            self.error(
                line,
                format!("{loc}from"),
                format!(
                    "\"{}\" is not an address (write a@example.com or \"Name <a@example.com>\")",
                    e.from
                ),
            );
            ok = false;
        }
        let password = self.secret(
            line,
            loc,
            "password",
            [&e.password, &e.password_file, &e.password_env],
            base,
        );
        if password.is_none() {
            ok = false;
        }
        if matches!(password, Some(Some(_))) && e.username.is_none() {
            self.error(
                line,
                format!("{loc}username"),
                "a password needs a username",
            );
            ok = false;
        }
        if security == email::Security::None && matches!(password, Some(Some(_))) {
            self.warn(
                line,
                format!("{loc}security"),
                "\"none\" sends the SMTP password in clear text; use starttls or tls",
            );
        }
        let timeout = match &e.timeout {
            Some(raw) => self.span(line, loc, "timeout", raw),
            None => Some(Span::from_secs(30)),
        };
        let timeout = timeout?;
        if !ok {
            return None;
        }
        Some(email::SmtpSettings {
            host: e.host.trim().to_owned(),
            port,
            security,
            username: e.username.clone(),
            password: password.flatten(),
            from: e.from.clone(),
            timeout: Duration::from_secs(timeout.secs().clamp(1, 300)),
        })
    }
}
