//! Browser sign-in against a real OpenID provider: the code flow with
//! PKCE, the session it opens, CSRF on session-authenticated changes,
//! sign-out.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use elevate_testkit::oidc::Browser;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::oidc_common::{read_prod, write_prod, OidcEnv, MFA};

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

// ---- helpers for the tampering, step-up and session tests ---------------

/// The value of query parameter `name` in `url`.
fn query_param(url: &str, name: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("parsing {url}"))?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("{url} has no {name} parameter"))
}

/// `base` with the query `pairs`, form-encoded.
fn url_with(base: &str, pairs: &[(&str, &str)]) -> Result<String> {
    Ok(reqwest::Url::parse_with_params(base, pairs)
        .with_context(|| format!("parsing {base}"))?
        .into())
}

/// `url` with query parameter `name` set to `value` in place (or removed,
/// for `None`); fails if `url` lacks the parameter, so that a tampering
/// test never passes because it tampered with nothing.
fn with_param(url: &str, name: &str, value: Option<&str>) -> Result<String> {
    let mut parsed = reqwest::Url::parse(url).with_context(|| format!("parsing {url}"))?;
    let mut found = false;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter_map(|(k, v)| {
            if k == name {
                found = true;
                value.map(|new| (k, new.to_owned()))
            } else {
                Some((k, v))
            }
        })
        .collect();
    ensure!(found, "{url} has no {name} parameter to change");
    parsed.query_pairs_mut().clear().extend_pairs(&pairs);
    Ok(parsed.into())
}

/// The raw `Location` of a redirect (bytes kept, even ones `to_str`
/// refuses, such as a tab).
fn location(resp: &reqwest::Response) -> Result<String> {
    let value = resp
        .headers()
        .get(header::LOCATION)
        .with_context(|| format!("{} without a Location", resp.status()))?;
    Ok(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// Every `Set-Cookie` of a response.
fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// The `Set-Cookie` that sets cookie `name`, if any.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(resp)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
}

/// The attributes of a `Set-Cookie` line, lower-cased, without the
/// name=value pair.
fn cookie_attributes(line: &str) -> Vec<String> {
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// `GET /auth/login?{query}` in `browser`: elevate's 303 to the provider's
/// authorization endpoint, whose URL is returned unfollowed.
async fn start_login(env: &OidcEnv, browser: &Browser, query: &str) -> Result<String> {
    let resp = browser
        .get(&format!("{}/auth/login?{query}", env.app.url))
        .await?;
    ensure!(
        resp.status() == StatusCode::SEE_OTHER,
        "login answered {}",
        resp.status()
    );
    let to = location(&resp)?;
    ensure!(
        to.starts_with(&format!("{}/", env.peer.issuer())),
        "login redirected to {to}, not to the provider"
    );
    Ok(to)
}

fn callback_prefix(env: &OidcEnv) -> String {
    format!("{}/auth/callback", env.app.url)
}

/// The session's CSRF token, from `GET /api/v1/me`.
async fn csrf_of(env: &OidcEnv, browser: &Browser) -> Result<String> {
    let (status, me) = env.me(browser).await?;
    ensure!(status == StatusCode::OK, "me: {status} {me}");
    me["csrf_token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no csrf_token in {me}"))
}

/// A JSON POST with the browser's session and the CSRF token; returns the
/// headers too (for `WWW-Authenticate`).
async fn post_with_session(
    env: &OidcEnv,
    browser: &Browser,
    path: &str,
    body: Value,
    csrf: &str,
) -> Result<(StatusCode, HeaderMap, Value)> {
    let resp = browser
        .client()
        .post(format!("{}{path}", env.app.url))
        .header("X-CSRF-Token", csrf)
        .json(&body)
        .send()
        .await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    Ok((
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A session GET returning the JSON body.
async fn get_json(env: &OidcEnv, browser: &Browser, path: &str) -> Result<(StatusCode, Value)> {
    let resp = browser.get(&format!("{}{path}", env.app.url)).await?;
    let status = resp.status();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// How many requests the browser's user has made.
async fn my_request_count(env: &OidcEnv, browser: &Browser) -> Result<usize> {
    let (status, listed) = get_json(env, browser, "/api/v1/requests?scope=mine").await?;
    ensure!(status == StatusCode::OK, "list: {status} {listed}");
    listed["requests"]
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("no requests array in {listed}"))
}

/// The `/api/v1/eligible` entry for `role` on orders, if listed.
async fn eligible_entry(env: &OidcEnv, browser: &Browser, role: &str) -> Result<Option<Value>> {
    let (status, eligible) = get_json(env, browser, "/api/v1/eligible").await?;
    ensure!(status == StatusCode::OK, "eligible: {status} {eligible}");
    Ok(eligible["eligible"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["resource"] == "orders" && e["role"] == role)
        .cloned())
}

async fn assert_signed_out(env: &OidcEnv, browser: &Browser, what: &str) -> Result<()> {
    let (status, me) = env.me(browser).await?;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{what}: the browser must have no session, but /me says {me}"
    );
    Ok(())
}

// ---- 1. tampering fails the sign-in and opens no session ----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_state_or_a_callback_in_another_browser_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = Browser::new()?;
    let callback = env.callback_url(&browser, "alice", false).await?;
    let state = query_param(&callback, "state")?;

    // A state this browser did not start.
    let tampered = with_param(&callback, "state", Some(&format!("{state}x")))?;
    let resp = browser.get(&tampered).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&resp, "elevate_session").is_none());
    let text = resp.text().await?;
    assert!(text.contains("state mismatch"), "{text}");
    assert_signed_out(&env, &browser, "after a changed state").await?;

    // Login CSRF: an attacker hands a victim the callback of the
    // attacker's own sign-in. The victim's browser holds no login cookie...
    let victim = Browser::new()?;
    let resp = victim.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&resp, "elevate_session").is_none());
    assert_signed_out(&env, &victim, "a callback from another browser").await?;
    // ...or the cookie of a sign-in of its own, for another state.
    start_login(&env, &victim, "login_hint=erin").await?;
    let resp = victim.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&resp, "elevate_session").is_none());
    assert_signed_out(&env, &victim, "a callback for another sign-in").await?;

    // The refusals came from the binding, not from a broken flow: the
    // browser that started it can still finish it.
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice");
    assert_signed_out(&env, &victim, "after the owner finished").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_another_nonce_is_refused() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = Browser::new()?;
    let authorize = start_login(&env, &browser, "login_hint=alice").await?;
    let nonce = query_param(&authorize, "nonce")?;
    assert!(nonce.len() >= 32, "{authorize}");
    let forged = with_param(&authorize, "nonce", Some("a-nonce-the-attacker-chose"))?;
    let callback = browser
        .follow_until(&forged, &callback_prefix(&env))
        .await?;

    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "elevate_session").is_none());
    let text = resp.text().await?;
    assert!(text.contains("nonce mismatch"), "{text}");
    assert_signed_out(&env, &browser, "after a nonce mismatch").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_bound_to_another_pkce_challenge_is_not_exchanged() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = Browser::new()?;
    let authorize = start_login(&env, &browser, "login_hint=alice").await?;
    assert_eq!(query_param(&authorize, "code_challenge_method")?, "S256");
    // The challenge of someone else's verifier (RFC 7636 appendix B).
    let forged = with_param(
        &authorize,
        "code_challenge",
        Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
    )?;
    let callback = browser
        .follow_until(&forged, &callback_prefix(&env))
        .await?;

    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "elevate_session").is_none());
    let text = resp.text().await?;
    assert!(
        text.contains("refused the sign-in") && text.contains("invalid_grant"),
        "{text}"
    );
    assert_signed_out(&env, &browser, "after a PKCE mismatch").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_works_once() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = Browser::new()?;
    let callback = env.callback_url(&browser, "alice", false).await?;
    let state = query_param(&callback, "state")?;
    let first = browser.get(&callback).await?;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&first, "elevate_session").is_some());
    let csrf = csrf_of(&env, &browser).await?;

    // Again in the same browser: the login cookie went with the success.
    let again = browser.get(&callback).await?;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&again, "elevate_session").is_none());

    // Again with the login cookie put back (say, a copy of the browser's
    // cookies taken before): the flow itself is used up.
    let copied = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let replay = copied
        .get(&callback)
        .header(header::COOKIE, format!("elevate_login={state}"))
        .send()
        .await?;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert!(set_cookie(&replay, "elevate_session").is_none());
    let text = replay.text().await?;
    assert!(text.contains("already used"), "{text}");

    // The first session is the one there is, unchanged.
    assert_eq!(csrf_of(&env, &browser).await?, csrf);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_fails_the_sign_in_with_its_text_escaped() -> Result<()> {
    let env = OidcEnv::start().await?;

    // An error answering this browser's sign-in is shown, escaped.
    let browser = Browser::new()?;
    let authorize = start_login(&env, &browser, "login_hint=alice").await?;
    let state = query_param(&authorize, "state")?;
    let answer = url_with(
        &callback_prefix(&env),
        &[
            ("error", "access_denied"),
            ("error_description", "<script>alert('x')</script> & more"),
            ("state", &state),
        ],
    )?;
    let resp = browser.get(&answer).await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "elevate_session").is_none());
    assert!(resp.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    // That sign-in is over.
    let cleared = set_cookie(&resp, "elevate_login").context("login cookie not cleared")?;
    assert!(
        cookie_attributes(&cleared).contains(&"max-age=0".to_owned()),
        "{cleared}"
    );
    let text = resp.text().await?;
    assert!(text.contains("access_denied"), "{text}");
    assert!(
        text.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
        "{text}"
    );
    // The only script is the page layout's own, from this site.
    assert_eq!(text.matches("<script").count(), 1, "{text}");
    assert!(
        text.contains("<script src=\"/static/app.js\" defer></script>"),
        "{text}"
    );
    assert_signed_out(&env, &browser, "after a provider error").await?;

    // A real one: prompt=none without a session at the provider.
    let fresh = Browser::new()?;
    let authorize = start_login(&env, &fresh, "login_hint=alice").await?;
    let silent = format!("{authorize}&prompt=none");
    let callback = fresh.follow_until(&silent, &callback_prefix(&env)).await?;
    assert_eq!(query_param(&callback, "error")?, "login_required");
    let resp = fresh.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let text = resp.text().await?;
    assert!(text.contains("login_required"), "{text}");
    assert_signed_out(&env, &fresh, "after login_required").await?;

    // A made-up "error" that answers no sign-in of this browser does not
    // get its text shown on elevate's page (content spoofing).
    let stranger = Browser::new()?;
    let spoof = url_with(
        &callback_prefix(&env),
        &[
            ("error", "access_denied"),
            (
                "error_description",
                "Your account is locked. Call +1 555 0100 to unlock it.",
            ),
            ("state", "made-up"),
        ],
    )?;
    let resp = stranger.get(&spoof).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await?;
    assert!(!text.contains("555 0100"), "{text}");
    assert_signed_out(&env, &stranger, "after a made-up error").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_never_leaves_the_site() -> Result<()> {
    let env = OidcEnv::start().await?;
    let app = reqwest::Url::parse(&env.app.url)?;
    let cases = [
        ("https://evil.example/x", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        // Browsers drop tabs and newlines from URLs (WHATWG URL), so this
        // would be "//evil.example".
        ("/\t/evil.example", "/"),
        ("/requests?scope=mine", "/requests?scope=mine"),
    ];
    for (next, expected) in cases {
        let browser = Browser::new()?;
        let start = url_with(
            &format!("{}/auth/login", env.app.url),
            &[("login_hint", "alice"), ("next", next)],
        )?;
        let callback = browser.follow_until(&start, &callback_prefix(&env)).await?;
        let resp = browser.get(&callback).await?;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "next={next:?}");
        let to = location(&resp)?;
        assert_eq!(to, expected, "next={next:?}");
        // As a browser resolves it: still this site.
        let resolved = app.join(&to)?;
        assert_eq!(resolved.host_str(), app.host_str(), "next={next:?}");
        assert_eq!(resolved.port(), app.port(), "next={next:?}");
    }
    Ok(())
}

// ---- 2. step-up for a role that needs a strong, recent sign-in ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_role_needs_a_multi_factor_sign_in_and_gets_it_through_the_login_url(
) -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = env.sign_in("alice", false).await?;
    let csrf = csrf_of(&env, &browser).await?;

    // A password sign-in is not enough: RFC 9470's challenge, and nothing
    // stored.
    let (status, headers, body) = post_with_session(
        &env,
        &browser,
        "/api/v1/requests",
        write_prod("hotfix"),
        &csrf,
    )
    .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "step_up_required", "{body}");
    assert_eq!(body["step_up"]["acr_values"], MFA, "{body}");
    assert_eq!(body["step_up"]["max_age"], 300, "{body}");
    let challenge = headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .context("no WWW-Authenticate")?;
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains("error=\"insufficient_user_authentication\"")
            && challenge.contains(&format!("acr_values=\"{MFA}\""))
            && challenge.contains("max_age=300"),
        "{challenge}"
    );
    assert_eq!(my_request_count(&env, &browser).await?, 0);

    // The login URL from the answer, in the same browser.
    let login_url = body["step_up"]["login_url"]
        .as_str()
        .context("no login_url")?;
    assert!(login_url.starts_with("/auth/login?"), "{login_url}");
    let query = format!(
        "{}&login_hint=alice",
        login_url.trim_start_matches("/auth/login?")
    );
    let authorize = start_login(&env, &browser, &query).await?;
    assert_eq!(query_param(&authorize, "acr_values")?, MFA);
    assert_eq!(query_param(&authorize, "max_age")?, "300");
    assert_eq!(query_param(&authorize, "prompt")?, "login");
    let callback = browser
        .follow_until(&authorize, &callback_prefix(&env))
        .await?;
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    let (status, me) = env.me(&browser).await?;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["name"], "alice");
    assert_eq!(me["auth"]["acr"], MFA, "{me}");
    assert!(
        me["auth"]["amr"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("otp"))),
        "{me}"
    );
    assert!(me["auth"]["auth_time"].is_string(), "{me}");
    // A new session, with a new CSRF token.
    let stepped_csrf = csrf_of(&env, &browser).await?;
    assert_ne!(stepped_csrf, csrf);

    let (status, _, created) = post_with_session(
        &env,
        &browser,
        "/api/v1/requests",
        write_prod("hotfix"),
        &stepped_csrf,
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["requester"], "alice");
    assert_eq!(created["role"], "orders_writer");
    assert_eq!(created["eligibility"], "sre-write-prod");
    assert_eq!(my_request_count(&env, &browser).await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_up_sign_in_that_comes_back_weak_is_refused_with_the_reason() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = Browser::new()?;
    let authorize = start_login(&env, &browser, "step_up=1&login_hint=alice").await?;
    // The provider is not asked for multi-factor, so it signs in with a
    // password only.
    let weakened = with_param(&authorize, "acr_values", None)?;
    let callback = browser
        .follow_until(&weakened, &callback_prefix(&env))
        .await?;
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&resp, "elevate_session").is_none());
    let text = resp.text().await?;
    assert!(
        text.contains("multi-factor") && text.contains("pwd"),
        "{text}"
    );
    assert_signed_out(&env, &browser, "after a weak step-up").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_api_token_never_satisfies_a_step_up() -> Result<()> {
    // A local user who meets the conditions of sre-write-prod. The extra
    // TOML ends the config, so a new table may start there.
    let extra = format!(
        "\n[[users]]\nname = \"sam\"\ngroups = [\"developers\"]\n\
         token_hashes = [\"{}\"]\nattributes = {{ department = \"sre\" }}\n",
        elevate::auth::token_hash("t-sam")
    );
    let env = OidcEnv::start_with(&extra).await?;
    let (status, created, _) = env
        .bearer(
            Method::POST,
            "/api/v1/requests",
            "t-sam",
            Some(read_prod("reads")),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, body, headers) = env
        .bearer(
            Method::POST,
            "/api/v1/requests",
            "t-sam",
            Some(write_prod("writes")),
        )
        .await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "step_up_required", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("API token")),
        "{body}"
    );
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    let (status, listed, _) = env
        .bearer(Method::GET, "/api/v1/requests?scope=mine", "t-sam", None)
        .await?;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["requests"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    Ok(())
}

// ---- 3. attribute conditions --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_conditions_decide_eligibility_whatever_the_sign_in() -> Result<()> {
    let env = OidcEnv::start().await?;

    // erin is a developer in marketing: a step-up does not make her sre.
    let erin = env.sign_in("erin", true).await?;
    let (_, me) = env.me(&erin).await?;
    assert_eq!(me["attributes"]["department"], "marketing", "{me}");
    assert_eq!(me["auth"]["acr"], MFA, "{me}");
    let csrf = csrf_of(&env, &erin).await?;
    let (status, _, body) =
        post_with_session(&env, &erin, "/api/v1/requests", write_prod("x"), &csrf).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "not_eligible", "{body}");
    assert_eq!(my_request_count(&env, &erin).await?, 0);
    assert!(eligible_entry(&env, &erin, "orders_writer")
        .await?
        .is_none());
    assert!(eligible_entry(&env, &erin, "orders_reader")
        .await?
        .is_some());

    // alice is in sre: listed, with the step-up it needs.
    let alice = env.sign_in("alice", false).await?;
    let writer = eligible_entry(&env, &alice, "orders_writer")
        .await?
        .context("orders_writer is not listed for alice")?;
    assert_eq!(writer["step_up"], true, "{writer}");
    assert_eq!(writer["eligibility"], "sre-write-prod", "{writer}");
    let reader = eligible_entry(&env, &alice, "orders_reader")
        .await?
        .context("orders_reader is not listed for alice")?;
    assert_eq!(reader["step_up"], false, "{reader}");
    Ok(())
}

// ---- 4. approvers who must step up ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_must_step_up_before_approving() -> Result<()> {
    let env = OidcEnv::start_with("step_up = true").await?;
    let alice = env.sign_in("alice", false).await?;
    let alice_csrf = csrf_of(&env, &alice).await?;
    let (status, _, created) = post_with_session(
        &env,
        &alice,
        "/api/v1/requests",
        read_prod("report"),
        &alice_csrf,
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["state"], "pending", "{created}");
    let id = created["id"].as_str().context("no id")?.to_owned();
    let approve = format!("/api/v1/requests/{id}/approve");
    let show = format!("/api/v1/requests/{id}");

    // The requester is no approver: she is not told about a step-up.
    let (status, _, body) =
        post_with_session(&env, &alice, &approve, json!({}), &alice_csrf).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let bob = env.sign_in("bob", false).await?;
    let csrf = csrf_of(&env, &bob).await?;
    let (status, headers, body) =
        post_with_session(&env, &bob, &approve, json!({ "comment": "ok" }), &csrf).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["code"], "step_up_required", "{body}");
    assert_eq!(body["step_up"]["acr_values"], MFA, "{body}");
    assert!(headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("insufficient_user_authentication")));
    let (status, shown) = get_json(&env, &bob, &show).await?;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "pending", "{shown}");
    assert_eq!(shown["approvals"], json!([]), "{shown}");

    env.sign_in_with(&bob, "bob", true).await?;
    let csrf = csrf_of(&env, &bob).await?;
    let (status, _, approved) =
        post_with_session(&env, &bob, &approve, json!({ "comment": "ok" }), &csrf).await?;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert!(
        approved["state"] == "approved" || approved["state"] == "active",
        "{approved}"
    );

    // The grant goes on to the target.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, shown) = get_json(&env, &bob, &show).await?;
        assert_eq!(status, StatusCode::OK, "{shown}");
        if shown["state"] == "active" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not active in time: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

// ---- 5. the session cookie and sign-out ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookies_are_http_only_lax_and_sign_out_needs_the_csrf_token() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = Browser::new()?;

    let resp = browser
        .get(&format!("{}/auth/login?login_hint=alice", env.app.url))
        .await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let login = set_cookie(&resp, "elevate_login").context("no login cookie")?;
    let attrs = cookie_attributes(&login);
    for wanted in ["httponly", "samesite=lax", "path=/auth"] {
        assert!(attrs.iter().any(|a| a == wanted), "{wanted}: {login}");
    }
    assert!(!attrs.iter().any(|a| a == "secure"), "{login}");

    let authorize = location(&resp)?;
    let callback = browser
        .follow_until(&authorize, &callback_prefix(&env))
        .await?;
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = set_cookie(&resp, "elevate_session").context("no session cookie")?;
    let attrs = cookie_attributes(&session);
    for wanted in ["httponly", "samesite=lax", "path=/"] {
        assert!(attrs.iter().any(|a| a == wanted), "{wanted}: {session}");
    }
    // Plain http: a Secure cookie would never come back.
    assert!(!attrs.iter().any(|a| a == "secure"), "{session}");
    assert!(
        attrs.iter().any(|a| a
            .strip_prefix("max-age=")
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|s| s > 0)),
        "{session}"
    );
    // The login cookie is done with.
    let cleared = set_cookie(&resp, "elevate_login").context("login cookie not cleared")?;
    assert!(
        cookie_attributes(&cleared).contains(&"max-age=0".to_owned()),
        "{cleared}"
    );

    let csrf = csrf_of(&env, &browser).await?;
    let logout = format!("{}/auth/logout", env.app.url);
    for form in [vec![], vec![("csrf", "wrong")]] {
        let resp = browser.post_form(&logout, &form).await?;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{form:?}");
        let (status, me) = env.me(&browser).await?;
        assert_eq!(status, StatusCode::OK, "{form:?}: {me}");
        assert_eq!(me["name"], "alice");
    }
    let resp = browser.post_form(&logout, &[("csrf", &csrf)]).await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_signed_out(&env, &browser, "after signing out").await
}

/// The `elevate_session` value a callback response sets.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("elevate_session="))
        .and_then(|rest| rest.split(';').next())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sign_in_in_the_same_browser_ends_the_session_it_replaces() -> Result<()> {
    let env = OidcEnv::start().await?;
    let browser = elevate_testkit::oidc::Browser::new()?;
    let first = env.callback_url(&browser, "alice", false).await?;
    let resp = browser.get(&first).await?;
    let old = session_cookie(&resp).ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let with = |value: String| {
        let url = format!("{}/api/v1/me", env.app.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .header(reqwest::header::COOKIE, format!("elevate_session={value}"))
                .send()
                .await
                .map(|r| r.status())
        }
    };
    assert_eq!(with(old.clone()).await?, StatusCode::OK);

    // A step-up sign-in in the same browser replaces the session.
    let second = env.callback_url(&browser, "alice", true).await?;
    let resp = browser.get(&second).await?;
    let new = session_cookie(&resp).ok_or_else(|| anyhow::anyhow!("no new session cookie"))?;
    assert_ne!(old, new);
    assert_eq!(with(new).await?, StatusCode::OK);
    assert_eq!(with(old).await?, StatusCode::UNAUTHORIZED);
    Ok(())
}
