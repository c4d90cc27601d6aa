//! Privilege escalation matrix: every kind of actor × every action, each
//! cell run on a fresh request in the state the action needs, asserting
//! exactly who may do what. A refused write must change nothing: not the
//! request's state, not its approvals, not its audit trail.
//!
//! Also: nobody approves their own request (not even an approver
//! requesting), nobody reaches a quorum of two alone, admins and auditors
//! are not approvers, and identity comes from the token (whatever the case
//! of the configured name, whatever the body claims).
//!
//! Every cell is collected before anything is asserted; on failure the
//! whole matrix is printed with the broken cells marked.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use elevate_testkit::database_url;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::TestApp;

const WAIT: Duration = Duration::from_secs(10);

/// The matrix's actors: (what they are, who).
const ACTORS: [(&str, &str); 6] = [
    ("requester", "alice"),
    ("other user", "eve"),
    ("approver in scope", "bob"),
    ("approver out of scope", "olivia"),
    ("auditor", "audrey"),
    ("admin", "adam"),
];

const REQUESTER: &str = "alice";
/// The second approver of prod, used to set requests up.
const HELPER: &str = "carol";
/// Reads requests for the checks (admin: sees everything, changes nothing
/// by reading).
const ADMIN: &str = "adam";

/// One user of the config: (configured name, e-mail, groups, token user).
/// The token of a user is `t-TOKENUSER`; bob is configured as "Bob" with a
/// mixed-case e-mail and group to show that case changes nothing.
const USERS: [(&str, &str, &[&str], &str); 8] = [
    ("alice", "alice@example.com", &["developers"], "alice"),
    ("eve", "eve@example.com", &["developers"], "eve"),
    ("Bob", "Bob@Example.COM", &["DBA"], "bob"),
    ("carol", "carol@example.com", &["dba"], "carol"),
    // Approves staging only (named by user, in another case).
    ("olivia", "olivia@example.com", &["qa"], "olivia"),
    ("audrey", "audrey@example.com", &["audit"], "audrey"),
    ("adam", "adam@example.com", &["platform-admins"], "adam"),
    // A developer who is also a DBA: requests and approves prod.
    ("rita", "rita@example.com", &["developers", "dba"], "rita"),
];

/// The store is the one `db` stands for (see [`database_url`]).
fn config(db: &Path) -> Result<String> {
    let mut users = String::new();
    for (name, email, groups, token_user) in USERS {
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        users.push_str(&format!(
            "[[users]]\nname = \"{name}\"\nemail = \"{email}\"\ngroups = [{}]\ntoken_hashes = [\"{}\"]\n\n",
            groups.join(", "),
            elevate::auth::token_hash(&format!("t-{token_user}")),
        ));
    }
    Ok(format!(
        r#"
admins = ["group:platform-admins"]
auditors = ["group:audit"]

[server]
listen = "127.0.0.1:0"
database = "{db}"
retry_max_backoff = "1s"

[limits]
min_duration = "1s"

{users}
[[eligibilities]]
id = "developers-prod"
subjects = ["group:developers"]
target = "demo"
resources = {{ under = ["prod"] }}
roles = ["orders_writer", "orders_reader"]
max_duration = "1h"
break_glass = true

[[eligibilities]]
id = "developers-staging"
subjects = ["group:developers"]
target = "demo"
resources = {{ under = ["staging"] }}
roles = ["orders_writer", "orders_reader"]
max_duration = "1h"

[[approval_policies]]
id = "prod-dba"
target = "demo"
resources = {{ under = ["prod"] }}
approvers = ["group:dba"]
quorum = 1
pending_timeout = "3h"

[[approval_policies]]
id = "billing-two-person"
target = "demo"
resources = {{ ids = ["billing"] }}
approvers = ["group:dba"]
quorum = 2
pending_timeout = "3h"

[[approval_policies]]
id = "staging-qa"
target = "demo"
resources = {{ under = ["staging"] }}
approvers = ["user:Olivia"]
quorum = 1
pending_timeout = "3h"

[[targets]]
id = "demo"
kind = "dry-run"
roles = ["orders_writer", "orders_reader"]

[[targets.resources]]
id = "prod"

[[targets.resources]]
id = "orders"
parent = "prod"

[[targets.resources]]
id = "billing"
parent = "prod"

[[targets.resources]]
id = "staging"

[[targets.resources]]
id = "orders-staging"
parent = "staging"
"#,
        db = database_url(db)?,
    ))
}

fn request_body(resource: &str, break_glass: bool) -> Value {
    json!({
        "target": "demo",
        "resource": resource,
        "role": "orders_writer",
        "duration": "30m",
        "reason": "INC-7: 本番の注文データを修正する",
        "break_glass": break_glass,
    })
}

/// `200`, `201`, or `403 self_approval`: what a cell shows.
fn outcome(status: StatusCode, body: &Value) -> String {
    if status.is_success() {
        status.as_u16().to_string()
    } else {
        format!(
            "{} {}",
            status.as_u16(),
            body["code"].as_str().unwrap_or("(no code)")
        )
    }
}

struct Env {
    dir: tempfile::TempDir,
    app: TestApp,
}

impl Env {
    async fn start() -> Result<Env> {
        let dir = tempfile::tempdir()?;
        let app = TestApp::start(&config(&dir.path().join("elevate.db"))?).await?;
        Ok(Env { dir, app })
    }

    /// The request with its events, as the admin sees it.
    async fn show(&self, id: &str) -> Result<Value> {
        let (status, v) = self
            .app
            .get(ADMIN, &format!("/api/v1/requests/{id}"))
            .await?;
        if status != StatusCode::OK {
            bail!("admin cannot show {id}: {status} {v}");
        }
        Ok(v)
    }

    async fn wait_state(&self, id: &str, states: &[&str]) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.show(id).await?;
            if states.iter().any(|s| v["state"] == *s) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{id} did not reach {states:?} within {WAIT:?}; it is {v}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pending(&self, user: &str, resource: &str) -> Result<String> {
        let id = self
            .app
            .request(user, request_body(resource, false))
            .await?;
        self.wait_state(&id, &["pending"]).await?;
        Ok(id)
    }

    /// An active grant, approved by carol.
    async fn active(&self, user: &str, resource: &str) -> Result<String> {
        let id = self.pending(user, resource).await?;
        self.app.approve(HELPER, &id).await?;
        self.wait_state(&id, &["active"]).await?;
        Ok(id)
    }

    /// An active break-glass grant awaiting review.
    async fn break_glass(&self, user: &str, resource: &str) -> Result<String> {
        let id = self.app.request(user, request_body(resource, true)).await?;
        let v = self.wait_state(&id, &["active"]).await?;
        if v["review"] != "awaiting" {
            bail!("break-glass grant {id} does not await review: {v}");
        }
        Ok(id)
    }

    /// An active grant and a pending extension of it: (grant, extension).
    async fn extension(&self, user: &str) -> Result<(String, String)> {
        let grant = self.active(user, "orders").await?;
        let (status, v) = self
            .app
            .post(
                user,
                &format!("/api/v1/requests/{grant}/extend"),
                json!({ "duration": "10m", "reason": "the fix takes longer" }),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("extension of {grant} refused: {status} {v}");
        }
        let ext = v["id"].as_str().context("extension without id")?.to_owned();
        Ok((grant, ext))
    }

    /// Ids of the requests `user` gets from a list endpoint.
    async fn list(&self, user: &str, path: &str, key: &str) -> Result<(StatusCode, Vec<Value>)> {
        let (status, v) = self.app.get(user, path).await?;
        let items = v[key].as_array().cloned().unwrap_or_default();
        Ok((status, items))
    }
}

/// What must not move when a write is refused.
#[derive(Debug, PartialEq)]
struct Snap {
    state: Value,
    approvals: Value,
    events: usize,
    review: Value,
    reviewed_by: Value,
    decided_by: Value,
    ends_at: Value,
    extensions: usize,
}

fn snap(v: &Value) -> Snap {
    let len = |k: &str| v[k].as_array().map_or(0, Vec::len);
    Snap {
        state: v["state"].clone(),
        approvals: v["approvals"].clone(),
        events: len("events"),
        review: v["review"].clone(),
        reviewed_by: v["reviewed_by"].clone(),
        decided_by: v["decided_by"].clone(),
        ends_at: v["ends_at"].clone(),
        extensions: len("extensions"),
    }
}

fn max_seq(v: &Value) -> i64 {
    v["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["seq"].as_i64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Whether `after` has an event newer than `before` by `user` with `action`.
fn has_new_event(before: &Value, after: &Value, user: &str, action: &str) -> bool {
    let since = max_seq(before);
    after["events"].as_array().is_some_and(|es| {
        es.iter().any(|e| {
            e["seq"].as_i64().unwrap_or(0) > since
                && e["actor"] == format!("user:{user}")
                && e["action"] == action
        })
    })
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

struct Cell {
    action: String,
    actor: usize,
    expected: String,
    actual: String,
    problems: Vec<String>,
}

impl Cell {
    fn ok(&self) -> bool {
        self.expected == self.actual && self.problems.is_empty()
    }
}

/// The matrix as a table: one row per action, one column per actor; a
/// broken cell shows what came back and what was expected.
fn render(cells: &[Cell]) -> String {
    let mut actions: Vec<&str> = Vec::new();
    for c in cells {
        if !actions.contains(&c.action.as_str()) {
            actions.push(&c.action);
        }
    }
    let mut rows: Vec<Vec<String>> = vec![std::iter::once("action".to_owned())
        .chain(ACTORS.iter().map(|(what, who)| format!("{what} ({who})")))
        .collect()];
    for a in &actions {
        let mut row = vec![(*a).to_owned()];
        for i in 0..ACTORS.len() {
            row.push(
                match cells.iter().find(|c| c.action == *a && c.actor == i) {
                    Some(c) if c.ok() => c.actual.clone(),
                    Some(c) if c.expected == c.actual => format!("✗ {} (see below)", c.actual),
                    Some(c) => format!("✗ {} (want {})", c.actual, c.expected),
                    None => "-".into(),
                },
            );
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(t, w)| format!("{t}{}", " ".repeat(w - t.chars().count())))
            .collect();
        let _ = writeln!(out, "| {} |", line.join(" | "));
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "|-{}-|", rule.join("-|-"));
        }
    }
    out
}

fn verdict(cells: &[Cell]) -> Result<()> {
    let table = render(cells);
    println!("{table}");
    let bad: Vec<&Cell> = cells.iter().filter(|c| !c.ok()).collect();
    if bad.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{} of {} cells broke:\n{table}\n", bad.len(), cells.len());
    for c in bad {
        let (what, who) = ACTORS[c.actor];
        let _ = writeln!(
            msg,
            "- {} by {what} ({who}): expected {}, got {}",
            c.action, c.expected, c.actual
        );
        for p in &c.problems {
            let _ = writeln!(msg, "    {p}");
        }
    }
    bail!(msg)
}

// ---- writes --------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Write {
    Approve,
    Reject,
    Cancel,
    Revoke,
    Extend,
    Acknowledge,
    ApproveExtension,
}

impl Write {
    fn label(self) -> &'static str {
        match self {
            Write::Approve => "approve (pending)",
            Write::Reject => "reject with comment (pending)",
            Write::Cancel => "cancel (pending)",
            Write::Revoke => "revoke (active)",
            Write::Extend => "extend (active)",
            Write::Acknowledge => "acknowledge (break-glass)",
            Write::ApproveExtension => "approve extension (pending)",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Write::Approve | Write::ApproveExtension => "approve",
            Write::Reject => "reject",
            Write::Cancel => "cancel",
            Write::Revoke => "revoke",
            Write::Extend => "extend",
            Write::Acknowledge => "acknowledge",
        }
    }

    fn body(self) -> Value {
        match self {
            Write::Approve | Write::ApproveExtension => json!({ "comment": "ok" }),
            Write::Reject => json!({ "comment": "not without a ticket" }),
            Write::Cancel => json!({}),
            Write::Revoke => json!({ "comment": "done early" }),
            Write::Extend => json!({ "duration": "10m", "reason": "need more time" }),
            Write::Acknowledge => json!({ "comment": "reviewed the incident" }),
        }
    }
}

const NF: &str = "404 not_found";

/// Columns as in [`ACTORS`]: requester, other user, approver in scope,
/// approver out of scope, auditor, admin.
const WRITE_MATRIX: [(Write, [&str; 6]); 7] = [
    (
        Write::Approve,
        [
            "403 self_approval",
            NF,
            "200",
            NF,
            "403 not_approver",
            "403 not_approver",
        ],
    ),
    (
        Write::Reject,
        [
            "403 self_approval",
            NF,
            "200",
            NF,
            "403 not_approver",
            "403 not_approver",
        ],
    ),
    (
        Write::Cancel,
        [
            "200",
            NF,
            "403 not_requester",
            NF,
            "403 not_requester",
            "403 not_requester",
        ],
    ),
    (
        Write::Revoke,
        ["200", NF, "200", NF, "403 forbidden", "200"],
    ),
    (
        Write::Extend,
        [
            "201",
            NF,
            "403 not_requester",
            NF,
            "403 not_requester",
            "403 not_requester",
        ],
    ),
    (
        Write::Acknowledge,
        [
            "403 self_approval",
            NF,
            "200",
            NF,
            "403 not_approver",
            "200",
        ],
    ),
    (
        Write::ApproveExtension,
        [
            "403 self_approval",
            NF,
            "200",
            NF,
            "403 not_approver",
            "403 not_approver",
        ],
    ),
];

/// Runs one write cell on a fresh request; refused writes must leave the
/// request (and the grant an extension belongs to) exactly as it was.
async fn write_cell(
    env: &Env,
    w: Write,
    actor: usize,
    problems: &mut Vec<String>,
) -> Result<String> {
    let user = ACTORS[actor].1;
    let (id, parent) = match w {
        Write::Approve | Write::Reject | Write::Cancel => {
            (env.pending(REQUESTER, "orders").await?, None)
        }
        Write::Revoke | Write::Extend => (env.active(REQUESTER, "orders").await?, None),
        Write::Acknowledge => (env.break_glass(REQUESTER, "orders").await?, None),
        Write::ApproveExtension => {
            let (grant, ext) = env.extension(REQUESTER).await?;
            (ext, Some(grant))
        }
    };
    let before = env.show(&id).await?;
    let parent_before = match &parent {
        Some(p) => Some(env.show(p).await?),
        None => None,
    };
    let (status, resp) = env
        .app
        .post(
            user,
            &format!("/api/v1/requests/{id}/{}", w.verb()),
            w.body(),
        )
        .await?;
    let actual = outcome(status, &resp);

    if !status.is_success() {
        let after = env.show(&id).await?;
        if snap(&before) != snap(&after) {
            problems.push(format!(
                "refused, yet {id} changed: {:?} → {:?}",
                snap(&before),
                snap(&after)
            ));
        }
        if let (Some(p), Some(pb)) = (&parent, &parent_before) {
            let pa = env.show(p).await?;
            if snap(pb) != snap(&pa) {
                problems.push(format!(
                    "refused, yet the grant {p} changed: {:?} → {:?}",
                    snap(pb),
                    snap(&pa)
                ));
            }
        }
        return Ok(actual);
    }

    // Allowed: check it did what it says, on behalf of this user.
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    match w {
        Write::Approve => {
            let after = env.wait_state(&id, &["active"]).await?;
            let by_me = after["approvals"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["by"] == user));
            expect(
                by_me,
                format!("approvals do not name {user}: {}", after["approvals"]),
            );
            expect(
                has_new_event(&before, &after, user, "request.approved"),
                format!("no request.approved event by user:{user}"),
            );
        }
        Write::Reject => {
            let after = env.show(&id).await?;
            expect(
                after["state"] == "rejected" && after["decided_by"] == user,
                format!(
                    "expected rejected by {user}, it is {} by {}",
                    after["state"], after["decided_by"]
                ),
            );
            expect(
                has_new_event(&before, &after, user, "request.rejected"),
                format!("no request.rejected event by user:{user}"),
            );
        }
        Write::Cancel => {
            let after = env.show(&id).await?;
            expect(
                after["state"] == "cancelled",
                format!("expected cancelled, it is {}", after["state"]),
            );
            expect(
                has_new_event(&before, &after, user, "request.cancelled"),
                format!("no request.cancelled event by user:{user}"),
            );
        }
        Write::Revoke => {
            let after = env.wait_state(&id, &["revoked"]).await?;
            expect(
                after["decided_by"] == user,
                format!("revoked by {}, not {user}", after["decided_by"]),
            );
            let action = if user == REQUESTER {
                "grant.deactivated"
            } else {
                "grant.revoked"
            };
            expect(
                has_new_event(&before, &after, user, action),
                format!("no {action} event by user:{user}"),
            );
        }
        Write::Extend => {
            expect(
                resp["kind"] == "extension"
                    && resp["extends"] == id.as_str()
                    && resp["requester"] == user
                    && resp["state"] == "pending",
                format!("expected a pending extension of {id} by {user}, got {resp}"),
            );
            let after = env.show(&id).await?;
            expect(
                after["state"] == "active" && after["ends_at"] == before["ends_at"],
                format!("the grant changed before its extension was approved: {after}"),
            );
        }
        Write::Acknowledge => {
            let after = env.show(&id).await?;
            expect(
                after["review"] == "acknowledged" && after["reviewed_by"] == user,
                format!(
                    "expected acknowledged by {user}, review is {} by {}",
                    after["review"], after["reviewed_by"]
                ),
            );
            expect(
                has_new_event(&before, &after, user, "break_glass.acknowledged"),
                format!("no break_glass.acknowledged event by user:{user}"),
            );
        }
        Write::ApproveExtension => {
            let after = env.show(&id).await?;
            expect(
                after["state"] == "extended",
                format!("expected extended, it is {}", after["state"]),
            );
            expect(
                has_new_event(&before, &after, user, "request.approved"),
                format!("no request.approved event by user:{user}"),
            );
            if let (Some(p), Some(pb)) = (&parent, &parent_before) {
                let pa = env.show(p).await?;
                let grew = matches!((time(&pb["ends_at"]), time(&pa["ends_at"])), (Some(b), Some(a)) if a > b);
                expect(
                    grew,
                    format!(
                        "the grant's end did not move: {} → {}",
                        pb["ends_at"], pa["ends_at"]
                    ),
                );
            }
        }
    }
    Ok(actual)
}

// ---- reads ---------------------------------------------------------------

const FORBIDDEN: &str = "403 forbidden";

const AUDIT_ROW: [&str; 6] = [FORBIDDEN, FORBIDDEN, FORBIDDEN, FORBIDDEN, "200", "200"];

/// (action, path, expected per actor).
const READ_MATRIX: [(&str, &str, [&str; 6]); 4] = [
    ("GET /audit", "/api/v1/audit", AUDIT_ROW),
    ("GET /audit/verify", "/api/v1/audit/verify", AUDIT_ROW),
    ("GET /audit/export", "/api/v1/audit/export", AUDIT_ROW),
    (
        "GET /eligible",
        "/api/v1/eligible",
        [
            "200 some", "200 some", "200 none", "200 none", "200 none", "200 none",
        ],
    ),
];

const VIEW_ROW: [&str; 6] = ["200", NF, "200", NF, "200", "200"];

const NOT_ELIGIBLE: &str = "403 not_eligible";
const CREATE_ROW: [&str; 6] = [
    "201",
    "201",
    NOT_ELIGIBLE,
    NOT_ELIGIBLE,
    NOT_ELIGIBLE,
    NOT_ELIGIBLE,
];

/// Who may see a listed request: the rule the lists must never exceed.
fn may_see(user: &str, r: &Value) -> bool {
    let path = r["resource_path"].as_str().unwrap_or("");
    r["requester"] == user
        || matches!(user, "audrey" | "adam")
        || (matches!(user, "bob" | "carol" | "rita") && path.starts_with("prod/"))
        || (user == "olivia" && path.starts_with("staging/"))
}

/// The requests the list cells look for:
/// - A-pend: alice, prod/orders, pending;
/// - A-bill: alice, prod/billing (quorum 2), pending with bob's approval;
/// - A-act: alice, prod/orders, active;
/// - E-pend: eve, prod/orders, pending;
/// - E-stg: eve, staging/orders-staging, pending (olivia's scope).
async fn list_fixture(env: &Env) -> Result<Vec<(&'static str, String)>> {
    let a_pend = env.pending("alice", "orders").await?;
    let a_bill = env.pending("alice", "billing").await?;
    env.app.approve("bob", &a_bill).await?;
    let v = env.wait_state(&a_bill, &["pending"]).await?;
    if v["approvals"].as_array().map_or(0, Vec::len) != 1 {
        bail!("fixture: billing should hold one approval: {v}");
    }
    let a_act = env.active("alice", "orders").await?;
    let e_pend = env.pending("eve", "orders").await?;
    let e_stg = env.pending("eve", "orders-staging").await?;
    Ok(vec![
        ("A-act", a_act),
        ("A-bill", a_bill),
        ("A-pend", a_pend),
        ("E-pend", e_pend),
        ("E-stg", e_stg),
    ])
}

const ALL5: &str = "200 {A-act,A-bill,A-pend,E-pend,E-stg}";

/// (action, path, key of the list, expected per actor).
const LIST_MATRIX: [(&str, &str, &str, [&str; 6]); 4] = [
    (
        "list scope=all",
        "/api/v1/requests?scope=all",
        "requests",
        [
            "200 {A-act,A-bill,A-pend}",
            "200 {E-pend,E-stg}",
            "200 {A-act,A-bill,A-pend,E-pend}",
            "200 {E-stg}",
            ALL5,
            ALL5,
        ],
    ),
    (
        "list scope=pending",
        "/api/v1/requests?scope=pending",
        "requests",
        [
            "200 {}",
            "200 {}",
            // A-bill waits for carol, not for bob who approved it.
            "200 {A-pend,E-pend}",
            "200 {E-stg}",
            "200 {}",
            "200 {}",
        ],
    ),
    (
        "list scope=mine",
        "/api/v1/requests?scope=mine",
        "requests",
        [
            "200 {A-act,A-bill,A-pend}",
            "200 {E-pend,E-stg}",
            "200 {}",
            "200 {}",
            "200 {}",
            "200 {}",
        ],
    ),
    (
        "grants scope=all",
        "/api/v1/grants?scope=all",
        "grants",
        [
            "200 {A-act}",
            "200 {}",
            "200 {A-act}",
            "200 {}",
            "200 {A-act}",
            "200 {A-act}",
        ],
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_actor_may_do_exactly_what_their_role_allows() -> Result<()> {
    let env = Env::start().await?;
    let mut cells = Vec::new();

    // Lists first, on a fixture of five requests (later cells add more
    // requests; the lists are judged on the fixture and checked for leaks).
    let fixture = list_fixture(&env).await?;
    for (action, path, key, row) in LIST_MATRIX {
        for (i, (_, user)) in ACTORS.iter().enumerate() {
            let mut problems = Vec::new();
            let (status, items) = env.list(user, path, key).await?;
            let mut labels = BTreeSet::new();
            for r in &items {
                if let Some((label, _)) = fixture.iter().find(|(_, id)| r["id"] == id.as_str()) {
                    labels.insert(*label);
                }
                if !may_see(user, r) {
                    problems.push(format!(
                        "leaked {} of {} ({})",
                        r["id"], r["requester"], r["resource_path"]
                    ));
                }
            }
            let actual = if status.is_success() {
                format!(
                    "{} {{{}}}",
                    status.as_u16(),
                    labels.into_iter().collect::<Vec<_>>().join(",")
                )
            } else {
                format!("{} {}", status.as_u16(), "(list refused)")
            };
            cells.push(Cell {
                action: action.into(),
                actor: i,
                expected: row[i].into(),
                actual,
                problems,
            });
        }
    }

    // Viewing a fresh pending request of alice's.
    for (i, (_, user)) in ACTORS.iter().enumerate() {
        let mut problems = Vec::new();
        let actual = async {
            let id = env.pending(REQUESTER, "orders").await?;
            let (status, v) = env.app.get(user, &format!("/api/v1/requests/{id}")).await?;
            if status.is_success() && v["id"] != id.as_str() {
                problems.push(format!("asked for {id}, got {}", v["id"]));
            }
            Ok::<_, anyhow::Error>(outcome(status, &v))
        }
        .await
        .unwrap_or_else(|e| {
            problems.push(format!("{e:#}"));
            "error".into()
        });
        cells.push(Cell {
            action: "view request (pending)".into(),
            actor: i,
            expected: VIEW_ROW[i].into(),
            actual,
            problems,
        });
    }

    // Every write, each on a fresh request.
    for (w, row) in WRITE_MATRIX {
        for (i, expected) in row.iter().enumerate() {
            let mut problems = Vec::new();
            let actual = match write_cell(&env, w, i, &mut problems).await {
                Ok(a) => a,
                Err(e) => {
                    problems.push(format!("{e:#}"));
                    "error".into()
                }
            };
            cells.push(Cell {
                action: w.label().into(),
                actor: i,
                expected: (*expected).into(),
                actual,
                problems,
            });
        }
    }

    // Audit trail and eligibility.
    for (action, path, row) in READ_MATRIX {
        for (i, (_, user)) in ACTORS.iter().enumerate() {
            let mut problems = Vec::new();
            let (status, v) = env.app.get(user, path).await?;
            let mut actual = outcome(status, &v);
            if status.is_success() {
                match action {
                    "GET /eligible" => {
                        let n = v["eligible"].as_array().map_or(0, Vec::len);
                        actual = format!("{actual} {}", if n > 0 { "some" } else { "none" });
                    }
                    "GET /audit/verify" if v["ok"] != true => {
                        problems.push(format!("the audit chain does not verify: {v}"));
                    }
                    "GET /audit" if v["events"].as_array().is_none_or(Vec::is_empty) => {
                        problems.push(format!("no audit events: {v}"));
                    }
                    "GET /audit/export" if v.as_str().is_some_and(str::is_empty) => {
                        problems.push("empty export".into());
                    }
                    _ => {}
                }
            }
            cells.push(Cell {
                action: action.into(),
                actor: i,
                expected: row[i].into(),
                actual,
                problems,
            });
        }
    }

    // Creating a request (normal and break-glass) for prod/orders.
    for (action, break_glass) in [
        ("create request", false),
        ("create break-glass request", true),
    ] {
        for (i, (_, user)) in ACTORS.iter().enumerate() {
            let mut problems = Vec::new();
            let (_, mine_before) = env
                .list(user, "/api/v1/requests?scope=mine", "requests")
                .await?;
            let (status, v) = env
                .app
                .post(
                    user,
                    "/api/v1/requests",
                    request_body("orders", break_glass),
                )
                .await?;
            let actual = outcome(status, &v);
            if status.is_success() {
                if v["requester"] != *user {
                    problems.push(format!("created for {}, not {user}", v["requester"]));
                }
            } else {
                let (_, mine_after) = env
                    .list(user, "/api/v1/requests?scope=mine", "requests")
                    .await?;
                if mine_after.len() != mine_before.len() {
                    problems.push(format!(
                        "refused, yet {user} now has {} request(s) instead of {}",
                        mine_after.len(),
                        mine_before.len()
                    ));
                }
            }
            cells.push(Cell {
                action: action.into(),
                actor: i,
                expected: CREATE_ROW[i].into(),
                actual,
                problems,
            });
        }
    }

    verdict(&cells)
}

// ---- quorum and self-approval ----------------------------------------------

/// Failed checks, collected so one run reports all of them.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    fn outcome(&mut self, what: &str, status: StatusCode, body: &Value, want: &str) {
        let got = outcome(status, body);
        self.check(
            got == want,
            format!("{what}: expected {want}, got {got} {body}"),
        );
    }

    /// A refused write left the request as it was.
    fn unchanged(&mut self, what: &str, before: &Value, after: &Value) {
        self.check(
            snap(before) == snap(after),
            format!(
                "{what}: the request changed: {:?} → {:?}",
                snap(before),
                snap(after)
            ),
        );
    }

    fn done(self) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        bail!(
            "{} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        )
    }
}

fn approvers_of(v: &Value) -> Vec<String> {
    v["approvals"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["by"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn pending_ids(env: &Env, user: &str) -> Result<Vec<String>> {
    let (_, items) = env
        .list(user, "/api/v1/requests?scope=pending", "requests")
        .await?;
    Ok(items
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect())
}

async fn act(
    env: &Env,
    user: &str,
    id: &str,
    verb: &str,
    body: Value,
) -> Result<(StatusCode, Value)> {
    env.app
        .post(user, &format!("/api/v1/requests/{id}/{verb}"), body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_approves_their_own_request_or_reaches_a_quorum_alone() -> Result<()> {
    let env = Env::start().await?;
    let mut f = Findings::default();

    // The requester approving her own quorum-2 request, twice, and
    // rejecting it: refused every time, nothing recorded.
    let bill = env.pending("alice", "billing").await?;
    let start = env.show(&bill).await?;
    f.check(
        start["quorum"] == 2,
        format!("billing needs two approvals: {start}"),
    );
    for attempt in 1..=2 {
        let (s, b) = act(&env, "alice", &bill, "approve", json!({})).await?;
        f.outcome(
            &format!("alice approving her own request (attempt {attempt})"),
            s,
            &b,
            "403 self_approval",
        );
    }
    let (s, b) = act(
        &env,
        "alice",
        &bill,
        "reject",
        json!({ "comment": "never mind" }),
    )
    .await?;
    f.outcome(
        "alice rejecting her own request",
        s,
        &b,
        "403 self_approval",
    );
    f.unchanged(
        "after alice's own approvals",
        &start,
        &env.show(&bill).await?,
    );

    // bob approves once: 1 of 2, still pending. Again: 409, nothing changes.
    let (s, b) = act(&env, "bob", &bill, "approve", json!({})).await?;
    f.outcome("bob's first approval", s, &b, "200");
    f.check(
        b["state"] == "pending" && approvers_of(&b) == ["bob"],
        format!("one approval of two must leave it pending with bob's approval: {b}"),
    );
    let one = env.show(&bill).await?;
    f.check(
        has_new_event(&start, &one, "bob", "request.approval_recorded"),
        "bob's approval is recorded as request.approval_recorded",
    );
    let (s, b) = act(&env, "bob", &bill, "approve", json!({ "comment": "again" })).await?;
    f.outcome("bob approving a second time", s, &b, "409 already_approved");
    f.unchanged("after bob's second approval", &one, &env.show(&bill).await?);

    // A double (quadruple) click: concurrent approvals by one approver
    // still count once.
    let bill2 = env.pending("alice", "billing").await?;
    let path = format!("/api/v1/requests/{bill2}/approve");
    let (a, b, c, d) = tokio::join!(
        env.app.post("bob", &path, json!({})),
        env.app.post("bob", &path, json!({})),
        env.app.post("bob", &path, json!({})),
        env.app.post("bob", &path, json!({})),
    );
    let mut outcomes: Vec<String> = [a?, b?, c?, d?]
        .iter()
        .map(|(s, v)| outcome(*s, v))
        .collect();
    outcomes.sort();
    f.check(
        outcomes
            == [
                "200",
                "409 already_approved",
                "409 already_approved",
                "409 already_approved",
            ],
        format!("four concurrent approvals by bob: {outcomes:?}"),
    );
    let v = env.show(&bill2).await?;
    f.check(
        v["state"] == "pending"
            && approvers_of(&v) == ["bob"]
            && v["events"].as_array().map_or(0, Vec::len) == 2,
        format!("after bob's concurrent approvals it must be pending with one approval and two events: {v}"),
    );

    // Neither the admin nor the auditor can be the second approver.
    for user in ["adam", "audrey"] {
        let (s, b) = act(&env, user, &bill, "approve", json!({})).await?;
        f.outcome(
            &format!("{user} adding the second approval"),
            s,
            &b,
            "403 not_approver",
        );
    }
    // Nor the out-of-scope approver, who must not even learn it exists.
    let (s, b) = act(&env, "olivia", &bill, "approve", json!({})).await?;
    f.outcome(
        "olivia (out of scope) adding the second approval",
        s,
        &b,
        NF,
    );
    f.unchanged(
        "after the refused second approvals",
        &one,
        &env.show(&bill).await?,
    );

    // It waits for carol, no longer for bob.
    f.check(
        !pending_ids(&env, "bob").await?.contains(&bill),
        "bob's pending list still shows the request he approved",
    );
    f.check(
        pending_ids(&env, "carol").await?.contains(&bill),
        "carol's pending list lacks the request waiting for her",
    );

    // carol completes the quorum.
    let (s, b) = act(&env, "carol", &bill, "approve", json!({})).await?;
    f.outcome("carol's approval (second of two)", s, &b, "200");
    let done = env.wait_state(&bill, &["active"]).await?;
    f.check(
        approvers_of(&done) == ["bob", "carol"],
        format!("approvals should be bob then carol: {}", done["approvals"]),
    );

    // rita is a developer and a DBA: she may approve others' prod requests
    // but never her own, and her own never waits for her.
    let own = env.pending("rita", "orders").await?;
    let before = env.show(&own).await?;
    let (s, b) = act(&env, "rita", &own, "approve", json!({})).await?;
    f.outcome(
        "rita (requester and approver) approving her own request",
        s,
        &b,
        "403 self_approval",
    );
    let (s, b) = act(&env, "rita", &own, "reject", json!({ "comment": "hmm" })).await?;
    f.outcome("rita rejecting her own request", s, &b, "403 self_approval");
    f.unchanged("after rita's own approval", &before, &env.show(&own).await?);
    f.check(
        !pending_ids(&env, "rita").await?.contains(&own),
        "rita's own request is listed as waiting for her",
    );
    f.check(
        pending_ids(&env, "bob").await?.contains(&own),
        "rita's request does not wait for bob",
    );
    let alices = env.pending("alice", "orders").await?;
    f.check(
        pending_ids(&env, "rita").await?.contains(&alices),
        "alice's request does not wait for rita",
    );
    let (s, b) = act(&env, "rita", &alices, "approve", json!({})).await?;
    f.outcome("rita approving alice's request", s, &b, "200");

    // Her own break-glass: she cannot acknowledge it; bob can.
    let bg = env.break_glass("rita", "orders").await?;
    let before = env.show(&bg).await?;
    let (s, b) = act(
        &env,
        "rita",
        &bg,
        "acknowledge",
        json!({ "comment": "fine" }),
    )
    .await?;
    f.outcome(
        "rita acknowledging her own break-glass",
        s,
        &b,
        "403 self_approval",
    );
    f.unchanged(
        "after rita's own acknowledgement",
        &before,
        &env.show(&bg).await?,
    );
    let (s, b) = act(
        &env,
        "bob",
        &bg,
        "acknowledge",
        json!({ "comment": "seen" }),
    )
    .await?;
    f.outcome("bob acknowledging rita's break-glass", s, &b, "200");
    let (s, b) = act(
        &env,
        "carol",
        &bg,
        "acknowledge",
        json!({ "comment": "seen too" }),
    )
    .await?;
    f.outcome("acknowledging twice", s, &b, "409 nothing_to_acknowledge");

    // Nor can she approve the extension of her own grant.
    let (grant, ext) = env.extension("rita").await?;
    let before = env.show(&ext).await?;
    let grant_before = env.show(&grant).await?;
    let (s, b) = act(&env, "rita", &ext, "approve", json!({})).await?;
    f.outcome(
        "rita approving the extension of her own grant",
        s,
        &b,
        "403 self_approval",
    );
    f.unchanged(
        "after rita's own extension approval",
        &before,
        &env.show(&ext).await?,
    );
    f.unchanged(
        "her grant after that",
        &grant_before,
        &env.show(&grant).await?,
    );

    // She may end her own grant early (deactivation).
    let (s, b) = act(&env, "rita", &grant, "revoke", json!({ "comment": "done" })).await?;
    f.outcome("rita deactivating her own grant", s, &b, "200");

    f.done()
}

// ---- identity ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_token_whatever_the_case_or_the_body() -> Result<()> {
    let env = Env::start().await?;
    let mut f = Findings::default();

    // "Bob" (configured with a mixed-case name, e-mail and group) is bob.
    let (s, me) = env.app.get("bob", "/api/v1/me").await?;
    f.outcome("bob's /me", s, &me, "200");
    f.check(
        me["name"] == "bob" && me["email"] == "bob@example.com",
        format!("Bob should be bob <bob@example.com>: {me}"),
    );
    f.check(
        me["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == "dba")),
        format!("Bob's group DBA is dba: {me}"),
    );
    let id = env.pending("alice", "orders").await?;
    let (s, b) = env
        .app
        .get("bob", &format!("/api/v1/requests/{id}"))
        .await?;
    f.outcome("Bob viewing alice's request", s, &b, "200");
    f.check(
        pending_ids(&env, "bob").await?.contains(&id),
        "alice's request does not wait for Bob",
    );
    let before = env.show(&id).await?;
    let (s, b) = act(&env, "bob", &id, "approve", json!({})).await?;
    f.outcome("Bob approving", s, &b, "200");
    f.check(
        approvers_of(&b) == ["bob"],
        format!("Bob's approval is bob's: {}", b["approvals"]),
    );
    let after = env.wait_state(&id, &["active"]).await?;
    f.check(
        has_new_event(&before, &after, "bob", "request.approved"),
        "the audit trail names user:bob",
    );

    // olivia is named in her policy as "user:Olivia": she approves staging.
    let stg = env.pending("eve", "orders-staging").await?;
    let (s, b) = act(&env, "olivia", &stg, "approve", json!({})).await?;
    f.outcome("olivia approving in her own scope", s, &b, "200");
    let (s, b) = env
        .app
        .get("bob", &format!("/api/v1/requests/{stg}"))
        .await?;
    f.outcome(
        "Bob viewing a staging request (out of his scope)",
        s,
        &b,
        NF,
    );

    // Tokens are exact secrets: another case is another (unknown) token.
    let http = reqwest::Client::new();
    for token in ["T-bob", "t-BOB", "t-Bob"] {
        let resp = http
            .get(format!("{}/api/v1/me", env.app.url))
            .bearer_auth(token)
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        f.outcome(
            &format!("token {token:?}"),
            status,
            &body,
            "401 invalid_token",
        );
    }

    // The body cannot name someone else as the requester.
    let mut forged = request_body("orders", false);
    forged["requester"] = json!("eve");
    let (s, b) = env.app.post("alice", "/api/v1/requests", forged).await?;
    f.outcome(
        "alice creating a request with requester = eve",
        s,
        &b,
        "422 invalid_body",
    );
    let (_, eves) = env
        .list("eve", "/api/v1/requests?scope=mine", "requests")
        .await?;
    f.check(
        eves.len() == 1,
        format!("eve should have only her staging request: {eves:?}"),
    );

    // Break-glass only where the eligibility allows it.
    let (s, b) = env
        .app
        .post(
            "alice",
            "/api/v1/requests",
            request_body("orders-staging", true),
        )
        .await?;
    f.outcome(
        "alice break-glass on staging",
        s,
        &b,
        "403 break_glass_not_allowed",
    );

    // Someone who may not see a request cannot tell it from one that does
    // not exist.
    let secret = env.pending("alice", "orders").await?;
    for (verb, body) in [
        ("", None),
        ("approve", Some(json!({}))),
        ("revoke", Some(json!({ "comment": "x" }))),
    ] {
        let mut answers = Vec::new();
        for rid in [secret.as_str(), "r-zzzzzzzzzzzz"] {
            let path = if verb.is_empty() {
                format!("/api/v1/requests/{rid}")
            } else {
                format!("/api/v1/requests/{rid}/{verb}")
            };
            let (s, b) = match &body {
                None => env.app.get("eve", &path).await?,
                Some(b) => env.app.post("eve", &path, b.clone()).await?,
            };
            answers.push((s, b));
        }
        f.check(
            answers[0] == answers[1],
            format!(
                "eve can tell alice's request from a missing one ({verb:?}): {:?} vs {:?}",
                answers[0], answers[1]
            ),
        );
        f.outcome(
            &format!("eve {verb:?} on alice's request"),
            answers[0].0,
            &answers[0].1,
            NF,
        );
    }

    // Two users whose names (or e-mails) differ only in case are one
    // identity: the config refuses them.
    let db = env.dir.path().join("other.db");
    let base = config(&db)?;
    let dup_name = base.replacen(
        "[[users]]\nname = \"eve\"\nemail = \"eve@example.com\"",
        "[[users]]\nname = \"BOB\"\nemail = \"eve@example.com\"",
        1,
    );
    f.check(
        dup_name != base,
        "test bug: the duplicate-name config was not built",
    );
    match elevate::config::Config::parse(&dup_name, None) {
        Ok(_) => f.check(false, "a config with users Bob and BOB was accepted"),
        Err(p) => f.check(
            p.iter().any(|p| p.message.contains("duplicate user")),
            format!("expected a duplicate-user problem: {p:?}"),
        ),
    }
    let dup_email = base.replacen(
        "email = \"eve@example.com\"",
        "email = \"BOB@example.com\"",
        1,
    );
    match elevate::config::Config::parse(&dup_email, None) {
        Ok(_) => f.check(
            false,
            "a config with e-mails Bob@Example.COM and BOB@example.com was accepted",
        ),
        Err(p) => f.check(
            p.iter().any(|p| p.message.contains("used by two users")),
            format!("expected a duplicate e-mail problem: {p:?}"),
        ),
    }

    f.done()
}
