//! How soon people hear: from a request's creation to the approvers' mail
//! stored by a real SMTP server (aiosmtpd), and from an audit event to its
//! signed webhook arriving at a receiver, with N requests made by 8
//! concurrent clients. Run with `cargo bench -p elevate --bench notify`
//! (`--json` for one machine-readable line; `NOTIFY_REQUESTS` sets N).
//!
//! Needs aiosmtpd (`pip install aiosmtpd`), as the tests do.

// The helpers every HTTP bench shares (not the lifecycle ones).
#[path = "lifecycle/basics.rs"]
mod basics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::routing::post;
use basics::{env, ms, stats};
use elevate::config::Config;
use elevate_testkit::smtp::{ReceivedMail, SmtpServer};
use serde_json::{json, Value};

const CLIENTS: usize = 8;
const APPROVERS: usize = 4;
const SECRET: &str = "bench-webhook-secret-0123456789";

fn config(db: &std::path::Path, smtp: u16, hook: u16) -> String {
    let mut s = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"sqlite://{}\"\n[limits]\nmin_duration = \"1s\"\n",
        db.display()
    );
    let mut user = |name: String, group: &str| {
        s.push_str(&format!(
            "[[users]]\nname = \"{name}\"\nemail = \"{name}@example.com\"\ngroups = [\"{group}\"]\ntoken_hashes = [\"{}\"]\n",
            elevate::auth::token_hash(&format!("t-{name}"))
        ));
    };
    for i in 0..CLIENTS {
        user(format!("r{i}"), "requesters");
    }
    for i in 0..APPROVERS {
        user(format!("a{i}"), "approvers");
    }
    s.push_str(&format!(
        "[[targets]]\nid = \"bench\"\nkind = \"dry-run\"\nroles = [\"writer\"]\n[[targets.resources]]\nid = \"db\"
[[eligibilities]]\nid = \"e\"\nsubjects = [\"group:requesters\"]\ntarget = \"bench\"\nresources = {{ ids = [\"db\"] }}\nroles = [\"writer\"]\nmax_duration = \"1h\"
[[approval_policies]]\nid = \"p\"\ntarget = \"bench\"\nresources = {{ ids = [\"db\"] }}\napprovers = [\"group:approvers\"]\n
[notifications.email]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\nfrom = \"elevate@example.com\"
[[notifications.webhooks]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{hook}/events\"\nsecret = \"{SECRET}\"\n"
    ));
    s
}

/// The request id in a mail's "Open the request" link.
fn request_of(m: &ReceivedMail) -> Option<String> {
    let at = m.text.find("/requests/")? + "/requests/".len();
    let id: String = m.text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Some(id)
}

fn since(earlier: SystemTime, later: SystemTime) -> f64 {
    later.duration_since(earlier).map(ms).unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let json_out = std::env::args().any(|a| a == "--json");
    let n = env("NOTIFY_REQUESTS", 300);
    let dir = tempfile::tempdir()?;
    let smtp = SmtpServer::start(&dir.path().join("smtp"))?;

    // The webhook receiver: arrival time per event, and the event's time.
    let arrivals: Arc<Mutex<Vec<(SystemTime, Value)>>> = Arc::default();
    let a = arrivals.clone();
    let receiver = axum::Router::new().route(
        "/events",
        post(move |body: Bytes| {
            let a = a.clone();
            async move {
                let now = SystemTime::now();
                if let (Ok(v), Ok(mut a)) = (serde_json::from_slice::<Value>(&body), a.lock()) {
                    a.push((now, v));
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });

    let text = config(&dir.path().join("e.db"), smtp.port(), hook_port);
    let config = Config::parse(&text, None).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    let running = elevate::start(config, None).await?;
    let url = format!("http://{}/api/v1/requests", running.addr);
    let http = reqwest::Client::new();

    // N requests from CLIENTS clients; when each was created.
    let created: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (http, url, created) = (http.clone(), url.clone(), created.clone());
        let share = n / CLIENTS + usize::from(c < n % CLIENTS);
        clients.spawn(async move {
            for _ in 0..share {
                let body = json!({"target": "bench", "resource": "db", "role": "writer",
                    "duration": "30m", "reason": "障害対応のため確認します"});
                let v = basics::post(&http, &url, &format!("t-r{c}"), body).await?;
                let id = v["id"].as_str().context("no id")?.to_owned();
                if let Ok(mut m) = created.lock() {
                    m.insert(id, SystemTime::now());
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = clients.join_next().await {
        r??;
    }
    let requests_done = started.elapsed();

    // Every approver and the requester: (APPROVERS + 1) mails a request.
    let want = n * (APPROVERS + 1);
    let mails = smtp
        .wait_for_messages(want, Duration::from_secs(600))
        .await?;
    let all_mail = started.elapsed();
    let created = created
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut mail_ms = Vec::new();
    for entry in std::fs::read_dir(smtp.dir().join("new"))? {
        let path = entry?.path();
        let stored = std::fs::metadata(&path)?.modified()?;
        let m = ReceivedMail::parse(&std::fs::read(&path)?)?;
        let Some(at) = request_of(&m).and_then(|id| created.get(&id).copied()) else {
            bail!("a mail names no known request: {}", m.subject);
        };
        mail_ms.push(since(at, stored));
    }
    if mails.len() != want {
        bail!("{} mails for {want} expected", mails.len());
    }

    // Every event reaches the webhook, in order.
    let deadline = Instant::now() + Duration::from_secs(300);
    let head: i64 = loop {
        let head = running.broker.store.audit_head_seq().await?;
        let got = arrivals.lock().map(|a| a.len() as i64).unwrap_or(0);
        if got >= head {
            break head;
        }
        if Instant::now() > deadline {
            bail!("webhook got {got} of {head} events");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let arrivals = arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    // From the first request to the last event's arrival.
    let all_events = arrivals
        .iter()
        .map(|(t, _)| *t)
        .max()
        .and_then(|last| last.duration_since(started_wall).ok())
        .unwrap_or_default();
    let mut hook_ms = Vec::new();
    for (i, (arrived, v)) in arrivals.iter().enumerate() {
        if v["seq"].as_i64() != Some(i as i64 + 1) {
            bail!("event {} arrived at position {}", v["seq"], i + 1);
        }
        let at = v["at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .context("event time")?;
        let at =
            SystemTime::UNIX_EPOCH + Duration::from_millis(at.timestamp_millis().max(0) as u64);
        hook_ms.push(since(at, *arrived));
    }
    running.shutdown().await;

    let out = json!({
        "bench": "notify",
        "requests": n,
        "clients": CLIENTS,
        "mails": mail_ms.len(),
        "events": head,
        "requests_per_s": n as f64 / requests_done.as_secs_f64(),
        "mails_per_s": mail_ms.len() as f64 / all_mail.as_secs_f64(),
        "webhook_events_per_s": head as f64 / all_events.as_secs_f64(),
        "created_to_mail_stored_ms": stats(mail_ms),
        "event_to_webhook_ms": stats(hook_ms),
    });
    if json_out {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
