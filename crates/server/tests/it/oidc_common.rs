//! Shared set-up for the sign-in tests: a real OpenID provider
//! (oidc-provider, see `elevate_testkit::oidc`) and elevate configured
//! against it, with a dry-run target.
//!
//! People at the provider: alice and erin are developers (alice in
//! department "sre", erin in "marketing"), bob and carol are DBAs (the
//! approvers of prod). Policy: developers may read prod with approval;
//! writing prod needs the "sre" department and a step-up sign-in.

use std::path::Path;

use anyhow::{Context, Result};
use elevate_testkit::database_url;
use elevate_testkit::oidc::{Browser, OidcOptions, OidcPeer, OidcUser};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{TestApp, RESOURCES_TOML};

pub const WEB_CLIENT: &str = "elevate-web";
pub const WEB_SECRET: &str = "web-secret";
pub const CLI_CLIENT: &str = "elevate-cli";
pub const API_AUDIENCE: &str = "urn:elevate:api";
pub const MFA: &str = "urn:elevate:mfa";

pub fn users() -> Vec<OidcUser> {
    let mut alice = OidcUser::new("alice", &["developers"]);
    alice.claims.insert("department".into(), json!("sre"));
    let mut erin = OidcUser::new("erin", &["developers"]);
    erin.claims.insert("department".into(), json!("marketing"));
    vec![
        alice,
        erin,
        OidcUser::new("bob", &["dba"]),
        OidcUser::new("carol", &["dba"]),
    ]
}

/// [`users`] and dave, in group "security": the admin and auditor
/// (`admins` and `auditors` in [`config`] name that group).
pub fn users_with_dave() -> Vec<OidcUser> {
    let mut all = users();
    all.push(OidcUser::new("dave", &["security"]));
    all
}

/// elevate's config against `issuer`, its store the one `db` stands for
/// (see [`database_url`]); `extra` is appended (TOML).
pub fn config(db: &Path, issuer: &str, secret_file: &Path, extra: &str) -> Result<String> {
    Ok(format!(
        r#"
admins = ["group:security"]
auditors = ["group:security"]

[limits]
min_duration = "1s"

[server]
listen = "127.0.0.1:0"
database = "{db}"
retry_max_backoff = "1s"

[oidc]
issuer = "{issuer}"
client_id = "{WEB_CLIENT}"
client_secret_file = "{secret}"
cli_client_id = "{CLI_CLIENT}"
audiences = ["{API_AUDIENCE}"]
attribute_claims = ["department"]
# Tests rotate keys and expect the next sign-in to pick the new one up.
jwks_refresh_interval = "1s"

[oidc.step_up]
acr_values = ["{MFA}"]
max_age = "5m"

[[targets]]
id = "demo"
kind = "dry-run"
roles = ["orders_writer", "orders_reader"]
{RESOURCES_TOML}

[[eligibilities]]
id = "developers-read-prod"
subjects = ["group:developers"]
target = "demo"
resources = {{ under = ["prod"] }}
roles = ["orders_reader"]
max_duration = "1h"

[[eligibilities]]
id = "sre-write-prod"
subjects = ["group:developers"]
target = "demo"
resources = {{ under = ["prod"] }}
roles = ["orders_writer"]
max_duration = "1h"
step_up = true
conditions = {{ department = "sre" }}

[[approval_policies]]
id = "prod-dba"
target = "demo"
resources = {{ under = ["prod"] }}
approvers = ["group:dba"]
quorum = 1
{extra}
"#,
        db = database_url(db)?,
        secret = secret_file.display(),
    ))
}

/// A provider, elevate in front of it, and a scratch directory.
pub struct OidcEnv {
    pub peer: OidcPeer,
    pub app: TestApp,
    pub dir: tempfile::TempDir,
}

impl OidcEnv {
    pub async fn start() -> Result<OidcEnv> {
        Self::start_with("").await
    }

    /// With `extra` TOML appended to the config.
    pub async fn start_with(extra: &str) -> Result<OidcEnv> {
        let extra = extra.to_owned();
        Self::start_editing(move |text| text.replace("{EXTRA}", &extra)).await
    }

    /// With the config text (holding an `{EXTRA}` marker where `extra`
    /// goes) passed through `edit` first.
    pub async fn start_editing(edit: impl FnOnce(String) -> String) -> Result<OidcEnv> {
        Self::start_for(users(), edit).await
    }

    /// With these people at the provider (say [`users_with_dave`]) and the
    /// config passed through `edit` as in [`Self::start_editing`].
    pub async fn start_for(
        people: Vec<OidcUser>,
        edit: impl FnOnce(String) -> String,
    ) -> Result<OidcEnv> {
        let dir = tempfile::tempdir()?;
        // Bound first: the provider must know elevate's callback address.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let peer = OidcPeer::start(OidcOptions {
            users: people,
            web_redirect_uris: vec![format!("http://{addr}/auth/callback")],
            extra_claims: vec!["department".into()],
            ..OidcOptions::default()
        })?;
        let secret = dir.path().join("client-secret");
        std::fs::write(&secret, format!("{WEB_SECRET}\n"))?;
        let text = config(
            &dir.path().join("elevate.db"),
            &peer.issuer(),
            &secret,
            "{EXTRA}",
        )?;
        let text = edit(text).replace("{EXTRA}", "");
        let app = TestApp::start_on(&text, listener).await?;
        Ok(OidcEnv { peer, app, dir })
    }

    /// Signs `user` in through the browser flow (optionally stepping up)
    /// and returns the browser, now holding an elevate session.
    pub async fn sign_in(&self, user: &str, step_up: bool) -> Result<Browser> {
        let browser = Browser::new()?;
        self.sign_in_with(&browser, user, step_up).await?;
        Ok(browser)
    }

    pub async fn sign_in_with(&self, browser: &Browser, user: &str, step_up: bool) -> Result<()> {
        let callback = self.callback_url(browser, user, step_up).await?;
        let done = browser.get(&callback).await?;
        anyhow::ensure!(
            done.status() == StatusCode::SEE_OTHER,
            "callback answered {}: {}",
            done.status(),
            done.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// Runs the flow up to (not including) elevate's callback and returns
    /// the callback URL the provider redirected to.
    pub async fn callback_url(
        &self,
        browser: &Browser,
        user: &str,
        step_up: bool,
    ) -> Result<String> {
        let mut start = format!("{}/auth/login?login_hint={user}&next=/", self.app.url);
        if step_up {
            start.push_str("&step_up=1");
        }
        browser
            .follow_until(&start, &format!("{}/auth/callback", self.app.url))
            .await
    }

    /// `GET /api/v1/me` with the browser's session.
    pub async fn me(&self, browser: &Browser) -> Result<(StatusCode, Value)> {
        let resp = browser.get(&format!("{}/api/v1/me", self.app.url)).await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// A JSON call with a bearer token.
    pub async fn bearer(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value, reqwest::header::HeaderMap)> {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.app.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.context("calling elevate")?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        ))
    }

    /// A JSON call with the browser's session (and its CSRF token, when
    /// `csrf` is given).
    pub async fn session_post(
        &self,
        browser: &Browser,
        path: &str,
        body: Value,
        csrf: Option<&str>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = browser
            .client()
            .post(format!("{}{path}", self.app.url))
            .json(&body);
        if let Some(c) = csrf {
            req = req.header("X-CSRF-Token", c);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Claims of a token the provider would issue to `user` for
    /// `audience`, valid now; tests alter them for the bad-token cases.
    pub fn claims(&self, user: &str, audience: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.peer.issuer(),
            "sub": format!("sub-{user}"),
            "aud": audience,
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            "preferred_username": user,
            "email": format!("{user}@example.com"),
            "groups": ["developers"],
        })
    }
}

/// A request body for the dry-run target.
pub fn read_prod(reason: &str) -> Value {
    json!({
        "target": "demo", "resource": "orders", "role": "orders_reader",
        "duration": "10m", "reason": reason,
    })
}

pub fn write_prod(reason: &str) -> Value {
    json!({
        "target": "demo", "resource": "orders", "role": "orders_writer",
        "duration": "10m", "reason": reason,
    })
}
