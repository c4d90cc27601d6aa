//! Sessions: short-lived credentials a target hands out while a grant is
//! active, instead of (or besides) provisioning something on apply. The
//! `aws-sts` target is the one such kind: each session is an STS
//! `AssumeRole` on the role's ARN.
//!
//! What is here builds without the AWS SDK (feature `aws`): the checked
//! target settings, the values AWS requires of a session (source identity,
//! session name, duration bounds) and the [`SessionIssuer`] trait the
//! server calls. The SDK client lives in [`crate::aws_sts`].

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// AWS's shortest role session (`DurationSeconds`, console
/// `SessionDuration`).
pub const MIN_SESSION_SECS: i64 = 900;
/// AWS's longest role session (a role's `MaxSessionDuration` at most).
pub const MAX_SESSION_SECS: i64 = 43_200;
/// AWS's limit on `RoleSessionName` and `SourceIdentity`.
pub const MAX_NAME_CHARS: usize = 64;
/// Where console sign-in tokens come from unless configured otherwise.
pub const DEFAULT_FEDERATION_URL: &str = "https://signin.aws.amazon.com/federation";
/// Where a console session opens unless configured otherwise.
pub const DEFAULT_CONSOLE_DESTINATION: &str = "https://console.aws.amazon.com/";

/// Access keys given in the config. The secret never appears in `Debug`.
#[derive(Clone)]
pub struct StaticKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeys")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// One `aws-sts` target, checked by the config loader.
#[derive(Debug, Clone)]
pub struct AwsStsConfig {
    pub region: String,
    /// An STS endpoint other than AWS's (tests point it at moto).
    pub endpoint_url: Option<String>,
    /// The federation endpoint console sign-in tokens come from.
    pub federation_url: String,
    /// Where a console sign-in lands.
    pub console_destination: String,
    /// The longest session handed out, in seconds (900..=43200).
    pub max_session_secs: i64,
    /// `None`: the default AWS credential chain (environment, profile,
    /// web identity, container or instance role).
    pub keys: Option<StaticKeys>,
    /// The IAM role each elevate role of the target assumes.
    pub role_arns: BTreeMap<String, String>,
    /// Whether a grant ended early denies its sessions through an inline
    /// policy on the role (see `aws_revoked_sessions`).
    pub revoke_sessions: bool,
    /// An IAM endpoint other than AWS's (tests point it at moto).
    pub iam_endpoint_url: Option<String>,
    /// For roles in other accounts than elevate's own: the role elevate
    /// assumes there to write their policies, with `{account}` standing
    /// for the account (`arn:aws:iam::{account}:role/ElevateRevoker`).
    pub revoke_via_role: Option<String>,
}

/// What a session is asked for.
#[derive(Debug, Clone)]
pub struct SessionAsk {
    pub request_id: String,
    /// The requester's elevate user name.
    pub user: String,
    /// The elevate role of the grant.
    pub role: String,
    pub ticket: Option<String>,
    /// Already bounded by [`bounded_duration`].
    pub duration_secs: i64,
}

/// Temporary credentials of one assumed-role session. The secret parts
/// never appear in `Debug`.
#[derive(Clone)]
pub struct Session {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: DateTime<Utc>,
    pub source_identity: String,
    pub session_name: String,
    pub role_arn: String,
    pub duration_secs: i64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .field("source_identity", &self.source_identity)
            .field("session_name", &self.session_name)
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// elevate will not ask AWS for this (the user name cannot be a
    /// source identity, the role has no ARN).
    #[error("{0}")]
    Refused(String),
    /// AWS (or the federation endpoint) refused or could not be reached;
    /// the message is AWS's, without any credential.
    #[error("{0}")]
    Upstream(String),
}

/// A target that issues sessions for active grants.
#[async_trait]
pub trait SessionIssuer: Send + Sync {
    /// The longest session this target hands out, in seconds.
    fn max_session_secs(&self) -> i64;

    /// The IAM role ARN a grant of `role` assumes.
    fn role_arn(&self, role: &str) -> Option<&str>;

    /// Assumes the grant's role and returns the temporary credentials.
    async fn credentials(&self, ask: &SessionAsk) -> Result<Session, SessionError>;

    /// Turns `session` into a console sign-in URL through the federation
    /// endpoint. `issuer` is elevate's public URL (where the console sends
    /// people whose session ended).
    async fn console_url(&self, session: &Session, issuer: &str) -> Result<String, SessionError>;
}

fn aws_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

/// The user name as STS `SourceIdentity`: AWS takes 2 to 64 characters of
/// `[A-Za-z0-9_+=,.@-]`. Other names are refused rather than changed: the
/// source identity is what ties CloudTrail events to the person, so it
/// must be the user name exactly.
pub fn source_identity(user: &str) -> Result<String, SessionError> {
    let n = user.chars().count();
    if !(2..=MAX_NAME_CHARS).contains(&n) || !user.chars().all(aws_name_char) {
        return Err(SessionError::Refused(format!(
            "the user name \"{user}\" cannot be an AWS source identity (2 to 64 characters of letters, digits and _+=,.@-)"
        )));
    }
    Ok(user.to_owned())
}

/// `RoleSessionName`: `user.request-id`, characters AWS does not allow
/// replaced by `_`, the user part cut so the whole fits in 64 characters
/// (the request id is kept whole: it is what identifies the grant).
pub fn session_name(user: &str, request_id: &str) -> String {
    let id: String = request_id
        .chars()
        .map(|c| if aws_name_char(c) { c } else { '_' })
        .take(MAX_NAME_CHARS - 2)
        .collect();
    let room = MAX_NAME_CHARS - 1 - id.chars().count();
    let user: String = user
        .chars()
        .map(|c| if aws_name_char(c) { c } else { '_' })
        .take(room)
        .collect();
    format!("{user}.{id}")
}

/// A session tag value as AWS accepts it (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`,
/// at most 256 characters): other characters become `_`.
pub fn tag_value(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

/// The duration of a session: what was asked (or the target's maximum),
/// never more than the seconds left in the grant's window nor AWS's
/// 12 hours. `Err(left)` when fewer than AWS's minimum 15 minutes are left:
/// a session must not outlive its grant.
pub fn bounded_duration(requested: Option<i64>, max_session: i64, left: i64) -> Result<i64, i64> {
    let d = requested
        .unwrap_or(max_session)
        .min(max_session)
        .min(left)
        .min(MAX_SESSION_SECS);
    if left < MIN_SESSION_SECS {
        return Err(left);
    }
    Ok(d.max(MIN_SESSION_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_fit_in_64_characters_and_keep_the_request_id() {
        let long = "a".repeat(200);
        let n = session_name(&long, "r-abcdefghijkl");
        assert_eq!(n.chars().count(), 64);
        assert!(n.ends_with(".r-abcdefghijkl"));
        assert_eq!(session_name("ann smith", "r-x"), "ann_smith.r-x");
    }

    #[test]
    fn source_identity_is_the_user_name_or_refused() {
        assert_eq!(
            source_identity("alice@example.com").ok().as_deref(),
            Some("alice@example.com")
        );
        assert!(source_identity("a").is_err());
        assert!(source_identity("ann smith").is_err());
        assert!(source_identity(&"a".repeat(65)).is_err());
    }

    #[test]
    fn durations_never_outlive_the_window() {
        assert_eq!(bounded_duration(None, 3600, 10_000), Ok(3600));
        assert_eq!(bounded_duration(Some(1800), 3600, 10_000), Ok(1800));
        assert_eq!(bounded_duration(Some(7200), 3600, 10_000), Ok(3600));
        assert_eq!(bounded_duration(None, 43_200, 2000), Ok(2000));
        assert_eq!(bounded_duration(None, 3600, 899), Err(899));
        assert_eq!(bounded_duration(None, 3600, 900), Ok(900));
    }
}
