//! elevate as an OpenID Connect relying party: discovery, the provider's
//! signing keys, token validation, and the code exchange.
//!
//! Tokens are checked here by hand rather than by a generic JWT library's
//! defaults, so that each way a token can be wrong gets its own stable
//! error code (`token_expired`, `token_wrong_audience`, ...) and nothing is
//! accepted by omission: the algorithm must be an asymmetric one the keys
//! support (`none` and HMAC never are), the key is found by `kid`, and
//! `iss`, `aud`, `exp`, `nbf` and `iat` are all checked with a bounded
//! clock skew. Only the signature arithmetic is delegated (`jsonwebtoken`'s
//! verify, on ring).
//!
//! Keys rotate at the provider: a token naming an unknown `kid` triggers
//! one JWKS refresh, at most once per `jwks_refresh_interval` so that a
//! flood of made-up key ids cannot turn elevate into a load generator
//! against the provider.
//!
//! Discovery runs at start-up. When the provider cannot be reached then,
//! elevate still starts (grants must keep being revoked), logs why, and
//! retries; sign-ins are refused with `identity_provider_unavailable`
//! meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{TimeZone, Utc};
use elevate_core::Timestamp;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

/// How long one call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest token accepted; real ones are a few kilobytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The `[oidc]` section, checked.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub cli_client_id: Option<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub username_claim: String,
    pub email_claim: String,
    pub groups_claim: String,
    pub attribute_claims: Vec<String>,
    pub clock_skew: Duration,
    pub session_lifetime: Duration,
    pub jwks_refresh_interval: Duration,
}

/// Why a token was refused. Every kind is a 401 with its own code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Malformed(String),
    AlgNotAllowed(String),
    UnknownKey(String),
    BadSignature,
    WrongIssuer(String),
    WrongAudience,
    Expired(Timestamp),
    NotYetValid,
    /// The provider's keys are not known yet (provider unreachable).
    Unavailable(String),
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "token_malformed",
            TokenError::AlgNotAllowed(_) => "token_alg_not_allowed",
            TokenError::UnknownKey(_) => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::WrongIssuer(_) => "token_wrong_issuer",
            TokenError::WrongAudience => "token_wrong_audience",
            TokenError::Expired(_) => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::Unavailable(_) => "identity_provider_unavailable",
        }
    }

    pub fn message(&self) -> String {
        match self {
            TokenError::Malformed(why) => format!("the bearer token is not a valid JWT: {why}"),
            TokenError::AlgNotAllowed(alg) => format!(
                "tokens signed with \"{alg}\" are not accepted; the identity provider's asymmetric keys must sign them"
            ),
            TokenError::UnknownKey(kid) => format!(
                "the token was signed with key \"{kid}\", which the identity provider does not publish"
            ),
            TokenError::BadSignature => "the token's signature does not verify".into(),
            TokenError::WrongIssuer(iss) => {
                format!("the token was issued by \"{iss}\", not by the configured identity provider")
            }
            TokenError::WrongAudience => "the token was not issued for elevate (audience)".into(),
            TokenError::Expired(at) => format!(
                "the token expired at {}; sign in again",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            TokenError::NotYetValid => "the token is not valid yet (nbf/iat in the future)".into(),
            TokenError::Unavailable(why) => {
                format!("the identity provider cannot be reached: {why}")
            }
        }
    }
}

/// A token that passed every check: its claims, and when it expires.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub expires_at: Timestamp,
}

impl Verified {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
    pub fn time(&self, name: &str) -> Option<Timestamp> {
        self.claims
            .get(name)
            .and_then(Value::as_i64)
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
    }
}

/// What the discovery document says, as far as elevate uses it.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

struct Keys {
    by_kid: HashMap<String, (Jwk, DecodingKey)>,
    /// Keys without a `kid`, tried in order.
    anonymous: Vec<(Jwk, DecodingKey)>,
    fetched: Instant,
}

/// The tokens the provider answers a code exchange with.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub id_token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

pub struct Oidc {
    pub settings: OidcSettings,
    http: reqwest::Client,
    metadata: RwLock<Option<Metadata>>,
    keys: RwLock<Option<Keys>>,
    /// One refresh at a time; others wait and reuse its result.
    refreshing: Mutex<()>,
    /// The last failed discovery: callers that queued behind it share its
    /// answer instead of each trying again.
    discovery_failure: std::sync::Mutex<Option<(Instant, String)>>,
}

fn algorithm(name: &str) -> Option<Algorithm> {
    // Asymmetric only: an HMAC "key" would be the client secret, which
    // elevate shares with the provider, and `none` is no signature at all.
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn decode_part(part: &str, what: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed(format!("the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
    }
}

/// Does a bearer token look like a JWT (three dot-separated parts)?
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// The signature keys of a JWKS, by `kid`.
fn parse_keys(set: &JwkSet) -> Keys {
    let mut by_kid = HashMap::new();
    let mut anonymous = Vec::new();
    for jwk in &set.keys {
        // Encryption keys are not for verifying signatures.
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match &jwk.common.key_id {
            Some(kid) => {
                by_kid.insert(kid.clone(), (jwk.clone(), key));
            }
            None => anonymous.push((jwk.clone(), key)),
        }
    }
    Keys {
        by_kid,
        anonymous,
        fetched: Instant::now(),
    }
}

/// Does this JWK fit this algorithm? A key that names its `alg` must name
/// this one; otherwise its type must match the algorithm's family.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    if let Some(key_alg) = jwk.common.key_algorithm {
        if format!("{key_alg:?}") != format!("{alg:?}") {
            return false;
        }
    }
    match &jwk.algorithm {
        P::RSA(_) => matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ),
        P::EllipticCurve(_) => matches!(alg, Algorithm::ES256 | Algorithm::ES384),
        P::OctetKeyPair(_) => alg == Algorithm::EdDSA,
        P::OctetKey(_) => false,
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Oidc, String> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .user_agent(concat!("elevate/", env!("CARGO_PKG_VERSION")))
            // The provider's endpoints are used as published, never via a
            // redirect to somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Oidc {
            settings,
            http,
            metadata: RwLock::new(None),
            keys: RwLock::new(None),
            refreshing: Mutex::new(()),
            discovery_failure: std::sync::Mutex::new(None),
        })
    }

    /// Fetches the discovery document and the keys. The error is one
    /// sentence saying what is wrong with the provider or the config.
    pub async fn discover(&self) -> Result<(), String> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
        let answer = self.http.get(&url).send().await.map_err(|e| {
            format!(
                "cannot reach the identity provider at {url}: {}",
                reason(&e)
            )
        })?;
        if !answer.status().is_success() {
            return Err(format!(
                "the identity provider answered {} for {url}; check oidc.issuer",
                answer.status()
            ));
        }
        let meta: Metadata = answer
            .json()
            .await
            .map_err(|e| format!("{url} is not an OpenID Connect discovery document: {e}"))?;
        if meta.issuer.trim_end_matches('/') != self.settings.issuer {
            return Err(format!(
                "the discovery document names issuer \"{}\", but oidc.issuer is \"{}\"; they must be the same",
                meta.issuer, self.settings.issuer
            ));
        }
        if !meta.code_challenge_methods_supported.is_empty()
            && !meta
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
        {
            return Err("the identity provider does not support PKCE with S256".into());
        }
        *self.metadata.write().await = Some(meta);
        self.fetch_keys().await
    }

    pub async fn is_discovered(&self) -> bool {
        self.metadata.read().await.is_some()
    }

    /// Discovers the provider if that has not succeeded yet. While it is
    /// down, one attempt runs at a time and everyone who waited for it gets
    /// its answer: a burst of sign-ins or API calls costs the provider one
    /// request, not one each.
    async fn discover_once(&self) -> Result<(), TokenError> {
        let asked = Instant::now();
        let _one = self.refreshing.lock().await;
        if self.is_discovered().await {
            return Ok(());
        }
        let shared = self
            .discovery_failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .filter(|(at, _)| *at >= asked);
        if let Some((_, why)) = shared {
            return Err(TokenError::Unavailable(why));
        }
        let result = self.discover().await;
        if let (Err(why), Ok(mut failure)) = (&result, self.discovery_failure.lock()) {
            *failure = Some((Instant::now(), why.clone()));
        }
        result.map_err(TokenError::Unavailable)
    }

    pub async fn metadata(&self) -> Result<Metadata, TokenError> {
        if let Some(m) = self.metadata.read().await.clone() {
            return Ok(m);
        }
        self.discover_once().await?;
        self.metadata
            .read()
            .await
            .clone()
            .ok_or_else(|| TokenError::Unavailable("discovery failed".into()))
    }

    async fn fetch_keys(&self) -> Result<(), String> {
        let jwks_uri = match self.metadata.read().await.as_ref() {
            Some(m) => m.jwks_uri.clone(),
            None => return Err("the provider has not been discovered yet".into()),
        };
        let answer = self.http.get(&jwks_uri).send().await.map_err(|e| {
            format!(
                "cannot fetch the provider's keys from {jwks_uri}: {}",
                reason(&e)
            )
        })?;
        if !answer.status().is_success() {
            return Err(format!(
                "the provider answered {} for its keys at {jwks_uri}",
                answer.status()
            ));
        }
        let set: JwkSet = answer
            .json()
            .await
            .map_err(|e| format!("{jwks_uri} is not a JSON Web Key Set: {e}"))?;
        let keys = parse_keys(&set);
        if keys.by_kid.is_empty() && keys.anonymous.is_empty() {
            return Err(format!("{jwks_uri} publishes no usable signing key"));
        }
        tracing::info!(
            keys = keys.by_kid.len() + keys.anonymous.len(),
            "loaded the identity provider's signing keys"
        );
        *self.keys.write().await = Some(keys);
        Ok(())
    }

    /// The key for `kid`, refreshing the JWKS once if it is unknown and
    /// the last fetch is older than the refresh interval.
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<DecodingKey>, TokenError> {
        if !self.is_discovered().await {
            self.discover_once().await?;
        }
        let lookup = |keys: &Keys| -> Option<Vec<DecodingKey>> {
            match kid {
                Some(kid) => keys
                    .by_kid
                    .get(kid)
                    .filter(|(jwk, _)| key_fits(jwk, alg))
                    .map(|(_, k)| vec![k.clone()]),
                None => {
                    let all: Vec<DecodingKey> = keys
                        .by_kid
                        .values()
                        .chain(keys.anonymous.iter())
                        .filter(|(jwk, _)| key_fits(jwk, alg))
                        .map(|(_, k)| k.clone())
                        .collect();
                    (!all.is_empty()).then_some(all)
                }
            }
        };
        let stale = {
            let guard = self.keys.read().await;
            match guard.as_ref() {
                Some(keys) => {
                    // A published key of another type than `alg` says: the
                    // algorithm is wrong, not the key (and no refresh helps).
                    if let Some((jwk, _)) = kid.and_then(|k| keys.by_kid.get(k)) {
                        if !key_fits(jwk, alg) {
                            return Err(TokenError::AlgNotAllowed(format!(
                                "{alg:?} with key {}",
                                kid.unwrap_or_default()
                            )));
                        }
                    }
                    if let Some(found) = lookup(keys) {
                        return Ok(found);
                    }
                    keys.fetched.elapsed() >= self.settings.jwks_refresh_interval
                }
                None => true,
            }
        };
        let unknown = || TokenError::UnknownKey(kid.unwrap_or("(none)").to_owned());
        if !stale {
            return Err(unknown());
        }
        let _one = self.refreshing.lock().await;
        // Someone else may have refreshed while we waited.
        let fresh_enough = self
            .keys
            .read()
            .await
            .as_ref()
            .is_some_and(|k| k.fetched.elapsed() < self.settings.jwks_refresh_interval);
        if !fresh_enough {
            if let Err(e) = self.fetch_keys().await {
                tracing::warn!(error = %e, "cannot refresh the identity provider's keys");
                // Keep the old set, but do not hammer the provider.
                if let Some(k) = self.keys.write().await.as_mut() {
                    k.fetched = Instant::now();
                }
            }
        }
        let guard = self.keys.read().await;
        guard.as_ref().and_then(lookup).ok_or_else(unknown)
    }

    /// Checks a token signed by the provider and meant for one of
    /// `audiences`, at `now`.
    pub async fn verify(
        &self,
        token: &str,
        audiences: &[&str],
        now: Timestamp,
    ) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("it is too long".into()));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("it does not have three parts".into()));
        };
        let header = decode_part(h, "header")?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Malformed("the header has no alg".into()))?;
        let alg =
            algorithm(alg_name).ok_or_else(|| TokenError::AlgNotAllowed(alg_name.to_owned()))?;
        if header.contains_key("crit") {
            // No critical extension is understood, so none may be required.
            return Err(TokenError::Malformed(
                "it requires extensions (crit) elevate does not implement".into(),
            ));
        }
        let kid = header.get("kid").and_then(Value::as_str);
        let keys = self.key_for(kid, alg).await?;
        let message = &token[..h.len() + 1 + p.len()];
        let verified = keys.iter().any(|key| {
            jsonwebtoken::crypto::verify(sig, message.as_bytes(), key, alg).unwrap_or(false)
        });
        if !verified {
            return Err(TokenError::BadSignature);
        }
        let claims = decode_part(p, "payload")?;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss.trim_end_matches('/') != self.settings.issuer || iss.is_empty() {
            return Err(TokenError::WrongIssuer(iss.to_owned()));
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => audiences.contains(&a.as_str()),
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| audiences.contains(&a)),
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::WrongAudience);
        }
        let skew = chrono::Duration::from_std(self.settings.clock_skew)
            .unwrap_or_else(|_| chrono::Duration::seconds(60));
        let time = |name: &str| -> Result<Option<Timestamp>, TokenError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_i64()
                    .or_else(|| v.as_f64().map(|f| f as i64))
                    .and_then(|s| Utc.timestamp_opt(s, 0).single())
                    .map(Some)
                    .ok_or_else(|| TokenError::Malformed(format!("{name} is not a time"))),
            }
        };
        let exp = time("exp")?.ok_or_else(|| TokenError::Malformed("it has no exp".into()))?;
        if now > exp + skew {
            return Err(TokenError::Expired(exp));
        }
        if time("nbf")?.is_some_and(|nbf| now + skew < nbf)
            || time("iat")?.is_some_and(|iat| now + skew < iat)
        {
            return Err(TokenError::NotYetValid);
        }
        if claims
            .get("sub")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(TokenError::Malformed("it has no sub".into()));
        }
        Ok(Verified {
            claims,
            expires_at: exp,
        })
    }

    /// The audiences a bearer token may carry: the web and CLI clients
    /// (ID tokens) and any configured API audience (access tokens).
    pub fn bearer_audiences(&self) -> Vec<&str> {
        let s = &self.settings;
        std::iter::once(s.client_id.as_str())
            .chain(s.cli_client_id.as_deref())
            .chain(s.audiences.iter().map(String::as_str))
            .collect()
    }

    /// Exchanges an authorization code (with its PKCE verifier) for
    /// tokens, authenticating as the web client.
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenResponse, String> {
        let meta = self.metadata().await.map_err(|e| e.message())?;
        let answer = self
            .token_request(
                &meta,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", verifier),
                ],
            )
            .await?;
        let status = answer.status();
        let body: Value = answer
            .json()
            .await
            .map_err(|e| format!("the token endpoint answered {status} with no JSON: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "the identity provider refused the sign-in: {}",
                provider_error(&body)
            ));
        }
        serde_json::from_value(body)
            .map_err(|e| format!("the token endpoint's answer is not a token response: {e}"))
    }

    async fn token_request(
        &self,
        meta: &Metadata,
        form: &[(&str, &str)],
    ) -> Result<reqwest::Response, String> {
        let s = &self.settings;
        let mut form: Vec<(&str, &str)> = form.to_vec();
        let mut request = self.http.post(&meta.token_endpoint);
        let basic_ok = meta.token_endpoint_auth_methods_supported.is_empty()
            || meta
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == "client_secret_basic");
        match &s.client_secret {
            Some(secret) if basic_ok => {
                // RFC 6749 §2.3.1: form-encode both before Basic.
                let user = form_encode(&s.client_id);
                let pass = form_encode(secret);
                request = request.basic_auth(user, Some(pass));
            }
            Some(secret) => {
                form.push(("client_id", &s.client_id));
                form.push(("client_secret", secret));
            }
            None => form.push(("client_id", &s.client_id)),
        }
        request
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("cannot reach the token endpoint: {}", reason(&e)))
    }

    /// Checks the client credentials without a user: a code exchange with
    /// a code that cannot exist. A provider authenticates the client
    /// before looking at the code, so `invalid_client` means the id or
    /// secret is wrong and `invalid_grant` means they are right.
    pub async fn probe_client(&self) -> Result<(), String> {
        let meta = self.metadata().await.map_err(|e| e.message())?;
        let answer = self
            .token_request(
                &meta,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", "elevate-configuration-check"),
                    ("redirect_uri", "https://elevate.invalid/callback"),
                    (
                        "code_verifier",
                        "elevate-configuration-check-elevate-configuration-check",
                    ),
                ],
            )
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        let error = body.get("error").and_then(Value::as_str).unwrap_or("");
        if error == "invalid_client" || status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(format!(
                "the identity provider refused elevate's client credentials ({}): check oidc.client_id and the client secret",
                provider_error(&body)
            ));
        }
        Ok(())
    }
}

fn form_encode(s: &str) -> String {
    url_encode(s)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn provider_error(body: &Value) -> String {
    let code = body.get("error").and_then(Value::as_str).unwrap_or("error");
    match body.get("error_description").and_then(Value::as_str) {
        Some(d) => format!("{code}: {d}"),
        None => code.to_owned(),
    }
}

fn reason(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
