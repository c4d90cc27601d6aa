//! The one error type of the client and how a server's error answer becomes
//! it.
//!
//! Every variant displays as a single line: the binary prints `error: {e}`
//! and exits 1, so a message that spans lines or carries terminal escapes
//! would garble the user's terminal. Text that comes from the server is
//! passed through [`one_line`] before it lands in a variant.

use serde::Deserialize;

use crate::oidc::StepUp;
use crate::text::one_line;

/// Why a client command did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// No bearer token was configured; checked before any network traffic.
    #[error("no API token: set ELEVATE_TOKEN, pass --token, or run 'elevate login'")]
    NoToken,

    /// The token stored by `elevate login` has expired; checked before any
    /// network traffic. `at` is already in the user's time zone.
    #[error("your sign-in to {url} expired at {at}; run 'elevate login'")]
    SignInExpired { url: String, at: String },

    /// `--url` names another server than the stored sign-in belongs to. The
    /// token is not sent there: it would hand one server a credential for
    /// another.
    #[error(
        "you are signed in to {signed_in}, not {url}: run 'elevate --url {url} login' \
         or pass --token"
    )]
    SignedInElsewhere { signed_in: String, url: String },

    /// The credentials file cannot be read, written or trusted.
    #[error("credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },

    /// `elevate login` against a server that only knows API tokens.
    #[error("this server has no identity provider; use an API token")]
    NoIdentityProvider,

    /// The browser sign-in did not complete (provider refused, answer did
    /// not match this login, timeout, unusable provider configuration).
    #[error("sign-in failed: {0}")]
    SignIn(String),

    /// The identity provider could not be contacted during `elevate login`.
    #[error("cannot reach the identity provider at {url}: {reason}")]
    ProviderUnreachable { url: String, reason: String },

    /// The server refused the token itself (expired, for another audience,
    /// unverifiable, ...); `advice` says what to do about it.
    #[error("{message} ({code}); {advice}")]
    TokenRefused {
        status: u16,
        code: String,
        message: String,
        advice: &'static str,
    },

    /// The action needs a more recent or stronger sign-in than the token
    /// shows. `step_up` is what to ask the identity provider for.
    #[error("{message} (step_up_required); run 'elevate login --step-up' and try again")]
    StepUpRequired { message: String, step_up: StepUp },

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
    /// Only with `step_up_required`: what a new sign-in must satisfy.
    step_up: Option<StepUp>,
}

/// What to do when the server refuses the token with `code`, for the codes
/// that mean "this token is not (or no longer) good here".
fn token_advice(code: &str) -> Option<&'static str> {
    let advice = match code {
        "token_expired" => "run 'elevate login' to sign in again",
        "token_not_yet_valid" => {
            "this computer's or the server's clock is off; check it or run 'elevate login'"
        }
        "token_malformed"
        | "token_bad_signature"
        | "token_unknown_key"
        | "token_alg_not_allowed" => "run 'elevate login' for a fresh token",
        "token_wrong_issuer" | "token_wrong_audience" => {
            "the token was issued for another server; run 'elevate login' against this one"
        }
        "identity_conflict" => "an elevate administrator has to resolve this",
        _ => return None,
    };
    Some(advice)
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
    if code.as_deref() == Some("step_up_required") {
        return CliError::StepUpRequired {
            message: message
                .unwrap_or_else(|| "this needs a recent multi-factor sign-in".to_string()),
            step_up: parsed.step_up.unwrap_or_default(),
        };
    }
    if let Some(advice) = code.as_deref().and_then(token_advice) {
        return CliError::TokenRefused {
            status,
            code: code.unwrap_or_default(),
            message: message.unwrap_or_else(|| "the server refused the token".to_string()),
            advice,
        };
    }
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
    fn expired_token_says_to_sign_in_again() {
        let body =
            br#"{"code":"token_expired","message":"the token expired at 2026-11-24T09:00:00Z"}"#;
        let error = error_from_answer(401, "401 Unauthorized", body);
        assert_eq!(
            error.to_string(),
            "the token expired at 2026-11-24T09:00:00Z (token_expired); \
             run 'elevate login' to sign in again"
        );
    }

    #[test]
    fn every_token_refusal_says_what_to_do() {
        for code in [
            "token_expired",
            "token_malformed",
            "token_bad_signature",
            "token_unknown_key",
            "token_wrong_issuer",
            "token_wrong_audience",
            "token_not_yet_valid",
            "token_alg_not_allowed",
            "identity_conflict",
        ] {
            let body = format!(r#"{{"code":"{code}","message":"refused"}}"#);
            let error = error_from_answer(401, "401 Unauthorized", body.as_bytes());
            let CliError::TokenRefused { advice, .. } = &error else {
                panic!("{code} became {error:?}");
            };
            assert!(!advice.is_empty());
            assert!(error
                .to_string()
                .starts_with(&format!("refused ({code}); ")));
        }
    }

    #[test]
    fn step_up_required_carries_what_to_ask_for() {
        let body = br#"{"code":"step_up_required","message":"orders_writer needs a recent multi-factor sign-in",
                        "step_up":{"acr_values":"urn:elevate:mfa","max_age":900,"login_url":"/auth/login?x=1"}}"#;
        let error = error_from_answer(401, "401 Unauthorized", body);
        let CliError::StepUpRequired { message, step_up } = &error else {
            panic!("became {error:?}");
        };
        assert_eq!(message, "orders_writer needs a recent multi-factor sign-in");
        assert_eq!(step_up.acr_values.as_deref(), Some("urn:elevate:mfa"));
        assert_eq!(step_up.max_age, Some(900));
        assert_eq!(
            error.to_string(),
            "orders_writer needs a recent multi-factor sign-in (step_up_required); \
             run 'elevate login --step-up' and try again"
        );
    }

    #[test]
    fn step_up_required_without_details_still_asks_for_a_fresh_sign_in() {
        let error = error_from_answer(401, "401", br#"{"code":"step_up_required"}"#);
        let CliError::StepUpRequired { step_up, .. } = error else {
            panic!("not a step-up");
        };
        assert_eq!(step_up, StepUp::default());
    }

    #[test]
    fn every_client_error_displays_as_one_line() {
        let errors = [
            CliError::NoToken,
            CliError::SignInExpired {
                url: "http://127.0.0.1:7070".into(),
                at: "2026-11-24 09:00".into(),
            },
            CliError::NoIdentityProvider,
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
