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
//! - `aws_identity_center` (feature `aws`): IAM Identity Center account
//!   assignments; discovers its resources (the Organization's OU tree)
//!   and roles (permission sets) instead of reading them from the config
//!   ([`identity_center`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "aws")]
mod aws_common;
#[cfg(feature = "aws")]
pub mod aws_identity_center;
#[cfg(feature = "aws")]
pub mod aws_revoked_sessions;
#[cfg(feature = "aws")]
pub mod aws_sts;
pub mod dry_run;
pub mod identity_center;
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
    /// The requester's identity provider gave an address it has not
    /// verified (so `email` is empty): a provider that finds people by
    /// address must not fall back to the user name.
    pub email_unverified: bool,
    /// The account on the target this grant was given to, as recorded when
    /// the request was made ([`Provider::account`]). Providers use it over
    /// their current mapping, so changing the mapping while a grant runs
    /// cannot make its removal miss the account that holds it.
    pub account: Option<String>,
    /// When the grant's window ends (or ended), extensions included.
    pub window_ends_at: Option<DateTime<Utc>>,
    /// For a removal: the grant was ended before its window (revoked,
    /// ended by its requester, failed), so anything the target issued for
    /// the window may still be alive.
    pub ended_early: bool,
}

/// Whether a grant is present on the target right now (reconciliation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Present,
    Absent,
}

/// One resource a discovering target found: an organization root, an OU
/// or an account, with its place in the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundResource {
    /// The target's identifier (an account id, `ou-…`, `r-…`): stable
    /// across renames, so policies naming it keep meaning the same thing.
    pub id: String,
    pub parent: Option<String>,
    /// What people call it (the account or OU name).
    pub name: Option<String>,
    /// `root`, `ou` or `account`. Only accounts can be granted.
    pub kind: String,
    pub tags: BTreeMap<String, String>,
}

/// What a discovering target holds: its resource tree and its roles.
/// Cached in the store, so a restart or another replica does not have to
/// ask the target again, and listings never wait for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub resources: Vec<FoundResource>,
    /// Grantable roles: elevate's role name → the target's identifier of
    /// it (a permission set ARN).
    pub roles: BTreeMap<String, String>,
    /// Resources present in the tree that elevate will not grant in, with
    /// the reason shown to people (the organization's management account).
    pub refused: BTreeMap<String, String>,
}

/// One assignment found on a target during reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub resource: String,
    pub role: String,
    /// `USER` or `GROUP`.
    pub principal_type: String,
    /// The target's identifier of the principal (compared with
    /// [`GrantSpec::account`] of active grants).
    pub principal_id: String,
    /// A readable name of the principal when the target gives one.
    pub principal_name: Option<String>,
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
    /// The target accepted the change and is still carrying it out, or is
    /// busy with another change it runs one at a time (AWS assignment
    /// changes): an expected wait, retried like `Retryable` but not a
    /// sign that something is wrong (a removal in this state does not
    /// raise the "removal failing" alarm).
    #[error("{0}")]
    Busy(String),
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Retryable(_) | ProviderError::Busy(_))
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

    /// Checks, when the request is made, that the grant can be given, and
    /// returns the account to record with it (see [`Provider::account`]).
    /// Providers that look the user up on the target do it here, so a
    /// user the target does not know is told at once, not after approval.
    async fn prepare(&self, grant: &GrantSpec) -> Result<Option<String>, ProviderError> {
        Ok(self.account(grant))
    }

    /// True for targets whose resources and roles come from the target
    /// itself ([`Provider::discover`]) rather than the config.
    fn discovers(&self) -> bool {
        false
    }

    /// Reads the target's resources and roles.
    async fn discover(&self) -> Result<Inventory, ProviderError> {
        Err(ProviderError::Permanent(format!(
            "a {} target lists its resources in the config",
            self.kind()
        )))
    }

    /// The target's principal in an account recorded with a grant
    /// ([`Provider::prepare`]), as [`Assignment::principal_id`] names it.
    /// Providers that record more than the principal (the permission set
    /// ARN, so a renamed one is still removed) take it apart here.
    fn principal_of(&self, account: &str) -> String {
        account.to_owned()
    }

    /// Takes in an inventory (just discovered, or read back from the
    /// store's cache at start): the provider maps role names to the
    /// target's identifiers through it.
    fn adopt(&self, _inventory: &Inventory) {}

    /// Every assignment of `roles` on the target, whoever holds it
    /// (reconciliation). Targets that cannot list them return `None`.
    async fn assignments(
        &self,
        _roles: &[String],
    ) -> Result<Option<Vec<Assignment>>, ProviderError> {
        Ok(None)
    }

    /// Removes an assignment found by [`Provider::assignments`] that no
    /// grant accounts for. Idempotent.
    async fn remove_assignment(&self, _assignment: &Assignment) -> Result<(), ProviderError> {
        Err(ProviderError::Permanent(format!(
            "a {} target cannot remove assignments",
            self.kind()
        )))
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
