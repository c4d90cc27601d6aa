//! The `aws-sts` target against a real AWS API emulator (moto, started by
//! `elevate_testkit::moto`): sessions only while a grant is active, working
//! credentials (a `GetCallerIdentity` with them succeeds), durations that
//! never outlive the grant, audit events without secrets, the AWS CLI's
//! `credential_process`, console sign-in URLs, and every refusal.
//!
//! moto does not check roles, `SourceIdentity`, tags or durations, and its
//! credentials keep working after they expire: what elevate sent is
//! checked in its own audit trail, and refusals after expiry or revocation
//! are elevate's own.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use elevate_testkit::moto::MotoServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{binary, cli, token, users_toml, TestApp};
use crate::web_common::{csrf_of, page, post, signed_in};

const ACCOUNT: &str = "123456789012";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/Admin";
const WAIT: Duration = Duration::from_secs(20);

/// alice and eve are developers (eligible without approval); dave is the
/// admin. `aws` is an aws-sts target on moto, `demo` a dry-run one.
fn config(dir: &Path, moto: &str, federation: &str) -> Result<String> {
    let secret = dir.join("aws-secret");
    std::fs::write(&secret, "testing\n")?;
    let db = elevate_testkit::database_url(&dir.join("elevate.db"))?;
    Ok(format!(
        r#"
admins = ["group:security"]
auditors = ["group:security"]

[limits]
min_duration = "1s"

{users}
[server]
listen = "127.0.0.1:0"
database = "{db}"
retry_max_backoff = "1s"

[[eligibilities]]
id = "developers-aws"
subjects = ["group:developers", "group:security"]
target = "aws"
resources = {{ ids = ["prod-account"] }}
roles = ["admin"]
max_duration = "2h"
approval_required = false

[[eligibilities]]
id = "developers-demo"
subjects = ["group:developers"]
target = "demo"
resources = {{ ids = ["sandbox"] }}
roles = ["admin"]
max_duration = "2h"
approval_required = false

[[targets]]
id = "demo"
kind = "dry-run"
roles = ["admin"]
[[targets.resources]]
id = "sandbox"

[[targets]]
id = "aws"
kind = "aws-sts"
roles = ["admin"]
[[targets.resources]]
id = "prod-account"
[targets.aws_sts]
region = "us-east-1"
endpoint_url = "{moto}"
federation_url = "{federation}"
max_session = "1h"
access_key_id = "testing"
secret_access_key_file = "{secret}"
[targets.aws_sts.role_arns]
admin = "{ROLE_ARN}"
"#,
        users = users_toml(),
        secret = secret.display(),
    ))
}

struct Aws {
    app: TestApp,
    moto: MotoServer,
    _dir: tempfile::TempDir,
}

async fn start(federation: &str) -> Result<Aws> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let dir = tempfile::TempDir::new()?;
    let app = TestApp::start(&config(dir.path(), &moto.url(), federation)?).await?;
    Ok(Aws {
        app,
        moto,
        _dir: dir,
    })
}

/// An active grant of `admin` on the AWS account for `user`, lasting
/// `duration`.
async fn active_grant(app: &TestApp, user: &str, target: &str, duration: &str) -> Result<String> {
    let resource = if target == "aws" {
        "prod-account"
    } else {
        "sandbox"
    };
    let id = app
        .request(
            user,
            json!({"target": target, "resource": resource, "role": "admin",
                   "duration": duration, "reason": "incident INC-7", "ticket": "INC-7"}),
        )
        .await?;
    app.wait_state(&id, "active", WAIT).await?;
    Ok(id)
}

async fn credentials(
    app: &TestApp,
    user: &str,
    id: &str,
    body: Value,
) -> Result<(StatusCode, Value)> {
    app.post(user, &format!("/api/v1/requests/{id}/credentials"), body)
        .await
}

/// Calls STS `GetCallerIdentity` on moto with the issued credentials.
async fn caller_arn(moto: &MotoServer, c: &Value) -> Result<String> {
    use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            c["access_key_id"].as_str().context("no key id")?,
            c["secret_access_key"].as_str().context("no secret")?,
            c["session_token"].as_str().map(str::to_owned),
            None,
            "test",
        ))
        .endpoint_url(moto.url())
        .http_client(http)
        .build();
    let who = aws_sdk_sts::Client::from_conf(conf)
        .get_caller_identity()
        .send()
        .await?;
    Ok(who.arn().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_grant_gets_working_credentials_bounded_by_its_window_and_audited_without_secrets(
) -> Result<()> {
    let Aws { app, moto, _dir } = start("http://127.0.0.1:9/federation").await?;
    // 20 minutes: shorter than the target's max_session (1h).
    let id = active_grant(&app, "alice", "aws", "20m").await?;
    let (status, c) = credentials(&app, "alice", &id, json!({})).await?;
    ensure!(status == StatusCode::OK, "{status} {c}");
    assert_eq!(c["role_arn"], ROLE_ARN);
    assert_eq!(c["source_identity"], "alice");
    let session_name = c["session_name"].as_str().context("session name")?;
    assert_eq!(session_name, format!("alice.{id}"));
    let duration = c["duration_secs"].as_i64().context("duration")?;
    ensure!(
        (900..=1200).contains(&duration),
        "duration {duration}s is not within the 20-minute window"
    );
    let shown = app.show(&id).await?;
    let ends_at = chrono::DateTime::parse_from_rfc3339(shown["ends_at"].as_str().unwrap_or(""))?;
    let expiration = chrono::DateTime::parse_from_rfc3339(c["expiration"].as_str().unwrap_or(""))?;
    ensure!(
        expiration <= ends_at + chrono::Duration::seconds(2),
        "credentials expire at {expiration}, after the grant ends at {ends_at}"
    );

    // The credentials work, as the assumed role and session.
    let arn = caller_arn(&moto, &c).await?;
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/Admin/{session_name}")
    );

    // A shorter session when asked for one.
    let (status, short) = credentials(&app, "alice", &id, json!({"duration": "15m"})).await?;
    ensure!(status == StatusCode::OK, "{status} {short}");
    assert_eq!(short["duration_secs"], 900);

    // Each session is audited, with the source identity, never a secret.
    let (status, audit) = app
        .get("dave", &format!("/api/v1/audit?request={id}"))
        .await?;
    ensure!(status == StatusCode::OK, "{status} {audit}");
    let sessions: Vec<&Value> = audit["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["action"] == "grant.session_issued")
        .collect();
    assert_eq!(sessions.len(), 2, "{audit}");
    let first = &sessions[0];
    assert_eq!(first["actor"], "user:alice");
    assert_eq!(first["details"]["kind"], "creds");
    assert_eq!(first["details"]["source_identity"], "alice");
    assert_eq!(first["details"]["role_arn"], ROLE_ARN);
    assert_eq!(first["details"]["session_name"], session_name);
    assert_eq!(first["details"]["duration_secs"], duration);
    let text = audit.to_string();
    for secret in [
        &c["secret_access_key"],
        &c["session_token"],
        &short["secret_access_key"],
    ] {
        let secret = secret.as_str().context("secret")?;
        ensure!(!text.contains(secret), "a secret is in the audit trail");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_are_refused_after_revocation_and_after_the_window_ends() -> Result<()> {
    let Aws {
        app,
        _dir,
        moto: _moto,
    } = start("http://127.0.0.1:9/federation").await?;
    let id = active_grant(&app, "alice", "aws", "30m").await?;
    let url = app.url.clone();
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&url, "alice", &args)
        })
    };
    let out = run(vec!["creds".into(), id.clone()]).await??;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(stdout.contains("export AWS_ACCESS_KEY_ID='"), "{stdout}");
    ensure!(stdout.contains("export AWS_SESSION_TOKEN='"), "{stdout}");

    let (status, v) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({"comment": "done"}),
        )
        .await?;
    ensure!(status == StatusCode::OK, "{status} {v}");
    let out = run(vec!["creds".into(), id.clone()]).await??;
    ensure!(!out.status.success(), "creds issued after revocation");
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("is not active"),
        "unclear refusal: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // A grant whose window ends: refused while fewer than 15 minutes are
    // left (AWS's shortest session would outlive it), then as not active.
    // (10 seconds: still running when asked, however slow the machine.)
    let short = active_grant(&app, "alice", "aws", "10s").await?;
    let (status, v) = credentials(&app, "alice", &short, json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "grant_ending");
    app.wait_state(&short, "ended", WAIT).await?;
    let (status, v) = credentials(&app, "alice", &short, json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "grant_not_active");
    let out = run(vec!["console".into(), short.clone()]).await??;
    ensure!(!out.status.success(), "console URL issued after the end");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_admins_and_grants_on_other_targets_get_no_session() -> Result<()> {
    let Aws {
        app,
        _dir,
        moto: _moto,
    } = start("http://127.0.0.1:9/federation").await?;
    let id = active_grant(&app, "alice", "aws", "1h").await?;
    // eve cannot even see alice's grant.
    let (status, v) = credentials(&app, "eve", &id, json!({})).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // dave, the admin, sees it but may not mint alice's credentials.
    let (status, v) = credentials(&app, "dave", &id, json!({})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "not_requester");
    let (status, v) = app
        .post("dave", &format!("/api/v1/requests/{id}/console"), json!({}))
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    // A grant on a target that is not aws-sts.
    let demo = active_grant(&app, "alice", "demo", "1h").await?;
    let (status, v) = credentials(&app, "alice", &demo, json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "no_sessions");
    // Fewer than 15 minutes in the grant.
    let brief = active_grant(&app, "alice", "aws", "10m").await?;
    let (status, v) = credentials(&app, "alice", &brief, json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "grant_ending");
    // Nothing was audited as issued.
    let (_, audit) = app.get("dave", "/api/v1/audit").await?;
    ensure!(
        !audit.to_string().contains("grant.session_issued"),
        "{audit}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_output_works_from_an_aws_cli_profile() -> Result<()> {
    let Aws { app, moto, _dir } = start("http://127.0.0.1:9/federation").await?;
    let id = active_grant(&app, "alice", "aws", "1h").await?;
    let profile_dir = tempfile::TempDir::new()?;
    let config_file = profile_dir.path().join("config");
    std::fs::write(
        &config_file,
        format!(
            "[profile x]\nregion = us-east-1\ncredential_process = {} --url {} --token {} creds {id} --format credential-process\n",
            binary().display(),
            app.url,
            token("alice"),
        ),
    )?;
    let endpoint = moto.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("aws")
            .args(["--profile", "x", "--endpoint-url", &endpoint])
            .args(["sts", "get-caller-identity", "--output", "json"])
            .env("AWS_CONFIG_FILE", &config_file)
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .output()
    })
    .await?
    .context("running the AWS CLI (pip install awscli)")?;
    ensure!(
        out.status.success(),
        "aws failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: Value = serde_json::from_slice(&out.stdout)?;
    let arn = who["Arn"].as_str().unwrap_or_default();
    ensure!(
        arn == format!("arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice.{id}"),
        "{who}"
    );
    Ok(())
}

/// What the stub federation endpoint was asked.
#[derive(Default)]
struct Federation {
    asked: Vec<(String, Value)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_url_comes_from_the_federation_endpoint() -> Result<()> {
    // moto has no federation endpoint: a small stub plays
    // signin.aws.amazon.com/federation and checks the Session JSON.
    use axum::extract::{Query, State};
    use std::collections::HashMap;
    let seen: Arc<Mutex<Federation>> = Arc::default();
    let stub = axum::Router::new()
        .route(
            "/federation",
            axum::routing::get(
                |State(seen): State<Arc<Mutex<Federation>>>,
                 Query(q): Query<HashMap<String, String>>| async move {
                    let session: Value = q
                        .get("Session")
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or(Value::Null);
                    let complete = ["sessionId", "sessionKey", "sessionToken"]
                        .iter()
                        .all(|k| session[k].as_str().is_some_and(|s| !s.is_empty()));
                    if q.get("Action").map(String::as_str) != Some("getSigninToken") || !complete {
                        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "bad"})));
                    }
                    let duration = q.get("SessionDuration").cloned().unwrap_or_default();
                    if let Ok(mut s) = seen.lock() {
                        s.asked.push((duration, session));
                    }
                    (
                        StatusCode::OK,
                        axum::Json(json!({"SigninToken": "stub-token/+="})),
                    )
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let federation = format!("http://{}/federation", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, stub).await });

    let Aws {
        app,
        _dir,
        moto: _moto,
    } = start(&federation).await?;
    let id = active_grant(&app, "alice", "aws", "20m").await?;
    let (status, v) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/console"),
            json!({}),
        )
        .await?;
    ensure!(status == StatusCode::OK, "{status} {v}");
    let url = v["url"].as_str().context("url")?;
    let issuer: String = form_urlencoded::byte_serialize(app.url.as_bytes()).collect();
    assert_eq!(
        url,
        format!(
            "{federation}?Action=login&Issuer={issuer}&Destination=https%3A%2F%2Fconsole.aws.amazon.com%2F&SigninToken=stub-token%2F%2B%3D"
        )
    );
    let (duration, session) = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        s.asked.first().cloned().context("federation not asked")?
    };
    let duration: i64 = duration.parse()?;
    ensure!(
        (900..=1200).contains(&duration),
        "SessionDuration {duration}"
    );
    ensure!(
        session["sessionId"]
            .as_str()
            .is_some_and(|k| k.starts_with("ASIA")),
        "{session}"
    );

    // The CLI prints the URL alone.
    let app_url = app.url.clone();
    let out = tokio::task::spawn_blocking({
        let id = id.clone();
        move || cli(&app_url, "alice", &["console", &id])
    })
    .await??;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout)?;
    ensure!(
        printed
            .trim()
            .starts_with(&format!("{federation}?Action=login&")),
        "{printed}"
    );

    // The request page offers the console to its requester only; the
    // button (a POST with the page's CSRF token) issues a session and
    // shows the sign-in link.
    let browser = signed_in(&app, "alice").await?;
    let (status, html) = page(&app, &browser, &format!("/requests/{id}")).await?;
    ensure!(status == StatusCode::OK, "{status}");
    ensure!(html.contains("Open the AWS console"), "{html}");
    let csrf = csrf_of(&html)?;
    let (status, _, shown) = post(
        &app,
        &browser,
        &format!("/requests/{id}/console"),
        &[("csrf", &csrf)],
    )
    .await?;
    ensure!(status == StatusCode::OK, "{status} {shown}");
    let link = format!("{federation}?Action=login&amp;Issuer=");
    ensure!(shown.contains(&link), "no sign-in link in {shown}");
    // Without the CSRF token nothing is issued.
    let asked = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .asked
        .len();
    let (status, _, _) = post(&app, &browser, &format!("/requests/{id}/console"), &[]).await?;
    ensure!(status == StatusCode::FORBIDDEN, "{status}");
    let after = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .asked
        .len();
    ensure!(
        asked == after,
        "a session was issued without the CSRF token"
    );
    // dave (admin) sees the request but no button, and cannot use it.
    let admin = signed_in(&app, "dave").await?;
    let (_, html) = page(&app, &admin, &format!("/requests/{id}")).await?;
    ensure!(
        !html.contains("Open the AWS console"),
        "offered to the admin"
    );
    let csrf = csrf_of(&html)?;
    let (status, _, _) = post(
        &app,
        &admin,
        &format!("/requests/{id}/console"),
        &[("csrf", &csrf)],
    )
    .await?;
    ensure!(status == StatusCode::FORBIDDEN, "{status}");
    Ok(())
}

/// IAM on moto, for the test's own look at the role's policies.
fn moto_iam(moto: &MotoServer) -> aws_sdk_iam::Client {
    use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_iam::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(moto.url())
        .http_client(http)
        .build();
    aws_sdk_iam::Client::from_conf(conf)
}

/// The request ids elevate's revocation policies on the Admin role deny.
async fn denied(iam: &aws_sdk_iam::Client) -> Result<Vec<String>> {
    use elevate_providers::aws_revoked_sessions::{decode_document, POLICY_PREFIX};
    let names = iam
        .list_role_policies()
        .role_name("Admin")
        .send()
        .await?
        .policy_names()
        .to_vec();
    let mut ids = Vec::new();
    for name in names.iter().filter(|n| n.starts_with(POLICY_PREFIX)) {
        let doc = iam
            .get_role_policy()
            .role_name("Admin")
            .policy_name(name)
            .send()
            .await?;
        let doc: Value = serde_json::from_str(&decode_document(doc.policy_document()))?;
        let s = &doc["Statement"][0];
        ensure!(s["Effect"] == "Deny" && s["Action"] == "*", "{doc}");
        if let Some(id) =
            s["Condition"]["StringEquals"]["aws:PrincipalTag/elevate-request"].as_str()
        {
            ids.push(id.to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_grant_denies_the_sessions_it_issued_and_a_grant_that_runs_out_adds_nothing(
) -> Result<()> {
    let moto = tokio::task::spawn_blocking(MotoServer::start).await??;
    let iam = moto_iam(&moto);
    iam.create_role()
        .role_name("Admin")
        .assume_role_policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
                "Action": ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]}]})
            .to_string(),
        )
        .send()
        .await?;
    let dir = tempfile::TempDir::new()?;
    let text = config(dir.path(), &moto.url(), "http://127.0.0.1:9/federation")?;
    let on = format!(
        "max_session = \"1h\"\nrevoke_sessions = true\niam_endpoint_url = \"{}\"\n",
        moto.url()
    );
    let text = text.replace("max_session = \"1h\"\n", &on);
    ensure!(text.contains("revoke_sessions"), "{text}");
    let app = TestApp::start(&text).await?;

    // Two grants of the same role to alice at once, each with a session.
    let id = active_grant(&app, "alice", "aws", "30m").await?;
    let other = active_grant(&app, "alice", "aws", "40m").await?;
    for grant in [&id, &other] {
        let (status, c) = credentials(&app, "alice", grant, json!({})).await?;
        ensure!(status == StatusCode::OK, "{status} {c}");
    }
    ensure!(
        denied(&iam).await?.is_empty(),
        "a deny while the grants run"
    );
    // Revoking one denies its sessions, although alice still holds the
    // role through the other: those are other sessions.
    let (status, v) = app
        .post(
            "alice",
            &format!("/api/v1/requests/{id}/revoke"),
            json!({"comment": "done early"}),
        )
        .await?;
    ensure!(status == StatusCode::OK, "{status} {v}");
    crate::common::eventually("the revoked grant's sessions are denied", WAIT, || async {
        Ok(denied(&iam).await? == [id.clone()])
    })
    .await?;
    let shown = app.show(&id).await?;
    ensure!(shown["removal_failures"] == 0, "{shown}");
    ensure!(app.show(&other).await?["state"] == "active");
    let (status, c) = credentials(&app, "alice", &other, json!({})).await?;
    ensure!(status == StatusCode::OK, "{status} {c}");

    // A grant that runs out: its sessions expired with its window.
    let short = active_grant(&app, "alice", "aws", "10s").await?;
    app.wait_state(&short, "ended", WAIT).await?;
    ensure!(denied(&iam).await? == std::slice::from_ref(&id));
    app.stop().await;
    Ok(())
}
