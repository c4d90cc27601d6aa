//! Browser sign-in against a real OpenID provider: the code flow with
//! PKCE, the session it opens, CSRF on session-authenticated changes,
//! sign-out.

use anyhow::Result;
use reqwest::StatusCode;
use serde_json::json;

use crate::oidc_common::{read_prod, OidcEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_provider_and_uses_the_api_with_the_session() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = env.sign_in("alice", false).await?;

    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["groups"], json!(["developers"]));
    assert_eq!(me["attributes"]["department"], "sre");
    assert_eq!(me["auth"]["method"], "session");
    assert_eq!(me["auth"]["issuer"], env.peer.issuer());
    assert_eq!(me["auth"]["acr"], "urn:elevate:pwd");
    let csrf = me["csrf_token"].as_str().unwrap_or_default().to_owned();
    assert!(csrf.len() >= 32, "{me}");

    // Groups from the provider make alice eligible.
    let resp = browser
        .get(&format!("{}/api/v1/eligible", env.app.url))
        .await?;
    let eligible: serde_json::Value = resp.json().await?;
    let roles: Vec<&str> = eligible["eligible"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"] == "orders")
        .filter_map(|e| e["role"].as_str())
        .collect();
    assert!(roles.contains(&"orders_reader"), "{eligible}");

    // A change with the session but without its CSRF token is refused and
    // stores nothing; with it, the request is made.
    let (status, body) = env
        .session_post(&browser, "/api/v1/requests", read_prod("障害対応"), None)
        .await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "csrf_failed");
    let (status, body) = env
        .session_post(
            &browser,
            "/api/v1/requests",
            read_prod("障害対応"),
            Some("wrong"),
        )
        .await?;
    assert_eq!(body["code"], "csrf_failed", "{status} {body}");
    let resp = browser
        .get(&format!("{}/api/v1/requests?scope=mine", env.app.url))
        .await?;
    let listed: serde_json::Value = resp.json().await?;
    assert_eq!(
        listed["requests"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );

    let (status, created) = env
        .session_post(
            &browser,
            "/api/v1/requests",
            read_prod("障害対応"),
            Some(&csrf),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["requester"], "alice");
    assert_eq!(created["justification"], "障害対応");

    // Signing out ends the session at elevate.
    let resp = browser
        .post_form(&format!("{}/auth/logout", env.app.url), &[("csrf", &csrf)])
        .await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, _) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}
