//! The one error type of the client and how a server's error answer becomes
//! it.
//!
//! Every variant displays as a single line: the binary prints `error: {e}`
//! and exits 1, so a message that spans lines or carries terminal escapes
//! would garble the user's terminal. Text that comes from the server is
//! passed through [`one_line`] before it lands in a variant.

use serde::Deserialize;

use crate::text::one_line;

/// Why a client command did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No bearer token was configured; checked before any network traffic.
    #[error("no API token: set ELEVATE_TOKEN or pass --token")]
    NoToken,

    /// The token cannot be put into an HTTP header (control or non-ASCII
    /// characters, usually a copy-and-paste accident).
    #[error("the API token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,

    /// `--url` is not an absolute http(s) URL.
    #[error("invalid --url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A command-line argument the client checks itself (times) is wrong.
    #[error("{0}")]
    InvalidArgument(String),

    /// The server could not be contacted at all (refused, DNS, TLS, timeout).
    #[error("cannot reach elevate at {url}: {reason}")]
    Unreachable { url: String, reason: String },

    /// The server refused the call with its structured error body.
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },

    /// The server refused the call without a structured error body (a proxy
    /// in between, or a crash).
    #[error("server answered HTTP {status}")]
    Http { status: String },

    /// The server answered successfully but not in the shape we understand.
    #[error("unexpected answer from elevate: {0}")]
    Protocol(String),

    /// `audit verify` found a break in the hash chain. The report has been
    /// printed already; this makes the process exit non-zero.
    #[error("audit chain verification failed at event {broken_at}")]
    AuditChainBroken { broken_at: String },

    /// Writing to standard output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// The body elevate sends with every 4xx/5xx answer. Both fields are
/// optional here so that a partial body still yields the best message.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// Turns an error answer (status and raw body) into a one-line error.
///
/// `status` is the numeric code, `status_text` what is shown when the body
/// is not elevate's JSON (e.g. "502 Bad Gateway").
pub(crate) fn error_from_answer(status: u16, status_text: &str, body: &[u8]) -> CliError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let message = parsed
        .message
        .map(|message| one_line(&message))
        .filter(|message| !message.is_empty());
    let code = parsed
        .code
        .map(|code| one_line(&code))
        .filter(|code| !code.is_empty());
    match (message, code) {
        (Some(message), Some(code)) => CliError::Api {
            status,
            code,
            message,
        },
        (Some(message), None) => CliError::Api {
            status,
            code: format!("HTTP {status}"),
            message,
        },
        (None, Some(code)) => CliError::Api {
            status,
            code: code.clone(),
            message: format!("server refused the request with HTTP {status}"),
        },
        (None, None) => CliError::Http {
            status: one_line(status_text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_error_body_becomes_message_and_code() {
        let body = br#"{"code":"self_approval","message":"you cannot approve your own request"}"#;
        let error = error_from_answer(403, "403 Forbidden", body);
        assert_eq!(
            error.to_string(),
            "you cannot approve your own request (self_approval)"
        );
    }

    #[test]
    fn multi_line_server_message_is_shown_on_one_line() {
        let body =
            r#"{"code":"invalid_request","message":"bad reason:\nline two\r\n\u001b[31mred"}"#;
        let error = error_from_answer(400, "400 Bad Request", body.as_bytes());
        let shown = error.to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\u{1b}'));
        assert!(shown.starts_with("bad reason: line two"), "{shown}");
        assert!(shown.ends_with("(invalid_request)"), "{shown}");
    }

    #[test]
    fn extra_fields_in_error_body_are_ignored() {
        let body = br#"{"code":"not_found","message":"no such request","request":"r-1"}"#;
        let error = error_from_answer(404, "404 Not Found", body);
        assert_eq!(error.to_string(), "no such request (not_found)");
    }

    #[test]
    fn non_json_error_body_names_the_http_status() {
        let error = error_from_answer(502, "502 Bad Gateway", b"<html>bad gateway</html>");
        assert_eq!(error.to_string(), "server answered HTTP 502 Bad Gateway");
    }

    #[test]
    fn empty_error_body_names_the_http_status() {
        let error = error_from_answer(500, "500 Internal Server Error", b"");
        assert_eq!(
            error.to_string(),
            "server answered HTTP 500 Internal Server Error"
        );
    }

    #[test]
    fn message_without_code_falls_back_to_the_status() {
        let error = error_from_answer(409, "409 Conflict", br#"{"message":"already decided"}"#);
        assert_eq!(error.to_string(), "already decided (HTTP 409)");
    }

    #[test]
    fn every_client_error_displays_as_one_line() {
        let errors = [
            CliError::NoToken,
            CliError::InvalidToken,
            CliError::Unreachable {
                url: "http://127.0.0.1:7070".into(),
                reason: "Connection refused (os error 111)".into(),
            },
            CliError::AuditChainBroken {
                broken_at: "17".into(),
            },
        ];
        for error in errors {
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }
}
