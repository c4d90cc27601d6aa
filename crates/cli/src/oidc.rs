//! The OpenID Connect side of `elevate login`, without any IO: what the
//! server says about its identity provider, PKCE, the authorization URL,
//! the provider's discovery document and token answer, and the claims of
//! the ID token that comes back.
//!
//! The CLI is a public client (it cannot keep a secret), so the flow is the
//! authorization code flow with PKCE S256 and a loopback redirect (RFC 8252):
//! the code is useless without the verifier that never leaves this process.
//! `state` ties the browser's answer to this login, `nonce` ties the ID token
//! to it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::rngs::OsRng;
use rand::RngCore;
use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::CliError;
use crate::text::one_line;

/// What a step-up sign-in must satisfy, as the server states it in
/// `auth/config` and in its `step_up_required` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StepUp {
    /// The authentication context to ask for (space-separated).
    pub acr_values: Option<String>,
    /// How many seconds ago the user may at most have authenticated.
    pub max_age: Option<u64>,
}

/// `GET /api/v1/auth/config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuthConfig {
    /// `None` when the server only knows API tokens.
    pub(crate) oidc: Option<OidcSettings>,
}

/// The identity provider the server trusts and the client id it expects in
/// the tokens the CLI brings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct OidcSettings {
    pub(crate) issuer: String,
    pub(crate) cli_client_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) step_up: Option<StepUp>,
}

impl OidcSettings {
    /// The scopes to ask for; `openid` always among them, since without it
    /// no ID token comes back.
    pub(crate) fn scope(&self) -> String {
        let mut scopes: Vec<&str> = self
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|scope| !scope.is_empty())
            .collect();
        if !scopes.contains(&"openid") {
            scopes.insert(0, "openid");
        }
        scopes.join(" ")
    }
}

/// 32 random bytes from the operating system, base64url without padding:
/// the PKCE verifier, `state` and `nonce` alike.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether two secrets are equal, in time independent of where they differ.
pub(crate) fn same_secret(received: &str, expected: &str) -> bool {
    received.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// A PKCE pair (RFC 7636): the verifier stays here until the code exchange,
/// the challenge goes out in the authorization URL.
#[derive(Clone)]
pub(crate) struct Pkce {
    pub(crate) verifier: String,
    pub(crate) challenge: String,
}

impl Pkce {
    pub(crate) fn new() -> Self {
        Self::from_verifier(random_secret())
    }

    /// S256: the challenge is base64url(SHA-256(verifier)).
    pub(crate) fn from_verifier(verifier: String) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

/// Whether the client may talk to `url` during sign-in: codes, verifiers
/// and tokens cross these connections, so https, or http to this machine
/// only (a provider run for tests or development).
fn is_trusted_endpoint(url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")),
        _ => false,
    }
}

fn provider_url(text: &str, what: &str) -> Result<Url, CliError> {
    let url = Url::parse(text.trim()).map_err(|error| {
        CliError::SignIn(format!(
            "the identity provider's {what} {:?} is not a URL: {error}",
            one_line(text)
        ))
    })?;
    if !is_trusted_endpoint(&url) {
        return Err(CliError::SignIn(format!(
            "the identity provider's {what} {} is not https",
            one_line(text)
        )));
    }
    Ok(url)
}

/// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery
/// 1.0, section 4: a trailing slash of the issuer is not doubled).
pub(crate) fn discovery_url(issuer: &str) -> Result<Url, CliError> {
    provider_url(issuer, "issuer")?;
    let text = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim().trim_end_matches('/')
    );
    provider_url(&text, "discovery document")
}

/// The part of the provider's discovery document the CLI uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Discovery {
    pub(crate) issuer: String,
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    pub(crate) code_challenge_methods_supported: Option<Vec<String>>,
}

/// Where to send the browser and where to redeem the code.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoints {
    pub(crate) authorization: Url,
    pub(crate) token: Url,
}

impl Discovery {
    /// The endpoints, once the document proves to be the one of `issuer`
    /// (Discovery 1.0, section 4.3: the issuer must match exactly, or a
    /// document from elsewhere could redirect the sign-in).
    pub(crate) fn endpoints(&self, issuer: &str) -> Result<Endpoints, CliError> {
        if self.issuer != issuer {
            return Err(CliError::SignIn(format!(
                "the identity provider's discovery document names issuer {:?}, \
                 but elevate trusts {:?}",
                one_line(&self.issuer),
                one_line(issuer)
            )));
        }
        if let Some(methods) = &self.code_challenge_methods_supported {
            if !methods.iter().any(|method| method == "S256") {
                return Err(CliError::SignIn(
                    "the identity provider does not support PKCE with S256".to_string(),
                ));
            }
        }
        Ok(Endpoints {
            authorization: provider_url(&self.authorization_endpoint, "authorization endpoint")?,
            token: provider_url(&self.token_endpoint, "token endpoint")?,
        })
    }
}

/// Everything that goes into the authorization URL.
#[derive(Debug, Clone)]
pub(crate) struct AuthorizationRequest<'a> {
    pub(crate) endpoint: &'a Url,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) scope: &'a str,
    pub(crate) state: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) code_challenge: &'a str,
    /// `Some` for a step-up: a fresh sign-in (`prompt=login`) meeting these.
    pub(crate) step_up: Option<&'a StepUp>,
}

impl AuthorizationRequest<'_> {
    /// The address the browser opens. Parameters are appended to any query
    /// the endpoint already has.
    pub(crate) fn url(&self) -> Url {
        let mut url = self.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", self.client_id)
                .append_pair("redirect_uri", self.redirect_uri)
                .append_pair("scope", self.scope)
                .append_pair("state", self.state)
                .append_pair("nonce", self.nonce)
                .append_pair("code_challenge", self.code_challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(step_up) = self.step_up {
                if let Some(acr_values) = step_up.acr_values.as_deref() {
                    query.append_pair("acr_values", acr_values);
                }
                if let Some(max_age) = step_up.max_age {
                    query.append_pair("max_age", &max_age.to_string());
                }
                query.append_pair("prompt", "login");
            }
        }
        url
    }
}

/// The form posted to the token endpoint. A public client: no secret, the
/// PKCE verifier proves the code is ours.
pub(crate) fn token_form<'a>(
    code: &'a str,
    redirect_uri: &'a str,
    client_id: &'a str,
    verifier: &'a str,
) -> [(&'static str, &'a str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", client_id),
        ("code_verifier", verifier),
    ]
}

/// The token endpoint's answer (RFC 6749 section 5), success or error.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The ID token from the token endpoint's answer, or why there is none.
pub(crate) fn id_token_from_answer(status: u16, body: &[u8]) -> Result<String, CliError> {
    let answer: TokenAnswer = serde_json::from_slice(body).map_err(|_| {
        CliError::SignIn(format!(
            "the identity provider's token endpoint answered HTTP {status} without JSON"
        ))
    })?;
    if let Some(error) = answer.error {
        let mut reason = format!(
            "the identity provider refused the code: {}",
            one_line(&error)
        );
        if let Some(description) = answer.error_description {
            reason.push_str(&format!(" ({})", one_line(&description)));
        }
        return Err(CliError::SignIn(reason));
    }
    if !(200..300).contains(&status) {
        return Err(CliError::SignIn(format!(
            "the identity provider's token endpoint answered HTTP {status}"
        )));
    }
    answer
        .id_token
        .filter(|token| !token.trim().is_empty())
        .ok_or_else(|| {
            CliError::SignIn(
                "the identity provider sent no ID token (is \"openid\" among the scopes?)"
                    .to_string(),
            )
        })
}

/// What the ID token says, once it has been tied to this login.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IdTokenFacts {
    pub(crate) expires_at: DateTime<Utc>,
}

/// The claims of the ID token this login asked for, checked against what
/// this login sent.
///
/// The signature is not checked here: the token came straight from the
/// provider's token endpoint over TLS in exchange for our PKCE verifier
/// (OpenID Connect Core 3.1.3.7 allows TLS in place of the signature for
/// such a token), and the server checks the signature on every call anyway.
/// The nonce proves this token answers this login; issuer and audience catch
/// a misconfiguration before the server does, with a clearer message.
pub(crate) fn check_id_token(
    token: &str,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: DateTime<Utc>,
) -> Result<IdTokenFacts, CliError> {
    let claims = token_claims(token)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(issuer) {
        return Err(bad_token("it was issued by another identity provider"));
    }
    let audience_matches = match claims.get("aud") {
        Some(Value::String(audience)) => audience == client_id,
        Some(Value::Array(audiences)) => audiences
            .iter()
            .any(|audience| audience.as_str() == Some(client_id)),
        _ => false,
    };
    if !audience_matches {
        return Err(bad_token("it was issued to another client"));
    }
    match text("nonce") {
        Some(received) if same_secret(received, nonce) => {}
        _ => return Err(bad_token("its nonce does not match this sign-in")),
    }
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_f64)
        .and_then(|seconds| DateTime::from_timestamp(seconds as i64, 0))
        .ok_or_else(|| bad_token("it has no expiry time"))?;
    if expires_at <= now {
        return Err(bad_token(
            "it has already expired (is this computer's clock right?)",
        ));
    }
    Ok(IdTokenFacts { expires_at })
}

/// The payload of a compact JWS, as JSON.
fn token_claims(token: &str) -> Result<serde_json::Map<String, Value>, CliError> {
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_token("it is not a JWT"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad_token("its payload is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(bad_token("its payload is not a JSON object")),
    }
}

fn bad_token(why: &str) -> CliError {
    CliError::SignIn(format!(
        "the identity provider's ID token is unusable: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn jwt(claims: Value) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn claims() -> Value {
        json!({"iss": "http://127.0.0.1:9000", "aud": "elevate-cli", "sub": "alice",
               "nonce": "n-123", "exp": now().timestamp() + 3600, "iat": now().timestamp()})
    }

    fn check(token: &str) -> Result<IdTokenFacts, CliError> {
        check_id_token(
            token,
            "http://127.0.0.1:9000",
            "elevate-cli",
            "n-123",
            now(),
        )
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_string());
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn random_secrets_are_43_url_safe_characters_and_differ() {
        let first = random_secret();
        let second = random_secret();
        assert_eq!(first.len(), 43);
        assert!(first
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
        assert_ne!(first, second);
        assert_eq!(Pkce::new().verifier.len(), 43);
    }

    #[test]
    fn pkce_debug_output_hides_the_verifier() {
        let pkce = Pkce::from_verifier("secret-verifier".to_string());
        assert!(!format!("{pkce:?}").contains("secret-verifier"));
    }

    #[test]
    fn openid_is_always_asked_for() {
        let settings = OidcSettings {
            scopes: vec!["profile".into(), "groups".into()],
            ..OidcSettings::default()
        };
        assert_eq!(settings.scope(), "openid profile groups");
        let settings = OidcSettings {
            scopes: vec!["openid".into(), "email".into()],
            ..OidcSettings::default()
        };
        assert_eq!(settings.scope(), "openid email");
    }

    fn request<'a>(endpoint: &'a Url, step_up: Option<&'a StepUp>) -> AuthorizationRequest<'a> {
        AuthorizationRequest {
            endpoint,
            client_id: "elevate-cli",
            redirect_uri: "http://127.0.0.1:49152/callback",
            scope: "openid profile email groups",
            state: "s-1",
            nonce: "n-1",
            code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            step_up,
        }
    }

    fn pairs(url: &Url) -> Vec<(String, String)> {
        url.query_pairs()
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect()
    }

    #[test]
    fn authorization_url_carries_the_code_flow_with_pkce() {
        let endpoint = Url::parse("https://id.example/auth").unwrap();
        let url = request(&endpoint, None).url();
        assert_eq!(
            url.as_str(),
            "https://id.example/auth?response_type=code&client_id=elevate-cli\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A49152%2Fcallback\
             &scope=openid+profile+email+groups&state=s-1&nonce=n-1\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
             &code_challenge_method=S256"
        );
    }

    #[test]
    fn step_up_asks_for_a_fresh_sign_in_with_the_servers_requirements() {
        let endpoint = Url::parse("https://id.example/auth?tenant=ops").unwrap();
        let step_up = StepUp {
            acr_values: Some("urn:elevate:mfa".into()),
            max_age: Some(900),
        };
        let pairs = pairs(&request(&endpoint, Some(&step_up)).url());
        assert_eq!(pairs[0], ("tenant".into(), "ops".into()));
        for expected in [
            ("acr_values", "urn:elevate:mfa"),
            ("max_age", "900"),
            ("prompt", "login"),
        ] {
            assert!(
                pairs.contains(&(expected.0.into(), expected.1.into())),
                "{expected:?} in {pairs:?}"
            );
        }
    }

    #[test]
    fn step_up_without_requirements_still_forces_a_fresh_sign_in() {
        let endpoint = Url::parse("https://id.example/auth").unwrap();
        let pairs = pairs(&request(&endpoint, Some(&StepUp::default())).url());
        assert!(pairs.contains(&("prompt".into(), "login".into())));
        assert!(!pairs.iter().any(|(name, _)| name == "acr_values"));
        assert!(!pairs.iter().any(|(name, _)| name == "max_age"));
    }

    #[test]
    fn discovery_url_follows_the_issuer() {
        assert_eq!(
            discovery_url("http://127.0.0.1:9000").unwrap().as_str(),
            "http://127.0.0.1:9000/.well-known/openid-configuration"
        );
        assert_eq!(
            discovery_url("https://id.example/realms/ops/")
                .unwrap()
                .as_str(),
            "https://id.example/realms/ops/.well-known/openid-configuration"
        );
    }

    #[test]
    fn plain_http_is_only_trusted_on_this_machine() {
        assert!(discovery_url("http://localhost:8080").is_ok());
        let error = discovery_url("http://id.example").unwrap_err();
        assert_eq!(
            error.to_string(),
            "sign-in failed: the identity provider's issuer http://id.example is not https"
        );
    }

    fn discovery(issuer: &str) -> Discovery {
        Discovery {
            issuer: issuer.into(),
            authorization_endpoint: "https://id.example/auth".into(),
            token_endpoint: "https://id.example/token".into(),
            code_challenge_methods_supported: Some(vec!["S256".into()]),
        }
    }

    #[test]
    fn discovery_document_must_name_the_same_issuer() {
        let endpoints = discovery("https://id.example")
            .endpoints("https://id.example")
            .unwrap();
        assert_eq!(endpoints.token.as_str(), "https://id.example/token");
        let error = discovery("https://id.example/")
            .endpoints("https://id.example")
            .unwrap_err();
        assert!(error.to_string().contains("names issuer"), "{error}");
    }

    #[test]
    fn provider_without_s256_is_refused() {
        let mut document = discovery("https://id.example");
        document.code_challenge_methods_supported = Some(vec!["plain".into()]);
        assert!(document.endpoints("https://id.example").is_err());
        document.code_challenge_methods_supported = None;
        assert!(document.endpoints("https://id.example").is_ok());
    }

    #[test]
    fn token_form_is_a_public_client_exchange() {
        let form = token_form("c-1", "http://127.0.0.1:1/callback", "elevate-cli", "v-1");
        assert_eq!(
            form,
            [
                ("grant_type", "authorization_code"),
                ("code", "c-1"),
                ("redirect_uri", "http://127.0.0.1:1/callback"),
                ("client_id", "elevate-cli"),
                ("code_verifier", "v-1"),
            ]
        );
    }

    #[test]
    fn token_endpoint_errors_are_reported_on_one_line() {
        let body = br#"{"error":"invalid_grant","error_description":"grant request is invalid\nPKCE verification failed"}"#;
        let error = id_token_from_answer(400, body).unwrap_err();
        assert_eq!(
            error.to_string(),
            "sign-in failed: the identity provider refused the code: invalid_grant \
             (grant request is invalid PKCE verification failed)"
        );
        assert!(id_token_from_answer(502, b"<html>").is_err());
        assert!(id_token_from_answer(200, br#"{"access_token":"a"}"#).is_err());
        assert_eq!(
            id_token_from_answer(200, br#"{"id_token":"a.b.c"}"#).unwrap(),
            "a.b.c"
        );
    }

    #[test]
    fn id_token_of_this_login_gives_its_expiry() {
        let facts = check(&jwt(claims())).unwrap();
        assert_eq!(facts.expires_at, now() + chrono::TimeDelta::hours(1));
    }

    #[test]
    fn audience_may_be_a_list() {
        let mut claims = claims();
        claims["aud"] = json!(["elevate-cli", "other"]);
        assert!(check(&jwt(claims)).is_ok());
    }

    #[test]
    fn id_token_for_another_login_is_refused() {
        let cases = [
            ("nonce", json!("n-999"), "nonce"),
            ("nonce", Value::Null, "nonce"),
            (
                "iss",
                json!("https://evil.example"),
                "another identity provider",
            ),
            ("aud", json!("someone-else"), "another client"),
            ("exp", json!(now().timestamp() - 1), "expired"),
            ("exp", Value::Null, "no expiry"),
        ];
        for (claim, value, reason) in cases {
            let mut claims = claims();
            claims[claim] = value;
            let message = check(&jwt(claims)).unwrap_err().to_string();
            assert!(message.contains(reason), "{claim}: {message}");
        }
    }

    #[test]
    fn garbage_instead_of_a_jwt_is_refused() {
        for token in ["", "abc", "a.b", "a.!!!.c", "a.b.c.d", "e30.bm90IGpzb24.c"] {
            assert!(check(token).is_err(), "{token}");
        }
    }
}
