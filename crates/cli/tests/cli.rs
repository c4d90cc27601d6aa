//! The client end to end over loopback: a real TCP socket and real HTTP, with
//! a scripted peer standing in for the server, so what goes on the wire and
//! what the user sees are both checked.

// clippy's allow-*-in-tests covers `#[test]` functions only, not the helpers
// of a test binary; here too a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use elevate_cli::{run_to, AuditAction, ClientArgs, ClientCommand};
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

/// Serves `answers` in order, one per connection, and records what it got.
async fn scripted_server(answers: Vec<Answer>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    tokio::spawn(async move {
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
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
            log.lock().unwrap().push(Received {
                line: line.to_string(),
                head,
                body,
            });
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
    });
    (url, received)
}

fn args(url: &str) -> ClientArgs {
    ClientArgs {
        url: url.to_string(),
        token: Some("secret-token".to_string()),
        json: false,
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
    let (result, _) = run_captured(args(&url), ClientCommand::Eligible).await;
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
    let mut no_token = args(&url);
    no_token.token = None;
    let (result, _) = run_captured(no_token, ClientCommand::Whoami).await;
    assert_eq!(
        result,
        Err("no API token: set ELEVATE_TOKEN or pass --token".to_string())
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
