//! Sessions for active grants on targets that issue them (`aws-sts`):
//! temporary credentials and console sign-in URLs.
//!
//! Every call decides afresh, at that moment: the caller is the grant's
//! requester (nobody else, admins included, may mint someone's
//! credentials), the requester is still eligible, the grant is active, and
//! enough of its window is left for the shortest session AWS issues. A
//! session never outlives the grant's window. Each session issued is an
//! audit event (`grant.session_issued`) that names the role, session name,
//! source identity and expiry, never the keys; if that event cannot be
//! stored, the credentials are not handed out.

use axum::http::StatusCode;
use chrono::Utc;
use elevate_core::principal::{Actor, Principal};
use elevate_core::request::{Action, Event, State};
use elevate_core::values::{RequestId, Span};
use elevate_providers::sessions::{bounded_duration, Session, SessionAsk, SessionError};

use crate::engine::Broker;
use crate::error::ApiError;

/// What the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Access keys and a session token.
    Credentials,
    /// A console sign-in URL.
    Console,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            SessionKind::Credentials => "creds",
            SessionKind::Console => "console",
        }
    }
}

/// A session issued, with its console URL for [`SessionKind::Console`].
pub struct Issued {
    pub session: Session,
    pub console_url: Option<String>,
}

fn upstream(e: SessionError) -> ApiError {
    match e {
        SessionError::Refused(m) => {
            ApiError::client(StatusCode::UNPROCESSABLE_ENTITY, "session_refused", m)
        }
        SessionError::Upstream(m) => ApiError::client(StatusCode::BAD_GATEWAY, "aws_error", m),
    }
}

impl Broker {
    /// Issues a session for the active grant `id` to its requester.
    /// `duration`: what the caller asked for (default: the target's
    /// longest session); always cut to what is left of the window.
    pub async fn issue_session(
        &self,
        who: &Principal,
        id: &RequestId,
        kind: SessionKind,
        duration: Option<&str>,
    ) -> Result<Issued, ApiError> {
        let requested = duration
            .map(|d| Span::parse("duration", d))
            .transpose()?
            .map(|s| i64::try_from(s.secs()).unwrap_or(i64::MAX));
        let now = Utc::now();
        let stored = self.load(id).await?;
        let r = &stored.request;
        if !self.can_see(who, r) {
            return Err(ApiError::NotFound);
        }
        if r.requester != who.name {
            return Err(ApiError::client(
                StatusCode::FORBIDDEN,
                "not_requester",
                "only the requester of a grant may ask for its sessions",
            ));
        }
        let provider = self.providers.get(&r.target).cloned().ok_or_else(|| {
            ApiError::client(
                StatusCode::CONFLICT,
                "no_sessions",
                format!("the target \"{}\" is not configured", r.target),
            )
        })?;
        let Some(issuer) = provider.sessions() else {
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "no_sessions",
                format!(
                    "the target \"{}\" ({}) does not issue sessions; only aws-sts targets do",
                    r.target,
                    provider.kind()
                ),
            ));
        };
        let State::Active { window, .. } = &r.state else {
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "grant_not_active",
                format!(
                    "the grant {} is not active (it is {}); sessions are issued only while it is",
                    r.id,
                    r.state.name()
                ),
            ));
        };
        if window.ends_at <= now {
            return Err(ApiError::client(
                StatusCode::CONFLICT,
                "grant_not_active",
                format!("the grant {} has ended", r.id),
            ));
        }
        if let Err(why) = self.still_eligible(r, now).await? {
            return Err(ApiError::client(
                StatusCode::FORBIDDEN,
                "not_eligible",
                format!("no session: {why}"),
            ));
        }
        let left = (window.ends_at - now).num_seconds();
        let duration_secs = bounded_duration(requested, issuer.max_session_secs(), left)
            .map_err(|left| {
                ApiError::client(
                    StatusCode::CONFLICT,
                    "grant_ending",
                    format!(
                        "the grant ends in {left}s; AWS sessions last at least 15 minutes, so none is issued (extend the grant first)"
                    ),
                )
            })?;
        let ask = SessionAsk {
            request_id: r.id.to_string(),
            user: r.requester.to_string(),
            role: r.role.to_string(),
            ticket: r.ticket.as_ref().map(|t| t.as_str().to_owned()),
            duration_secs,
        };
        let session = issuer.credentials(&ask).await.map_err(upstream)?;
        let console_url = match kind {
            SessionKind::Console => Some(
                issuer
                    .console_url(&session, &self.public_url)
                    .await
                    .map_err(upstream)?,
            ),
            SessionKind::Credentials => None,
        };
        let mut tx = self.store.begin().await?;
        tx.append_audit(&Event {
            action: Action::GrantSessionIssued,
            actor: Actor::User(who.name.clone()),
            request: r.id.clone(),
            at: now,
            details: serde_json::json!({
                "kind": kind.as_str(),
                "role_arn": session.role_arn,
                "session_name": session.session_name,
                "source_identity": session.source_identity,
                "duration_secs": session.duration_secs,
                "expiration": session.expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }),
        })
        .await?;
        tx.commit().await?;
        tracing::info!(request = %r.id, user = %who.name, kind = kind.as_str(), role_arn = %session.role_arn, duration_secs, "session issued");
        Ok(Issued {
            session,
            console_url,
        })
    }
}
