//! Shared harness: start elevate in-process on a free port (or as a real
//! process, for crash tests), talk to it over HTTP, and set up a real
//! PostgreSQL target.
//!
//! elevate's own store is SQLite or PostgreSQL as `ELEVATE_TEST_DATABASE`
//! says (see `elevate_testkit::database`): configs name it with
//! [`database_url`], and tests that look into it themselves use
//! [`connect_store`], which speaks to either.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use elevate::config::Config;
use elevate::Running;
use elevate_testkit::{database_url, on_postgres, PgCluster};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The token of a test user is `t-NAME`.
pub fn token(user: &str) -> String {
    format!("t-{user}")
}

/// Test users and their groups. alice requests; bob and carol are DBAs
/// (approvers of prod); eve is a developer outside every approver scope;
/// dave is admin and auditor.
pub const USERS: [(&str, &[&str]); 5] = [
    ("alice", &["developers"]),
    ("bob", &["dba"]),
    ("carol", &["dba"]),
    ("eve", &["developers"]),
    ("dave", &["security"]),
];

pub fn users_toml() -> String {
    let mut s = String::new();
    for (name, groups) in USERS {
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        s.push_str(&format!(
            "[[users]]\nname = \"{name}\"\nemail = \"{name}@example.com\"\ngroups = [{}]\ntoken_hashes = [\"{}\"]\n\n",
            groups.join(", "),
            elevate::auth::token_hash(&token(name))
        ));
    }
    s
}

/// Knobs that differ between tests.
#[derive(Clone)]
pub struct Setup {
    pub pending_timeout: &'static str,
    pub max_duration: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            pending_timeout: "3h",
            max_duration: "1h",
        }
    }
}

/// Everything but the target: users, limits, eligibilities, policies over
/// resources prod ⊃ {orders, billing}. Billing needs two approvals.
pub fn policy_toml(target: &str, setup: &Setup) -> String {
    format!(
        r#"
admins = ["group:security"]
auditors = ["group:security"]

[limits]
min_duration = "1s"

{users}
[[eligibilities]]
id = "developers-prod"
subjects = ["group:developers"]
target = "{target}"
resources = {{ under = ["prod"] }}
roles = ["orders_writer", "orders_reader"]
max_duration = "{max}"
break_glass = true

[[approval_policies]]
id = "prod-dba"
target = "{target}"
resources = {{ under = ["prod"] }}
approvers = ["group:dba"]
quorum = 1
pending_timeout = "{timeout}"

[[approval_policies]]
id = "billing-two-person"
target = "{target}"
resources = {{ ids = ["billing"] }}
approvers = ["group:dba"]
quorum = 2
pending_timeout = "{timeout}"
"#,
        users = users_toml(),
        max = setup.max_duration,
        timeout = setup.pending_timeout,
    )
}

pub const RESOURCES_TOML: &str = r#"
[[targets.resources]]
id = "prod"

[[targets.resources]]
id = "orders"
parent = "prod"
tags = { team = "orders" }

[[targets.resources]]
id = "billing"
parent = "prod"
"#;

/// A config with a dry-run target; the store is the one `db` stands for
/// (see [`database_url`]).
pub fn dry_run_config(db: &Path, setup: &Setup) -> Result<String> {
    Ok(dry_run_config_on(&database_url(db)?, setup))
}

/// [`dry_run_config`] with the store at `database` (a URL), for the few
/// tests that must run on one engine.
pub fn dry_run_config_on(database: &str, setup: &Setup) -> String {
    format!(
        "{}\n[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"{database}\"\nretry_max_backoff = \"1s\"\n\n[[targets]]\nid = \"demo\"\nkind = \"dry-run\"\nroles = [\"orders_writer\", \"orders_reader\"]\n{RESOURCES_TOML}",
        policy_toml("demo", setup),
    )
}

/// A connection of the test's own to elevate's store at `url` (SQLite or
/// PostgreSQL). SQL sent on it should use `$1, $2, …` placeholders and
/// SQL both engines read.
pub async fn connect_store(url: &str) -> Result<sqlx::AnyConnection> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| format!("connecting to the store at {url}"))
}

/// `url`, opened read-only where the engine allows it per connection
/// (SQLite's `mode=ro`); a PostgreSQL URL is returned as it is.
pub fn read_only(url: &str) -> String {
    if url.starts_with("sqlite:") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}mode=ro")
    } else {
        url.to_owned()
    }
}

/// Whether elevate created its store for `db` (see [`database_url`]): on
/// SQLite, whether the file exists; on PostgreSQL, where the harness
/// creates the (empty) database beforehand, whether it holds any table.
pub async fn store_created(db: &Path) -> Result<bool> {
    if !on_postgres() {
        return Ok(db.exists());
    }
    use sqlx::Connection;
    let mut conn = connect_store(&database_url(db)?).await?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_catalog.pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(tables > 0)
}

/// A real PostgreSQL target: a throwaway cluster with a broker role, two
/// grantable roles, a table only `orders_writer` may write, and a login
/// `alice` who has no role by default.
pub struct PgTarget {
    pub cluster: PgCluster,
    pub password_file: PathBuf,
}

impl PgTarget {
    pub fn start(dir: &Path) -> Result<PgTarget> {
        let cluster = PgCluster::start()?;
        cluster.psql(
            "CREATE ROLE broker LOGIN PASSWORD 'broker-secret' CREATEROLE;
             CREATE ROLE orders_writer NOLOGIN;
             CREATE ROLE orders_reader NOLOGIN;
             GRANT orders_writer TO broker WITH ADMIN OPTION;
             GRANT orders_reader TO broker WITH ADMIN OPTION;
             GRANT pg_signal_backend TO broker;
             CREATE ROLE alice LOGIN PASSWORD 'alice-pw';
             CREATE TABLE orders (id int);
             GRANT SELECT, INSERT ON orders TO orders_writer;
             GRANT SELECT ON orders TO orders_reader;",
        )?;
        let password_file = dir.join("pg-password");
        std::fs::write(&password_file, "broker-secret\n")?;
        Ok(PgTarget {
            cluster,
            password_file,
        })
    }

    /// A config with this target; the store is the one `db` stands for
    /// (see [`database_url`]).
    pub fn config(&self, db: &Path, setup: &Setup) -> Result<String> {
        Ok(format!(
            "{policy}\n[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"{db}\"\nretry_max_backoff = \"1s\"\n\n[[targets]]\nid = \"pg\"\nkind = \"postgres\"\nroles = [\"orders_writer\", \"orders_reader\"]\n[targets.postgres]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"broker\"\npassword_file = \"{pw}\"\nconnect_timeout = \"2s\"\n{RESOURCES_TOML}",
            db = database_url(db)?,
            policy = policy_toml("pg", setup),
            port = self.cluster.port(),
            pw = self.password_file.display(),
        ))
    }

    /// Whether `user` is a member of `role`, asked of PostgreSQL itself.
    pub fn is_member(&self, user: &str, role: &str) -> Result<bool> {
        let out = self.cluster.psql(&format!(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = '{role}' AND u.rolname = '{user}'"
        ))?;
        Ok(out.trim() == "1")
    }

    /// A connection as alice.
    pub async fn alice(&self) -> Result<sqlx::PgConnection> {
        use sqlx::Connection;
        let url = self.cluster.url("alice", Some("alice-pw"), "postgres");
        Ok(sqlx::PgConnection::connect(&url).await?)
    }
}

pub struct TestApp {
    pub url: String,
    /// The store's database URL (`sqlite://…` or `postgres://…`), for
    /// [`connect_store`].
    pub db_url: String,
    /// Keeps the in-process server alive for the test's duration.
    _running: Option<Running>,
    http: reqwest::Client,
}

impl TestApp {
    /// Starts elevate in-process with `config_text` on a free port.
    pub async fn start(config_text: &str) -> Result<TestApp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::start_on(config_text, listener).await
    }

    /// Starts elevate in-process on `listener` (bound by the caller, so
    /// its address can be given to a peer first).
    pub async fn start_on(config_text: &str, listener: tokio::net::TcpListener) -> Result<TestApp> {
        Self::start_with(config_text, listener, Default::default()).await
    }

    /// Starts elevate with some targets' providers given (tests wrap a
    /// real client in a fault injector this way).
    pub async fn start_with(
        config_text: &str,
        listener: tokio::net::TcpListener,
        providers: std::collections::BTreeMap<
            elevate_core::values::Name,
            std::sync::Arc<dyn elevate_providers::Provider>,
        >,
    ) -> Result<TestApp> {
        let config = Config::parse(config_text, None)
            .map_err(|p| anyhow::anyhow!("test config invalid: {p:?}"))?;
        let db_url = config.settings.database.clone();
        let running = elevate::start_with(config, Some(listener), providers).await?;
        Ok(TestApp {
            url: format!("http://{}", running.addr),
            db_url,
            _running: Some(running),
            http: reqwest::Client::new(),
        })
    }

    /// A client for an elevate running elsewhere (a child process) on the
    /// store at `db_url`.
    pub fn external(url: &str, db_url: String) -> TestApp {
        TestApp {
            url: url.to_owned(),
            db_url,
            _running: None,
            http: reqwest::Client::new(),
        }
    }

    /// The in-process broker, to drive its background steps with an
    /// injected clock (`run_followups_once(now)`); `None` for an external
    /// server.
    pub fn broker(&self) -> Option<std::sync::Arc<elevate::engine::Broker>> {
        self._running.as_ref().map(|r| r.broker.clone())
    }

    /// Stops the in-process server (a later `start` on the same database
    /// plays a restart).
    pub async fn stop(mut self) {
        if let Some(r) = self._running.take() {
            r.shutdown().await;
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(u) = user {
            req = req.bearer_auth(token(u));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    pub async fn get(&self, user: &str, path: &str) -> Result<(StatusCode, Value)> {
        self.call(Method::GET, path, Some(user), None).await
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> Result<(StatusCode, Value)> {
        self.call(Method::POST, path, Some(user), Some(body)).await
    }

    /// Creates a request and returns its id; fails unless 201.
    pub async fn request(&self, user: &str, body: Value) -> Result<String> {
        let (status, v) = self.post(user, "/api/v1/requests", body).await?;
        if status != StatusCode::CREATED {
            bail!("request refused: {status} {v}");
        }
        Ok(v["id"].as_str().context("no id")?.to_owned())
    }

    pub async fn approve(&self, user: &str, id: &str) -> Result<Value> {
        let (status, v) = self
            .post(
                user,
                &format!("/api/v1/requests/{id}/approve"),
                serde_json::json!({}),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("approval refused: {status} {v}");
        }
        Ok(v)
    }

    pub async fn show(&self, id: &str) -> Result<Value> {
        let (status, v) = self.get("dave", &format!("/api/v1/requests/{id}")).await?;
        if status != StatusCode::OK {
            bail!("show failed: {status} {v}");
        }
        Ok(v)
    }

    /// Polls until the request reaches `state` (bounded so a broken
    /// feature fails the test instead of hanging it; not a speed check).
    pub async fn wait_state(&self, id: &str, state: &str, within: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.show(id).await?;
            if v["state"] == state {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{id} did not reach {state} within {within:?}; it is {}", v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` until it returns true, bounded by `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The path of the built `elevate` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_elevate"))
}

/// Runs the CLI against `url` as `user`.
pub fn cli(url: &str, user: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(binary())
        .args(args)
        .env("ELEVATE_URL", url)
        .env("ELEVATE_TOKEN", token(user))
        .env_remove("ELEVATE_CONFIG")
        .output()?)
}

/// [`cli`] that must succeed: its standard output, or an error carrying
/// its standard error.
pub fn cli_ok(url: &str, user: &str, args: &[&str]) -> Result<String> {
    let out = cli(url, user, args)?;
    if !out.status.success() {
        bail!(
            "elevate {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn body(target: &str, resource: &str, role: &str, duration: &str) -> Value {
    serde_json::json!({
        "target": target,
        "resource": resource,
        "role": role,
        "duration": duration,
        "reason": "incident INC-42: 受注データの修正",
    })
}

/// An elevate server running as a child process, killed on drop.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts `elevate serve --config FILE` and waits until it answers.
    pub async fn start(config_file: &Path, port: u16) -> Result<ServerProcess> {
        let log_path = config_file.with_extension(format!("{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = std::process::Command::new(binary())
            .args(["serve", "--config"])
            .arg(config_file)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?;
        let mut server = ServerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", server.url);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // A server that could not start (its port taken, say) says so
            // at once, and another process on that port is never mistaken
            // for it.
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("elevate exited ({status}) before answering on port {port}: {log}");
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(server);
            }
            if std::time::Instant::now() > deadline {
                bail!("elevate did not answer /healthz on port {port} within 20s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An elevate in-process in front of its own real PostgreSQL target.
pub struct Env {
    pub _dir: tempfile::TempDir,
    pub pg: PgTarget,
    pub app: TestApp,
}

pub async fn env(setup: Setup) -> Result<Env> {
    let dir = tempfile::tempdir()?;
    let pg = PgTarget::start(dir.path())?;
    let app = TestApp::start(&pg.config(&dir.path().join("elevate.db"), &setup)?).await?;
    Ok(Env { _dir: dir, pg, app })
}

/// A small HTTP peer of a test's own (a change system, a webhook
/// receiver) that can be taken down for real. Aborting the task of
/// `axum::serve` stops accepting but leaves kept-alive connections
/// serving for a moment, so elevate's pooled connection could still get an
/// answer from a peer the test believes gone. [`Peer::stop`] closes the
/// listener and every connection and returns only once they are closed.
pub struct Peer {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    pub async fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> Result<Peer> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Peer {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Closes the listener and every connection: a graceful shutdown
    /// closes idle kept-alive connections at once and lets a request in
    /// flight finish, so the peer answers nothing afterwards.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A request still in flight gets a few seconds; a peer holding a
        // connection longer is dropped outright, which closes its sockets.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
