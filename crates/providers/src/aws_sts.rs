//! The `aws-sts` target: the identity-broker model. Nothing is
//! provisioned when a grant starts or ends (apply and remove succeed
//! without calling AWS); while a grant is active its holder asks for
//! sessions, each an STS `AssumeRole` on the role's configured ARN with
//! `SourceIdentity` = the user, so CloudTrail ties every call to the
//! person. Console sessions go through the federation endpoint's
//! `getSigninToken`.
//!
//! Credentials already issued live until they expire; the server bounds
//! each session by the grant's window so none outlives it.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sts::types::Tag;
use chrono::{DateTime, Utc};

use crate::aws_revoked_sessions::{self as revoked, POLICY_NAME, REQUEST_TAG};
use crate::sessions::{
    session_name, source_identity, tag_value, AwsStsConfig, Session, SessionAsk, SessionError,
    SessionIssuer,
};
use crate::{GrantSpec, Presence, Provider, ProviderError};

/// AWS calls are cut off after this; well below the job lease and an
/// HTTP client's patience.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes of the revocation policy that another writer (a replica, a
/// person) overwrote before they could be read back are tried again this
/// many times in one removal; the job queue retries after that.
const POLICY_WRITES: usize = 3;

pub struct AwsSts {
    config: AwsStsConfig,
    sts: aws_sdk_sts::Client,
    /// With `revoke_sessions`: for the deny policy on each role.
    iam: Option<aws_sdk_iam::Client>,
    /// One policy change at a time in this process: each is a read, a
    /// write and a read back of the same document.
    policy_writes: tokio::sync::Mutex<()>,
    /// For the federation endpoint (not an AWS SDK service).
    http: reqwest::Client,
}

impl AwsSts {
    /// Builds the STS client (and the IAM client with `revoke_sessions`):
    /// static keys when configured, otherwise the default AWS credential
    /// chain.
    pub async fn new(config: AwsStsConfig) -> Result<Self, ProviderError> {
        let sdk =
            crate::aws_common::sdk_config(&config.region, None, config.keys.as_ref(), CALL_TIMEOUT)
                .await;
        let mut sts = aws_sdk_sts::config::Builder::from(&sdk);
        if let Some(url) = &config.endpoint_url {
            sts = sts.endpoint_url(url.clone());
        }
        let iam = config.revoke_sessions.then(|| {
            let mut iam = aws_sdk_iam::config::Builder::from(&sdk);
            if let Some(url) = &config.iam_endpoint_url {
                iam = iam.endpoint_url(url.clone());
            }
            aws_sdk_iam::Client::from_conf(iam.build())
        });
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Permanent(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            config,
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
            iam,
            policy_writes: tokio::sync::Mutex::new(()),
            http,
        })
    }

    /// The role's revocation policy as it stands (`None`: it has none).
    async fn read_policy(
        iam: &aws_sdk_iam::Client,
        role: &str,
    ) -> Result<Option<String>, ProviderError> {
        match iam
            .get_role_policy()
            .role_name(role)
            .policy_name(POLICY_NAME)
            .send()
            .await
        {
            Ok(out) => Ok(Some(revoked::decode_document(out.policy_document()))),
            Err(e) if e.code() == Some("NoSuchEntity") && !role_missing(&e) => Ok(None),
            Err(e) => Err(ProviderError::Retryable(iam_message(role, &e))),
        }
    }

    /// Denies the sessions of a grant ended before its window did: they
    /// could otherwise live on until their own expiry.
    async fn revoke_sessions(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let Some(iam) = &self.iam else {
            return Ok(());
        };
        let now = Utc::now();
        if grant.window_ends_at.is_some_and(|end| end <= now) {
            // Every session was bounded by the window: all have expired.
            return Ok(());
        }
        let Some(arn) = self.role_arn(&grant.role) else {
            tracing::warn!(request = %grant.request_id, role = %grant.role,
                "the role has no IAM role ARN any more: its sessions cannot be revoked and end at their expiry");
            return Ok(());
        };
        let Some(role) = revoked::role_name(arn) else {
            return Err(ProviderError::Permanent(format!(
                "\"{arn}\" is not an IAM role ARN"
            )));
        };
        let _one_at_a_time = self.policy_writes.lock().await;
        for _ in 0..POLICY_WRITES {
            let current = Self::read_policy(iam, role).await?;
            let doc = match revoked::with_revoked(current.as_deref(), &grant.request_id, now) {
                Ok(Some(doc)) => doc,
                Ok(None) => return Ok(()),
                Err(why) => {
                    return Err(ProviderError::Retryable(format!(
                        "the inline policy {POLICY_NAME} of role {role} cannot be used ({why}); fix or delete it"
                    )))
                }
            };
            iam.put_role_policy()
                .role_name(role)
                .policy_name(POLICY_NAME)
                .policy_document(doc)
                .send()
                .await
                .map_err(|e| ProviderError::Retryable(iam_message(role, &e)))?;
            // IAM has no conditional write: read back, so a write by a
            // replica at the same moment cannot silently drop this one.
            let after = Self::read_policy(iam, role).await?;
            if after.is_some_and(|doc| revoked::denies(&doc, &grant.request_id)) {
                tracing::info!(request = %grant.request_id, role, "sessions of the ended grant denied");
                return Ok(());
            }
        }
        Err(ProviderError::Retryable(format!(
            "the inline policy {POLICY_NAME} of role {role} kept changing under elevate's writes"
        )))
    }
}

/// `NoSuchEntity` names either the policy (fine: none yet) or the role.
fn role_missing<E, R>(e: &aws_sdk_iam::error::SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    e.message()
        .is_some_and(|m| m.to_ascii_lowercase().contains("role") && !m.contains(POLICY_NAME))
}

fn iam_message<E, R>(role: &str, e: &aws_sdk_iam::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("AWS IAM refused (role {role}): {code}: {message}"),
        (Some(code), None) => format!("AWS IAM refused (role {role}): {code}"),
        _ => format!("AWS IAM unreachable: {}", DisplayErrorContext(e)),
    }
}

/// AWS's code and message, or what kept the call from reaching AWS.
/// Requests carry no secret in what this prints (the signature is in a
/// header the error does not show).
fn aws_message<E, R>(e: &aws_sdk_sts::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("AWS STS refused: {code}: {message}"),
        (Some(code), None) => format!("AWS STS refused: {code}"),
        _ => format!("AWS STS unreachable: {}", DisplayErrorContext(e)),
    }
}

fn to_chrono(t: &aws_sdk_sts::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[async_trait]
impl SessionIssuer for AwsSts {
    fn max_session_secs(&self) -> i64 {
        self.config.max_session_secs
    }

    fn role_arn(&self, role: &str) -> Option<&str> {
        self.config.role_arns.get(role).map(String::as_str)
    }

    async fn credentials(&self, ask: &SessionAsk) -> Result<Session, SessionError> {
        let role_arn = self
            .role_arn(&ask.role)
            .ok_or_else(|| {
                SessionError::Refused(format!("the role \"{}\" has no IAM role ARN", ask.role))
            })?
            .to_owned();
        let identity = source_identity(&ask.user)?;
        let name = session_name(&ask.user, &ask.request_id);
        let tag = |k: &str, v: &str| {
            Tag::builder()
                .key(k)
                .value(tag_value(v))
                .build()
                .map_err(|e| SessionError::Refused(format!("session tag {k}: {e}")))
        };
        let mut call = self
            .sts
            .assume_role()
            .role_arn(&role_arn)
            .role_session_name(&name)
            .source_identity(&identity)
            .duration_seconds(i32::try_from(ask.duration_secs).unwrap_or(i32::MAX))
            .tags(tag(REQUEST_TAG, &ask.request_id)?);
        if let Some(ticket) = &ask.ticket {
            call = call.tags(tag("elevate-ticket", ticket)?);
        }
        let out = call
            .send()
            .await
            .map_err(|e| SessionError::Upstream(aws_message(&e)))?;
        let c = out.credentials().ok_or_else(|| {
            SessionError::Upstream("AWS STS answered AssumeRole without credentials".into())
        })?;
        let expiration = to_chrono(c.expiration()).ok_or_else(|| {
            SessionError::Upstream("AWS STS answered an expiration out of range".into())
        })?;
        Ok(Session {
            access_key_id: c.access_key_id().to_owned(),
            secret_access_key: c.secret_access_key().to_owned(),
            session_token: c.session_token().to_owned(),
            expiration,
            source_identity: identity,
            session_name: name,
            role_arn,
            duration_secs: ask.duration_secs,
        })
    }

    async fn console_url(&self, session: &Session, issuer: &str) -> Result<String, SessionError> {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let fed = &self.config.federation_url;
        let session_json = serde_json::json!({
            "sessionId": session.access_key_id,
            "sessionKey": session.secret_access_key,
            "sessionToken": session.session_token,
        })
        .to_string();
        let token_url = format!(
            "{fed}?Action=getSigninToken&SessionDuration={}&Session={}",
            session.duration_secs,
            enc(&session_json)
        );
        // The URL holds the secret key: errors are shown without it.
        let answer = self.http.get(&token_url).send().await.map_err(|e| {
            SessionError::Upstream(format!(
                "the AWS federation endpoint is unreachable: {}",
                e.without_url()
            ))
        })?;
        let status = answer.status();
        if !status.is_success() {
            let body = answer.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(SessionError::Upstream(format!(
                "the AWS federation endpoint refused the sign-in token ({status}): {body}"
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(rename = "SigninToken")]
            signin_token: String,
        }
        let token: Token = answer.json().await.map_err(|e| {
            SessionError::Upstream(format!(
                "the AWS federation endpoint answered no sign-in token: {}",
                e.without_url()
            ))
        })?;
        Ok(format!(
            "{fed}?Action=login&Issuer={}&Destination={}&SigninToken={}",
            enc(issuer),
            enc(&self.config.console_destination),
            enc(&token.signin_token)
        ))
    }
}

#[async_trait]
impl Provider for AwsSts {
    fn kind(&self) -> &'static str {
        "aws-sts"
    }

    fn grant_key(&self, g: &GrantSpec) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            g.target, g.resource, g.role, g.user
        )
    }

    /// Nothing to provision: access is the sessions asked for while the
    /// grant is active.
    async fn apply(&self, _grant: &GrantSpec) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Nothing was provisioned. Sessions already issued end at their own
    /// expiry, which never passes the grant's window; a grant ended early
    /// (revoked) has them denied when `revoke_sessions` is on.
    async fn remove(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        self.revoke_sessions(grant).await
    }

    /// Nothing is put on AWS, so there is nothing that could drift.
    async fn check(&self, _grant: &GrantSpec) -> Result<Presence, ProviderError> {
        Ok(Presence::Present)
    }

    /// Calls `GetCallerIdentity` with elevate's own credentials; with
    /// `revoke_sessions`, reads each role's revocation policy, which tells
    /// a missing role or a missing permission before a revocation needs it.
    async fn validate(&self) -> Result<Vec<String>, ProviderError> {
        let mut problems = Vec::new();
        if let Err(e) = self.sts.get_caller_identity().send().await {
            problems.push(aws_message(&e));
        }
        if let Some(iam) = &self.iam {
            for (role, arn) in &self.config.role_arns {
                let Some(name) = revoked::role_name(arn) else {
                    problems.push(format!("role {role}: \"{arn}\" is not an IAM role ARN"));
                    continue;
                };
                if let Err(e) = Self::read_policy(iam, name).await {
                    problems.push(format!("role {role}: {e} (revoke_sessions needs iam:GetRolePolicy and iam:PutRolePolicy on it)"));
                }
            }
        }
        Ok(problems)
    }

    fn sessions(&self) -> Option<&dyn SessionIssuer> {
        Some(self)
    }
}
