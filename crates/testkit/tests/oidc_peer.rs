//! The OpenID provider peer does what elevate's sign-in tests rely on,
//! checked the way a relying party sees it: discovery, the authorization
//! code flow with PKCE through the [`Browser`], the token endpoint, the
//! tokens' claims and the published keys.

// clippy's allow-*-in-tests covers `#[test]` functions only, not the helpers
// they share.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use elevate_testkit::oidc::{
    base64url_encode, decode_jwt_unverified, Browser, OidcOptions, OidcPeer, OidcUser,
};
use rand::RngCore;
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const WEB_REDIRECT: &str = "http://127.0.0.1:1/cb";

fn alice() -> OidcUser {
    let mut alice = OidcUser::new("alice", &["sre", "oncall"]);
    alice.name = "Alice Liddell".to_owned();
    alice
        .claims
        .insert("department".to_owned(), json!("platform"));
    alice
}

fn start_peer() -> OidcPeer {
    OidcPeer::start(OidcOptions {
        users: vec![alice(), OidcUser::new("bob", &["dev"])],
        web_redirect_uris: vec![WEB_REDIRECT.to_owned()],
        ..OidcOptions::default()
    })
    .unwrap()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64url_encode(&bytes)
}

async fn discovery(peer: &OidcPeer) -> Value {
    let url = format!("{}/.well-known/openid-configuration", peer.issuer());
    reqwest::get(&url).await.unwrap().json().await.unwrap()
}

async fn jwks_kids(peer: &OidcPeer) -> BTreeSet<String> {
    let jwks_uri = discovery(peer).await["jwks_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let jwks: Value = reqwest::get(&jwks_uri).await.unwrap().json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// One authorization request as a relying party makes it.
struct Authorization {
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    verifier: String,
}

impl Authorization {
    fn new(client_id: &str, redirect_uri: &str) -> Authorization {
        Authorization {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
        }
    }

    async fn url(&self, peer: &OidcPeer, extra: &[(&str, &str)]) -> String {
        let endpoint = discovery(peer).await["authorization_endpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        let challenge = base64url_encode(&Sha256::digest(self.verifier.as_bytes()));
        let mut url = Url::parse(&endpoint).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", "openid profile email groups")
            .append_pair("state", &self.state)
            .append_pair("nonce", &self.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .extend_pairs(extra);
        url.into()
    }

    /// Signs in through `browser` and returns the code from the redirect
    /// back to the relying party, after checking `state` and `iss`.
    async fn code(&self, peer: &OidcPeer, browser: &Browser, extra: &[(&str, &str)]) -> String {
        let url = self.url(peer, extra).await;
        let back = browser
            .follow_until(&url, &self.redirect_uri)
            .await
            .unwrap();
        let back = Url::parse(&back).unwrap();
        let query = |name: &str| {
            back.query_pairs()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        };
        assert_eq!(query("error"), None, "{back}");
        assert_eq!(query("state").as_deref(), Some(self.state.as_str()));
        assert_eq!(query("iss"), Some(peer.issuer()));
        query("code").unwrap()
    }
}

/// POSTs to the token endpoint; `secret` = Some uses client_secret_basic.
async fn token_request(
    peer: &OidcPeer,
    client_id: &str,
    secret: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let endpoint = discovery(peer).await["token_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = reqwest::Client::new();
    let request = match secret {
        Some(secret) => client.post(&endpoint).basic_auth(client_id, Some(secret)),
        None => client.post(&endpoint),
    };
    let response = request.form(form).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn exchange(
    peer: &OidcPeer,
    authorization: &Authorization,
    secret: Option<&str>,
    code: &str,
) -> Value {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", authorization.verifier.as_str()),
        ("redirect_uri", authorization.redirect_uri.as_str()),
    ];
    if secret.is_none() {
        form.push(("client_id", authorization.client_id.as_str()));
    }
    let (status, body) = token_request(peer, &authorization.client_id, secret, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", peer.log());
    body
}

/// Signs `user` in with the web client and returns the token response.
async fn web_sign_in(peer: &OidcPeer, browser: &Browser, extra: &[(&str, &str)]) -> Value {
    let authorization = Authorization::new("elevate-web", WEB_REDIRECT);
    let code = authorization.code(peer, browser, extra).await;
    let tokens = exchange(peer, &authorization, Some("web-secret"), &code).await;
    let (_, id_token) = decode_jwt_unverified(tokens["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(id_token["nonce"], authorization.nonce.as_str());
    tokens
}

fn claims(tokens: &Value, which: &str) -> (Value, Value) {
    decode_jwt_unverified(tokens[which].as_str().unwrap()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn discovery_names_the_issuer_the_endpoints_and_elevates_acrs() {
    let peer = start_peer();
    let document = discovery(&peer).await;
    assert_eq!(document["issuer"], peer.issuer().as_str());
    assert_eq!(
        document["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        document["acr_values_supported"],
        json!(["urn:elevate:pwd", "urn:elevate:mfa"])
    );
    for scope in ["openid", "profile", "email", "groups"] {
        assert!(
            document["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(scope)),
            "{scope}"
        );
    }
}

#[tokio::test]
async fn the_web_client_signs_alice_in_and_her_id_token_carries_her_claims() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    let before = now();
    let tokens = web_sign_in(&peer, &browser, &[("login_hint", "alice")]).await;

    let (header, id_token) = claims(&tokens, "id_token");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], peer.kids()[0].as_str());
    assert_eq!(id_token["iss"], peer.issuer().as_str());
    assert_eq!(id_token["aud"], "elevate-web");
    assert_eq!(id_token["sub"], "sub-alice");
    assert_eq!(id_token["preferred_username"], "alice");
    assert_eq!(id_token["name"], "Alice Liddell");
    assert_eq!(id_token["email"], "alice@example.com");
    assert_eq!(id_token["email_verified"], true);
    assert_eq!(id_token["groups"], json!(["sre", "oncall"]));
    assert_eq!(id_token["department"], "platform");
    assert_eq!(id_token["acr"], "urn:elevate:pwd");
    assert_eq!(id_token["amr"], json!(["pwd"]));
    let auth_time = id_token["auth_time"].as_i64().unwrap();
    assert!(
        auth_time >= before - 1 && auth_time <= now() + 1,
        "{auth_time}"
    );
}

#[tokio::test]
async fn the_access_token_is_a_jwt_for_elevates_api_with_username_and_groups() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    let tokens = web_sign_in(&peer, &browser, &[("login_hint", "ALICE")]).await;

    let (header, access_token) = claims(&tokens, "access_token");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], peer.kids()[0].as_str());
    assert_eq!(access_token["iss"], peer.issuer().as_str());
    assert_eq!(access_token["aud"], "urn:elevate:api");
    assert_eq!(access_token["sub"], "sub-alice");
    assert_eq!(access_token["client_id"], "elevate-web");
    assert_eq!(access_token["preferred_username"], "alice");
    assert_eq!(access_token["email"], "alice@example.com");
    assert_eq!(access_token["groups"], json!(["sre", "oncall"]));
    assert_eq!(access_token["department"], "platform");
}

#[tokio::test]
async fn asking_for_mfa_with_prompt_login_signs_in_afresh_with_otp() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    let first = web_sign_in(&peer, &browser, &[("login_hint", "alice")]).await;
    let (_, first) = claims(&first, "id_token");

    // auth_time has a resolution of one second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stepped_up = web_sign_in(
        &peer,
        &browser,
        &[
            ("login_hint", "alice"),
            ("acr_values", "urn:elevate:mfa"),
            ("prompt", "login"),
        ],
    )
    .await;
    let (_, stepped_up) = claims(&stepped_up, "id_token");
    assert_eq!(stepped_up["acr"], "urn:elevate:mfa");
    assert_eq!(stepped_up["amr"], json!(["pwd", "otp"]));
    assert!(stepped_up["auth_time"].as_i64() > first["auth_time"].as_i64());

    // max_age=0 also forces a fresh login, through the same handler.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = web_sign_in(
        &peer,
        &browser,
        &[("login_hint", "alice"), ("max_age", "0")],
    )
    .await;
    let (_, again) = claims(&again, "id_token");
    assert_eq!(again["acr"], "urn:elevate:pwd");
    assert!(again["auth_time"].as_i64() > stepped_up["auth_time"].as_i64());
}

#[tokio::test]
async fn the_session_is_kept_and_another_login_hint_switches_the_user() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    let first = web_sign_in(&peer, &browser, &[("login_hint", "alice")]).await;
    let (_, first) = claims(&first, "id_token");

    // Same browser, no prompt: the session is reused (same auth_time).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reused = web_sign_in(&peer, &browser, &[("login_hint", "alice")]).await;
    let (_, reused) = claims(&reused, "id_token");
    assert_eq!(reused["auth_time"], first["auth_time"]);

    let bob = web_sign_in(&peer, &browser, &[("login_hint", "bob")]).await;
    let (_, bob) = claims(&bob, "id_token");
    assert_eq!(bob["preferred_username"], "bob");
    assert_eq!(bob["groups"], json!(["dev"]));
}

#[tokio::test]
async fn changed_users_are_seen_at_the_next_sign_in() {
    let peer = start_peer();
    let mut alice = alice();
    alice.email = "alice@corp.example".to_owned();
    alice.groups = vec!["auditors".to_owned()];
    peer.set_users(&[alice.clone()]).unwrap();

    let browser = Browser::new().unwrap();
    let tokens = web_sign_in(&peer, &browser, &[("login_hint", "alice")]).await;
    let (_, id_token) = claims(&tokens, "id_token");
    assert_eq!(id_token["email"], "alice@corp.example");
    assert_eq!(id_token["groups"], json!(["auditors"]));

    alice.claims.insert("shoe_size".to_owned(), json!(38));
    let error = peer.set_users(&[alice]).unwrap_err();
    assert!(format!("{error:#}").contains("shoe_size"), "{error:#}");
}

#[tokio::test]
async fn a_missing_or_unknown_login_hint_is_a_clear_400() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    let authorization = Authorization::new("elevate-web", WEB_REDIRECT);
    for extra in [&[][..], &[("login_hint", "mallory")][..]] {
        let url = authorization.url(&peer, extra).await;
        let error = browser.follow_until(&url, WEB_REDIRECT).await.unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("400"), "{message}");
        assert!(
            message.contains("login_hint") || message.contains("mallory"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn the_token_endpoint_refuses_a_wrong_secret_and_a_wrong_verifier() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    let authorization = Authorization::new("elevate-web", WEB_REDIRECT);
    let code = authorization
        .code(&peer, &browser, &[("login_hint", "alice")])
        .await;
    let wrong_verifier = "wrong-verifier-wrong-verifier-wrong-verifier-0123456789";
    let form = |verifier| {
        [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier),
            ("redirect_uri", WEB_REDIRECT),
        ]
    };

    let right = form(authorization.verifier.as_str());
    let (status, body) = token_request(&peer, "elevate-web", Some("wrong"), &right).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");

    let wrong = form(wrong_verifier);
    let (status, body) = token_request(&peer, "elevate-web", Some("web-secret"), &wrong).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");

    // client_secret_post works too (with a fresh code).
    let authorization = Authorization::new("elevate-web", WEB_REDIRECT);
    let code = authorization
        .code(&peer, &browser, &[("login_hint", "alice")])
        .await;
    let (status, body) = token_request(
        &peer,
        "elevate-web",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &authorization.verifier),
            ("redirect_uri", WEB_REDIRECT),
            ("client_id", "elevate-web"),
            ("client_secret", "web-secret"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn pkce_is_required_even_from_the_confidential_client() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    let endpoint = discovery(&peer).await["authorization_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut url = Url::parse(&endpoint).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "elevate-web")
        .append_pair("redirect_uri", WEB_REDIRECT)
        .append_pair("scope", "openid")
        .append_pair("state", "s")
        .append_pair("nonce", "n")
        .append_pair("login_hint", "alice");
    let back = browser
        .follow_until(url.as_str(), WEB_REDIRECT)
        .await
        .unwrap();
    let back = Url::parse(&back).unwrap();
    let pairs: Vec<(String, String)> = back.query_pairs().into_owned().collect();
    assert!(
        pairs.contains(&("error".to_owned(), "invalid_request".to_owned())),
        "{back}"
    );
    assert!(!pairs.iter().any(|(key, _)| key == "code"), "{back}");
}

#[tokio::test]
async fn the_cli_client_signs_in_on_any_loopback_port_without_a_secret() {
    let peer = start_peer();
    let browser = Browser::new().unwrap();
    for port in [49152, 61234] {
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let authorization = Authorization::new("elevate-cli", &redirect);
        let code = authorization
            .code(&peer, &browser, &[("login_hint", "bob")])
            .await;
        let tokens = exchange(&peer, &authorization, None, &code).await;
        let (_, id_token) = claims(&tokens, "id_token");
        assert_eq!(id_token["aud"], "elevate-cli");
        assert_eq!(id_token["preferred_username"], "bob");
        assert_eq!(id_token["nonce"], authorization.nonce.as_str());
    }

    // Another path on the loopback host is not a registered redirect URI.
    let authorization = Authorization::new("elevate-cli", "http://127.0.0.1:5000/elsewhere");
    let url = authorization.url(&peer, &[("login_hint", "bob")]).await;
    let error = browser
        .follow_until(&url, "http://127.0.0.1:5000/")
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("redirect_uri"), "{error:#}");
}

#[tokio::test]
async fn rotated_keys_publish_old_and_new_and_the_new_one_signs() {
    let peer = start_peer();
    let old = peer.kids()[0].clone();
    assert_eq!(jwks_kids(&peer).await, BTreeSet::from([old.clone()]));

    peer.rotate_keys().unwrap();
    let new = peer.kids()[0].clone();
    assert_ne!(new, old);
    assert_eq!(
        jwks_kids(&peer).await,
        BTreeSet::from([old.clone(), new.clone()])
    );

    let browser = Browser::new().unwrap();
    let tokens = web_sign_in(&peer, &browser, &[("login_hint", "alice")]).await;
    assert_eq!(claims(&tokens, "id_token").0["kid"], new.as_str());
    assert_eq!(claims(&tokens, "access_token").0["kid"], new.as_str());

    // A second rotation retires the first key.
    peer.rotate_keys().unwrap();
    let kids = jwks_kids(&peer).await;
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&new) && !kids.contains(&old), "{kids:?}");
}

#[tokio::test]
async fn sign_makes_tokens_with_a_published_kid_or_an_untrusted_one() {
    let peer = start_peer();
    let claims = json!({ "iss": "https://evil.example", "aud": "elevate-web", "sub": "x" });
    let token = peer.sign(claims.clone(), Value::Null).await.unwrap();
    let (header, payload) = decode_jwt_unverified(&token).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert!(jwks_kids(&peer)
        .await
        .contains(header["kid"].as_str().unwrap()));
    assert_eq!(payload, claims);

    let token = peer
        .sign(claims.clone(), json!({ "alg": "none" }))
        .await
        .unwrap();
    assert!(token.ends_with('.'), "{token}");

    let token = peer.sign_untrusted(claims, Value::Null).await.unwrap();
    let (header, _) = decode_jwt_unverified(&token).unwrap();
    assert_eq!(header["kid"], "untrusted");
    assert!(!jwks_kids(&peer).await.contains("untrusted"));
}

#[tokio::test]
async fn a_stopped_provider_is_unreachable_until_started_again() {
    let peer = start_peer();
    peer.stop();
    let url = format!("{}/.well-known/openid-configuration", peer.issuer());
    assert!(reqwest::get(&url).await.is_err());
    peer.start_again().unwrap();
    assert_eq!(discovery(&peer).await["issuer"], peer.issuer().as_str());
}
