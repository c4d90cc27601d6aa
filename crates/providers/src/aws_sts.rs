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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sts::types::Tag;
use chrono::{DateTime, Utc};

use crate::aws_revoked_sessions::{self as revoked, REQUEST_TAG};
use crate::sessions::{
    session_name, source_identity, tag_value, AwsStsConfig, Session, SessionAsk, SessionError,
    SessionIssuer,
};
use crate::{GrantSpec, Presence, Provider, ProviderError};

/// AWS calls are cut off after this; well below the job lease and an
/// HTTP client's patience.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Expired revocation policies deleted per revocation: enough to keep up
/// with any rate of revocations, few enough to stay inside the call limit.
const PRUNE_PER_CALL: usize = 10;

pub struct AwsSts {
    config: AwsStsConfig,
    sts: aws_sdk_sts::Client,
    /// With `revoke_sessions`: for the deny policies on each role.
    iam: Option<aws_sdk_iam::Client>,
    /// The account of elevate's own credentials (`GetCallerIdentity`).
    own_account: tokio::sync::OnceCell<String>,
    /// IAM clients for other accounts, on credentials of
    /// `revoke_via_role` there, with when those expire; one slot (and
    /// lock) per account.
    other_accounts: std::sync::Mutex<HashMap<String, Arc<OtherAccount>>>,
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
            own_account: tokio::sync::OnceCell::new(),
            other_accounts: std::sync::Mutex::default(),
            http,
        })
    }

    /// The names of the role's inline policies.
    async fn role_policies(
        iam: &aws_sdk_iam::Client,
        role: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let mut names = Vec::new();
        let mut pages = iam
            .list_role_policies()
            .role_name(role)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ProviderError::Retryable(iam_message(role, &e)))?;
            names.extend(page.policy_names().iter().cloned());
        }
        Ok(names)
    }

    /// Deletes a few of the role's revocation policies that no session
    /// needs any more. A failure here only leaves them for the next
    /// revocation: it must not hold up the deny being written.
    /// Returns the role's policies as listed (`None`: they could not be).
    async fn prune(
        iam: &aws_sdk_iam::Client,
        role: &str,
        now: DateTime<Utc>,
    ) -> Option<Vec<String>> {
        let names = match Self::role_policies(iam, role).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(role, error = %e, "cannot list the role's policies to delete expired revocations");
                return None;
            }
        };
        for name in names
            .iter()
            .filter(|n| revoked::expired(n, now))
            .take(PRUNE_PER_CALL)
        {
            let deleted = iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await;
            match deleted {
                Ok(_) => tracing::debug!(role, policy = %name, "expired revocation policy deleted"),
                Err(e) if e.code() == Some("NoSuchEntity") => {}
                Err(e) => {
                    tracing::warn!(role, policy = %name, error = %iam_message(role, &e), "cannot delete an expired revocation policy");
                    break;
                }
            }
        }
        Some(names)
    }

    /// Denies the sessions of a grant ended before its window did: they
    /// could otherwise live on until their own expiry. One policy per
    /// grant and role, written whole: writing it again (a retried job, two
    /// replicas) changes nothing, and no other revocation can be lost.
    async fn revoke_sessions(&self, grant: &GrantSpec) -> Result<(), ProviderError> {
        let Some(iam) = &self.iam else {
            return Ok(());
        };
        if !grant.ended_early {
            // The window ran out: every session was bounded by it.
            return Ok(());
        }
        let Some(window_end) = grant.window_ends_at else {
            // Never active: no session was issued.
            return Ok(());
        };
        let now = Utc::now();
        // Every session of the grant ends with its window, and none lasts
        // longer than max_session from now: the deny may go at the
        // earlier of the two (rounded up to the hour for the latter, so a
        // retried removal writes the same policy).
        let until = revoked::until(window_end).min(revoked::until_hour(
            now + chrono::Duration::seconds(self.config.max_session_secs) + revoked::GRACE,
        ));
        if until <= now {
            return Ok(());
        }
        // Today's ARN, then the one recorded when the request was made if
        // the mapping has changed since: sessions may have been issued on
        // either.
        let current = self.role_arn(&grant.role);
        let mut arns: Vec<&str> = current.into_iter().collect();
        if let Some(recorded) = grant.account.as_deref() {
            if !arns.contains(&recorded) {
                arns.push(recorded);
            }
        }
        if arns.is_empty() {
            return Err(ProviderError::Retryable(format!(
                "the role \"{}\" has no IAM role ARN, so the sessions of {} cannot be denied; configure it again (the sessions end at their expiry, at the latest {window_end})",
                grant.role, grant.request_id
            )));
        }
        let name = revoked::policy_name(&grant.request_id, until);
        let document = revoked::document(&tag_value(&grant.request_id));
        // Every ARN is tried before an error is returned: one that cannot
        // be written must not keep the others from being denied.
        let mut failed = None;
        for arn in arns {
            let is_current = Some(arn) == current;
            let outcome = match self.iam_for(iam, arn).await {
                Ok(client) => {
                    let written = self
                        .deny_on(&client, arn, (&grant.request_id, &name, &document), now)
                        .await;
                    if written.is_err() {
                        // Credentials of another account may have been
                        // revoked: the next attempt assumes the role anew.
                        self.forget_account(arn).await;
                    }
                    written
                }
                Err(e) => Err(Other(e)),
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(request = %grant.request_id, role_arn = arn, policy = %name, "sessions of the grant ended early denied");
                }
                // A role no longer mapped and since deleted: its sessions
                // can no longer act.
                Err(RoleMissing(_)) if !is_current => {
                    tracing::info!(request = %grant.request_id, role_arn = arn, "the role recorded with the grant no longer exists; nothing to deny there");
                }
                Err(RoleMissing(e) | Other(e)) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The account elevate's own credentials are in, asked once.
    async fn own_account(&self) -> Result<String, ProviderError> {
        self.own_account
            .get_or_try_init(|| async {
                let me = self
                    .sts
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| ProviderError::Retryable(aws_message(&e)))?;
                me.account().map(str::to_owned).ok_or_else(|| {
                    ProviderError::Retryable(
                        "AWS STS did not say which account elevate's credentials are in".into(),
                    )
                })
            })
            .await
            .cloned()
    }

    /// An IAM client that acts in the account of role `arn`: IAM's role
    /// calls take a name and act in the caller's own account. Elevate's
    /// own client there; in another account, one on credentials of
    /// `revoke_via_role` in that account (kept until shortly before they
    /// expire).
    async fn iam_for(
        &self,
        own: &aws_sdk_iam::Client,
        arn: &str,
    ) -> Result<aws_sdk_iam::Client, ProviderError> {
        let own_account = self.own_account().await?;
        let Some(account) = revoked::account_of(arn) else {
            return Err(ProviderError::Permanent(format!(
                "\"{arn}\" is not an IAM role ARN"
            )));
        };
        if account == own_account {
            return Ok(own.clone());
        }
        let Some(template) = &self.config.revoke_via_role else {
            return Err(ProviderError::Retryable(format!(
                "revoke_sessions cannot deny sessions on {arn}: elevate's credentials are in account {own_account}, and no revoke_via_role is configured to write role policies in account {account}"
            )));
        };
        // One lock per account: a slow or unreachable account holds up
        // only its own revocations.
        let slot = {
            let mut accounts = self
                .other_accounts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(accounts.entry(account.to_owned()).or_default())
        };
        let mut cached = slot.lock().await;
        let now = Utc::now();
        if let Some((client, expires)) = cached.as_ref() {
            if *expires > now + chrono::Duration::minutes(5) {
                return Ok(client.clone());
            }
        }
        let via = template.replace("{account}", account);
        let out = self
            .sts
            .assume_role()
            .role_arn(&via)
            .role_session_name("elevate-revoke-sessions")
            .duration_seconds(3600)
            .send()
            .await
            .map_err(|e| {
                ProviderError::Retryable(format!(
                    "cannot assume {via} to deny sessions in account {account}: {}",
                    aws_message(&e)
                ))
            })?;
        // The deny must land in the role's own account, never on a
        // same-named role elsewhere.
        let assumed = out.assumed_role_user().map(|u| u.arn()).unwrap_or_default();
        if revoked::account_of(assumed) != Some(account) {
            return Err(ProviderError::Retryable(format!(
                "assuming {via} gave a session in another account than {account} ({assumed})"
            )));
        }
        let c = out.credentials().ok_or_else(|| {
            ProviderError::Retryable(format!("AWS STS answered no credentials for {via}"))
        })?;
        let expires = to_chrono(c.expiration()).unwrap_or(now);
        let config = own
            .config()
            .to_builder()
            .credentials_provider(aws_sdk_iam::config::Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_owned()),
                None,
                "elevate-revoke-via-role",
            ))
            .build();
        let client = aws_sdk_iam::Client::from_conf(config);
        *cached = Some((client.clone(), expires));
        Ok(client)
    }

    /// Drops the kept credentials for the account of `arn`.
    async fn forget_account(&self, arn: &str) {
        let Some(account) = revoked::account_of(arn) else {
            return;
        };
        let slot = self
            .other_accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(account)
            .cloned();
        if let Some(slot) = slot {
            *slot.lock().await = None;
        }
    }

    /// Writes the deny policy `name` on the role `arn`, with an IAM client
    /// acting in the role's account.
    async fn deny_on(
        &self,
        iam: &aws_sdk_iam::Client,
        arn: &str,
        (request_id, name, document): (&str, &str, &str),
        now: DateTime<Utc>,
    ) -> Result<(), DenyError> {
        let Some(role) = revoked::role_name(arn) else {
            return Err(Other(ProviderError::Permanent(format!(
                "\"{arn}\" is not an IAM role ARN"
            ))));
        };
        // Room first: IAM caps the size of a role's inline policies.
        let names = Self::prune(iam, role, now).await;
        // A retry after the hour turned computes another `<until>`; the
        // deny written before still stands (it is kept at least as long).
        if names.is_some_and(|names| {
            names
                .iter()
                .any(|n| revoked::is_for(n, request_id) && !revoked::expired(n, now))
        }) {
            return Ok(());
        }
        match iam
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(document)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = iam_message(role, &e);
                Err(match e.code() {
                    Some("NoSuchEntity") => RoleMissing(ProviderError::Retryable(why)),
                    Some("LimitExceeded") => Other(ProviderError::Retryable(format!(
                        "{why}: the role's inline policies are at IAM's size limit (10,240 characters in all); each grant revoked in the last max_session holds one, and they are deleted once their sessions have expired"
                    ))),
                    _ => Other(ProviderError::Retryable(why)),
                })
            }
        }
    }
}

/// Kept credentials in another account, and when they expire.
type OtherAccount = tokio::sync::Mutex<Option<(aws_sdk_iam::Client, DateTime<Utc>)>>;

/// Why a deny could not be written.
enum DenyError {
    /// The role does not exist (IAM's `NoSuchEntity`).
    RoleMissing(ProviderError),
    Other(ProviderError),
}
use DenyError::{Other, RoleMissing};

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

    /// Nothing on AWS is shared between grants: each has its own
    /// sessions, tagged with its request id. So every grant is its own
    /// key, and each one's end is handled (its sessions denied when it
    /// ends early) even while the same person holds the role through
    /// another.
    fn grant_key(&self, g: &GrantSpec) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            g.target, g.resource, g.role, g.user, g.request_id
        )
    }

    /// The IAM role's ARN when the request is made, so a revocation
    /// reaches the role sessions were issued on even if the mapping
    /// changes later.
    fn account(&self, g: &GrantSpec) -> Option<String> {
        self.role_arn(&g.role).map(str::to_owned)
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
    /// `revoke_sessions`, lists each role's inline policies, which tells a
    /// missing role or a missing permission before a revocation needs it
    /// (whether `iam:PutRolePolicy` is allowed only a write would tell).
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
                let iam = match self.iam_for(iam, arn).await {
                    Ok(iam) => iam,
                    Err(e) => {
                        problems.push(format!("role {role}: {e}"));
                        continue;
                    }
                };
                if let Err(e) = Self::role_policies(&iam, name).await {
                    problems.push(format!("role {role}: {e} (revoke_sessions needs iam:ListRolePolicies, iam:PutRolePolicy and iam:DeleteRolePolicy on it)"));
                }
            }
        }
        Ok(problems)
    }

    fn sessions(&self) -> Option<&dyn SessionIssuer> {
        Some(self)
    }
}
