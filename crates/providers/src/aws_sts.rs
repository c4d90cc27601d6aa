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
use aws_config::BehaviorVersion;
use aws_sdk_sts::config::{Credentials, Region, SharedHttpClient};
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sts::types::Tag;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use chrono::{DateTime, Utc};

use crate::sessions::{
    session_name, source_identity, tag_value, AwsStsConfig, Session, SessionAsk, SessionError,
    SessionIssuer,
};
use crate::{GrantSpec, Presence, Provider, ProviderError};

/// AWS calls are cut off after this; well below the job lease and an
/// HTTP client's patience.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct AwsSts {
    config: AwsStsConfig,
    sts: aws_sdk_sts::Client,
    /// For the federation endpoint (not an AWS SDK service).
    http: reqwest::Client,
}

/// rustls with ring, as the rest of elevate: the SDK's default TLS stack
/// would build aws-lc.
fn https_ring() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

impl AwsSts {
    /// Builds the STS client: static keys when configured, otherwise the
    /// default AWS credential chain.
    pub async fn new(config: AwsStsConfig) -> Result<Self, ProviderError> {
        let timeouts = aws_sdk_sts::config::timeout::TimeoutConfig::builder()
            .operation_timeout(CALL_TIMEOUT)
            .build();
        let region = Region::new(config.region.clone());
        let mut builder = match &config.keys {
            Some(keys) => aws_sdk_sts::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .credentials_provider(Credentials::new(
                    keys.access_key_id.clone(),
                    keys.secret_access_key.clone(),
                    None,
                    None,
                    "elevate-config",
                ))
                .http_client(https_ring()),
            None => {
                let sdk = aws_config::defaults(BehaviorVersion::latest())
                    .region(region.clone())
                    .http_client(https_ring())
                    .load()
                    .await;
                aws_sdk_sts::config::Builder::from(&sdk)
            }
        };
        builder = builder.region(region).timeout_config(timeouts);
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url.clone());
        }
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Permanent(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            config,
            sts: aws_sdk_sts::Client::from_conf(builder.build()),
            http,
        })
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
            .tags(tag("elevate-request", &ask.request_id)?);
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

    /// Nothing to take away: sessions already issued end at their own
    /// expiry, which never passes the grant's window.
    async fn remove(&self, _grant: &GrantSpec) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Nothing is put on AWS, so there is nothing that could drift.
    async fn check(&self, _grant: &GrantSpec) -> Result<Presence, ProviderError> {
        Ok(Presence::Present)
    }

    /// Calls `GetCallerIdentity` with elevate's own credentials.
    async fn validate(&self) -> Result<Vec<String>, ProviderError> {
        match self.sts.get_caller_identity().send().await {
            Ok(_) => Ok(Vec::new()),
            Err(e) => Ok(vec![aws_message(&e)]),
        }
    }

    fn sessions(&self) -> Option<&dyn SessionIssuer> {
        Some(self)
    }
}
