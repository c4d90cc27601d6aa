//! `elevate serve --dev`, the README's first command: it prints the demo
//! tokens, and a newcomer can request, have another demo user approve, see
//! the grant active and end it, all with the CLI. It only listens on
//! loopback.
//!
//! SQLite-only whatever `ELEVATE_TEST_DATABASE` says: dev mode's point is
//! the embedded store a newcomer gets without setting anything up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::common::binary;

const WAIT: Duration = Duration::from_secs(20);

/// A `serve --dev` child process, killed when dropped (also when a test
/// fails half-way).
struct DevServer {
    child: Child,
    url: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DevServer {
    /// Starts `elevate serve --dev` on a free loopback port with its
    /// database in `dir`, and waits until `/healthz` answers.
    fn start(dir: &Path) -> Result<DevServer> {
        let mut last_error = None;
        // Another process may take the free port before the server binds it.
        for attempt in 0..3 {
            let port = elevate_testkit::free_port()?;
            let stdout = dir.join(format!("dev-{attempt}.out"));
            let stderr = dir.join(format!("dev-{attempt}.err"));
            let child = Command::new(binary())
                .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--database")
                // SQLite-only: dev mode's point is the embedded store.
                .arg(format!("sqlite://{}", dir.join("dev.db").display()))
                .current_dir(dir)
                .env_remove("ELEVATE_CONFIG")
                .stdout(std::fs::File::create(&stdout)?)
                .stderr(std::fs::File::create(&stderr)?)
                .spawn()?;
            let mut server = DevServer {
                child,
                url: format!("http://127.0.0.1:{port}"),
                stdout,
                stderr,
            };
            match server.wait_healthy() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the dev server did not start")))
    }

    /// Polls `/healthz` (bounded); fails early if the process exits.
    fn wait_healthy(&mut self) -> Result<()> {
        let started = Instant::now();
        let health = format!("{}/healthz", self.url);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the dev server exited ({status}): {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            if probe::answers_ok(&health) {
                return Ok(());
            }
            if started.elapsed() > WAIT {
                bail!(
                    "the dev server did not answer /healthz within {WAIT:?}: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CLI as the demo user holding `token`.
    fn cli(&self, token: &str, args: &[&str]) -> Result<Output> {
        Ok(Command::new(binary())
            .args(args)
            .env("ELEVATE_URL", &self.url)
            .env("ELEVATE_TOKEN", token)
            .env_remove("ELEVATE_CONFIG")
            .output()?)
    }

    /// The CLI's standard output; fails unless it exits 0.
    fn ok(&self, token: &str, args: &[&str]) -> Result<String> {
        let out = self.cli(token, args)?;
        ensure!(
            out.status.success(),
            "`elevate {}` as {token} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The request as `elevate --json show ID` prints it.
    fn show(&self, id: &str) -> Result<Value> {
        Ok(serde_json::from_str(
            &self.ok("dev-alice", &["--json", "show", id])?,
        )?)
    }

    /// Polls `show` until the request is in `state` (bounded).
    fn wait_state(&self, id: &str, state: &str) -> Result<Value> {
        let started = Instant::now();
        loop {
            let v = self.show(id)?;
            if v["state"] == state {
                return Ok(v);
            }
            if started.elapsed() > WAIT {
                bail!("{id} did not reach {state} within {WAIT:?}; it is {v}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A tiny blocking health probe over plain TCP, so the synchronous guard
/// needs no async runtime.
mod probe {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Whether a GET of `url` (plain http) answers 200.
    pub fn answers_ok(url: &str) -> bool {
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Ok(mut stream) = TcpStream::connect(host) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    }
}

/// Runs `f` off the async runtime (everything here is blocking process
/// work).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_can_request_get_approved_and_end_a_grant_in_dev_mode() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    blocking(move || newcomer_walkthrough(&path)).await
}

fn newcomer_walkthrough(dir: &Path) -> Result<()> {
    let server = DevServer::start(dir)?;

    // The banner tells the newcomer where the server is and who to be. It
    // is printed once the server is up, so it may trail /healthz a little.
    let started = Instant::now();
    let mut banner = std::fs::read_to_string(&server.stdout)?;
    while !banner.contains("dev-dave") && started.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
        banner = std::fs::read_to_string(&server.stdout)?;
    }
    ensure!(
        banner.contains(&format!("export ELEVATE_URL={}", server.url)),
        "the banner should give the URL:\n{banner}"
    );
    for token in ["dev-alice", "dev-bob", "dev-carol", "dev-dave"] {
        ensure!(
            banner.contains(&format!("ELEVATE_TOKEN={token}")),
            "the banner should list {token}:\n{banner}"
        );
    }

    let whoami = server.ok("dev-alice", &["whoami"])?;
    ensure!(whoami.contains("alice"), "{whoami}");
    let eligible = server.ok("dev-alice", &["eligible"])?;
    ensure!(
        eligible.contains("demo-db (dry-run)")
            && eligible.contains("orders")
            && eligible.contains("orders_writer"),
        "alice should see what she may request:\n{eligible}"
    );

    let created = server.ok(
        "dev-alice",
        &[
            "--json",
            "request",
            "--target",
            "demo-db",
            "--resource",
            "orders",
            "--role",
            "orders_writer",
            "--for",
            "1m",
            "--reason",
            "trying out elevate: 受注の確認",
        ],
    )?;
    let created: Value = serde_json::from_str(&created)?;
    let id = created["id"].as_str().context("no id")?.to_owned();
    ensure!(created["state"] == "pending", "{created}");
    let pending = server.ok("dev-bob", &["requests", "--pending"])?;
    ensure!(
        pending.contains(&id),
        "bob should see the request waiting for him:\n{pending}"
    );

    // Nobody approves their own request.
    let own = server.cli("dev-alice", &["approve", &id])?;
    let stderr = String::from_utf8(own.stderr)?;
    ensure!(
        !own.status.success() && stderr.lines().count() == 1 && stderr.contains("self_approval"),
        "alice approving her own request should fail with one line: {stderr}"
    );
    ensure!(server.show(&id)?["state"] == "pending");

    let approved = server.ok("dev-bob", &["approve", &id, "--comment", "go ahead"])?;
    ensure!(approved.contains("approved"), "{approved}");
    let active = server.wait_state(&id, "active")?;
    ensure!(active["dry_run"] == true, "{active}");
    let grants = server.ok("dev-alice", &["grants", "--active"])?;
    let row = grants
        .lines()
        .find(|l| l.contains(&id))
        .with_context(|| format!("{id} not among alice's active grants:\n{grants}"))?;
    ensure!(row.contains("active") && row.contains("demo-db"), "{row}");

    let ended = server.ok("dev-alice", &["deactivate", &id])?;
    ensure!(ended.contains("deactivated"), "{ended}");
    let revoked = server.wait_state(&id, "revoked")?;
    ensure!(
        revoked["ended_at"].is_string(),
        "a revoked grant should say when it ended: {revoked}"
    );
    let grants = server.ok("dev-alice", &["grants", "--active"])?;
    ensure!(
        !grants.contains(&id),
        "the ended grant is still listed as active:\n{grants}"
    );

    // The security team can check the whole story.
    let verify = server.ok("dev-dave", &["audit", "verify"])?;
    ensure!(verify.contains("intact"), "{verify}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_refuses_to_listen_beyond_loopback() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    blocking(move || {
        for listen in ["0.0.0.0", "[::]"] {
            let port = elevate_testkit::free_port()?;
            let db = path.join("dev.db");
            let mut child = Command::new(binary())
                .args(["serve", "--dev", "--listen", &format!("{listen}:{port}")])
                .arg("--database")
                // SQLite-only: dev mode's point is the embedded store (and
                // "created no database" is a file that does not exist).
                .arg(format!("sqlite://{}", db.display()))
                .current_dir(&path)
                .env_remove("ELEVATE_CONFIG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            let started = Instant::now();
            while child.try_wait()?.is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("`serve --dev --listen {listen}:{port}` kept running");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let out = child.wait_with_output()?;
            let stderr = String::from_utf8(out.stderr)?;
            ensure!(
                !out.status.success() && stderr.contains("loopback"),
                "{listen}: expected a refusal naming loopback, got {:?}: {stderr}",
                out.status
            );
            ensure!(!db.exists(), "the refused dev server created its database");
        }
        Ok(())
    })
    .await
}
