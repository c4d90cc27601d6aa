//! Bad input is refused with a clear 4xx (or a one-line CLI error) and
//! leaves nothing behind: malformed or mistyped bodies, oversize bodies,
//! durations out of bounds, unknown names, empty or oversize
//! justifications, bad ids, bad tokens. Text in any script round-trips
//! unchanged through the API, the audit export and the CLI.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{body, cli, dry_run_config, token, Setup, TestApp};

/// A justification mixing Japanese, an emoji, an em dash and Hebrew (a
/// right-to-left script), with blanks around it that must be trimmed.
const MIXED_SCRIPT_REASON: &str = "  本番DBの障害対応のため、受注テーブルを修正します 🚑 — שלום  ";

struct Env {
    _dir: tempfile::TempDir,
    app: TestApp,
}

async fn env() -> Result<Env> {
    let dir = tempfile::tempdir()?;
    let config = dry_run_config(&dir.path().join("elevate.db"), &Setup::default())?;
    let app = TestApp::start(&config).await?;
    Ok(Env { _dir: dir, app })
}

/// A valid request body for alice, with `field` set to `value`.
fn with(field: &str, value: Value) -> Value {
    let mut b = body("demo", "orders", "orders_writer", "30m");
    b[field] = value;
    b
}

/// A valid request body for alice, without `field`.
fn without(field: &str) -> Value {
    let mut b = body("demo", "orders", "orders_writer", "30m");
    if let Some(map) = b.as_object_mut() {
        map.remove(field);
    }
    b
}

/// Sends raw bytes: whatever content type (or none) and body the test wants.
async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    user: Option<&str>,
    content_type: Option<&str>,
    bytes: Vec<u8>,
) -> Result<(StatusCode, Value)> {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", app.url));
    if let Some(u) = user {
        request = request.bearer_auth(token(u));
    }
    if let Some(t) = content_type {
        request = request.header(reqwest::header::CONTENT_TYPE, t);
    }
    let response = request.body(bytes).send().await?;
    let status = response.status();
    let text = response.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// A GET whose answer is text (the audit export), with its content type.
async fn get_text(app: &TestApp, user: &str, path: &str) -> Result<(StatusCode, String, String)> {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", app.url))
        .bearer_auth(token(user))
        .send()
        .await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, content_type, response.text().await?))
}

/// Checks that an answer is the expected refusal: never a 5xx, the
/// expected status and stable code, and a message a person can read.
/// Returns the message.
fn refused(
    what: &str,
    answer: &(StatusCode, Value),
    status: StatusCode,
    code: &str,
) -> Result<String> {
    let (got, body) = answer;
    ensure!(
        !got.is_server_error(),
        "{what}: server error {got} for client input: {body}"
    );
    ensure!(
        *got == status && body["code"] == code,
        "{what}: expected {status} {code}, got {got} {body}"
    );
    let message = body["message"]
        .as_str()
        .with_context(|| format!("{what}: error body has no string message: {body}"))?;
    ensure!(
        !message.trim().is_empty(),
        "{what}: empty error message: {body}"
    );
    Ok(message.to_owned())
}

/// No request and no audit event exists: nothing was stored half-way.
async fn nothing_stored(app: &TestApp, after: &str) -> Result<()> {
    let (status, v) = app.get("dave", "/api/v1/requests?scope=all").await?;
    ensure!(status == StatusCode::OK, "listing requests: {status} {v}");
    let requests = v["requests"].as_array().context("no requests array")?;
    ensure!(
        requests.is_empty(),
        "after {after}, requests were stored: {v}"
    );
    let (status, v) = app.get("dave", "/api/v1/audit").await?;
    ensure!(status == StatusCode::OK, "listing audit: {status} {v}");
    let events = v["events"].as_array().context("no events array")?;
    ensure!(
        events.is_empty(),
        "after {after}, audit events were written: {v}"
    );
    Ok(())
}

/// The server's own count of responses shows no 5xx at all.
async fn no_server_errors(app: &TestApp) -> Result<()> {
    let metrics = reqwest::get(format!("{}/metrics", app.url))
        .await?
        .text()
        .await?;
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("elevate_http_responses_total{status=\"5"))
        .collect();
    ensure!(errors.is_empty(), "the server answered 5xx: {errors:?}");
    Ok(())
}

/// The CLI, run off the async runtime so the in-process server keeps both
/// its worker threads.
async fn run_cli(url: &str, user: &str, args: &[&str]) -> Result<std::process::Output> {
    let url = url.to_owned();
    let user = user.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&url, &user, &args)
    })
    .await?
}

/// Standard error of a failed command, which must be exactly one line.
fn one_error_line(what: &str, out: &std::process::Output) -> Result<String> {
    ensure!(
        !out.status.success(),
        "{what}: expected failure, got success; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8(out.stderr.clone())?;
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(
        lines.len() == 1,
        "{what}: expected one line on stderr, got {}: {stderr:?}",
        lines.len()
    );
    ensure!(
        !stderr.contains("panicked"),
        "{what}: the CLI panicked: {stderr}"
    );
    Ok(lines[0].to_owned())
}

/// The request id in "request r-… created: …".
fn id_in(line: &str) -> Result<String> {
    line.split_whitespace()
        .map(|w| w.trim_end_matches([':', ',']))
        .find(|w| w.starts_with("r-") && w.len() == 14)
        .map(str::to_owned)
        .with_context(|| format!("no request id in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_mistyped_and_oversize_bodies_are_refused_and_nothing_is_stored() -> Result<()> {
    let Env { app, _dir } = env().await?;
    let json_type = Some("application/json");

    let malformed = send_raw(
        &app,
        Method::POST,
        "/api/v1/requests",
        Some("alice"),
        json_type,
        br#"{"target": "demo", "resource": "orders","#.to_vec(),
    )
    .await?;
    refused(
        "malformed JSON",
        &malformed,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )?;
    nothing_stored(&app, "malformed JSON").await?;

    let unknown = app
        .post("alice", "/api/v1/requests", with("approver", json!("x")))
        .await?;
    let message = refused(
        "unknown field",
        &unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )?;
    ensure!(
        message.contains("approver"),
        "the message should name the unknown field: {message}"
    );
    nothing_stored(&app, "an unknown field").await?;

    let missing = app
        .post("alice", "/api/v1/requests", without("reason"))
        .await?;
    let message = refused(
        "missing field",
        &missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )?;
    ensure!(
        message.contains("reason"),
        "the message should name the missing field: {message}"
    );
    nothing_stored(&app, "a missing field").await?;

    for (field, value) in [
        ("target", json!(5)),
        ("duration", json!(true)),
        ("reason", json!(["a", "b"])),
        ("break_glass", json!("yes")),
    ] {
        let answer = app
            .post("alice", "/api/v1/requests", with(field, value.clone()))
            .await?;
        refused(
            &format!("{field} = {value}"),
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )?;
    }
    let not_an_object = app.post("alice", "/api/v1/requests", json!([1, 2])).await?;
    refused(
        "an array body",
        &not_an_object,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )?;
    nothing_stored(&app, "wrongly typed fields").await?;

    let valid = serde_json::to_vec(&body("demo", "orders", "orders_writer", "30m"))?;
    let untyped = send_raw(
        &app,
        Method::POST,
        "/api/v1/requests",
        Some("alice"),
        None,
        valid.clone(),
    )
    .await?;
    refused(
        "no content type",
        &untyped,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )?;
    let text_plain = send_raw(
        &app,
        Method::POST,
        "/api/v1/requests",
        Some("alice"),
        Some("text/plain"),
        valid,
    )
    .await?;
    refused(
        "text/plain",
        &text_plain,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )?;
    nothing_stored(&app, "a body without JSON content type").await?;

    // About 100 KB, over the default limit of 64 KiB.
    let huge = serde_json::to_vec(&with("reason", json!("x".repeat(100_000))))?;
    let too_large = send_raw(
        &app,
        Method::POST,
        "/api/v1/requests",
        Some("alice"),
        json_type,
        huge.clone(),
    )
    .await?;
    refused(
        "100 KB body",
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )?;
    // Action endpoints read their optional body themselves: same limit.
    let too_large = send_raw(
        &app,
        Method::POST,
        "/api/v1/requests/r-aaaaaaaaaaaa/approve",
        Some("bob"),
        json_type,
        huge,
    )
    .await?;
    refused(
        "100 KB approve body",
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )?;
    nothing_stored(&app, "oversize bodies").await?;
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_over_the_maximum_or_unparseable_are_refused() -> Result<()> {
    let Env { app, _dir } = env().await?;

    for too_long in [json!("2h"), json!("61m"), json!(7200)] {
        let answer = app
            .post(
                "alice",
                "/api/v1/requests",
                with("duration", too_long.clone()),
            )
            .await?;
        let message = refused(
            &format!("duration {too_long}"),
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "duration_too_long",
        )?;
        ensure!(
            message.contains("1h"),
            "the message should state the maximum (1h): {message}"
        );
    }
    for nonsense in ["0m", "0", "abc", "-1h", "1.5h", "", "1h 30", "10 minutes"] {
        let answer = app
            .post(
                "alice",
                "/api/v1/requests",
                with("duration", json!(nonsense)),
            )
            .await?;
        let message = refused(
            &format!("duration {nonsense:?}"),
            &answer,
            StatusCode::BAD_REQUEST,
            "invalid_input",
        )?;
        ensure!(
            message.contains("duration") || message.contains(nonsense.trim()),
            "the message should say what is wrong with {nonsense:?}: {message}"
        );
    }
    nothing_stored(&app, "bad durations").await?;
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_targets_resources_and_roles_are_refused_by_name() -> Result<()> {
    let Env { app, _dir } = env().await?;

    for (field, value, code) in [
        ("target", "nope", "unknown_target"),
        ("resource", "payroll", "unknown_resource"),
        ("role", "superuser", "unknown_role"),
    ] {
        let answer = app
            .post("alice", "/api/v1/requests", with(field, json!(value)))
            .await?;
        let message = refused(
            &format!("{field} {value}"),
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        )?;
        ensure!(
            message.contains(value),
            "the message should name \"{value}\": {message}"
        );
    }
    nothing_stored(&app, "unknown names").await?;
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_10_kb_justifications_are_refused_but_2000_japanese_characters_are_accepted(
) -> Result<()> {
    let Env { app, _dir } = env().await?;

    for (what, reason) in [
        ("an empty justification", String::new()),
        ("a blank justification", " \n\t  \u{3000} ".to_owned()),
        ("a 10 000-character justification", "x".repeat(10_000)),
        ("2001 kanji", "障".repeat(2001)),
    ] {
        let answer = app
            .post("alice", "/api/v1/requests", with("reason", json!(reason)))
            .await?;
        let message = refused(what, &answer, StatusCode::BAD_REQUEST, "invalid_input")?;
        ensure!(
            message.contains("justification"),
            "{what}: the message should be about the justification: {message}"
        );
        nothing_stored(&app, what).await?;
    }

    let kanji = "障害対応".repeat(500);
    ensure!(kanji.chars().count() == 2000);
    let id = app
        .request("alice", with("reason", json!(kanji.clone())))
        .await?;
    let shown = app.show(&id).await?;
    ensure!(
        shown["justification"] == kanji.as_str(),
        "2000 kanji came back changed: {}",
        shown["justification"]
    );
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_are_400_unknown_ids_404_and_unknown_routes_answer_json() -> Result<()> {
    let Env { app, _dir } = env().await?;

    for path in [
        "/api/v1/requests/not-an-id",
        "/api/v1/requests/r-AAAAAAAAAAAA",
        "/api/v1/requests/r-aaaa",
    ] {
        let answer = app.get("alice", path).await?;
        refused(path, &answer, StatusCode::BAD_REQUEST, "invalid_input")?;
    }
    let answer = app
        .post("bob", "/api/v1/requests/not-an-id/approve", json!({}))
        .await?;
    refused(
        "approve not-an-id",
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )?;

    let answer = app.get("dave", "/api/v1/requests/r-aaaaaaaaaaaa").await?;
    refused("an unknown id", &answer, StatusCode::NOT_FOUND, "not_found")?;
    for action in ["approve", "reject", "cancel", "revoke"] {
        let path = format!("/api/v1/requests/r-aaaaaaaaaaaa/{action}");
        let answer = app
            .post("bob", &path, json!({ "comment": "why not" }))
            .await?;
        refused(&path, &answer, StatusCode::NOT_FOUND, "not_found")?;
    }

    for path in ["/api/v1/nope", "/api/v2/requests", "/nope"] {
        let answer = app.get("alice", path).await?;
        refused(path, &answer, StatusCode::NOT_FOUND, "not_found")?;
    }
    for (method, path) in [
        (Method::DELETE, "/api/v1/requests"),
        (Method::PUT, "/api/v1/audit"),
        (Method::GET, "/api/v1/requests/r-aaaaaaaaaaaa/approve"),
    ] {
        let answer = app.call(method.clone(), path, Some("bob"), None).await?;
        refused(
            &format!("{method} {path}"),
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )?;
    }
    nothing_stored(&app, "bad ids and routes").await?;
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_tokens_are_401_and_store_nothing() -> Result<()> {
    let Env { app, _dir } = env().await?;
    let valid = serde_json::to_vec(&body("demo", "orders", "orders_writer", "30m"))?;

    let answer = app
        .call(
            Method::POST,
            "/api/v1/requests",
            None,
            Some(body("demo", "orders", "orders_writer", "30m")),
        )
        .await?;
    refused(
        "no Authorization",
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )?;
    let answer = app.call(Method::GET, "/api/v1/me", None, None).await?;
    refused(
        "no Authorization on /me",
        &answer,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )?;

    for (what, header, code) in [
        ("a wrong token", "Bearer t-mallory", "invalid_token"),
        ("another user's name", "Bearer alice", "invalid_token"),
        ("Basic auth", "Basic YWxpY2U6cHc=", "unauthenticated"),
        ("an empty bearer", "Bearer ", "unauthenticated"),
    ] {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v1/requests", app.url))
            .header(reqwest::header::AUTHORIZATION, header)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(valid.clone())
            .send()
            .await?;
        let status = response.status();
        let v: Value = serde_json::from_str(&response.text().await?)?;
        refused(what, &(status, v), StatusCode::UNAUTHORIZED, code)?;
    }
    nothing_stored(&app, "unauthenticated calls").await?;
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_on_an_approval_leave_the_request_untouched() -> Result<()> {
    let Env { app, _dir } = env().await?;
    let id = app
        .request("alice", body("demo", "orders", "orders_writer", "30m"))
        .await?;
    let path = format!("/api/v1/requests/{id}/approve");

    let answer = send_raw(
        &app,
        Method::POST,
        &path,
        Some("bob"),
        Some("application/json"),
        b"{\"comment\": ".to_vec(),
    )
    .await?;
    refused(
        "malformed approval",
        &answer,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    )?;
    let answer = app
        .post("bob", &path, json!({ "comment": "ok", "quorum": 0 }))
        .await?;
    refused(
        "unknown approval field",
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )?;
    let answer = app
        .post("bob", &path, json!({ "comment": "x".repeat(10_000) }))
        .await?;
    refused(
        "10 000-character comment",
        &answer,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    )?;

    let shown = app.show(&id).await?;
    ensure!(
        shown["state"] == "pending",
        "state changed: {}",
        shown["state"]
    );
    ensure!(
        shown["approvals"].as_array().is_some_and(|a| a.is_empty()),
        "an approval was recorded: {}",
        shown["approvals"]
    );
    let actions: Vec<&str> = shown["events"]
        .as_array()
        .context("no events")?
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    ensure!(
        actions == ["request.created"],
        "refused approvals wrote events: {actions:?}"
    );
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn japanese_emoji_and_hebrew_justifications_round_trip_through_api_audit_and_cli(
) -> Result<()> {
    let Env { app, _dir } = env().await?;
    let trimmed = MIXED_SCRIPT_REASON.trim();

    // Through the API.
    let (status, created) = app
        .post(
            "alice",
            "/api/v1/requests",
            with("reason", json!(MIXED_SCRIPT_REASON)),
        )
        .await?;
    ensure!(status == StatusCode::CREATED, "{status} {created}");
    ensure!(
        created["justification"] == trimmed,
        "create answered {}",
        created["justification"]
    );
    let api_id = created["id"].as_str().context("no id")?.to_owned();
    let shown = app.show(&api_id).await?;
    ensure!(
        shown["justification"] == trimmed,
        "show answered {}",
        shown["justification"]
    );

    // Through the CLI.
    let out = run_cli(
        &app.url,
        "alice",
        &[
            "request",
            "--target",
            "demo",
            "--resource",
            "orders",
            "--role",
            "orders_reader",
            "--for",
            "30m",
            "--reason",
            MIXED_SCRIPT_REASON,
        ],
    )
    .await?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success(),
        "CLI request failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_id = id_in(&stdout)?;
    let out = run_cli(&app.url, "alice", &["--json", "show", &cli_id]).await?;
    ensure!(
        out.status.success(),
        "CLI show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        shown["justification"] == trimmed,
        "CLI --json show answered {}",
        shown["justification"]
    );
    let out = run_cli(&app.url, "alice", &["show", &cli_id]).await?;
    let human = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success() && human.contains(trimmed),
        "CLI show does not print the justification unchanged:\n{human}"
    );
    let out = run_cli(&app.url, "alice", &["requests"]).await?;
    let table = String::from_utf8(out.stdout)?;
    ensure!(out.status.success(), "CLI requests failed");
    for id in [&api_id, &cli_id] {
        let row = table
            .lines()
            .find(|l| l.contains(id.as_str()))
            .with_context(|| format!("{id} not in the table:\n{table}"))?;
        // The REASON column may be cut to its width, never garbled.
        ensure!(
            row.contains("本番DBの障害対応のため") && !row.contains('\u{FFFD}'),
            "the reason is not shown as written: {row}"
        );
    }

    // Through the audit trail.
    let (status, content_type, export) = get_text(&app, "dave", "/api/v1/audit/export").await?;
    ensure!(status == StatusCode::OK, "export: {status} {export}");
    ensure!(
        content_type.starts_with("application/x-ndjson"),
        "export content type {content_type}"
    );
    for id in [&api_id, &cli_id] {
        let mut found = false;
        for line in export.lines() {
            let event: Value = serde_json::from_str(line)?;
            if event["action"] == "request.created" && event["request"] == id.as_str() {
                ensure!(
                    event["details"]["justification"] == trimmed,
                    "the audit event holds {}",
                    event["details"]["justification"]
                );
                found = true;
            }
        }
        ensure!(found, "no request.created event for {id} in:\n{export}");
    }
    ensure!(
        export.contains(trimmed),
        "the export escapes the text instead of keeping it as UTF-8"
    );
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_cli_requests_exit_non_zero_with_one_line_naming_the_problem() -> Result<()> {
    let Env { app, _dir } = env().await?;
    let request = |duration: &'static str, role: &'static str, reason: &'static str| {
        vec![
            "request",
            "--target",
            "demo",
            "--resource",
            "orders",
            "--role",
            role,
            "--for",
            duration,
            "--reason",
            reason,
        ]
    };

    let out = run_cli(&app.url, "alice", &request("2h", "orders_writer", "fix")).await?;
    let line = one_error_line("a duration over the maximum", &out)?;
    ensure!(
        line.contains("maximum") && line.contains("1h") && line.contains("duration_too_long"),
        "the error should name the maximum: {line}"
    );

    let out = run_cli(&app.url, "alice", &request("30m", "superuser", "fix")).await?;
    let line = one_error_line("an unknown role", &out)?;
    ensure!(
        line.contains("superuser") && line.contains("unknown_role"),
        "the error should name the role: {line}"
    );

    let out = run_cli(&app.url, "alice", &request("abc", "orders_writer", "fix")).await?;
    let line = one_error_line("an unparseable duration", &out)?;
    ensure!(line.contains("abc"), "the error should quote it: {line}");

    let out = run_cli(&app.url, "alice", &request("30m", "orders_writer", "  ")).await?;
    let line = one_error_line("a blank reason", &out)?;
    ensure!(
        line.contains("justification"),
        "the error should be about the reason: {line}"
    );

    let out = run_cli(&app.url, "alice", &["show", "not-an-id"]).await?;
    let line = one_error_line("a malformed id", &out)?;
    ensure!(line.contains("not-an-id"), "{line}");

    let out = run_cli(&app.url, "bob", &["approve", "r-aaaaaaaaaaaa"]).await?;
    let line = one_error_line("an unknown id", &out)?;
    ensure!(line.contains("not_found"), "{line}");

    nothing_stored(&app, "refused CLI commands").await?;
    no_server_errors(&app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_one_cli_error_line() -> Result<()> {
    let started = std::time::Instant::now();
    let out = run_cli("http://127.0.0.1:1", "alice", &["requests"]).await?;
    let line = one_error_line("an unreachable server", &out)?;
    ensure!(
        line.contains("cannot reach") && line.contains("127.0.0.1:1"),
        "the error should say which server cannot be reached: {line}"
    );
    if started.elapsed() > Duration::from_secs(15) {
        bail!(
            "a refused connection took {:?} to report",
            started.elapsed()
        );
    }
    Ok(())
}
