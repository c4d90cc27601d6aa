//! The one place where errors become HTTP responses: a status, a stable
//! `code` and a `message` a person understands. Server-side failures say
//! nothing internal to the client; the log gets the details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use elevate_core::DomainError;
use elevate_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    Domain(DomainError),
    NotFound,
    /// A client error detected outside the domain (bad JSON, bad query...).
    Client {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    Store(StoreError),
}

impl ApiError {
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Domain(d) => match d {
                DomainError::Invalid { .. }
                | DomainError::StartInPast(_)
                | DomainError::StartTooFar(_)
                | DomainError::BreakGlassScheduled => StatusCode::BAD_REQUEST,
                DomainError::UnknownTarget(_)
                | DomainError::UnknownResource { .. }
                | DomainError::UnknownRole { .. }
                | DomainError::NotGrantable { .. }
                | DomainError::DurationTooLong { .. }
                | DomainError::DurationTooShort { .. }
                | DomainError::TicketRequired
                | DomainError::TicketMismatch { .. }
                | DomainError::TicketNotOpen { .. }
                | DomainError::TicketUnknown { .. }
                | DomainError::NoApprovalPolicy => StatusCode::UNPROCESSABLE_ENTITY,
                // A 4xx, not a 5xx: the request is refused (deny by
                // default) because a system it depends on could not vouch
                // for it; nothing in elevate failed.
                DomainError::TicketSystemUnavailable { .. } => StatusCode::FAILED_DEPENDENCY,
                DomainError::NotEligible { .. }
                | DomainError::BreakGlassNotAllowed
                | DomainError::SelfApproval
                | DomainError::NotApprover
                | DomainError::NotRequester
                | DomainError::Forbidden => StatusCode::FORBIDDEN,
                // RFC 9470: the credential is fine, the authentication
                // behind it is not strong or recent enough.
                DomainError::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
                DomainError::AlreadyApproved
                | DomainError::InvalidState { .. }
                | DomainError::ExtensionPending(_)
                | DomainError::NothingToAcknowledge => StatusCode::CONFLICT,
            },
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Client { status, .. } => *status,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Domain(d) => d.code(),
            ApiError::NotFound => "not_found",
            ApiError::Client { code, .. } => code,
            ApiError::Store(_) => "internal_error",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Domain(d) => d.to_string(),
            ApiError::NotFound => "no such request (or you may not see it)".into(),
            ApiError::Client { message, .. } => message.clone(),
            ApiError::Store(_) => {
                "elevate could not complete this; nothing was changed. The server log has the details".into()
            }
        }
    }

    /// Full text for logs (never sent to clients).
    pub fn log_text(&self) -> String {
        match self {
            ApiError::Store(e) => e.to_string(),
            other => other.message(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.log_text())
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Domain(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self.log_text(), "request failed");
        }
        if let ApiError::Domain(DomainError::StepUpRequired {
            reason,
            acr_values,
            max_age_secs,
        }) = &self
        {
            let mut challenge = format!(
                "Bearer error=\"insufficient_user_authentication\", error_description=\"{}\", max_age={max_age_secs}",
                reason.replace(['"', '\\'], "'")
            );
            if !acr_values.is_empty() {
                challenge.push_str(&format!(", acr_values=\"{acr_values}\""));
            }
            let body = json!({
                "code": self.code(),
                "message": self.message(),
                "step_up": {
                    "acr_values": acr_values,
                    "max_age": max_age_secs,
                    "login_url": "/auth/login?step_up=1",
                },
            });
            let mut resp = (status, Json(body)).into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&challenge) {
                resp.headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, v);
            }
            return resp;
        }
        (
            status,
            Json(json!({ "code": self.code(), "message": self.message() })),
        )
            .into_response()
    }
}
