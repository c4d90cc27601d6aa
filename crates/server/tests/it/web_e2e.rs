//! The web application end to end in a real browser: Debian's Chromium,
//! driven by playwright-core (`e2e/flow.mjs`), against elevate and a real
//! OpenID provider on loopback. alice requests access with a hostile
//! justification, bob approves (once with JavaScript disabled) and rejects,
//! alice watches her grant go active and end, deactivates and cancels,
//! dave audits. Screenshots of every page are saved on each run.
//!
//! Every main page is also audited for accessibility with axe-core (WCAG
//! 2.0/2.1 A and AA; a serious or critical violation fails the test) in
//! browser contexts of its own, and the request form is used with the
//! keyboard alone (see `e2e/flow.mjs`).
//!
//! Needs `/usr/bin/chromium` (or `ELEVATE_CHROMIUM`) and `e2e/node_modules`
//! (`bash scripts/test.sh` installs both); without them the test fails and
//! says so. `ELEVATE_SCREENSHOTS=DIR` puts the screenshots in DIR (see
//! `scripts/screenshots.sh`); otherwise they go to
//! `$CARGO_TARGET_TMPDIR/e2e-artifacts`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::oidc_common::{users_with_dave, OidcEnv, API_AUDIENCE};

/// The whole flow takes about a minute (one grant runs out its 20 s);
/// this only keeps a hung browser from hanging the test run.
const FLOW_TIMEOUT: Duration = Duration::from_secs(180);

/// The justification of the first request, as `flow.mjs` types it.
const J1: &str = "<script>alert(1)</script> 本番DBの障害対応";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

fn chromium() -> PathBuf {
    std::env::var_os("ELEVATE_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn screenshot_dir() -> PathBuf {
    match std::env::var_os("ELEVATE_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts"),
    }
}

/// The browser and the driver must be installed: a missing one is a
/// failure that names the fix, never a silent pass.
fn prerequisites() -> Result<PathBuf> {
    let chromium = chromium();
    ensure!(
        chromium.is_file(),
        "{} not found: the browser test needs Debian's Chromium; \
         `bash scripts/test.sh` installs it (apt-get install chromium)",
        chromium.display()
    );
    for package in ["playwright-core", "axe-core"] {
        let installed = e2e_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        ensure!(
            installed.is_file(),
            "{} not found: `bash scripts/test.sh` installs the browser test's npm packages \
             (or run `npm ci` in e2e/)",
            installed.display()
        );
    }
    Ok(chromium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_request_approve_watch_and_audit_access_in_a_real_browser() -> Result<()> {
    let chromium = prerequisites()?;
    let env = OidcEnv::start_for(users_with_dave(), |text| text).await?;
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots)?;
    // Stale failure screenshots from an earlier run would mislead.
    for entry in std::fs::read_dir(&shots)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("FAILED-"))
        {
            std::fs::remove_file(path)?;
        }
    }
    println!("screenshots: {}", shots.display());

    let node = std::env::var_os("ELEVATE_NODE").unwrap_or_else(|| "node".into());
    let started = Instant::now();
    let child = tokio::process::Command::new(node)
        .arg("flow.mjs")
        .current_dir(e2e_dir())
        .env("ELEVATE_URL", &env.app.url)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node e2e/flow.mjs (is Node.js installed?)")?;
    let out = match tokio::time::timeout(FLOW_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out?,
        Err(_) => bail!(
            "e2e/flow.mjs did not finish within {FLOW_TIMEOUT:?} (killed); screenshots in {}",
            shots.display()
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    ensure!(
        out.status.success(),
        "the browser flow failed ({}) after {:.1?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
         --- screenshots (FAILED-* show the failing step and page): {}",
        out.status,
        started.elapsed(),
        shots.display()
    );
    if !stderr.trim().is_empty() {
        println!("--- stderr of the flow\n{stderr}");
    }
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("E2E-RESULT "))
        .context("the flow printed no E2E-RESULT line")
        .and_then(|l| serde_json::from_str(l).context("E2E-RESULT is not JSON"))?;
    let id = |name: &str| -> Result<String> {
        result["ids"][name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no id for the {name} request in {result}"))
    };

    // What the browser did really happened, as the API (an auditor's
    // token from the same provider) tells.
    let dave = dave_token(&env).await?;
    let approved = show(&env, &dave, &id("approved")?).await?;
    assert_eq!(approved["requester"], "alice", "{approved}");
    assert_eq!(approved["justification"], J1, "{approved}");
    assert_eq!(approved["ticket"], "INC-4711", "{approved}");
    assert_eq!(approved["state"], "ended", "{approved}");
    assert_eq!(approved["approvals"][0]["by"], "bob", "{approved}");
    assert_eq!(
        approved["approvals"][0]["comment"], "OK for INC-4711 — bob",
        "{approved}"
    );

    let rejected = show(&env, &dave, &id("rejected")?).await?;
    assert_eq!(rejected["state"], "rejected", "{rejected}");
    assert_eq!(rejected["decided_by"], "bob", "{rejected}");
    assert_eq!(
        rejected["decision_comment"], "Use the read replica instead — bob",
        "{rejected}"
    );

    let deactivated = show(&env, &dave, &id("deactivated")?).await?;
    assert_eq!(deactivated["approvals"][0]["by"], "bob", "{deactivated}");
    let state = deactivated["state"].as_str().unwrap_or_default();
    assert!(
        ["ending", "ended", "revoked"].contains(&state),
        "deactivated early, yet {deactivated}"
    );
    assert!(
        deactivated["ended_at"].is_string() || state == "ending",
        "{deactivated}"
    );

    let cancelled = show(&env, &dave, &id("cancelled")?).await?;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["decided_by"], "alice", "{cancelled}");

    let (status, verify, _) = env
        .bearer(Method::GET, "/api/v1/audit/verify", &dave, None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{verify}");
    assert_eq!(
        verify["ok"], true,
        "the audit chain does not verify: {verify}"
    );
    let audited = result["a11y_audited"].as_array().map_or(0, Vec::len);
    ensure!(
        audited > 0,
        "the flow audited no page for accessibility: {result}"
    );
    println!(
        "web_e2e: browser flow {:.1} s ({audited} pages audited for accessibility), whole test {:.1?}",
        result["total_ms"].as_f64().unwrap_or_default() / 1000.0,
        started.elapsed()
    );
    Ok(())
}

/// An access token for dave (group "security": admin and auditor), signed
/// by the provider.
async fn dave_token(env: &OidcEnv) -> Result<String> {
    let mut claims = env.claims("dave", API_AUDIENCE);
    claims["groups"] = json!(["security"]);
    env.peer.sign(claims, Value::Null).await
}

async fn show(env: &OidcEnv, token: &str, id: &str) -> Result<Value> {
    let (status, body, _) = env
        .bearer(Method::GET, &format!("/api/v1/requests/{id}"), token, None)
        .await?;
    ensure!(
        status == StatusCode::OK,
        "GET request {id}: {status} {body}"
    );
    Ok(body)
}
