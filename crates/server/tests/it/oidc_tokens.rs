//! Bearer tokens from the identity provider: real ID and access tokens
//! obtained without elevate's help authenticate API calls; every kind of
//! bad token is refused with its own code and stores nothing; rotated keys
//! are picked up (and a flood of made-up key ids does not make elevate
//! refetch the keys more than once per interval); a person is known by the
//! provider's subject, not by the name or e-mail the provider sends.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use elevate_testkit::oidc::OidcUser;
use elevate_testkit::oidc::{base64url_encode, decode_jwt_unverified, Browser};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Connection;

use crate::common::{connect_store, read_only};
use crate::oidc_common::{read_prod, users, OidcEnv, API_AUDIENCE, WEB_CLIENT, WEB_SECRET};

/// The tokens a relying party gets from a code exchange.
struct Tokens {
    id_token: String,
    access_token: String,
}

/// Plays a relying party of its own against the provider (elevate is not
/// involved): discovery, an authorization request for the web client with
/// state, nonce and a PKCE S256 challenge, the browser's redirects up to
/// (not including) elevate's callback, and the code exchange with the
/// client's secret and the verifier. A fresh browser each time, so that
/// each call signs `login_hint` in.
async fn rp_sign_in(env: &OidcEnv, login_hint: &str) -> Result<Tokens> {
    let http = reqwest::Client::new();
    let discovery: Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            env.peer.issuer()
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let endpoint = |name: &str| -> Result<String> {
        discovery[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the discovery document has no {name}: {discovery}"))
    };
    let (authorize, token_endpoint) = (
        endpoint("authorization_endpoint")?,
        endpoint("token_endpoint")?,
    );

    let state = base64url_encode(&rand::random::<[u8; 16]>());
    let nonce = base64url_encode(&rand::random::<[u8; 16]>());
    let verifier = base64url_encode(&rand::random::<[u8; 32]>());
    let challenge = base64url_encode(&Sha256::digest(verifier.as_bytes()));
    let callback = format!("{}/auth/callback", env.app.url);
    let url = Url::parse_with_params(
        &authorize,
        &[
            ("response_type", "code"),
            ("client_id", WEB_CLIENT),
            ("redirect_uri", callback.as_str()),
            ("scope", "openid profile email groups"),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("login_hint", login_hint),
        ],
    )?;
    let browser = Browser::new()?;
    let answer = Url::parse(&browser.follow_until(url.as_str(), &callback).await?)?;
    let param = |name: &str| {
        answer
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    ensure!(
        param("error").is_none(),
        "the provider refused the sign-in: {answer}"
    );
    ensure!(
        param("state").as_deref() == Some(state.as_str()),
        "state mismatch: {answer}"
    );
    let code = param("code").with_context(|| format!("no code in {answer}"))?;

    let response = http
        .post(&token_endpoint)
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", callback.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    ensure!(status == StatusCode::OK, "token endpoint: {status} {body}");
    let id_token = body["id_token"]
        .as_str()
        .with_context(|| format!("no id_token: {body}"))?
        .to_owned();
    let access_token = body["access_token"]
        .as_str()
        .with_context(|| format!("no access_token: {body}"))?
        .to_owned();
    let (_, id_claims) = decode_jwt_unverified(&id_token)?;
    ensure!(id_claims["nonce"] == nonce, "nonce mismatch: {id_claims}");
    Ok(Tokens {
        id_token,
        access_token,
    })
}

/// `GET /api/v1/me` with a bearer token.
async fn call_me(env: &OidcEnv, token: &str) -> Result<(StatusCode, Value)> {
    let (status, body, _) = env.bearer(Method::GET, "/api/v1/me", token, None).await?;
    Ok((status, body))
}

/// `/api/v1/me` with `token` must answer 200; returns the body.
async fn me_ok(env: &OidcEnv, token: &str) -> Result<Value> {
    let (status, body) = call_me(env, token).await?;
    ensure!(status == StatusCode::OK, "/me answered {status}: {body}");
    Ok(body)
}

/// What elevate has stored: identities bound, sessions, requests.
#[derive(Debug, PartialEq, Eq)]
struct Stored {
    identities: i64,
    sessions: i64,
    requests: i64,
}

async fn stored(env: &OidcEnv) -> Result<Stored> {
    let mut db = connect_store(&read_only(&env.app.db_url)).await?;
    let mut counts = [0i64; 3];
    for (count, table) in counts
        .iter_mut()
        .zip(["identities", "sessions", "requests"])
    {
        *count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut db)
            .await?;
    }
    let [identities, sessions, requests] = counts;
    let counts = Stored {
        identities,
        sessions,
        requests,
    };
    db.close().await?;
    Ok(counts)
}

/// `token` is refused with 401 and `code`, both for reading who the caller
/// is and for asking for access, and the attempt stores nothing.
async fn assert_refused(env: &OidcEnv, token: &str, code: &str) -> Result<()> {
    let before = stored(env).await?;
    let (status, body) = call_me(env, token).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let (status, body, _) = env
        .bearer(
            Method::POST,
            "/api/v1/requests",
            token,
            Some(read_prod("with a bad token")),
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(
        stored(env).await?,
        before,
        "a refused call stored something"
    );
    Ok(())
}

/// The refusal is about the token's defect: the same claims, signed
/// properly, are accepted (and bind alice).
async fn assert_accepted(env: &OidcEnv, claims: Value) -> Result<()> {
    let good = env.peer.sign(claims, Value::Null).await?;
    let body = me_ok(env, &good).await?;
    assert_eq!(body["name"], "alice", "{body}");
    assert_eq!(body["auth"]["method"], "oidc", "{body}");
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The roles `/api/v1/eligible` offers on `resource`.
async fn eligible_roles(env: &OidcEnv, token: &str, resource: &str) -> Result<Vec<String>> {
    let (status, body, _) = env
        .bearer(Method::GET, "/api/v1/eligible", token, None)
        .await?;
    ensure!(status == StatusCode::OK, "/eligible: {status} {body}");
    Ok(body["eligible"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"] == resource)
        .filter_map(|e| e["role"].as_str().map(str::to_owned))
        .collect())
}

// ---- 1. real tokens from the provider --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_provider_authenticate_api_calls_and_their_groups_make_the_user_eligible(
) -> Result<()> {
    let env = OidcEnv::start().await?;
    let alice = rp_sign_in(&env, "alice").await?;

    // The ID token (audience: the web client).
    let (header, id_claims) = decode_jwt_unverified(&alice.id_token)?;
    assert_eq!(id_claims["aud"], WEB_CLIENT, "{id_claims}");
    assert_eq!(header["kid"], env.peer.kids()[0], "{header}");
    let me = me_ok(&env, &alice.id_token).await?;
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["email"], "alice@example.com", "{me}");
    assert_eq!(me["groups"], json!(["developers"]), "{me}");
    assert_eq!(me["attributes"]["department"], "sre", "{me}");
    assert_eq!(me["auth"]["method"], "oidc", "{me}");
    assert_eq!(me["auth"]["issuer"], env.peer.issuer(), "{me}");
    assert_eq!(
        me["csrf_token"],
        Value::Null,
        "no CSRF for bearer calls: {me}"
    );
    let expires_at = me["auth"]["expires_at"]
        .as_str()
        .with_context(|| format!("no auth.expires_at: {me}"))?;
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(expires_at)?.timestamp(),
        id_claims["exp"].as_i64().context("exp")?,
        "expires_at is the token's exp: {me}"
    );

    // The access token (a JWT for the API audience) works as well.
    let (_, at_claims) = decode_jwt_unverified(&alice.access_token)?;
    let audiences = match &at_claims["aud"] {
        Value::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    assert!(audiences.contains(&json!(API_AUDIENCE)), "{at_claims}");
    assert!(!audiences.contains(&json!(WEB_CLIENT)), "{at_claims}");
    let me = me_ok(&env, &alice.access_token).await?;
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["groups"], json!(["developers"]), "{me}");
    assert_eq!(me["auth"]["method"], "oidc", "{me}");
    assert!(me["auth"]["expires_at"].is_string(), "{me}");

    // Groups from the token make alice eligible; she asks with the token.
    for token in [&alice.id_token, &alice.access_token] {
        let roles = eligible_roles(&env, token, "orders").await?;
        assert!(roles.contains(&"orders_reader".to_owned()), "{roles:?}");
    }
    let (status, created, _) = env
        .bearer(
            Method::POST,
            "/api/v1/requests",
            &alice.access_token,
            Some(read_prod("checking an order")),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["requester"], "alice", "{created}");
    let id = created["id"].as_str().context("no id")?.to_owned();
    let approve = format!("/api/v1/requests/{id}/approve");

    // alice may not approve her own request, with either token.
    for token in [&alice.id_token, &alice.access_token] {
        let (status, body, _) = env
            .bearer(Method::POST, &approve, token, Some(json!({})))
            .await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "self_approval", "{body}");
    }

    // bob, a DBA by his own token's groups, may.
    let bob = rp_sign_in(&env, "bob").await?;
    let me = me_ok(&env, &bob.id_token).await?;
    assert_eq!(me["name"], "bob", "{me}");
    assert_eq!(me["groups"], json!(["dba"]), "{me}");
    let (status, body, _) = env
        .bearer(Method::POST, &approve, &bob.access_token, Some(json!({})))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["state"], "pending", "{body}");
    let approvals = body["approvals"].as_array().context("approvals")?;
    assert!(approvals.iter().any(|a| a["by"] == "bob"), "{body}");
    assert!(!approvals.iter().any(|a| a["by"] == "alice"), "{body}");
    Ok(())
}

// ---- 2. bad tokens, one kind each -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_token_alg_none_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let claims = env.claims("alice", API_AUDIENCE);
    let bad = env
        .peer
        .sign(claims.clone(), json!({ "alg": "none" }))
        .await?;
    assert!(bad.ends_with('.'), "no signature: {bad}");
    assert_refused(&env, &bad, "token_alg_not_allowed").await?;
    // Nor is any other spelling of it, with or without a (real) signature.
    let good = env.peer.sign(claims.clone(), Value::Null).await?;
    let (_, rest) = good.split_once('.').context("a JWS")?;
    let (payload, signature) = rest.split_once('.').context("a JWS")?;
    for alg in ["None", "NONE", "nOnE", ""] {
        let header = base64url_encode(&serde_json::to_vec(&json!({ "alg": alg }))?);
        for sig in ["", signature] {
            let bad = format!("{header}.{payload}.{sig}");
            assert_refused(&env, &bad, "token_alg_not_allowed").await?;
        }
    }
    assert_accepted(&env, claims).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hmac_token_keyed_with_the_public_key_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let claims = env.claims("alice", API_AUDIENCE);
    for alg in ["HS256", "HS384", "HS512"] {
        let bad = env.peer.sign(claims.clone(), json!({ "alg": alg })).await?;
        let (header, _) = decode_jwt_unverified(&bad)?;
        assert_eq!(
            header["kid"],
            env.peer.kids()[0],
            "a published kid: {header}"
        );
        assert_refused(&env, &bad, "token_alg_not_allowed").await?;
    }
    assert_accepted(&env, claims).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_another_issuer_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let good = env.claims("alice", API_AUDIENCE);
    // Signed by the trusted key, but naming another issuer (one that
    // merely starts like the real one, too), or none at all.
    for iss in [
        json!("https://evil.example"),
        json!(format!("{}/other", env.peer.issuer())),
        json!(format!("{}.evil.example", env.peer.issuer())),
        json!(""),
        Value::Null,
    ] {
        let mut claims = good.clone();
        claims["iss"] = iss;
        if claims["iss"].is_null() {
            claims.as_object_mut().context("claims")?.remove("iss");
        }
        let bad = env.peer.sign(claims, Value::Null).await?;
        assert_refused(&env, &bad, "token_wrong_issuer").await?;
    }
    assert_accepted(&env, good).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let good = env.claims("alice", API_AUDIENCE);
    for aud in [
        json!("another-client"),
        json!(["another-client", "urn:other:api"]),
        json!([]),
        Value::Null,
    ] {
        let mut claims = good.clone();
        claims["aud"] = aud;
        if claims["aud"].is_null() {
            claims.as_object_mut().context("claims")?.remove("aud");
        }
        let bad = env.peer.sign(claims, Value::Null).await?;
        assert_refused(&env, &bad, "token_wrong_audience").await?;
    }
    // One of several audiences being elevate's is enough.
    let mut claims = good.clone();
    claims["aud"] = json!(["another-client", API_AUDIENCE]);
    assert_accepted(&env, claims).await?;
    assert_accepted(&env, good).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let mut claims = env.claims("alice", API_AUDIENCE);
    claims["iat"] = json!(now() - 900);
    claims["auth_time"] = json!(now() - 900);
    claims["exp"] = json!(now() - 600);
    let bad = env.peer.sign(claims.clone(), Value::Null).await?;
    assert_refused(&env, &bad, "token_expired").await?;
    // Past the 60 s skew by a little is still expired.
    claims["exp"] = json!(now() - 90);
    let bad = env.peer.sign(claims.clone(), Value::Null).await?;
    assert_refused(&env, &bad, "token_expired").await?;
    // A token without exp never expires, so it is not accepted at all.
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().context("claims")?.remove("exp");
    let bad = env.peer.sign(no_exp, Value::Null).await?;
    assert_refused(&env, &bad, "token_malformed").await?;
    // Within the skew, a just-expired token is still accepted.
    claims["exp"] = json!(now() - 20);
    assert_accepted(&env, claims).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_yet_valid_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let good = env.claims("alice", API_AUDIENCE);
    let mut claims = good.clone();
    claims["nbf"] = json!(now() + 600);
    claims["exp"] = json!(now() + 900);
    let bad = env.peer.sign(claims.clone(), Value::Null).await?;
    assert_refused(&env, &bad, "token_not_yet_valid").await?;
    // Issued in the future (beyond the skew) is not valid yet either.
    let mut issued_later = good.clone();
    issued_later["iat"] = json!(now() + 600);
    issued_later["exp"] = json!(now() + 900);
    let bad = env.peer.sign(issued_later, Value::Null).await?;
    assert_refused(&env, &bad, "token_not_yet_valid").await?;
    // Within the skew, a clock a little ahead is tolerated.
    claims["nbf"] = json!(now() + 20);
    assert_accepted(&env, claims).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_payload_was_altered_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let claims = env.claims("alice", API_AUDIENCE);
    let good = env.peer.sign(claims.clone(), Value::Null).await?;
    // Keep header and signature; make alice a DBA in the payload.
    let parts: Vec<&str> = good.split('.').collect();
    ensure!(parts.len() == 3, "{good}");
    let mut forged_claims = claims.clone();
    forged_claims["groups"] = json!(["dba"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64url_encode(&serde_json::to_vec(&forged_claims)?),
        parts[2]
    );
    assert_eq!(decode_jwt_unverified(&forged)?.1["groups"], json!(["dba"]));
    assert_refused(&env, &forged, "token_bad_signature").await?;
    // A signature by another key, under the published kid, is no better.
    let other_key = env
        .peer
        .sign_untrusted(claims.clone(), json!({ "kid": env.peer.kids()[0] }))
        .await?;
    assert_refused(&env, &other_key, "token_bad_signature").await?;
    // The original, untouched, is accepted and alice is no DBA.
    let me = me_ok(&env, &good).await?;
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["groups"], json!(["developers"]), "{me}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_an_unpublished_key_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let claims = env.claims("alice", API_AUDIENCE);
    let bad = env.peer.sign_untrusted(claims.clone(), Value::Null).await?;
    let (header, _) = decode_jwt_unverified(&bad)?;
    assert_eq!(header["kid"], "untrusted", "{header}");
    assert_refused(&env, &bad, "token_unknown_key").await?;
    assert_accepted(&env, claims).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bearer_tokens_are_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    // Three parts: taken for a JWT, and refused as a malformed one.
    let header = base64url_encode(br#"{"alg":"RS256","kid":"key-1"}"#);
    let payload = base64url_encode(&serde_json::to_vec(&env.claims("alice", API_AUDIENCE))?);
    for bad in [
        "a.b.c".to_owned(),
        "..".to_owned(),
        format!("not-base64!.{payload}.sig"),
        format!("{}.{payload}.sig", base64url_encode(b"[1,2]")),
        format!("{}.{payload}.sig", base64url_encode(br#"{"kid":"key-1"}"#)),
        format!("{header}.{payload}.{}", "A".repeat(20_000)),
    ] {
        assert_refused(&env, &bad, "token_malformed").await?;
    }
    // No dots, or not three parts: not a JWT, so a local API token, which
    // it is not either.
    for bad in ["garbage-without-dots", "a.b", "a.b.c.d"] {
        assert_refused(&env, bad, "invalid_token").await?;
    }
    Ok(())
}

// ---- 3. key rotation ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotated_at_the_provider_are_picked_up_for_sign_ins_and_bearer_tokens() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = env.sign_in("alice", false).await?;
    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    let before = rp_sign_in(&env, "alice").await?;
    let old_kid = decode_jwt_unverified(&before.id_token)?.0["kid"].clone();
    me_ok(&env, &before.access_token).await?;

    env.peer.rotate_keys()?;
    let new_kid = env.peer.kids()[0].clone();
    assert_ne!(json!(new_kid), old_kid);
    // Past the test config's jwks_refresh_interval (1 s) since any fetch.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // A new browser sign-in: its ID token is signed with the new key.
    let browser = env.sign_in("alice", false).await?;
    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice", "{me}");

    // New bearer tokens, signed with the new key, work.
    let after = rp_sign_in(&env, "alice").await?;
    for token in [&after.id_token, &after.access_token] {
        let (header, _) = decode_jwt_unverified(token)?;
        assert_eq!(header["kid"], new_kid, "{header}");
        let me = me_ok(&env, token).await?;
        assert_eq!(me["name"], "alice", "{me}");
    }
    // The previous key is still published, so its unexpired tokens too.
    me_ok(&env, &before.access_token).await?;
    Ok(())
}

/// A flood of made-up key ids must not make elevate refetch the provider's
/// keys on every token. Observed through the keys themselves: after the
/// provider rotates, the new key becomes known only by a refetch, so while
/// tokens with the new kid keep being refused, no refetch has happened;
/// once the interval has passed, one is, and the new kid works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_flood_refetches_the_keys_at_most_once_per_interval() -> Result<()> {
    // Long enough for the provider's restart (a Node start, seconds on a
    // loaded machine) and the bursts to fit inside one interval.
    const INTERVAL: Duration = Duration::from_secs(15);
    let mut edited = false;
    // Taken when the config is written: the provider is up, elevate not
    // yet started, so every fetch of the keys happens after this instant
    // and a refusal answered before `window_end` was decided inside the
    // interval that began with the last fetch.
    let mut started = None;
    let env = OidcEnv::start_editing(|text| {
        started = Some(Instant::now());
        edited = text.contains("jwks_refresh_interval = \"1s\"");
        text.replace(
            "jwks_refresh_interval = \"1s\"",
            &format!("jwks_refresh_interval = \"{}s\"", INTERVAL.as_secs()),
        )
    })
    .await?;
    ensure!(
        edited,
        "the test config no longer sets jwks_refresh_interval = 1s"
    );
    let started = started.context("the config was never written")?;
    let claims = env.claims("alice", API_AUDIENCE);
    me_ok(&env, &env.peer.sign(claims.clone(), Value::Null).await?).await?;
    // The keys are loaded (at start, or at the latest by that call).
    let loaded = Instant::now();
    let window_end = started + INTERVAL;

    // Made-up key ids, signed ahead so that the flood is quick.
    let mut made_up = Vec::new();
    for i in 0..28 {
        let header = json!({ "kid": format!("made-up-{i}") });
        made_up.push(env.peer.sign(claims.clone(), header).await?);
    }

    env.peer.rotate_keys()?;
    let new_kid = env.peer.kids()[0].clone();
    let new_key_token = env.peer.sign(claims.clone(), Value::Null).await?;
    assert_eq!(decode_jwt_unverified(&new_key_token)?.0["kid"], new_kid);

    // Bursts of concurrent calls, each with the new key's token among them.
    let mut inside = 0;
    for (round, burst) in made_up.chunks(7).enumerate() {
        let tokens: Vec<&String> = std::iter::once(&new_key_token).chain(burst).collect();
        let answers = futures_util::future::join_all(tokens.iter().map(|t| call_me(&env, t))).await;
        if Instant::now() >= window_end {
            break;
        }
        for (token, answer) in tokens.iter().zip(answers) {
            let (status, body) = answer?;
            let kid = &decode_jwt_unverified(token)?.0["kid"];
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "round {round}, {kid}: {body}"
            );
            assert_eq!(
                body["code"], "token_unknown_key",
                "round {round}, {kid}: {body}"
            );
            inside += 1;
        }
    }
    ensure!(
        inside >= 8,
        "only {inside} calls fit in the {INTERVAL:?} window; the machine is too slow for this check"
    );

    // Once the interval has passed, one refetch brings the new key.
    let due = loaded + INTERVAL + Duration::from_millis(200);
    tokio::time::sleep_until(due.into()).await;
    let me = me_ok(&env, &new_key_token).await?;
    assert_eq!(me["name"], "alice", "{me}");
    // Unknown kids are still unknown after it.
    let (status, body) = call_me(&env, &made_up[0]).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "token_unknown_key", "{body}");
    Ok(())
}

// ---- 4. identity by subject ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_stays_the_same_user_when_the_provider_renames_them() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = env.sign_in("alice", false).await?;
    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice", "{me}");
    let csrf = me["csrf_token"].as_str().unwrap_or_default().to_owned();
    let (status, created) = env
        .session_post(
            &browser,
            "/api/v1/requests",
            read_prod("before the rename"),
            Some(&csrf),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().context("no id")?.to_owned();

    // The provider renames alice: same subject, new username and e-mail.
    let mut people = users();
    let alice = people
        .iter_mut()
        .find(|u| u.username == "alice")
        .context("alice")?;
    alice.username = "alice.renamed".into();
    alice.email = "new@example.com".into();
    env.peer.set_users(&people)?;

    let browser = env.sign_in("alice.renamed", false).await?;
    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["email"], "new@example.com", "{me}");
    assert_eq!(me["groups"], json!(["developers"]), "{me}");
    // Bearer tokens from the provider say the new name too, and are alice.
    let tokens = rp_sign_in(&env, "alice.renamed").await?;
    let (_, claims) = decode_jwt_unverified(&tokens.access_token)?;
    assert_eq!(claims["preferred_username"], "alice.renamed", "{claims}");
    let me = me_ok(&env, &tokens.access_token).await?;
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["email"], "new@example.com", "{me}");

    // Her request is still hers.
    let (status, listed, _) = env
        .bearer(
            Method::GET,
            "/api/v1/requests?scope=mine",
            &tokens.id_token,
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let ids: Vec<&str> = listed["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()], "{listed}");
    // No second identity was bound for the new name.
    assert_eq!(stored(&env).await?.identities, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_subject_claiming_a_bound_user_name_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let alice = rp_sign_in(&env, "alice").await?;
    let (status, created, _) = env
        .bearer(
            Method::POST,
            "/api/v1/requests",
            &alice.access_token,
            Some(read_prod("mine")),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().context("no id")?.to_owned();
    let before = stored(&env).await?;

    // Someone else at the provider (another subject) now calls themselves
    // alice; a DBA, to make inheriting her name worth it.
    let mut people = users();
    let mut impostor = OidcUser::new("alice", &["dba", "developers"]);
    impostor.sub = "sub-impostor".into();
    impostor.email = "impostor@example.com".into();
    people.push(impostor);
    env.peer.set_users(&people)?;

    // Through the provider (login_hint by subject, since "alice" finds the
    // real alice first).
    let tokens = rp_sign_in(&env, "sub-impostor").await?;
    let (_, claims) = decode_jwt_unverified(&tokens.id_token)?;
    assert_eq!(claims["sub"], "sub-impostor", "{claims}");
    assert_eq!(claims["preferred_username"], "alice", "{claims}");
    // Hand-made, with the name in other cases.
    let mut forged = env.claims("alice", API_AUDIENCE);
    forged["sub"] = json!("sub-impostor");
    forged["preferred_username"] = json!("ALICE");
    let signed = env.peer.sign(forged, Value::Null).await?;

    for token in [&tokens.id_token, &tokens.access_token, &signed] {
        let (status, body) = call_me(&env, token).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "identity_conflict", "{body}");
        for (method, path, body) in [
            (Method::GET, format!("/api/v1/requests/{id}"), None),
            (Method::GET, "/api/v1/requests?scope=mine".to_owned(), None),
            (Method::GET, "/api/v1/grants".to_owned(), None),
            (
                Method::POST,
                format!("/api/v1/requests/{id}/cancel"),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("/api/v1/requests/{id}/approve"),
                Some(json!({})),
            ),
            (
                Method::POST,
                "/api/v1/requests".to_owned(),
                Some(read_prod("as alice")),
            ),
        ] {
            let (status, answer, _) = env.bearer(method.clone(), &path, token, body).await?;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
            assert_eq!(
                answer["code"], "identity_conflict",
                "{method} {path}: {answer}"
            );
        }
    }
    // Through the browser, the sign-in is refused too and opens no session.
    let browser = Browser::new()?;
    let callback = env.callback_url(&browser, "sub-impostor", false).await?;
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (status, _) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(stored(&env).await?, before, "the impostor stored something");
    let (status, shown, _) = env
        .bearer(
            Method::GET,
            &format!("/api/v1/requests/{id}"),
            &alice.id_token,
            None,
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "pending", "{shown}");
    // alice is still alice, with her own groups.
    let me = me_ok(&env, &alice.id_token).await?;
    assert_eq!(me["groups"], json!(["developers"]), "{me}");
    assert_eq!(me["email"], "alice@example.com", "{me}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_addresses_are_compared_without_regard_to_case() -> Result<()> {
    let env = OidcEnv::start().await?;
    let mut claims = env.claims("alice", API_AUDIENCE);
    claims["email"] = json!("Alice@Example.COM");
    let token = env.peer.sign(claims.clone(), Value::Null).await?;
    let me = me_ok(&env, &token).await?;
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["email"], "alice@example.com", "{me}");
    // The same person, the address spelt the other way: nothing changes.
    claims["email"] = json!("alice@example.com");
    let me = me_ok(&env, &env.peer.sign(claims.clone(), Value::Null).await?).await?;
    assert_eq!(me["email"], "alice@example.com", "{me}");
    assert_eq!(stored(&env).await?.identities, 1);

    // An address the provider marks unverified is not taken, and the one
    // known from before is dropped: the token says this person's address
    // is now one nobody confirmed.
    claims["email"] = json!("bob@example.com");
    claims["email_verified"] = json!(false);
    let me = me_ok(&env, &env.peer.sign(claims.clone(), Value::Null).await?).await?;
    assert_eq!(me["name"], "alice", "{me}");
    assert_eq!(me["email"], Value::Null, "{me}");
    // Remembered as unverified, so that what would have matched by the
    // address (the AWS Identity Store) refuses rather than trusting the
    // user name alone.
    let profile = || async {
        let mut db = connect_store(&read_only(&env.app.db_url)).await?;
        let text: String =
            sqlx::query_scalar("SELECT profile FROM identities WHERE user_name = 'alice'")
                .fetch_one(&mut db)
                .await?;
        db.close().await?;
        anyhow::Ok(serde_json::from_str::<Value>(&text)?)
    };
    let stored_profile = profile().await?;
    assert_eq!(stored_profile["email_unverified"], true, "{stored_profile}");
    // Verified again (or not said either way): taken.
    claims["email_verified"] = json!(true);
    let me = me_ok(&env, &env.peer.sign(claims.clone(), Value::Null).await?).await?;
    assert_eq!(me["email"], "bob@example.com", "{me}");
    let stored_profile = profile().await?;
    assert!(
        stored_profile.get("email_unverified").is_none(),
        "{stored_profile}"
    );
    Ok(())
}

/// A configured local user owns their name as much as a bound subject
/// does: an account at the provider calling itself by that name must not
/// become that user (their requests, their grants' re-checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_claiming_a_local_user_s_name_is_refused() -> Result<()> {
    // dave: a local user with an API token. The extra TOML ends the config,
    // so a new table may start there.
    let local = crate::common::token("dave");
    let extra = format!(
        "\n[[users]]\nname = \"dave\"\nemail = \"dave@example.com\"\n\
         groups = [\"developers\"]\ntoken_hashes = [\"{}\"]\n",
        elevate::auth::token_hash(&local)
    );
    let env = OidcEnv::start_with(&extra).await?;
    let (status, created, _) = env
        .bearer(
            Method::POST,
            "/api/v1/requests",
            &local,
            Some(read_prod("local dave")),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().context("no id")?.to_owned();
    let before = stored(&env).await?;

    let mut claims = env.claims("dave", API_AUDIENCE);
    claims["sub"] = json!("sub-mallory");
    claims["preferred_username"] = json!("Dave");
    let token = env.peer.sign(claims, Value::Null).await?;
    let (status, body) = call_me(&env, &token).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "identity_conflict", "{body}");
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/requests/{id}"), None),
        (
            Method::POST,
            format!("/api/v1/requests/{id}/cancel"),
            Some(json!({})),
        ),
    ] {
        let (status, answer, _) = env.bearer(method.clone(), &path, &token, body).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer["code"], "identity_conflict", "{answer}");
    }
    assert_eq!(stored(&env).await?, before, "the account was bound");
    // The local dave is untouched.
    let (status, shown, _) = env
        .bearer(Method::GET, &format!("/api/v1/requests/{id}"), &local, None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "pending", "{shown}");
    Ok(())
}
