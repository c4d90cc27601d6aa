//! The command line against a real OpenID provider: `elevate login`,
//! `whoami`, a request with the stored sign-in, the step-up a command
//! repeats by itself, `logout`; `elevate check-config` probing the
//! provider; and an elevate that starts while the provider is down.
//!
//! The CLI runs as the real binary. The test plays the browser: it reads
//! the sign-in address the CLI prints on standard error, follows it through
//! the provider (naming the user with `login_hint`) and delivers the
//! provider's redirect to the CLI's loopback listener.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use elevate_testkit::oidc::{decode_jwt_unverified, Browser};
use reqwest::{StatusCode, Url};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::common::{binary, TestApp};
use crate::oidc_common::{config, OidcEnv, CLI_CLIENT, MFA, WEB_SECRET};

/// Generous: a CLI step that hangs fails the test instead of blocking it,
/// but a slow machine does not.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `elevate` with `args`, as a user with no token and only the sign-in kept
/// in `config_dir`, who never gets a browser opened.
fn elevate(config_dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .env("ELEVATE_CONFIG_DIR", config_dir)
        .env("ELEVATE_NO_BROWSER", "1")
        .env_remove("ELEVATE_TOKEN")
        .env_remove("ELEVATE_URL")
        .env_remove("ELEVATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// What a finished command printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs a command that needs no browser to the end.
async fn run(config_dir: &Path, args: &[&str]) -> Result<Finished> {
    let output = tokio::time::timeout(STEP_TIMEOUT, elevate(config_dir, args).output())
        .await
        .with_context(|| format!("elevate {args:?} did not finish"))??;
    Ok(Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A command that may ask for a sign-in: its standard error is read line by
/// line as it comes, so the test can act on the sign-in address while the
/// command waits for the browser.
struct Interactive {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Vec<String>,
}

impl Interactive {
    fn spawn(config_dir: &Path, args: &[&str]) -> Result<Interactive> {
        let mut child = elevate(config_dir, args).spawn()?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (send, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Interactive {
            child,
            lines,
            stderr: Vec::new(),
        })
    }

    /// The address of the line starting with the sign-in prompt.
    async fn sign_in_address(&mut self) -> Result<Url> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => bail!(
                    "elevate ended its standard error without a sign-in address:\n{}",
                    self.stderr.join("\n")
                ),
                Err(_) => bail!(
                    "no sign-in address within {STEP_TIMEOUT:?}:\n{}",
                    self.stderr.join("\n")
                ),
            };
            self.stderr.push(line.clone());
            if let Some(address) = line.strip_prefix(elevate_cli::ADDRESS_PROMPT) {
                return Url::parse(address.trim())
                    .with_context(|| format!("the sign-in line {line:?}"));
            }
        }
    }

    /// Waits for the command to end and collects what it printed.
    async fn finish(mut self) -> Result<Finished> {
        let mut stdout = String::new();
        let mut pipe = self.child.stdout.take().context("no stdout pipe")?;
        let status = tokio::time::timeout(STEP_TIMEOUT, async {
            pipe.read_to_string(&mut stdout).await?;
            self.child.wait().await
        })
        .await
        .context("elevate did not finish after the browser's answer")??;
        // The reader task ends with the pipe, so this drains every line.
        while let Some(line) = self.lines.recv().await {
            self.stderr.push(line);
        }
        Ok(Finished {
            status,
            stdout,
            stderr: self.stderr.join("\n") + "\n",
        })
    }
}

/// The value of query parameter `name`, if present.
fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Plays the browser for the sign-in at `address` as `user`: through the
/// provider to the CLI's loopback callback, whose page must say the
/// sign-in worked.
async fn complete_in_browser(browser: &Browser, address: &Url, user: &str) -> Result<()> {
    let redirect_uri = param(address, "redirect_uri").context("no redirect_uri")?;
    let mut address = address.clone();
    address.query_pairs_mut().append_pair("login_hint", user);
    let callback = browser
        .follow_until(address.as_str(), &redirect_uri)
        .await?;
    let page = browser.get(&callback).await?;
    let status = page.status();
    let text = page.text().await.unwrap_or_default();
    ensure!(
        status == StatusCode::OK && text.contains("Signed in to elevate"),
        "the CLI's loopback page answered {status}: {text}"
    );
    Ok(())
}

/// `elevate --url URL login` as `user`, played through `browser`.
async fn login(env: &OidcEnv, config_dir: &Path, browser: &Browser, user: &str) -> Result<Url> {
    let mut cli = Interactive::spawn(config_dir, &["--url", &env.app.url, "login"])?;
    let address = cli.sign_in_address().await?;
    complete_in_browser(browser, &address, user).await?;
    let done = cli.finish().await?;
    ensure!(done.status.success(), "elevate login failed: {done}");
    Ok(address)
}

/// The stored sign-in's file, and the claims of its token.
fn stored_token_claims(config_dir: &Path) -> Result<(serde_json::Value, serde_json::Value)> {
    let text = std::fs::read_to_string(config_dir.join("credentials.json"))?;
    let stored: serde_json::Value = serde_json::from_str(&text)?;
    let token = stored["id_token"].as_str().context("no id_token stored")?;
    let (_, claims) = decode_jwt_unverified(token)?;
    Ok((stored, claims))
}

#[cfg(unix)]
fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

fn request_args<'a>(url: &'a str, role: &'a str) -> Vec<&'a str> {
    vec![
        "--url",
        url,
        "request",
        "--target",
        "demo",
        "--resource",
        "orders",
        "--role",
        role,
        "--for",
        "10m",
        "--reason",
        "incident INC-7: 受注の修正",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_a_private_sign_in_that_later_commands_use_until_logout() -> Result<()> {
    let env = OidcEnv::start().await?;
    // Not created yet: login creates it, private.
    let config_dir = env.dir.path().join("home").join("elevate");
    let url = env.app.url.as_str();

    let mut cli = Interactive::spawn(&config_dir, &["--url", url, "login"])?;
    let address = cli.sign_in_address().await?;
    // The code flow with PKCE, as the public CLI client, back to a loopback
    // listener, and no step-up for a plain login.
    assert_eq!(param(&address, "client_id").as_deref(), Some(CLI_CLIENT));
    assert_eq!(param(&address, "response_type").as_deref(), Some("code"));
    assert_eq!(
        param(&address, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let redirect_uri = param(&address, "redirect_uri").unwrap_or_default();
    assert!(
        redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"),
        "{address}"
    );
    assert_eq!(param(&address, "prompt"), None, "{address}");
    assert!(
        address.as_str().starts_with(&env.peer.issuer()),
        "{address}"
    );
    complete_in_browser(&Browser::new()?, &address, "alice").await?;
    let done = cli.finish().await?;
    assert!(done.status.success(), "{done}");
    assert!(
        done.stdout
            .contains(&format!("Signed in to {url} as alice (groups: developers)")),
        "{done}"
    );

    // Stored for this server and provider, readable by its owner only.
    let file = config_dir.join("credentials.json");
    #[cfg(unix)]
    {
        assert_eq!(mode(&file)?, 0o600);
        assert_eq!(mode(&config_dir)?, 0o700);
    }
    let (stored, claims) = stored_token_claims(&config_dir)?;
    assert_eq!(stored["url"], url);
    assert_eq!(stored["issuer"], env.peer.issuer().as_str());
    assert_eq!(claims["aud"], CLI_CLIENT, "{claims}");
    assert_eq!(claims["preferred_username"], "alice", "{claims}");

    // whoami with the stored ID token (the server accepts aud elevate-cli).
    let whoami = run(&config_dir, &["--url", url, "whoami"]).await?;
    assert!(whoami.status.success(), "{whoami}");
    let field = |name: &str, value: &str| {
        whoami
            .stdout
            .lines()
            .any(|line| line.trim_start().starts_with(name) && line.contains(value))
    };
    assert!(field("name", "alice"), "{whoami}");
    assert!(field("groups", "developers"), "{whoami}");
    let issuer = env.peer.issuer();
    assert!(
        field("signed in with", &format!("single sign-on ({issuer})")),
        "{whoami}"
    );
    // The token's expiry, in the future.
    assert!(
        whoami
            .stdout
            .lines()
            .any(|line| line.trim_start().starts_with("expires") && line.contains("(in ")),
        "{whoami}"
    );
    // Without --url the sign-in brings its own server.
    let whoami = run(&config_dir, &["whoami"]).await?;
    assert!(whoami.status.success(), "{whoami}");
    assert!(whoami.stdout.contains("alice"), "{whoami}");

    // A request made with the stored token.
    let made = run(&config_dir, &request_args(url, "orders_reader")).await?;
    assert!(made.status.success(), "{made}");
    assert!(made.stdout.starts_with("request r-"), "{made}");
    assert!(made.stdout.contains("created"), "{made}");
    let id = made
        .stdout
        .split_whitespace()
        .nth(1)
        .context("no request id")?
        .to_owned();
    let shown = run(&config_dir, &["--url", url, "--json", "show", &id]).await?;
    assert!(shown.status.success(), "{shown}");
    let view: serde_json::Value = serde_json::from_str(&shown.stdout)?;
    assert_eq!(view["requester"], "alice", "{view}");
    assert_eq!(view["role"], "orders_reader", "{view}");
    assert_eq!(view["state"], "pending", "{view}");

    // Logout forgets it; commands then say how to sign in, on one line.
    let out = run(&config_dir, &["logout"]).await?;
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.starts_with(&format!("Signed out of {url}")),
        "{out}"
    );
    assert!(!file.exists());
    let whoami = run(&config_dir, &["--url", url, "whoami"]).await?;
    assert!(!whoami.status.success(), "{whoami}");
    assert_eq!(whoami.stderr.trim().lines().count(), 1, "{whoami}");
    assert!(whoami.stderr.starts_with("error: "), "{whoami}");
    assert!(whoami.stderr.contains("elevate login"), "{whoami}");
    assert!(whoami.stdout.is_empty(), "{whoami}");
    // A second logout has nothing to remove and is fine.
    let out = run(&config_dir, &["logout"]).await?;
    assert!(out.status.success(), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_needs_a_step_up_signs_in_again_and_is_retried() -> Result<()> {
    let env = OidcEnv::start().await?;
    let config_dir = env.dir.path().join("cli");
    let url = env.app.url.as_str();
    // The same browser throughout: its provider session must not stand in
    // for the fresh sign-in a step-up needs.
    let browser = Browser::new()?;
    login(&env, &config_dir, &browser, "alice").await?;
    let (_, claims) = stored_token_claims(&config_dir)?;
    assert_eq!(claims["acr"], "urn:elevate:pwd", "{claims}");

    let mut cli = Interactive::spawn(&config_dir, &request_args(url, "orders_writer"))?;
    let address = cli.sign_in_address().await?;
    // Why, before the address.
    let why = cli.stderr.iter().rev().nth(1).cloned().unwrap_or_default();
    assert!(why.ends_with("; signing in again"), "{:?}", cli.stderr);
    assert!(why.contains("multi-factor sign-in"), "{:?}", cli.stderr);
    // What the server asks for: multi-factor, fresh.
    assert_eq!(param(&address, "acr_values").as_deref(), Some(MFA));
    assert_eq!(param(&address, "prompt").as_deref(), Some("login"));
    assert_eq!(param(&address, "max_age").as_deref(), Some("300"));
    assert_eq!(param(&address, "client_id").as_deref(), Some(CLI_CLIENT));
    complete_in_browser(&browser, &address, "alice").await?;
    let done = cli.finish().await?;
    assert!(done.status.success(), "{done}");
    assert!(
        done.stderr
            .contains(&format!("Signed in to {url} as alice")),
        "{done}"
    );
    assert!(done.stdout.starts_with("request r-"), "{done}");
    assert!(done.stdout.contains("created"), "{done}");
    assert_eq!(done.stdout.lines().count(), 1, "{done}");

    // The stepped-up sign-in replaced the stored one.
    let (_, claims) = stored_token_claims(&config_dir)?;
    assert_eq!(claims["acr"], MFA, "{claims}");
    let whoami = run(&config_dir, &["whoami"]).await?;
    assert!(whoami.status.success(), "{whoami}");
    assert!(
        whoami
            .stdout
            .lines()
            .any(|line| line.trim_start().starts_with("assurance") && line.contains(MFA)),
        "{whoami}"
    );

    // `login --step-up` asks for the same up front.
    let mut cli = Interactive::spawn(&config_dir, &["--url", url, "login", "--step-up"])?;
    let address = cli.sign_in_address().await?;
    assert_eq!(param(&address, "acr_values").as_deref(), Some(MFA));
    assert_eq!(param(&address, "prompt").as_deref(), Some("login"));
    complete_in_browser(&browser, &address, "alice").await?;
    let done = cli.finish().await?;
    assert!(done.status.success(), "{done}");
    Ok(())
}

/// The config of `env`'s elevate, pointing at its provider, written to a
/// file; `secret` is the client secret elevate would use.
fn config_file(env: &OidcEnv, name: &str, secret: &str) -> Result<PathBuf> {
    let dir = env.dir.path();
    let secret_file = dir.join(format!("{name}.secret"));
    std::fs::write(&secret_file, format!("{secret}\n"))?;
    let path = dir.join(format!("{name}.toml"));
    let text = config(
        &dir.join(format!("{name}.db")),
        &env.peer.issuer(),
        &secret_file,
        "",
    )?;
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn check_config(file: &Path, extra: &[&str]) -> Result<Finished> {
    let file = file.to_str().context("non-UTF-8 path")?;
    let mut args = vec!["check-config", file];
    args.extend_from_slice(extra);
    // No sign-in is involved; any directory will do.
    run(Path::new("/nonexistent-elevate-config"), &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_probes_the_identity_provider_unless_offline() -> Result<()> {
    let env = OidcEnv::start().await?;
    let good = config_file(&env, "good", WEB_SECRET)?;
    let wrong = config_file(&env, "wrong", "not-the-web-secret")?;
    let issuer = env.peer.issuer();

    // Up, and the right secret.
    let out = check_config(&good, &[]).await?;
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "identity provider {issuer} reachable; client credentials accepted"
        )),
        "{out}"
    );
    assert!(out.stdout.contains(": OK ("), "{out}");

    // The wrong secret: the provider refuses the client.
    let out = check_config(&wrong, &[]).await?;
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("oidc.client_secret"), "{out}");
    assert!(
        out.stderr
            .contains("the identity provider refused elevate's client credentials"),
        "{out}"
    );
    assert!(!out.stderr.contains("not-the-web-secret"), "{out}");
    assert!(!out.stdout.contains(": OK ("), "{out}");

    // The provider down: it cannot be reached, and --offline skips that.
    env.peer.stop();
    let started = Instant::now();
    let out = check_config(&good, &[]).await?;
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("oidc.issuer"), "{out}");
    assert!(
        out.stderr
            .contains(&format!("cannot reach the identity provider at {issuer}")),
        "{out}"
    );
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    // A refused connection is reported at once: anything that waited for
    // the provider's 10 s timeout would take at least that long.
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");

    let out = check_config(&good, &["--offline"]).await?;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains(": OK ("), "{out}");
    assert!(!out.stdout.contains("reachable"), "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elevate_starts_with_the_provider_down_and_signs_in_once_it_is_back() -> Result<()> {
    // OidcEnv::start, but with the provider stopped before elevate starts.
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let peer = elevate_testkit::oidc::OidcPeer::start(elevate_testkit::oidc::OidcOptions {
        users: crate::oidc_common::users(),
        web_redirect_uris: vec![format!("http://{addr}/auth/callback")],
        extra_claims: vec!["department".into()],
        ..Default::default()
    })?;
    peer.stop();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{WEB_SECRET}\n"))?;
    let text = config(&dir.path().join("elevate.db"), &peer.issuer(), &secret, "")?;
    let started = Instant::now();
    let app = TestApp::start_on(&text, listener).await?;
    // The refused connection is noticed at once; no provider timeout (10 s)
    // is waited out (that alone would take 10 s).
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "start took {:?}",
        started.elapsed()
    );
    let env = OidcEnv { peer, app, dir };
    let url = env.app.url.as_str();
    let http = reqwest::Client::new();

    // Up and serving.
    let health = http.get(format!("{url}/healthz")).send().await?;
    assert_eq!(health.status(), StatusCode::OK);
    // A sign-in says the provider cannot be reached, as a page.
    let browser = Browser::new()?;
    let page = browser
        .get(&format!("{url}/auth/login?login_hint=alice"))
        .await?;
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    let content_type = page
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let text = page.text().await?;
    assert!(text.contains("Sign-in failed"), "{text}");
    assert!(
        text.contains("the identity provider cannot be reached"),
        "{text}"
    );
    // So does the CLI, on one line, and it stores nothing.
    let config_dir = env.dir.path().join("cli");
    let out = run(&config_dir, &["--url", url, "login"]).await?;
    assert!(!out.status.success(), "{out}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot reach the identity provider at {}",
            env.peer.issuer()
        )),
        "{out}"
    );
    assert!(!config_dir.join("credentials.json").exists());

    // Back: sign-ins work without restarting elevate.
    env.peer.start_again()?;
    let browser = env.sign_in("alice", false).await?;
    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["auth"]["method"], "session", "{me}");
    // And the CLI's too (the ID token's keys are fetched now).
    login(&env, &config_dir, &Browser::new()?, "alice").await?;
    let whoami = run(&config_dir, &["whoami"]).await?;
    assert!(whoami.status.success(), "{whoami}");
    assert!(whoami.stdout.contains("alice"), "{whoami}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_does_not_hold_up_the_start() -> Result<()> {
    // Accepts connections (the kernel completes them) but never answers:
    // a provider behind a hung proxy. Every call to it runs into elevate's
    // 10 s provider timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0")?;
    let issuer = format!("http://{}", hung.local_addr()?);
    let dir = tempfile::tempdir()?;
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{WEB_SECRET}\n"))?;
    let text = config(&dir.path().join("elevate.db"), &issuer, &secret, "")?;
    let started = Instant::now();
    let app = TestApp::start(&text).await?;
    let took = started.elapsed();
    // Waiting out even one provider timeout would take 10 s; the start
    // waits 3 s at most and leaves the rest to the background.
    assert!(took < Duration::from_secs(10), "start took {took:?}");
    let health = reqwest::get(format!("{}/healthz", app.url)).await?;
    assert_eq!(health.status(), StatusCode::OK);
    drop(hung);
    Ok(())
}
