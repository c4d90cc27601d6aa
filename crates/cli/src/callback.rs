//! The loopback end of `elevate login`: a tiny HTTP/1.1 listener on
//! 127.0.0.1 that waits for the browser to come back from the identity
//! provider with `GET /callback?code=…&state=…` (RFC 8252, section 7.3).
//!
//! Hand-written rather than a web framework because it answers exactly one
//! request. It only reads request heads (bounded in size and time), and
//! serves each connection on its own task: browsers open speculative
//! connections that never send anything, and one of those must not hold up
//! the real answer. Anything other than `GET /callback` gets a 404.
//!
//! Parsing the answer and rendering the page are pure functions, tested
//! without sockets.

use std::time::Duration;

use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::error::CliError;
use crate::oidc::same_secret;
use crate::text::one_line;

/// The path the provider redirects the browser to.
const CALLBACK_PATH: &str = "/callback";
/// The most a request head may take; the answer's URL is a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// How long one connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener on a free port of 127.0.0.1, waiting for the browser.
#[derive(Debug)]
pub(crate) struct Loopback {
    listener: TcpListener,
    redirect_uri: String,
}

impl Loopback {
    /// Binds 127.0.0.1 on a port the system picks. The literal address, not
    /// `localhost`, so the browser cannot end up on another interface or
    /// address family (RFC 8252, section 8.3).
    pub(crate) async fn bind() -> Result<Self, CliError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.map_err(|error| {
            CliError::SignIn(format!(
                "cannot listen on 127.0.0.1 for the browser: {error}"
            ))
        })?;
        let port = listener
            .local_addr()
            .map_err(|error| CliError::SignIn(format!("cannot listen for the browser: {error}")))?
            .port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}"),
        })
    }

    /// `http://127.0.0.1:{port}/callback`.
    pub(crate) fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits until a browser sends `GET /callback…`, or `timeout` passes.
    pub(crate) async fn receive(&self, timeout: Duration) -> Result<Arrival, CliError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Dropping the set when this returns aborts the other connections.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    // A failed accept (a connection reset before it was
                    // taken) concerns that connection only.
                    if let Ok((stream, _)) = accepted {
                        connections.spawn(read_request(stream));
                    }
                }
                Some(finished) = connections.join_next(), if !connections.is_empty() => {
                    if let Ok(Some(arrival)) = finished {
                        return Ok(arrival);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(CliError::SignIn(format!(
                        "no answer from the browser within {}; run 'elevate login' again",
                        describe(timeout)
                    )));
                }
            }
        }
    }
}

/// "5 minutes", "30 seconds".
fn describe(timeout: Duration) -> String {
    match timeout.as_secs() {
        seconds if seconds >= 60 && seconds % 60 == 0 => format!("{} minutes", seconds / 60),
        seconds => format!("{seconds} seconds"),
    }
}

/// The browser's request to the callback path, not yet answered.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// The request target, e.g. `/callback?code=…&state=…`.
    pub(crate) target: String,
    stream: TcpStream,
}

impl Arrival {
    /// Shows the browser how the sign-in ended. Best effort: the browser
    /// may be gone, and the terminal says the same anyway.
    pub(crate) async fn answer(mut self, outcome: Result<(), &CliError>) {
        let response = page(outcome);
        let _ = self.stream.write_all(response.as_bytes()).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Reads one request head; answers anything but `GET /callback` with 404
/// and returns `None` for it.
async fn read_request(mut stream: TcpStream) -> Option<Arrival> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .ok()??;
    match request_target(&head) {
        Some(("GET", target)) if is_callback(target) => Some(Arrival {
            target: target.to_string(),
            stream,
        }),
        _ => {
            let _ = stream.write_all(NOT_FOUND.as_bytes()).await;
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// The bytes up to the blank line ending the head, as text.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return None;
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8(head).ok()
}

/// Method and target of the request line (`GET /callback?… HTTP/1.1`).
fn request_target(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    version.starts_with("HTTP/1.").then_some((method, target))
}

fn target_url(target: &str) -> Option<Url> {
    if !target.starts_with('/') {
        return None;
    }
    Url::parse(&format!("http://127.0.0.1{target}")).ok()
}

fn is_callback(target: &str) -> bool {
    target_url(target).is_some_and(|url| url.path() == CALLBACK_PATH)
}

/// The authorization code from the browser's answer, once it proves to
/// answer this login: `state` must be the one sent (compared in constant
/// time), and a provider error (`error`, `error_description`) is reported
/// as such. Every parameter may appear once.
pub(crate) fn authorization_code(target: &str, expected_state: &str) -> Result<String, CliError> {
    let url = target_url(target)
        .ok_or_else(|| CliError::SignIn("the browser's answer is not a URL".to_string()))?;
    let (mut state, mut code, mut error, mut description) = (None, None, None, None);
    for (name, value) in url.query_pairs() {
        let slot = match name.as_ref() {
            "state" => &mut state,
            "code" => &mut code,
            "error" => &mut error,
            "error_description" => &mut description,
            _ => continue,
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(CliError::SignIn(format!(
                "the browser's answer repeats {:?}",
                one_line(&name)
            )));
        }
    }
    let mismatch = || {
        CliError::SignIn(
            "the browser's answer does not belong to this sign-in (state mismatch); \
             run 'elevate login' again"
                .to_string(),
        )
    };
    match &state {
        Some(state) if !same_secret(state, expected_state) => return Err(mismatch()),
        // A provider may leave out the state of an error answer it could
        // not tie to a request; a code never comes without it.
        None if error.is_none() => return Err(mismatch()),
        _ => {}
    }
    if let Some(error) = error {
        let mut reason = format!("the identity provider refused: {}", one_line(&error));
        if let Some(description) = description.filter(|text| !text.trim().is_empty()) {
            reason.push_str(&format!(" ({})", one_line(&description)));
        }
        return Err(CliError::SignIn(reason));
    }
    code.filter(|code| !code.is_empty()).ok_or_else(|| {
        CliError::SignIn("the browser's answer carries no authorization code".to_string())
    })
}

const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The whole HTTP response to the browser: a small page saying how the
/// sign-in ended. The page loads nothing and runs nothing.
fn page(outcome: Result<(), &CliError>) -> String {
    let (status, title, text) = match outcome {
        Ok(()) => (
            "200 OK",
            "Signed in",
            "Signed in to elevate; you may close this tab.".to_string(),
        ),
        Err(error) => ("400 Bad Request", "Sign-in failed", error.to_string()),
    };
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>elevate: {title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>\n",
        escape_html(&text)
    );
    format!(
        "HTTP/1.1 {status}\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Content-Security-Policy: default-src 'none'\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         Cache-Control: no-store\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `text` safe to place in HTML element content or a quoted attribute.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(target: &str) -> Result<String, String> {
        authorization_code(target, "s-123").map_err(|error| error.to_string())
    }

    #[test]
    fn the_code_of_this_login_is_taken() {
        assert_eq!(
            code("/callback?code=c%2B1&state=s-123&iss=https%3A%2F%2Fid.example"),
            Ok("c+1".to_string())
        );
    }

    #[test]
    fn a_foreign_or_missing_state_is_refused() {
        for target in [
            "/callback?code=c-1&state=s-999",
            "/callback?code=c-1&state=",
            "/callback?code=c-1",
        ] {
            let message = code(target).unwrap_err();
            assert!(message.contains("state mismatch"), "{target}: {message}");
        }
    }

    #[test]
    fn a_provider_error_is_reported_with_its_description() {
        let message =
            code("/callback?error=access_denied&error_description=End-User+aborted%0Ainteraction&state=s-123")
                .unwrap_err();
        assert_eq!(
            message,
            "sign-in failed: the identity provider refused: access_denied \
             (End-User aborted interaction)"
        );
        let message = code("/callback?error=login_required").unwrap_err();
        assert_eq!(
            message,
            "sign-in failed: the identity provider refused: login_required"
        );
    }

    #[test]
    fn a_provider_error_with_a_foreign_state_is_a_mismatch() {
        let message = code("/callback?error=access_denied&state=s-999").unwrap_err();
        assert!(message.contains("state mismatch"), "{message}");
    }

    #[test]
    fn an_answer_without_a_code_is_refused() {
        for target in ["/callback?state=s-123", "/callback?state=s-123&code="] {
            let message = code(target).unwrap_err();
            assert!(message.contains("no authorization code"), "{message}");
        }
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let message = code("/callback?code=a&code=b&state=s-123").unwrap_err();
        assert!(message.contains("repeats \"code\""), "{message}");
        assert!(code("/callback?code=a&state=s-123&state=s-123").is_err());
    }

    #[test]
    fn only_get_callback_is_the_answer() {
        let head = "GET /callback?code=a&state=b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        assert_eq!(
            request_target(head),
            Some(("GET", "/callback?code=a&state=b"))
        );
        assert!(is_callback("/callback?code=a"));
        assert!(is_callback("/callback"));
        assert!(!is_callback("/favicon.ico"));
        assert!(!is_callback("/callbackx?code=a"));
        assert!(!is_callback("http://evil.example/callback"));
        assert_eq!(request_target("GET /callback\r\n\r\n"), None);
        assert_eq!(request_target("GET  /callback HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target("\r\n"), None);
    }

    #[test]
    fn success_page_says_the_tab_may_be_closed() {
        let response = page(Ok(()));
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(response.contains("Signed in to elevate; you may close this tab."));
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn error_page_escapes_what_the_provider_said() {
        let error = CliError::SignIn(
            "the identity provider refused: x (<script>alert(\"hi\")</script> & 'more')".into(),
        );
        let response = page(Err(&error));
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(!response.contains("<script>"));
        assert!(response
            .contains("&lt;script&gt;alert(&quot;hi&quot;)&lt;/script&gt; &amp; &#39;more&#39;"));
    }

    #[tokio::test]
    async fn the_listener_waits_past_idle_and_foreign_connections() {
        let loopback = Loopback::bind().await.unwrap();
        let redirect_uri = loopback.redirect_uri().to_string();
        assert!(redirect_uri.starts_with("http://127.0.0.1:"));
        assert!(redirect_uri.ends_with("/callback"));
        let address = redirect_uri
            .trim_start_matches("http://")
            .trim_end_matches("/callback")
            .to_string();
        let browser = tokio::spawn(async move {
            // A speculative connection that never sends anything.
            let _idle = TcpStream::connect(&address).await.unwrap();
            let mut favicon = TcpStream::connect(&address).await.unwrap();
            favicon
                .write_all(b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            favicon.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
            let mut callback = TcpStream::connect(&address).await.unwrap();
            callback
                .write_all(b"GET /callback?code=c-1&state=s-123 HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut page = String::new();
            callback.read_to_string(&mut page).await.unwrap();
            page
        });
        let arrival = loopback.receive(Duration::from_secs(20)).await.unwrap();
        assert_eq!(authorization_code(&arrival.target, "s-123").unwrap(), "c-1");
        arrival.answer(Ok(())).await;
        let page = browser.await.unwrap();
        assert!(page.contains("you may close this tab"), "{page}");
    }

    #[tokio::test]
    async fn the_listener_gives_up_after_the_timeout() {
        let loopback = Loopback::bind().await.unwrap();
        let error = loopback
            .receive(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no answer from the browser"));
    }
}
