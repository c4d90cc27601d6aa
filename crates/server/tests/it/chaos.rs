//! Crash anywhere: elevate is killed with SIGKILL at random moments while a
//! stream of request lifecycles runs against a real PostgreSQL target, and
//! started again on the same port each time. Meanwhile a sampler keeps
//! asking PostgreSQL who holds which role. At the end:
//!
//! - every request is final (nothing stuck being applied or removed), and
//!   no role is left on PostgreSQL;
//! - nothing was ever held on PostgreSQL that no approved (or break-glass)
//!   grant covered, and no active grant ever lost its role early;
//! - every request's audit events are a valid path of the lifecycle that
//!   ends in its current state (no state change without its event), with
//!   at most one activation and one removal;
//! - no deadline is acted on early, and no decision is taken after it:
//!   nothing is approved after its pending timeout, no window is extended
//!   after it ended;
//! - whatever the server acknowledged (a 2xx) happened: approvals,
//!   rejections, cancellations and revocations are never lost, and nobody
//!   but the approvers the driver asked ever approved anything;
//! - an approved extension and the growth of its grant are recorded
//!   together or not at all;
//! - the audit chain verifies, and the store's database (SQLite or
//!   PostgreSQL, see `elevate_testkit::database`) agrees with the API (no
//!   provider job left behind, one audit row per event shown).
//!
//! The CI variant kills 50 times; `ELEVATE_LONG_TESTS=1` kills 300 times.
//! The seed is printed; `ELEVATE_CHAOS_SEED=N` replays a schedule (the
//! interleaving with the server still varies from run to run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use elevate_testkit::database_url;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Row};

use crate::common::{binary, connect_store, read_only, token, PgTarget, RESOURCES_TOML};

/// PostgreSQL logins that request roles (one elevate user each).
const REQUESTERS: [&str; 4] = ["u1", "u2", "u3", "u4"];
const APPROVERS: [&str; 2] = ["bob", "carol"];
const ADMIN: &str = "dave";
const ROLES: [&str; 2] = ["orders_writer", "orders_reader"];
const PENDING_TIMEOUT: &str = "3s";
/// Lifecycles run side by side.
const DRIVERS: usize = 5;
/// How long one API call is retried while elevate is down.
const CALL_PATIENCE: Duration = Duration::from_secs(60);
/// How long the end state may take to settle after the last restart.
const SETTLE: Duration = Duration::from_secs(60);
const FINAL: [&str; 7] = [
    "ended",
    "revoked",
    "rejected",
    "cancelled",
    "expired",
    "failed",
    "extended",
];
const DEFAULT_SEED: u64 = 0x5eed_c4a0_5001;

/// The store is the one `db` stands for (see [`database_url`]).
fn config_text(pg: &PgTarget, db: &Path) -> Result<String> {
    let mut users = String::new();
    let people = REQUESTERS
        .iter()
        .map(|u| (*u, "developers"))
        .chain(APPROVERS.iter().map(|a| (*a, "dba")))
        .chain([(ADMIN, "security")]);
    for (name, group) in people {
        users.push_str(&format!(
            "[[users]]\nname = \"{name}\"\nemail = \"{name}@example.com\"\ngroups = [\"{group}\"]\ntoken_hashes = [\"{}\"]\n\n",
            elevate::auth::token_hash(&token(name))
        ));
    }
    Ok(format!(
        r#"
admins = ["group:security"]
auditors = ["group:security"]

[limits]
min_duration = "1s"

{users}
[[eligibilities]]
id = "developers-prod"
subjects = ["group:developers"]
target = "pg"
resources = {{ under = ["prod"] }}
roles = ["orders_writer", "orders_reader"]
max_duration = "10s"
break_glass = true

[[approval_policies]]
id = "prod-dba"
target = "pg"
resources = {{ under = ["prod"] }}
approvers = ["group:dba"]
quorum = 1
pending_timeout = "{PENDING_TIMEOUT}"

[[approval_policies]]
id = "billing-two-person"
target = "pg"
resources = {{ ids = ["billing"] }}
approvers = ["group:dba"]
quorum = 2
pending_timeout = "{PENDING_TIMEOUT}"

[server]
listen = "127.0.0.1:0"
database = "{db}"
retry_max_backoff = "1s"
# On PostgreSQL a restarted elevate does not free the killed one's job
# leases (another replica might hold them): it waits them out.
job_lease = "5s"

[[targets]]
id = "pg"
kind = "postgres"
roles = ["orders_writer", "orders_reader"]
[targets.postgres]
host = "127.0.0.1"
port = {port}
user = "broker"
password_file = "{pw}"
connect_timeout = "2s"
{RESOURCES_TOML}"#,
        db = database_url(db)?,
        port = pg.cluster.port(),
        pw = pg.password_file.display(),
    ))
}

// ---- the server process -------------------------------------------------

/// `elevate serve` as a child process; its stderr is appended to one log
/// across restarts so a failure can be traced through every life.
struct Server {
    child: std::process::Child,
}

impl Server {
    async fn start(config: &Path, port: u16, log: &Path, life: usize) -> Result<Server> {
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        writeln!(log, "==== chaos: life {life} starts at {}", Utc::now())?;
        let child = std::process::Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut server = Server { child };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("elevate exited during start-up (life {life}): {status}");
            }
            if Instant::now() > deadline {
                bail!("elevate did not answer /healthz within 30 s (life {life})");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the driver ---------------------------------------------------------

/// What the driver did to one request it created (and got the id of).
#[derive(Debug, Clone)]
struct Record {
    user: String,
    role: String,
    plan: &'static str,
    /// The grant an extension request extends.
    extends: Option<String>,
    approvals_sent: BTreeSet<String>,
    approvals_acked: BTreeSet<String>,
    rejected_acked: bool,
    cancelled_acked: bool,
    revoked_acked: Option<String>,
}

#[derive(Default)]
struct Ledger {
    requests: BTreeMap<String, Record>,
    /// (user, role) of every break-glass create sent: one whose answer was
    /// lost exists on the server under an id the driver never learnt.
    break_glass_sent: BTreeSet<(String, String)>,
    /// Answers that were not answers: 5xx (never expected).
    server_errors: Vec<String>,
    /// Calls repeated because elevate was down.
    retries: usize,
}

#[derive(Clone)]
struct Driver {
    http: reqwest::Client,
    url: String,
    ledger: Arc<Mutex<Ledger>>,
    /// Told whenever elevate acknowledged something that puts provider
    /// work in motion (an approval, a revocation, a break-glass grant), so
    /// the killer can aim at the moment that work runs.
    acted: Arc<tokio::sync::Notify>,
}

async fn nap(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

impl Driver {
    fn note<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        let mut ledger = self
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut ledger)
    }

    /// One API call, repeated (same body) until elevate answers. A repeat
    /// may follow an attempt that was carried out but whose answer was
    /// lost in the kill; callers account for that.
    async fn call(
        &self,
        method: Method,
        path: &str,
        user: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let started = Instant::now();
        loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .bearer_auth(token(user));
            if let Some(b) = body {
                req = req.json(b);
            }
            let answer = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    resp.text().await.ok().map(|t| (status, t))
                }
                Err(_) => None,
            };
            match answer {
                Some((status, text)) if !status.is_server_error() => {
                    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    return Ok((status, v));
                }
                Some((status, text)) => self.note(|l| {
                    l.server_errors
                        .push(format!("{method} {path} as {user}: {status} {text}"))
                }),
                None => self.note(|l| l.retries += 1),
            }
            if started.elapsed() > CALL_PATIENCE {
                bail!("{method} {path} as {user}: no answer within {CALL_PATIENCE:?}");
            }
            nap(20).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        user: &str,
        resource: &str,
        role: &str,
        secs: u64,
        start: Option<String>,
        break_glass: bool,
        plan: &'static str,
    ) -> Result<String> {
        let mut body = json!({
            "target": "pg",
            "resource": resource,
            "role": role,
            "duration": format!("{secs}s"),
            "reason": "chaos: 障害対応 INC-7",
            "break_glass": break_glass,
        });
        if let Some(s) = start {
            body["start"] = json!(s);
        }
        if break_glass {
            self.note(|l| {
                l.break_glass_sent
                    .insert((user.to_owned(), role.to_owned()))
            });
        }
        let (status, v) = self
            .call(Method::POST, "/api/v1/requests", user, Some(&body))
            .await?;
        ensure!(
            status == StatusCode::CREATED,
            "creating {body} as {user}: {status} {v}"
        );
        let id = v["id"]
            .as_str()
            .context("created without an id")?
            .to_owned();
        if break_glass {
            self.acted.notify_waiters();
        }
        self.note(|l| {
            l.requests.insert(
                id.clone(),
                Record {
                    user: user.to_owned(),
                    role: role.to_owned(),
                    plan,
                    extends: None,
                    approvals_sent: BTreeSet::new(),
                    approvals_acked: BTreeSet::new(),
                    rejected_acked: false,
                    cancelled_acked: false,
                    revoked_acked: None,
                },
            )
        });
        Ok(id)
    }

    /// approve / reject / cancel / revoke. `Ok(true)` when elevate
    /// acknowledged it, `Ok(false)` on 409: the request moved on (it
    /// expired, its window ended, or an earlier attempt of this very call
    /// went through before the kill).
    async fn act(&self, who: &str, id: &str, verb: &'static str) -> Result<bool> {
        if verb == "approve" {
            self.note(|l| {
                if let Some(r) = l.requests.get_mut(id) {
                    r.approvals_sent.insert(who.to_owned());
                }
            });
        }
        let body = json!({ "comment": format!("chaos: {verb} by {who}") });
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/requests/{id}/{verb}"),
                who,
                Some(&body),
            )
            .await?;
        if status.is_success() {
            if matches!(verb, "approve" | "revoke") {
                self.acted.notify_waiters();
            }
            self.note(|l| {
                if let Some(r) = l.requests.get_mut(id) {
                    match verb {
                        "approve" => {
                            r.approvals_acked.insert(who.to_owned());
                        }
                        "reject" => r.rejected_acked = true,
                        "cancel" => r.cancelled_acked = true,
                        _ => r.revoked_acked = Some(who.to_owned()),
                    }
                }
            });
            return Ok(true);
        }
        ensure!(
            status == StatusCode::CONFLICT,
            "{verb} {id} as {who}: {status} {v}"
        );
        Ok(false)
    }

    /// Ends a running grant early now and then: by its requester, an
    /// approver, or an admin.
    async fn maybe_revoke(&self, rng: &mut StdRng, id: &str, user: &str, secs: u64) -> Result<()> {
        let who = match rng.gen_range(0..100) {
            0..=24 => user,
            25..=39 => "carol",
            40..=49 => ADMIN,
            _ => return Ok(()),
        };
        nap(rng.gen_range(0..secs * 1000 + 300)).await;
        self.act(who, id, "revoke").await?;
        Ok(())
    }

    /// Now and then asks for more time on a running grant; the extension
    /// is approved, rejected, or left to expire (or to be withdrawn by
    /// elevate when the grant ends first).
    async fn maybe_extend(
        &self,
        rng: &mut StdRng,
        id: &str,
        user: &str,
        role: &str,
        secs: u64,
    ) -> Result<()> {
        if !rng.gen_bool(0.25) {
            return Ok(());
        }
        nap(rng.gen_range(100..secs * 1000)).await;
        let more = rng.gen_range(1..=2u64);
        let body = json!({ "duration": format!("{more}s"), "reason": "chaos: まだ作業中" });
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/requests/{id}/extend"),
                user,
                Some(&body),
            )
            .await?;
        if status == StatusCode::CONFLICT {
            // The grant ended first, or an earlier attempt went through.
            return Ok(());
        }
        ensure!(
            status == StatusCode::CREATED,
            "extending {id} as {user}: {status} {v}"
        );
        let ext = v["id"]
            .as_str()
            .context("extension without an id")?
            .to_owned();
        let (u, r) = (user.to_owned(), role.to_owned());
        self.note(|l| {
            l.requests.insert(
                ext.clone(),
                Record {
                    user: u,
                    role: r,
                    plan: "extension",
                    extends: Some(id.to_owned()),
                    approvals_sent: BTreeSet::new(),
                    approvals_acked: BTreeSet::new(),
                    rejected_acked: false,
                    cancelled_acked: false,
                    revoked_acked: None,
                },
            )
        });
        nap(rng.gen_range(0..600)).await;
        let approver = APPROVERS[rng.gen_range(0..APPROVERS.len())];
        match rng.gen_range(0..100) {
            0..=64 => {
                self.act(approver, &ext, "approve").await?;
            }
            65..=79 => {
                self.act(approver, &ext, "reject").await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn lifecycle(&self, rng: &mut StdRng) -> Result<()> {
        let user = REQUESTERS[rng.gen_range(0..REQUESTERS.len())];
        let role = ROLES[rng.gen_range(0..ROLES.len())];
        let approver = APPROVERS[rng.gen_range(0..APPROVERS.len())];
        let secs = rng.gen_range(1..=4u64);
        match rng.gen_range(0..100) {
            0..=34 => {
                let id = self
                    .create(user, "orders", role, secs, None, false, "approve")
                    .await?;
                nap(rng.gen_range(0..800)).await;
                if self.act(approver, &id, "approve").await? {
                    self.maybe_extend(rng, &id, user, role, secs).await?;
                    self.maybe_revoke(rng, &id, user, secs).await?;
                }
            }
            35..=44 => {
                let id = self
                    .create(user, "billing", role, secs, None, false, "two-person")
                    .await?;
                nap(rng.gen_range(0..500)).await;
                self.act("bob", &id, "approve").await?;
                // Now and then the second approver never comes: it expires
                // with one approval recorded.
                if rng.gen_bool(0.7) {
                    nap(rng.gen_range(0..500)).await;
                    if self.act("carol", &id, "approve").await? {
                        self.maybe_extend(rng, &id, user, role, secs).await?;
                        self.maybe_revoke(rng, &id, user, secs).await?;
                    }
                }
            }
            45..=52 => {
                let id = self
                    .create(user, "orders", role, secs, None, false, "reject")
                    .await?;
                nap(rng.gen_range(0..800)).await;
                self.act(approver, &id, "reject").await?;
            }
            53..=60 => {
                let id = self
                    .create(user, "orders", role, secs, None, false, "cancel")
                    .await?;
                nap(rng.gen_range(0..800)).await;
                self.act(user, &id, "cancel").await?;
            }
            61..=66 => {
                // Nobody decides: it expires.
                self.create(user, "orders", role, secs, None, false, "ignore")
                    .await?;
            }
            67..=84 => {
                let start = Utc::now() + chrono::Duration::milliseconds(rng.gen_range(800..2500));
                let start = start.to_rfc3339_opts(SecondsFormat::Millis, true);
                let id = self
                    .create(user, "orders", role, secs, Some(start), false, "scheduled")
                    .await?;
                nap(rng.gen_range(0..300)).await;
                if self.act(approver, &id, "approve").await? {
                    match rng.gen_range(0..100) {
                        0..=29 => {
                            nap(rng.gen_range(0..1200)).await;
                            self.act(user, &id, "cancel").await?;
                        }
                        30..=49 => {
                            nap(rng.gen_range(0..3000)).await;
                            self.act(user, &id, "revoke").await?;
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                let id = self
                    .create(user, "orders", role, secs, None, true, "break-glass")
                    .await?;
                if rng.gen_bool(0.3) {
                    nap(rng.gen_range(0..secs * 1000)).await;
                    self.act(user, &id, "revoke").await?;
                }
            }
        }
        Ok(())
    }

    async fn run(self, mut rng: StdRng, stop: Arc<AtomicBool>) -> Result<usize> {
        let mut lifecycles = 0;
        while !stop.load(Ordering::SeqCst) {
            self.lifecycle(&mut rng).await?;
            lifecycles += 1;
            nap(rng.gen_range(50..300)).await;
        }
        Ok(lifecycles)
    }

    async fn all_requests(&self) -> Result<Vec<Value>> {
        let (status, v) = self
            .call(
                Method::GET,
                "/api/v1/requests?scope=all&limit=10000",
                ADMIN,
                None,
            )
            .await?;
        ensure!(status.is_success(), "listing requests: {status} {v}");
        Ok(v["requests"].as_array().cloned().unwrap_or_default())
    }
}

// ---- PostgreSQL, as it really is ----------------------------------------

/// Who holds which granted role right now, asked of PostgreSQL.
fn memberships(pg: &PgTarget) -> Result<BTreeSet<(String, String)>> {
    let logins: Vec<String> = REQUESTERS.iter().map(|u| format!("'{u}'")).collect();
    let out = pg.cluster.psql(&format!(
        "SELECT u.rolname || ' ' || r.rolname FROM pg_auth_members m \
         JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
         WHERE u.rolname IN ({})",
        logins.join(", ")
    ))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, r)| (u.to_owned(), r.to_owned()))
        .collect())
}

/// One look at PostgreSQL, taken somewhere between `from` and `to`.
struct Sample {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    members: BTreeSet<(String, String)>,
}

// ---- the checks ---------------------------------------------------------

fn time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A time as an audit event's `at` keeps it: whole milliseconds (the
/// times inside `details` keep nanoseconds).
fn to_millis(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

/// The states an audit action may lead to from `prev` (None: no event
/// yet). Empty: the action is not a valid step from there.
fn next_states(extension: bool, prev: Option<&str>, action: &str) -> &'static [&'static str] {
    match (prev, action) {
        // An extension needs approval here, so it is never extended at once.
        (None, "request.created") if extension => &["pending"],
        (None, "request.created") => &["pending", "approved"],
        (Some("pending"), "request.approval_recorded") => &["pending"],
        (Some("pending"), "request.approved") if extension => &["extended"],
        (Some("pending"), "request.approved") => &["approved", "scheduled"],
        (Some("pending"), "request.rejected") => &["rejected"],
        (Some("pending"), "request.cancelled") => &["cancelled"],
        (Some("pending"), "request.expired") => &["expired"],
        (Some("scheduled"), "grant.starting") => &["approved"],
        (Some("scheduled"), "request.cancelled") => &["cancelled"],
        (Some("scheduled"), "grant.revoked" | "grant.deactivated") => &["revoked"],
        (Some("approved"), "grant.activated") => &["active"],
        (Some("approved"), "grant.failed") => &["failed"],
        // The whole window passed while elevate was down: never applied.
        (Some("scheduled"), "grant.failed") => &["failed"],
        (Some("approved" | "active"), "grant.revoked" | "grant.deactivated") => &["ending"],
        (Some("active"), "grant.window_ended") => &["ending"],
        (Some("ending"), "grant.removed") => &["ended", "revoked"],
        // An approved extension grows the window of its grant.
        (Some("scheduled"), "grant.extended") if !extension => &["scheduled"],
        (Some("approved"), "grant.extended") if !extension => &["approved"],
        (Some("active"), "grant.extended") if !extension => &["active"],
        _ => &[],
    }
}

/// Where one request held (or may have held) its role, from its events.
#[derive(Debug, Default)]
struct Lives {
    user: String,
    role: String,
    /// From the event that made it `approved` (authorised to be applied)
    /// until the removal was confirmed; `None` end: open (still running, or
    /// failed, whose clean-up removal is not an audit event).
    authorised: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// From activation until the event that ended or revoked it.
    active: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    /// Extensions whose time was added, from `grant.extended` events.
    extended_by: Vec<String>,
}

/// Checks one request (its `show` view) against the lifecycle and the
/// driver's ledger; returns what it learnt about its role's lifetime.
fn check_request(
    v: &Value,
    record: Option<&Record>,
    ledger: &Ledger,
    problems: &mut Vec<String>,
) -> Lives {
    let id = v["id"].as_str().unwrap_or("?").to_owned();
    let requester = v["requester"].as_str().unwrap_or_default().to_owned();
    let role = v["role"].as_str().unwrap_or_default().to_owned();
    let current = v["state"].as_str().unwrap_or_default();
    let break_glass = v["break_glass"].as_bool().unwrap_or(false);
    let extension = v["kind"] == "extension";
    let events = v["events"].as_array().cloned().unwrap_or_default();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    let mut problem = |what: String| {
        problems.push(format!(
            "{id} ({requester} {role}): {what}; events {actions:?}"
        ))
    };
    let mut lives = Lives {
        user: requester.clone(),
        role: role.clone(),
        ..Default::default()
    };

    if !FINAL.contains(&current) {
        problem(format!("left in state {current}, not final"));
    }

    let mut state: Option<String> = None;
    let mut ending_cause: Option<&str> = None;
    let mut expires_at: Option<DateTime<Utc>> = None;
    let mut approvers: Vec<String> = Vec::new();
    let mut revoked_by: Vec<String> = Vec::new();
    for e in &events {
        let action = e["action"].as_str().unwrap_or_default();
        let at = time(&e["at"]);
        let actor = e["actor"].as_str().unwrap_or_default();
        let new_state = e["details"]["state"]["state"].as_str().unwrap_or_default();
        let allowed = next_states(extension, state.as_deref(), action);
        if !allowed.contains(&new_state) {
            problem(format!(
                "{action} led from {state:?} to {new_state}, not a step of the lifecycle"
            ));
        }
        let Some(at) = at else {
            problem(format!("{action} has no time"));
            continue;
        };
        match action {
            "request.created" => {
                if actor != format!("user:{requester}") {
                    problem(format!("created by {actor}"));
                }
                if new_state == "approved" && !break_glass {
                    problem("approved at creation without break-glass".into());
                }
                if new_state == "approved" {
                    lives.authorised = Some((at, None));
                }
                expires_at = time(&e["details"]["state"]["expires_at"]);
            }
            "request.approval_recorded" | "request.approved" => {
                let name = actor.strip_prefix("user:").unwrap_or(actor).to_owned();
                if !APPROVERS.contains(&name.as_str()) || name == requester {
                    problem(format!("approved by {actor}, who may not"));
                }
                if approvers.contains(&name) {
                    problem(format!("{name} counted twice"));
                }
                approvers.push(name);
                let count = e["details"]["approvals"].as_u64().unwrap_or(0);
                let quorum = e["details"]["quorum"].as_u64().unwrap_or(u64::MAX);
                let reached = action == "request.approved";
                if reached != (count >= quorum) || count != approvers.len() as u64 {
                    problem(format!(
                        "{action} with {count} approval(s) of quorum {quorum}, {} recorded",
                        approvers.len()
                    ));
                }
                if expires_at.is_some_and(|x| at >= x) {
                    problem(format!(
                        "{action} at {at}, after the pending timeout {expires_at:?}"
                    ));
                }
                if new_state == "approved" {
                    lives.authorised = Some((at, None));
                }
            }
            "grant.starting" => {
                let starts =
                    time(&e["details"]["state"]["window"]["starts_at"]).and_then(to_millis);
                if starts.is_some_and(|s| at < s) {
                    problem(format!("started at {at}, before its start {starts:?}"));
                }
                lives.authorised = Some((at, None));
            }
            "request.expired" if expires_at.and_then(to_millis).is_some_and(|x| at < x) => {
                problem(format!("expired at {at}, before {expires_at:?}"));
            }
            "grant.activated" => lives.active = Some((at, None)),
            "grant.extended" => {
                let from = time(&e["details"]["from"]);
                if from.is_some_and(|f| at > f) {
                    problem(format!(
                        "window extended at {at}, after it had ended at {from:?}"
                    ));
                }
                lives
                    .extended_by
                    .push(e["details"]["extension"].as_str().unwrap_or("?").to_owned());
            }
            "request.cancelled" if actor == "system" && !extension => {
                problem("cancelled by elevate itself".into());
            }
            "grant.window_ended" => {
                let ends = time(&e["details"]["state"]["window"]["ends_at"]).and_then(to_millis);
                if ends.is_some_and(|x| at < x) {
                    problem(format!("window ended at {at}, before its end {ends:?}"));
                }
                ending_cause = Some("ended");
            }
            "grant.revoked" | "grant.deactivated" => {
                let name = actor.strip_prefix("user:").unwrap_or(actor);
                let deactivation = name == requester;
                if deactivation != (action == "grant.deactivated") {
                    problem(format!("{action} by {actor}"));
                }
                revoked_by.push(name.to_owned());
                ending_cause = Some("revoked");
            }
            "grant.removed" => {
                if ending_cause != Some(new_state) {
                    problem(format!(
                        "removed as {new_state} after an ending caused by {ending_cause:?}"
                    ));
                }
                if let Some((from, _)) = lives.authorised {
                    lives.authorised = Some((from, Some(at)));
                }
            }
            _ => {}
        }
        if matches!(
            action,
            "grant.window_ended" | "grant.revoked" | "grant.deactivated"
        ) {
            if let Some((from, None)) = lives.active {
                lives.active = Some((from, Some(at)));
            }
        }
        if matches!(new_state, "cancelled" | "revoked") && action != "grant.removed" {
            // Never applied (cancelled or revoked while scheduled).
            if let Some((from, None)) = lives.authorised {
                lives.authorised = Some((from, Some(at)));
            }
        }
        state = Some(new_state.to_owned());
    }
    if state.as_deref() != Some(current) {
        problem(format!(
            "is {current} but its last event says {state:?}: a state change has no event"
        ));
    }
    for once in ["grant.activated", "grant.removed"] {
        let n = actions.iter().filter(|a| **a == once).count();
        if n > 1 {
            problem(format!("{once} {n} times"));
        }
    }
    let applied_ok = v["attempts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["kind"] == "apply" && a["outcome"] == "ok")
                .count()
        })
        .unwrap_or(0);
    if applied_ok > 1 {
        problem(format!("applied {applied_ok} times"));
    }

    match record {
        Some(r) => {
            for a in &approvers {
                if !r.approvals_sent.contains(a) {
                    problem(format!("approved by {a}, whom the driver never asked"));
                }
            }
            for a in &r.approvals_acked {
                if !approvers.contains(a) {
                    problem(format!("{a}'s acknowledged approval is lost"));
                }
            }
            if r.rejected_acked && current != "rejected" {
                problem(format!("acknowledged rejection lost: {current}"));
            }
            if r.cancelled_acked && current != "cancelled" {
                problem(format!("acknowledged cancellation lost: {current}"));
            }
            if let Some(by) = &r.revoked_acked {
                if current != "revoked" || !revoked_by.contains(by) {
                    problem(format!("acknowledged revocation by {by} lost: {current}"));
                }
            }
            if r.user != requester || r.role != role {
                problem(format!("driver asked for {} {}", r.user, r.role));
            }
            if r.extends.as_deref() != v["extends"].as_str() {
                problem(format!("driver asked to extend {:?}", r.extends));
            }
        }
        None => {
            // Created, but the answer was lost in a kill: nobody knew its
            // id, so nobody could have approved it.
            if !approvers.is_empty() {
                problem("an unknown request was approved".into());
            }
            if extension {
                if !matches!(current, "expired" | "cancelled") {
                    problem(format!("an unknown extension ended as {current}"));
                }
            } else if break_glass {
                if !ledger
                    .break_glass_sent
                    .contains(&(requester.clone(), role.clone()))
                {
                    problem("break-glass the driver never asked for".into());
                }
            } else if current != "expired" {
                problem(format!("an unknown request ended as {current}"));
            }
        }
    }
    lives
}

/// Every sampled membership was covered by a grant authorised at the
/// time, and no active grant ever lost its role early.
/// Returns how many memberships were seen and how many times an active
/// grant's role was checked, to show the checks were not vacuous.
fn check_samples(
    samples: &[Sample],
    lives: &[Lives],
    problems: &mut Vec<String>,
) -> (usize, usize) {
    let margin = chrono::Duration::milliseconds(2);
    let (mut seen, mut needed) = (0, 0);
    for s in samples {
        seen += s.members.len();
        for (user, role) in &s.members {
            let covered = lives.iter().any(|l| {
                &l.user == user
                    && &l.role == role
                    && l.authorised.is_some_and(|(from, until)| {
                        from <= s.to && until.is_none_or(|u| u + margin >= s.from)
                    })
            });
            if !covered {
                problems.push(format!(
                    "PostgreSQL had {user} in {role} between {} and {} with no approved grant covering it",
                    s.from, s.to
                ));
            }
        }
        for l in lives {
            if let Some((from, until)) = l.active {
                let inside = from + margin < s.from && until.is_none_or(|u| s.to + margin < u);
                needed += usize::from(inside);
                if inside && !s.members.contains(&(l.user.clone(), l.role.clone())) {
                    problems.push(format!(
                        "{} lost {} between {} and {} while a grant active from {from} until {until:?} needed it",
                        l.user, l.role, s.from, s.to
                    ));
                }
            }
        }
    }
    (seen, needed)
}

/// Cross-checks the store's database at `db_url` (read-only where the
/// engine allows it) against the API.
async fn check_database(
    db_url: &str,
    shown: &BTreeMap<String, Value>,
    problems: &mut Vec<String>,
) -> Result<()> {
    let mut conn = connect_store(&read_only(db_url)).await?;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut conn)
        .await?;
    if jobs != 0 {
        problems.push(format!("{jobs} provider job(s) left in the queue"));
    }
    let (count, max): (i64, Option<i64>) = {
        let row = sqlx::query("SELECT count(*), max(seq) FROM audit")
            .fetch_one(&mut conn)
            .await?;
        (row.get(0), row.get(1))
    };
    if Some(count) != max {
        problems.push(format!(
            "audit has {count} events but its last seq is {max:?}"
        ));
    }
    let rows = sqlx::query("SELECT id, state FROM requests")
        .fetch_all(&mut conn)
        .await?;
    if rows.len() != shown.len() {
        problems.push(format!(
            "the database has {} requests, the API listed {}",
            rows.len(),
            shown.len()
        ));
    }
    for row in rows {
        let id: String = row.get(0);
        let state: String = row.get(1);
        match shown.get(&id) {
            Some(v) if v["state"] == state.as_str() => {}
            Some(v) => problems.push(format!(
                "{id}: database says {state}, API says {}",
                v["state"]
            )),
            None => problems.push(format!("{id} is in the database but not listed")),
        }
    }
    let per_request = sqlx::query(
        "SELECT request_id, count(*) FROM audit WHERE request_id IS NOT NULL GROUP BY request_id",
    )
    .fetch_all(&mut conn)
    .await?;
    for row in per_request {
        let id: String = row.get(0);
        let n: i64 = row.get(1);
        let api = shown
            .get(&id)
            .and_then(|v| v["events"].as_array().map(Vec::len))
            .unwrap_or(0);
        if api as i64 != n {
            problems.push(format!(
                "{id}: {n} audit events in the database, {api} shown"
            ));
        }
    }
    conn.close().await?;
    Ok(())
}

// ---- the test -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_anywhere_loses_no_revocation_grants_nothing_unapproved_and_keeps_the_audit_chain(
) -> Result<()> {
    let long = std::env::var("ELEVATE_LONG_TESTS").is_ok_and(|v| v == "1");
    let kills = if long { 300 } else { 50 };
    let seed = std::env::var("ELEVATE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("chaos: seed {seed} (ELEVATE_CHAOS_SEED={seed} replays it), {kills} kills");
    let began = Instant::now();

    let dir = tempfile::tempdir()?;
    let pg = PgTarget::start(dir.path())?;
    let logins: Vec<String> = REQUESTERS
        .iter()
        .map(|u| format!("CREATE ROLE {u} LOGIN PASSWORD '{u}-pw';"))
        .collect();
    pg.cluster.psql(&logins.join("\n"))?;
    let pg = Arc::new(pg);
    let db_url = database_url(&dir.path().join("elevate.db"))?;
    let config = dir.path().join("elevate.toml");
    let log: PathBuf = dir.path().join("elevate.log");
    std::fs::write(&config, config_text(&pg, &dir.path().join("elevate.db"))?)?;
    let port = elevate_testkit::free_port()?;

    let mut server = Server::start(&config, port, &log, 0).await?;
    let driver = Driver {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        url: format!("http://127.0.0.1:{port}"),
        ledger: Arc::new(Mutex::new(Ledger::default())),
        acted: Arc::new(tokio::sync::Notify::new()),
    };

    let stop_drivers = Arc::new(AtomicBool::new(false));
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = {
        let pg = pg.clone();
        let stop = stop_sampler.clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<Sample>> {
            let mut samples = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let from = Utc::now();
                let members = memberships(&pg)?;
                let to = Utc::now();
                samples.push(Sample { from, to, members });
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(samples)
        })
    };
    let mut drivers = Vec::new();
    for n in 0..DRIVERS {
        let rng = StdRng::seed_from_u64(seed.wrapping_add(1 + n as u64));
        drivers.push(tokio::spawn(driver.clone().run(rng, stop_drivers.clone())));
    }

    // The killer.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut killed = 0;
    let mut longest_start = Duration::ZERO;
    while killed < kills {
        // Mostly 50–600 ms into a life; now and then within its first
        // 50 ms, while it is still catching up with what the last one left;
        // and now and then 0–20 ms after elevate acknowledged an approval
        // or revocation, while it applies or removes the role.
        match rng.gen_range(0..100) {
            0..=19 => nap(rng.gen_range(0..50)).await,
            20..=44 => {
                let acted = driver.acted.notified();
                let _ = tokio::time::timeout(Duration::from_millis(600), acted).await;
                nap(rng.gen_range(0..20)).await;
            }
            _ => nap(rng.gen_range(50..=600)).await,
        }
        server.kill()?;
        killed += 1;
        // Sometimes stay down a while, so deadlines pass with nobody up;
        // now and then longer than a whole window, so a grant approved
        // just before the kill ends before it could be applied.
        match rng.gen_range(0..100) {
            0..=14 => nap(rng.gen_range(0..1000)).await,
            15..=19 => nap(rng.gen_range(1000..2500)).await,
            _ => {}
        }
        let starting = Instant::now();
        server = Server::start(&config, port, &log, killed).await?;
        longest_start = longest_start.max(starting.elapsed());
        if drivers.iter().any(|d| d.is_finished()) {
            break;
        }
    }
    let chaos_time = began.elapsed();
    stop_drivers.store(true, Ordering::SeqCst);
    let mut lifecycles = 0;
    let mut failures = Vec::new();
    for d in drivers {
        match d.await? {
            Ok(n) => lifecycles += n,
            Err(e) => failures.push(format!("driver failed: {e:#}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "after {killed} kills: {}",
        failures.join("\n")
    );

    // Let everything in flight finish: windows end, pending requests
    // expire, removals and clean-ups run.
    let settle_deadline = Instant::now() + SETTLE;
    let mut settled = false;
    while Instant::now() < settle_deadline {
        let all = driver.all_requests().await?;
        let open = all
            .iter()
            .filter(|r| !FINAL.contains(&r["state"].as_str().unwrap_or_default()))
            .count();
        let mut conn = connect_store(&read_only(&db_url)).await?;
        let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        if open == 0 && jobs == 0 {
            settled = true;
            break;
        }
        nap(200).await;
    }
    let settle_time = began.elapsed() - chaos_time;
    // A last look at PostgreSQL once everything is over.
    nap(200).await;
    stop_sampler.store(true, Ordering::SeqCst);
    let samples = sampler.await??;

    let mut problems = Vec::new();
    if !settled {
        problems.push(format!(
            "requests or jobs still open {SETTLE:?} after the last restart"
        ));
    }
    let ledger = {
        let guard = driver
            .ledger
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ledger {
            requests: guard.requests.clone(),
            break_glass_sent: guard.break_glass_sent.clone(),
            server_errors: guard.server_errors.clone(),
            retries: guard.retries,
        }
    };
    for e in &ledger.server_errors {
        problems.push(format!("server error: {e}"));
    }

    let mut shown = BTreeMap::new();
    for r in driver.all_requests().await? {
        let id = r["id"].as_str().context("request without id")?.to_owned();
        let (status, v) = driver
            .call(Method::GET, &format!("/api/v1/requests/{id}"), ADMIN, None)
            .await?;
        ensure!(status.is_success(), "show {id}: {status} {v}");
        shown.insert(id, v);
    }
    for id in ledger.requests.keys() {
        if !shown.contains_key(id) {
            problems.push(format!("{id}: created (201) but lost"));
        }
    }
    let mut lives = Vec::new();
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut plans: BTreeMap<&str, usize> = BTreeMap::new();
    let mut max_lateness = 0;
    for (id, v) in &shown {
        let record = ledger.requests.get(id);
        *states
            .entry(v["state"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        *plans
            .entry(record.map_or("unknown", |r| r.plan))
            .or_default() += 1;
        for e in v["events"].as_array().into_iter().flatten() {
            if e["action"] == "grant.removed" {
                max_lateness = max_lateness.max(e["details"]["lateness_ms"].as_i64().unwrap_or(0));
            }
        }
        lives.push(check_request(v, record, &ledger, &mut problems));
    }
    let (seen, needed) = check_samples(&samples, &lives, &mut problems);
    // An approved extension and the growth of its grant are one change:
    // neither may be recorded without the other.
    let grown: BTreeSet<&String> = lives.iter().flat_map(|l| &l.extended_by).collect();
    for (id, v) in &shown {
        if v["state"] == "extended" && !grown.contains(id) {
            problems.push(format!("{id} is extended but its grant never grew"));
        }
    }
    for id in &grown {
        if shown.get(*id).is_none_or(|v| v["state"] != "extended") {
            problems.push(format!(
                "a grant grew by {id}, which is not an extended extension"
            ));
        }
    }
    let left = memberships(&pg)?;
    if !left.is_empty() {
        problems.push(format!(
            "roles left on PostgreSQL after every grant ended: {left:?}"
        ));
    }
    let (status, verify) = driver
        .call(Method::GET, "/api/v1/audit/verify", ADMIN, None)
        .await?;
    if !status.is_success() || verify["ok"] != true {
        problems.push(format!("audit chain does not verify: {status} {verify}"));
    }
    check_database(&db_url, &shown, &mut problems).await?;
    drop(server);

    // Each start after a kill that interrupted provider work says so.
    let interrupted = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("released jobs held by a previous run")
        .count();
    println!(
        "chaos: {killed} kills in {chaos_time:?} ({interrupted} with provider jobs in flight; slowest restart {longest_start:?}), settled in {settle_time:?}, \
         {lifecycles} lifecycles, {} requests {states:?}, plans {plans:?}, {} retried calls, \
         {} PostgreSQL samples ({seen} memberships seen, {needed} checked present), {} audit events, latest removal {max_lateness} ms after its deadline, total {:?}",
        shown.len(),
        ledger.retries,
        samples.len(),
        verify["events"],
        began.elapsed()
    );
    if !problems.is_empty() {
        // Keep the evidence: database, config and the server's log.
        let kept = dir.keep();
        let shown_problems: Vec<&String> = problems.iter().take(40).collect();
        bail!(
            "{} problem(s) after {killed} kills (seed {seed}; files kept in {}):\n{}",
            problems.len(),
            kept.display(),
            shown_problems
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    ensure!(killed >= kills, "only {killed} of {kills} kills happened");
    Ok(())
}

/// The checker itself: a lifecycle missing its removal event, or one that
/// activates without approval, is reported.
#[test]
fn the_lifecycle_checker_reports_missing_and_invalid_events() {
    let event = |action: &str, actor: &str, state: &str| {
        json!({
            "action": action,
            "actor": actor,
            "at": "2026-01-01T00:00:00.000Z",
            "details": { "state": { "state": state }, "approvals": 1, "quorum": 1 },
        })
    };
    let request = |state: &str, events: Vec<Value>| {
        json!({
            "id": "r-test", "requester": "u1", "role": "orders_writer",
            "state": state, "break_glass": false, "events": events, "attempts": [],
        })
    };
    let record = Record {
        user: "u1".into(),
        role: "orders_writer".into(),
        plan: "approve",
        extends: None,
        approvals_sent: ["bob".to_owned()].into(),
        approvals_acked: ["bob".to_owned()].into(),
        rejected_acked: false,
        cancelled_acked: false,
        revoked_acked: None,
    };
    let ledger = Ledger::default();
    let check = |v: &Value| {
        let mut problems = Vec::new();
        check_request(v, Some(&record), &ledger, &mut problems);
        problems
    };
    let mut events = vec![
        event("request.created", "user:u1", "pending"),
        event("request.approved", "user:bob", "approved"),
        event("grant.activated", "system", "active"),
        event("grant.window_ended", "system", "ending"),
        event("grant.removed", "system", "ended"),
    ];
    assert_eq!(
        check(&request("ended", events.clone())),
        Vec::<String>::new()
    );
    // The removal happened (state ended) but has no event.
    let removed = events.pop();
    let problems = check(&request("ended", events.clone()));
    assert!(
        problems.iter().any(|p| p.contains("has no event")),
        "{problems:?}"
    );
    // Activated without ever being approved.
    events.remove(1);
    events.extend(removed);
    let problems = check(&request("ended", events));
    assert!(
        problems.iter().any(|p| p.contains("not a step")),
        "{problems:?}"
    );
}
