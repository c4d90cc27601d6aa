//! The systems elevate grants access on. Each target kind implements
//! [`Provider`]; the engine calls it from the durable job queue, so every
//! call may be repeated after a crash or a retry and must be idempotent:
//! applying a grant that is already there, or removing one that is already
//! gone, is success.
//!
//! - [`postgres`]: PostgreSQL role membership (`GRANT role TO user`).
//! - [`dry_run`]: changes nothing, records what it would have done.
//! - `aws_sts` (feature `aws`): provisions nothing; issues AWS STS
//!   sessions while a grant is active ([`sessions`]).

use async_trait::async_trait;
use serde::Serialize;

#[cfg(feature = "aws")]
pub mod aws_sts;
pub mod dry_run;
pub mod postgres;
pub mod sessions;

/// One grant as a provider sees it: who gets which role on what.
#[derive(Debug, Clone, Serialize)]
pub struct GrantSpec {
    /// elevate's request id, for logs and for providers that tag what they
    /// create.
    pub request_id: String,
    pub target: String,
    pub resource: String,
    pub role: String,
    /// The requester's elevate user name (lowercase).
    pub user: String,
    pub email: Option<String>,
    /// The account on the target this grant was given to, as recorded when
    /// the request was made ([`Provider::account`]). Providers use it over
    /// their current mapping, so changing the mapping while a grant runs
    /// cannot make its removal miss the account that holds it.
    pub account: Option<String>,
}

/// Whether a grant is present on the target right now (reconciliation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Present,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying: the target is unreachable, overloaded, restarting,
    /// or a lock or conflict got in the way.
    #[error("{0}")]
    Retryable(String),
    /// Retrying will not help until someone changes something (the role or
    /// user does not exist on the target, elevate lacks a privilege).
    #[error("{0}")]
    Permanent(String),
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Retryable(_))
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The target kind, as written in config (`postgres`, `dry-run`).
    fn kind(&self) -> &'static str;

    /// True for providers that change nothing; listings say so.
    fn is_dry_run(&self) -> bool {
        false
    }

    /// The thing on the target that a grant puts there. Two grants with the
    /// same key share it: removing one must not take it from the other,
    /// and the engine runs at most one job per key at a time. For
    /// PostgreSQL role membership is cluster-wide, so the resource (a
    /// database) is not part of the key.
    fn grant_key(&self, grant: &GrantSpec) -> String;

    /// The account on the target a new grant is for, to be recorded with
    /// it (see [`GrantSpec::account`]). `None` when the user name is used
    /// as it is.
    fn account(&self, _grant: &GrantSpec) -> Option<String> {
        None
    }

    /// Puts the grant on the target. Idempotent.
    async fn apply(&self, grant: &GrantSpec) -> Result<(), ProviderError>;

    /// Takes the grant off the target and ends whatever lets the user keep
    /// using it (open sessions). Idempotent.
    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError>;

    /// Reports whether the grant is on the target now.
    async fn check(&self, grant: &GrantSpec) -> Result<Presence, ProviderError>;

    /// Checks that the target is reachable and that elevate holds the
    /// privileges it needs; returns one line per problem found.
    async fn validate(&self) -> Result<Vec<String>, ProviderError>;

    /// Targets that hand out sessions while a grant is active (temporary
    /// credentials, console sign-ins) return their issuer.
    fn sessions(&self) -> Option<&dyn sessions::SessionIssuer> {
        None
    }
}
