//! The client end to end over loopback: a real TCP socket and real HTTP, with
//! a scripted peer standing in for the server, so what goes on the wire and
//! what the user sees are both checked.

// clippy's allow-*-in-tests covers `#[test]` functions only, not the helpers
// of a test binary; here too a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use elevate_cli::{run_to, run_with_notices, AuditAction, ClientArgs, ClientCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the scripted server received it.
#[derive(Debug, Clone)]
struct Received {
    /// "GET /api/v1/me"
    line: String,
    head: String,
    body: String,
}

/// One canned answer.
#[derive(Clone)]
struct Answer {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn json_answer(status: &'static str, body: serde_json::Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: body.to_string(),
    }
}

/// Reads one request (head and body by content-length).
async fn read_request(socket: &mut tokio::net::TcpStream) -> Received {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let read = socket.read(&mut chunk).await.unwrap();
        assert!(read > 0, "client closed before sending a request");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let read = socket.read(&mut chunk).await.unwrap();
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).to_string();
    let line = head.lines().next().unwrap_or_default();
    let line = line.rsplit_once(' ').map(|(line, _)| line).unwrap_or(line);
    Received {
        line: line.to_string(),
        head,
        body,
    }
}

async fn write_answer(socket: &mut tokio::net::TcpStream, answer: &Answer) {
    let response = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        answer.status,
        answer.content_type,
        answer.body.len(),
        answer.body
    );
    socket.write_all(response.as_bytes()).await.unwrap();
    socket.shutdown().await.unwrap();
}

/// Serves `answers` in order, one per connection, and records what it got.
async fn scripted_server(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let request = read_request(&mut socket).await;
            log.lock().unwrap().push(request);
            write_answer(&mut socket, &answer).await;
        }
    });
    (url, received)
}

fn args(url: &str) -> ClientArgs {
    ClientArgs {
        url: Some(url.to_string()),
        token: Some("secret-token".to_string()),
        // Never the user's real sign-in; tests that sign in use a temporary
        // directory.
        config_dir: Some(PathBuf::from("/nonexistent/elevate-cli-test")),
        json: false,
        no_browser: true,
    }
}

async fn run_captured(args: ClientArgs, command: ClientCommand) -> (Result<(), String>, String) {
    let mut out = Vec::new();
    let result = run_to(args, command, &mut out)
        .await
        .map_err(|error| error.to_string());
    (result, String::from_utf8(out).unwrap())
}

fn audit(action: Option<AuditAction>) -> ClientCommand {
    ClientCommand::Audit {
        action,
        since: None,
        request: None,
        limit: None,
    }
}

#[tokio::test]
async fn whoami_sends_the_bearer_token_and_prints_the_identity() {
    let (url, received) = scripted_server(vec![json_answer(
        "200 OK",
        serde_json::json!({"name": "alice", "email": "alice@example.com", "display_name": "アリス",
                           "groups": ["dba", "ops"], "admin": false, "auditor": true, "new_field": 1}),
    )])
    .await;
    let (result, out) = run_captured(args(&url), ClientCommand::Whoami).await;
    assert_eq!(result, Ok(()));
    assert!(out.contains("アリス"), "{out}");
    assert!(out.contains("dba, ops"), "{out}");
    assert!(out.contains("auditor"), "{out}");
    let received = received.lock().unwrap();
    assert_eq!(received[0].line, "GET /api/v1/me");
    assert!(received[0]
        .head
        .to_ascii_lowercase()
        .contains("authorization: bearer secret-token"));
}

#[tokio::test]
async fn approve_posts_the_comment_and_reports_progress() {
    let (url, received) = scripted_server(vec![json_answer(
        "200 OK",
        serde_json::json!({"id": "r-abcd2345efgh", "state": "pending", "quorum": 2,
                           "approvals": [{"by": "user:bob", "at": "2026-11-24T09:00:00Z", "comment": "了解"}]}),
    )])
    .await;
    let command = ClientCommand::Approve {
        id: "r-abcd2345efgh".into(),
        comment: Some("了解".into()),
    };
    let (result, out) = run_captured(args(&url), command).await;
    assert_eq!(result, Ok(()));
    assert_eq!(out, "r-abcd2345efgh approved (1 of 2 approvals)\n");
    let received = received.lock().unwrap();
    assert_eq!(
        received[0].line,
        "POST /api/v1/requests/r-abcd2345efgh/approve"
    );
    let body: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"comment": "了解"}));
}

#[tokio::test]
async fn server_error_body_becomes_one_line() {
    let (url, _) = scripted_server(vec![json_answer(
        "403 Forbidden",
        serde_json::json!({"code": "self_approval", "message": "you cannot approve your own request"}),
    )])
    .await;
    let command = ClientCommand::Approve {
        id: "r-abcd2345efgh".into(),
        comment: None,
    };
    let (result, out) = run_captured(args(&url), command).await;
    assert_eq!(
        result,
        Err("you cannot approve your own request (self_approval)".to_string())
    );
    assert_eq!(out, "");
}

#[tokio::test]
async fn non_json_error_names_the_status() {
    let (url, _) = scripted_server(vec![Answer {
        status: "502 Bad Gateway",
        content_type: "text/html",
        body: "<h1>bad gateway</h1>".into(),
    }])
    .await;
    let (result, _) = run_captured(
        args(&url),
        ClientCommand::Eligible {
            search: None,
            target: None,
            role: None,
            tag: None,
            limit: None,
            offset: None,
        },
    )
    .await;
    assert_eq!(
        result,
        Err("server answered HTTP 502 Bad Gateway".to_string())
    );
}

#[tokio::test]
async fn redirects_are_not_followed_with_the_token() {
    let (url, received) = scripted_server(vec![Answer {
        status: "307 Temporary Redirect\r\nlocation: http://elsewhere.invalid/steal",
        content_type: "text/plain",
        body: String::new(),
    }])
    .await;
    let (result, _) = run_captured(args(&url), ClientCommand::Whoami).await;
    assert_eq!(
        result,
        Err("server answered HTTP 307 Temporary Redirect".to_string())
    );
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn unreachable_server_is_named_with_the_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (result, _) = run_captured(args(&url), ClientCommand::Whoami).await;
    let message = result.unwrap_err();
    assert!(
        message.starts_with(&format!("cannot reach elevate at {url}: ")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!message.contains('\n'));
}

#[tokio::test]
async fn missing_token_fails_before_contacting_the_server() {
    let (url, received) = scripted_server(vec![]).await;
    let config = tempfile::tempdir().unwrap();
    let mut no_token = args(&url);
    no_token.token = None;
    no_token.config_dir = Some(config.path().to_path_buf());
    let (result, _) = run_captured(no_token, ClientCommand::Whoami).await;
    assert_eq!(
        result,
        Err("no API token: set ELEVATE_TOKEN, pass --token, or run 'elevate login'".to_string())
    );
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bad_time_fails_before_contacting_the_server() {
    let (url, received) = scripted_server(vec![]).await;
    let command = ClientCommand::Audit {
        action: None,
        since: Some("last tuesday".into()),
        request: None,
        limit: None,
    };
    let (result, _) = run_captured(args(&url), command).await;
    assert!(result
        .unwrap_err()
        .starts_with("invalid --since \"last tuesday\""));
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn json_flag_prints_the_answer_pretty() {
    let (url, _) = scripted_server(vec![json_answer(
        "200 OK",
        serde_json::json!({"grants": [{"id": "r-1", "justification": "\u{1b}[2Jhidden"}]}),
    )])
    .await;
    let mut json = args(&url);
    json.json = true;
    let command = ClientCommand::Grants {
        active: true,
        all: true,
    };
    let (result, out) = run_captured(json, command).await;
    assert_eq!(result, Ok(()));
    assert!(out.starts_with("{\n  \"grants\": ["), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "escapes stay escaped in JSON: {out}"
    );
}

#[tokio::test]
async fn audit_export_copies_json_lines_verbatim() {
    let lines =
        "{\"seq\":1,\"action\":\"request.created\"}\n{\"seq\":2,\"action\":\"request.approved\"}\n";
    let (url, received) = scripted_server(vec![Answer {
        status: "200 OK",
        content_type: "application/x-ndjson",
        body: lines.to_string(),
    }])
    .await;
    let (result, out) = run_captured(args(&url), audit(Some(AuditAction::Export))).await;
    assert_eq!(result, Ok(()));
    assert_eq!(out, lines);
    assert_eq!(received.lock().unwrap()[0].line, "GET /api/v1/audit/export");
}

#[tokio::test]
async fn broken_audit_chain_prints_the_report_and_fails() {
    let (url, _) = scripted_server(vec![json_answer(
        "200 OK",
        serde_json::json!({"ok": false, "events": 40, "broken_at": 17, "problem": "hash of event 17 does not match"}),
    )])
    .await;
    let (result, out) = run_captured(args(&url), audit(Some(AuditAction::Verify))).await;
    assert_eq!(
        out,
        "audit chain BROKEN at event 17: hash of event 17 does not match (40 events checked)\n"
    );
    assert_eq!(
        result,
        Err("audit chain verification failed at event 17".to_string())
    );
}

#[tokio::test]
async fn broken_audit_chain_fails_in_json_mode_too() {
    let (url, _) = scripted_server(vec![json_answer(
        "200 OK",
        serde_json::json!({"ok": false, "events": 3, "broken_at": 2, "problem": "gap"}),
    )])
    .await;
    let mut json = args(&url);
    json.json = true;
    let (result, out) = run_captured(json, audit(Some(AuditAction::Verify))).await;
    assert!(out.contains("\"broken_at\": 2"), "{out}");
    assert!(result.is_err());
}

#[tokio::test]
async fn grant_listing_queries_scope_and_activity() {
    let (url, received) = scripted_server(vec![json_answer(
        "200 OK",
        serde_json::json!({"grants": []}),
    )])
    .await;
    let command = ClientCommand::Grants {
        active: true,
        all: false,
    };
    let (result, out) = run_captured(args(&url), command).await;
    assert_eq!(result, Ok(()));
    assert_eq!(out, "no grants\n");
    assert_eq!(
        received.lock().unwrap()[0].line,
        "GET /api/v1/grants?active=true&scope=mine"
    );
}

// ---------------------------------------------------------------------------
// Signing in.
//
// The identity provider is scripted here, on purpose: these tests check
// what the CLI itself sends, checks and stores, request by request (the PKCE
// verifier against the challenge, state, nonce, the file's mode, the
// retry after a step-up). The same flow against a real provider (panva's
// oidc-provider) and the real server is tested in crates/server/tests.

/// A peer answering by "METHOD /path" (query ignored). Each route's
/// answers are used in order; the last one is repeated.
#[derive(Clone, Default)]
struct Routes {
    answers: Arc<Mutex<HashMap<String, VecDeque<Answer>>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Routes {
    fn add(&self, route: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .entry(route.to_string())
            .or_default()
            .push_back(answer);
    }

    fn answer(&self, request: &Received) -> Answer {
        let route = request.line.split('?').next().unwrap_or_default();
        let mut answers = self.answers.lock().unwrap();
        let queue = answers.entry(route.to_string()).or_default();
        let answer = if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        };
        answer.unwrap_or_else(|| {
            json_answer(
                "404 Not Found",
                serde_json::json!({"code": "not_found", "message": route}),
            )
        })
    }

    /// Requests received for `route`, in order.
    fn received(&self, route: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|request| request.line.split('?').next() == Some(route))
            .cloned()
            .collect()
    }

    async fn serve(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let routes = self.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let routes = routes.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut socket).await;
                    let answer = routes.answer(&request);
                    routes.received.lock().unwrap().push(request);
                    write_answer(&mut socket, &answer).await;
                });
            }
        });
        url
    }
}

/// Standard error of the command, line by line as it is written.
struct Notices(tokio::sync::mpsc::UnboundedSender<String>);

impl std::io::Write for Notices {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(String::from_utf8_lossy(bytes).to_string());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn notices() -> (Notices, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    (Notices(sender), receiver)
}

/// A provider with a discovery document and an authorization endpoint
/// that is never visited (the test's browser goes straight to the
/// callback).
async fn provider() -> (Routes, String) {
    let routes = Routes::default();
    let url = routes.serve().await;
    routes.add(
        "GET /.well-known/openid-configuration",
        json_answer(
            "200 OK",
            serde_json::json!({
                "issuer": url,
                "authorization_endpoint": format!("{url}/auth"),
                "token_endpoint": format!("{url}/token"),
                "code_challenge_methods_supported": ["S256"],
            }),
        ),
    );
    (routes, url)
}

/// An elevate server whose identity provider is `issuer`.
async fn elevate_with_sign_in(issuer: &str) -> (Routes, String) {
    let routes = Routes::default();
    let url = routes.serve().await;
    routes.add(
        "GET /api/v1/auth/config",
        json_answer(
            "200 OK",
            serde_json::json!({"oidc": {
                "issuer": issuer, "cli_client_id": "elevate-cli",
                "scopes": ["openid", "profile", "email", "groups"],
                "step_up": {"acr_values": "urn:elevate:mfa", "max_age": 900}}}),
        ),
    );
    routes.add(
        "GET /api/v1/me",
        json_answer(
            "200 OK",
            serde_json::json!({"name": "alice", "email": "alice@example.com",
                               "groups": ["dba", "ops"], "admin": false, "auditor": false,
                               "auth": {"method": "oidc", "issuer": issuer, "amr": []}}),
        ),
    );
    (routes, url)
}

fn jwt(claims: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn query(url: &reqwest::Url) -> HashMap<String, String> {
    url.query_pairs()
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

/// What the test's browser does once it has the address.
enum Browser {
    /// The provider signs the user in: the token endpoint gets an ID token
    /// for this login, and the browser brings back the code.
    SignsIn { subject: &'static str },
    /// The provider reports an error to the callback.
    Denied,
    /// Something else calls the callback with another state.
    ForeignState,
}

/// Plays the browser: waits for the address line on standard error,
/// arranges the provider's answer and calls the loopback callback as the
/// provider's redirect would. Returns everything written to standard error
/// before the address, the address, and the page the browser got.
async fn play_browser(
    mut notices: tokio::sync::mpsc::UnboundedReceiver<String>,
    provider: Routes,
    issuer: String,
    browser: Browser,
) -> (String, reqwest::Url, String) {
    let mut written = String::new();
    let address = loop {
        written.push_str(&notices.recv().await.unwrap());
        // Only a whole line: one writeln! may arrive in several writes.
        let line = written
            .split_inclusive('\n')
            .find(|line| line.starts_with(elevate_cli::ADDRESS_PROMPT) && line.ends_with('\n'));
        if let Some(line) = line {
            let address = line[elevate_cli::ADDRESS_PROMPT.len()..].trim();
            break reqwest::Url::parse(address).unwrap();
        }
    };
    let parameters = query(&address);
    let (code, state) = match browser {
        Browser::SignsIn { subject } => {
            let id_token = jwt(serde_json::json!({
                "iss": issuer, "aud": "elevate-cli", "sub": subject,
                "nonce": parameters["nonce"],
                "exp": chrono::Utc::now().timestamp() + 3600,
                "iat": chrono::Utc::now().timestamp(),
            }));
            provider.add(
                "POST /token",
                json_answer(
                    "200 OK",
                    serde_json::json!({"id_token": id_token, "access_token": "at",
                                       "token_type": "Bearer", "expires_in": 3600}),
                ),
            );
            ("code=code-1".to_string(), parameters["state"].clone())
        }
        Browser::Denied => (
            "error=access_denied&error_description=%3Cb%3Eno%3C%2Fb%3E".to_string(),
            parameters["state"].clone(),
        ),
        Browser::ForeignState => ("code=code-1".to_string(), "someone-else".to_string()),
    };
    let mut callback = reqwest::Url::parse(&parameters["redirect_uri"]).unwrap();
    callback.set_query(Some(&format!("{code}&state={state}")));
    let page = reqwest::get(callback).await.unwrap().text().await.unwrap();
    (written, address, page)
}

fn signed_out_args(url: Option<&str>, config: &std::path::Path) -> ClientArgs {
    ClientArgs {
        url: url.map(str::to_string),
        token: None,
        config_dir: Some(config.to_path_buf()),
        json: false,
        no_browser: true,
    }
}

async fn run_noticed(
    args: ClientArgs,
    command: ClientCommand,
    notices: &mut Notices,
) -> (Result<(), String>, String) {
    let mut out = Vec::new();
    let result = run_with_notices(args, command, &mut out, notices)
        .await
        .map_err(|error| error.to_string());
    (result, String::from_utf8(out).unwrap())
}

fn stored(config: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(config.join("credentials.json")).unwrap()).unwrap()
}

/// A sign-in stored as `elevate login` would.
fn store(config: &std::path::Path, url: &str, issuer: &str, token: &str, expires_in: i64) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let credentials = serde_json::json!({
        "url": url, "issuer": issuer, "id_token": token,
        "expires_at": chrono::Utc::now() + chrono::TimeDelta::seconds(expires_in),
    });
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(config.join("credentials.json"))
        .unwrap();
    file.write_all(credentials.to_string().as_bytes()).unwrap();
}

fn bearer(request: &Received) -> Option<String> {
    request.head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_string())
    })
}

#[tokio::test]
async fn login_runs_the_code_flow_with_pkce_then_whoami_and_logout_use_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let (provider, issuer) = provider().await;
    let (elevate, url) = elevate_with_sign_in(&issuer).await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("elevate");

    let (mut notices, lines) = notices();
    let browser = tokio::spawn(play_browser(
        lines,
        provider.clone(),
        issuer.clone(),
        Browser::SignsIn { subject: "alice" },
    ));
    let (result, out) = run_noticed(
        signed_out_args(Some(&url), &config),
        ClientCommand::Login { step_up: false },
        &mut notices,
    )
    .await;
    let (written, address, page) = browser.await.unwrap();
    assert_eq!(result, Ok(()));
    assert!(
        out.starts_with(&format!(
            "Signed in to {url} as alice (groups: dba, ops); expires "
        )),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        page.contains("Signed in to elevate; you may close this tab."),
        "{page}"
    );
    assert_eq!(
        written.lines().filter(|line| line.contains("http")).count(),
        1,
        "{written}"
    );

    // The authorization request: code flow, PKCE S256, no step-up.
    assert_eq!(address.path(), "/auth");
    let parameters = query(&address);
    assert_eq!(parameters["response_type"], "code");
    assert_eq!(parameters["client_id"], "elevate-cli");
    assert_eq!(parameters["scope"], "openid profile email groups");
    assert_eq!(parameters["code_challenge_method"], "S256");
    assert!(parameters["redirect_uri"].starts_with("http://127.0.0.1:"));
    assert!(parameters["redirect_uri"].ends_with("/callback"));
    assert_ne!(parameters["state"], parameters["nonce"]);
    assert!(!parameters.contains_key("prompt"));
    assert!(!parameters.contains_key("acr_values"));

    // The code exchange: a public client proving the code with the verifier.
    let exchanges = provider.received("POST /token");
    assert_eq!(exchanges.len(), 1);
    assert_eq!(bearer(&exchanges[0]), None);
    let form: HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x/?{}", exchanges[0].body))
            .map(|url| query(&url))
            .unwrap();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "code-1");
    assert_eq!(form["client_id"], "elevate-cli");
    assert_eq!(form["redirect_uri"], parameters["redirect_uri"]);
    assert!(!form.contains_key("client_secret"));
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(form["code_verifier"].as_bytes()))
    };
    assert_eq!(challenge, parameters["code_challenge"]);

    // The server was asked who this is with the new token, before storing it.
    let id_token = stored(&config)["id_token"].as_str().unwrap().to_string();
    assert_eq!(
        bearer(&elevate.received("GET /api/v1/auth/config")[0]),
        None
    );
    assert_eq!(
        bearer(&elevate.received("GET /api/v1/me")[0]),
        Some(format!("Bearer {id_token}"))
    );
    assert_eq!(stored(&config)["url"], url.as_str());
    assert_eq!(stored(&config)["issuer"], issuer.as_str());
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&config), 0o700);
    assert_eq!(mode(&config.join("credentials.json")), 0o600);
    assert!(!out.contains(&id_token) && !written.contains(&id_token));

    // Without --url or --token, the next command uses the stored sign-in.
    let (result, out) = run_noticed(
        signed_out_args(None, &config),
        ClientCommand::Whoami,
        &mut notices,
    )
    .await;
    assert_eq!(result, Ok(()));
    assert!(out.contains("single sign-on"), "{out}");
    let calls = elevate.received("GET /api/v1/me");
    assert_eq!(bearer(&calls[1]), Some(format!("Bearer {id_token}")));

    // Logging out removes it; logging out again is quietly fine.
    let (result, out) = run_noticed(
        signed_out_args(None, &config),
        ClientCommand::Logout,
        &mut notices,
    )
    .await;
    assert_eq!(result, Ok(()));
    assert_eq!(
        out,
        format!(
            "Signed out of {url}: removed {}\n",
            config.join("credentials.json").display()
        )
    );
    assert!(!config.join("credentials.json").exists());
    let (result, out) = run_noticed(
        signed_out_args(None, &config),
        ClientCommand::Logout,
        &mut notices,
    )
    .await;
    assert_eq!((result, out), (Ok(()), String::new()));
}

#[tokio::test]
async fn step_up_required_signs_in_again_and_retries_once() {
    let (provider, issuer) = provider().await;
    let (elevate, url) = elevate_with_sign_in(&issuer).await;
    elevate.add(
        "POST /api/v1/requests",
        json_answer(
            "401 Unauthorized",
            serde_json::json!({"code": "step_up_required",
                "message": "orders_writer needs a multi-factor sign-in within 10 minutes",
                "step_up": {"acr_values": "urn:elevate:mfa", "max_age": 600,
                            "login_url": "/auth/login?step_up=1"}}),
        ),
    );
    elevate.add(
        "POST /api/v1/requests",
        json_answer(
            "200 OK",
            serde_json::json!({"id": "r-abcd2345efgh", "state": "approved"}),
        ),
    );
    let config = tempfile::tempdir().unwrap();
    store(config.path(), &url, &issuer, "old.id.token", 3600);

    let (mut notices, lines) = notices();
    let browser = tokio::spawn(play_browser(
        lines,
        provider.clone(),
        issuer.clone(),
        Browser::SignsIn { subject: "alice" },
    ));
    let command = ClientCommand::Request {
        target: "pg-prod".into(),
        resource: "orders".into(),
        role: "orders_writer".into(),
        duration: "1h".into(),
        start: None,
        reason: "fix".into(),
        ticket: None,
        break_glass: false,
    };
    let (result, out) =
        run_noticed(signed_out_args(None, config.path()), command, &mut notices).await;
    let (written, address, _) = browser.await.unwrap();
    assert_eq!(result, Ok(()));
    assert_eq!(
        out,
        "request r-abcd2345efgh created: access is being granted\n"
    );
    assert!(
        written.starts_with(
            "orders_writer needs a multi-factor sign-in within 10 minutes; signing in again\n"
        ),
        "{written}"
    );
    let parameters = query(&address);
    assert_eq!(parameters["acr_values"], "urn:elevate:mfa");
    assert_eq!(parameters["max_age"], "600");
    assert_eq!(parameters["prompt"], "login");

    let new_token = stored(config.path())["id_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_token, "old.id.token");
    let calls = elevate.received("POST /api/v1/requests");
    assert_eq!(calls.len(), 2);
    assert_eq!(bearer(&calls[0]).as_deref(), Some("Bearer old.id.token"));
    assert_eq!(bearer(&calls[1]), Some(format!("Bearer {new_token}")));
    assert_eq!(calls[0].body, calls[1].body);
}

#[tokio::test]
async fn step_up_with_a_given_token_says_to_log_in_with_step_up() {
    let (url, received) = scripted_server(vec![json_answer(
        "401 Unauthorized",
        serde_json::json!({"code": "step_up_required",
            "message": "this role needs a recent multi-factor sign-in",
            "step_up": {"acr_values": "urn:elevate:mfa", "max_age": 900, "login_url": "/auth/login"}}),
    )])
    .await;
    let command = ClientCommand::Approve {
        id: "r-abcd2345efgh".into(),
        comment: None,
    };
    let (result, _) = run_captured(args(&url), command).await;
    assert_eq!(
        result,
        Err(
            "this role needs a recent multi-factor sign-in (step_up_required); \
             run 'elevate login --step-up' and try again"
                .to_string()
        )
    );
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_expired_sign_in_fails_before_contacting_the_server() {
    let (url, received) = scripted_server(vec![]).await;
    let config = tempfile::tempdir().unwrap();
    store(
        config.path(),
        &url,
        "http://127.0.0.1:1",
        "old.id.token",
        -60,
    );
    let (result, _) = run_captured(
        signed_out_args(None, config.path()),
        ClientCommand::Eligible {
            search: None,
            target: None,
            role: None,
            tag: None,
            limit: None,
            offset: None,
        },
    )
    .await;
    let message = result.unwrap_err();
    assert!(
        message.starts_with(&format!("your sign-in to {url} expired at ")),
        "{message}"
    );
    assert!(message.ends_with("; run 'elevate login'"), "{message}");
    assert!(received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_token_refused_by_the_server_says_to_log_in() {
    let (url, _) = scripted_server(vec![json_answer(
        "401 Unauthorized",
        serde_json::json!({"code": "token_expired", "message": "the sign-in expired"}),
    )])
    .await;
    let (result, _) = run_captured(args(&url), ClientCommand::Whoami).await;
    assert_eq!(
        result,
        Err(
            "the sign-in expired (token_expired); run 'elevate login' to sign in again".to_string()
        )
    );
}

#[tokio::test]
async fn login_to_a_server_without_identity_provider_says_to_use_a_token() {
    let older_server = json_answer(
        "404 Not Found",
        serde_json::json!({"code": "not_found", "message": "no such request (or you may not see it)"}),
    );
    let (url, received) = scripted_server(vec![
        json_answer("200 OK", serde_json::json!({"oidc": null})),
        older_server,
    ])
    .await;
    let config = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let (result, _) = run_captured(
            signed_out_args(Some(&url), config.path()),
            ClientCommand::Login { step_up: false },
        )
        .await;
        assert_eq!(
            result,
            Err("this server has no identity provider; use an API token".to_string())
        );
    }
    assert_eq!(received.lock().unwrap()[0].line, "GET /api/v1/auth/config");
    assert!(!config.path().join("credentials.json").exists());
}

#[tokio::test]
async fn a_provider_error_is_shown_in_the_terminal_and_escaped_in_the_browser() {
    let (provider, issuer) = provider().await;
    let (_elevate, url) = elevate_with_sign_in(&issuer).await;
    let config = tempfile::tempdir().unwrap();
    let (mut notices, lines) = notices();
    let browser = tokio::spawn(play_browser(
        lines,
        provider.clone(),
        issuer,
        Browser::Denied,
    ));
    let (result, _) = run_noticed(
        signed_out_args(Some(&url), config.path()),
        ClientCommand::Login { step_up: true },
        &mut notices,
    )
    .await;
    let (_, address, page) = browser.await.unwrap();
    assert_eq!(
        result,
        Err("sign-in failed: the identity provider refused: access_denied (<b>no</b>)".to_string())
    );
    assert!(
        page.contains("access_denied (&lt;b&gt;no&lt;/b&gt;)"),
        "{page}"
    );
    // --step-up takes its requirements from the server's settings.
    let parameters = query(&address);
    assert_eq!(parameters["acr_values"], "urn:elevate:mfa");
    assert_eq!(parameters["max_age"], "900");
    assert_eq!(parameters["prompt"], "login");
    assert!(provider.received("POST /token").is_empty());
    assert!(!config.path().join("credentials.json").exists());
}

#[tokio::test]
async fn an_answer_for_another_login_is_refused_without_redeeming_the_code() {
    let (provider, issuer) = provider().await;
    let (_elevate, url) = elevate_with_sign_in(&issuer).await;
    let config = tempfile::tempdir().unwrap();
    let (mut notices, lines) = notices();
    let browser = tokio::spawn(play_browser(
        lines,
        provider.clone(),
        issuer,
        Browser::ForeignState,
    ));
    let (result, _) = run_noticed(
        signed_out_args(Some(&url), config.path()),
        ClientCommand::Login { step_up: false },
        &mut notices,
    )
    .await;
    let (_, _, page) = browser.await.unwrap();
    assert!(result.unwrap_err().contains("state mismatch"));
    assert!(page.contains("Sign-in failed"), "{page}");
    assert!(provider.received("POST /token").is_empty());
    assert!(!config.path().join("credentials.json").exists());
}
