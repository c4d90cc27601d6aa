//! The web pages a requester and an approver use, through their HTML forms
//! as a browser without JavaScript would post them: sign-in with a local
//! token, the request picker and form (errors next to their field, nothing
//! lost), the request page's actions, approvals, CSRF and cross-site
//! refusals, escaping. The browser end-to-end test is in `web_e2e`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use elevate_testkit::oidc::Browser;
use reqwest::StatusCode;

use crate::common::{body, dry_run_config, Setup, TestApp};
use crate::web_common::{csrf_of, page, post, signed_in};

const WAIT: Duration = Duration::from_secs(20);
const HOSTILE: &str = "<script>alert(1)</script> 本番DBの障害対応";
const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt; 本番DBの障害対応";

async fn app() -> Result<(tempfile::TempDir, TestApp)> {
    let dir = tempfile::tempdir()?;
    let app = TestApp::start(&dry_run_config(
        &dir.path().join("elevate.db"),
        &Setup::default(),
    )?)
    .await?;
    Ok((dir, app))
}

/// Form fields, the id of the error expected, and the status.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static str,
    StatusCode,
);

const FORM: &str = "/request/new?target=demo&resource=orders&role=orders_writer";

/// Submits the request form as `browser`; returns the new request's id.
async fn request_through_form(app: &TestApp, browser: &Browser, duration: &str) -> Result<String> {
    let (status, html) = page(app, browser, FORM).await?;
    ensure!(status == StatusCode::OK, "form: {status}");
    let csrf = csrf_of(&html)?;
    let (status, location, body) = post(
        app,
        browser,
        FORM,
        &[
            ("csrf", &csrf),
            ("duration", duration),
            ("start_mode", "now"),
            ("reason", HOSTILE),
            ("ticket", ""),
        ],
    )
    .await?;
    ensure!(status == StatusCode::SEE_OTHER, "create: {status} {body}");
    let location = location.context("no Location")?;
    let id = location
        .trim_start_matches("/requests/")
        .split('?')
        .next()
        .context("no id")?
        .to_owned();
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_send_a_browser_without_a_session_to_sign_in_and_back() -> Result<()> {
    let (_dir, app) = app().await?;
    let anonymous = Browser::new()?;
    for path in ["/request", "/requests", "/approvals", "/requests/r-abc"] {
        let resp = anonymous.get(&format!("{}{path}", app.url)).await?;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("");
        // No identity provider here: the token sign-in, coming back.
        assert!(location.starts_with("/auth/token?next="), "{location}");
        assert!(location.contains(&path.replace('/', "%2F")), "{location}");
    }
    // What pages poll answers 401, never a redirect into a sign-in.
    for path in ["/live/mine", "/live/requests/r-abc"] {
        let resp = anonymous.get(&format!("{}{path}", app.url)).await?;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // The start page offers the sign-in itself.
    let (status, html) = page(&app, &anonymous, "/").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("action=\"/auth/token\""), "{html}");

    // A wrong token: 401, the form again, no session.
    let (status, _, html) = post(&app, &anonymous, "/auth/token", &[("token", "t-nobody")]).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(html.contains("not valid"), "{html}");
    let resp = anonymous.get(&format!("{}/requests", app.url)).await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    // The right token signs in and returns to `next`.
    let (status, location, _) = post(
        &app,
        &anonymous,
        "/auth/token",
        &[("token", "t-alice"), ("next", "/requests")],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/requests"));
    let (status, html) = page(&app, &anonymous, "/requests").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("My requests"));
    // The API accepts the same session (with its CSRF token for changes).
    let (status, me) = {
        let r = anonymous.get(&format!("{}/api/v1/me", app.url)).await?;
        (r.status(), r.json::<serde_json::Value>().await?)
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["auth"]["method"], "session");

    // Signing out ends it.
    let csrf = csrf_of(&html)?;
    let (status, _, _) = post(&app, &anonymous, "/auth/logout", &[("csrf", &csrf)]).await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let resp = anonymous.get(&format!("{}/requests", app.url)).await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_made_in_the_form_is_approved_on_the_approvals_page_and_shown_literally(
) -> Result<()> {
    let (_dir, app) = app().await?;
    let alice = signed_in(&app, "alice").await?;
    let bob = signed_in(&app, "bob").await?;

    // The picker lists what alice may request, filtered.
    let (status, html) = page(&app, &alice, "/request?q=prod%2Forders+writer").await?;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(FORM.replace('&', "&amp;").as_str()), "{html}");
    assert!(!html.contains("role=orders_reader"), "filtered out: {html}");
    assert!(html.contains("1 choice matches"), "{html}");

    let id = request_through_form(&app, &alice, "10m").await?;
    let shown = app.show(&id).await?;
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["justification"], HOSTILE, "stored as typed");
    assert_eq!(shown["requester"], "alice");

    // Shown escaped (literally) everywhere, never as markup.
    for (who, path) in [
        (&alice, format!("/requests/{id}")),
        (&alice, "/requests".to_owned()),
        (&bob, "/approvals".to_owned()),
        (&bob, format!("/requests/{id}")),
    ] {
        let (status, html) = page(&app, who, &path).await?;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains(ESCAPED), "{path}: {html}");
        assert!(!html.contains("<script>alert"), "{path}");
    }

    // alice has no decision to make on her own request.
    let (_, html) = page(&app, &alice, &format!("/requests/{id}")).await?;
    assert!(!html.contains("/approve\""), "{html}");
    let csrf = csrf_of(&html)?;
    let (status, _, html) = post(
        &app,
        &alice,
        &format!("/requests/{id}/approve"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("self_approval"), "{html}");

    // bob approves from his approvals page and comes back to it.
    let (_, html) = page(&app, &bob, "/approvals").await?;
    assert!(html.contains(&format!("/requests/{id}/approve")));
    let csrf = csrf_of(&html)?;
    let (status, location, _) = post(
        &app,
        &bob,
        &format!("/requests/{id}/approve"),
        &[
            ("csrf", &csrf),
            ("comment", "承認します"),
            ("back", "/approvals"),
        ],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some(format!("/approvals?done=approved&id={id}").as_str())
    );
    app.wait_state(&id, "active", WAIT).await?;
    let (_, html) = page(&app, &bob, "/approvals").await?;
    assert!(html.contains("Nothing waits for your decision"), "{html}");
    assert!(html.contains("approved"), "listed among bob's decisions");

    // alice sees it active with the time left, and ends it early.
    let (_, html) = page(&app, &alice, &format!("/requests/{id}")).await?;
    assert!(html.contains("state-active"), "{html}");
    assert!(html.contains("class=\"countdown\""), "{html}");
    assert!(html.contains("承認します"), "bob's comment: {html}");
    let csrf = csrf_of(&html)?;
    let (status, location, _) = post(
        &app,
        &alice,
        &format!("/requests/{id}/revoke"),
        &[("csrf", &csrf)],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some(format!("/requests/{id}?done=deactivated").as_str())
    );
    app.wait_state(&id, "revoked", WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_reject_and_revoke_without_a_valid_csrf_token_are_refused_and_change_nothing(
) -> Result<()> {
    let (_dir, app) = app().await?;
    let alice = signed_in(&app, "alice").await?;
    let bob = signed_in(&app, "bob").await?;
    let pending = request_through_form(&app, &alice, "10m").await?;
    let running = app
        .request("alice", body("demo", "orders", "orders_reader", "10m"))
        .await?;
    app.approve("carol", &running).await?;
    app.wait_state(&running, "active", WAIT).await?;

    let (_, html) = page(&app, &bob, "/approvals").await?;
    let good = csrf_of(&html)?;
    // alice's own token is valid for alice's session only.
    let (_, html) = page(&app, &alice, "/requests").await?;
    let alices = csrf_of(&html)?;
    for (path, form_csrf) in [
        (format!("/requests/{pending}/approve"), None),
        (format!("/requests/{pending}/approve"), Some("")),
        (format!("/requests/{pending}/approve"), Some("forged")),
        (format!("/requests/{pending}/reject"), Some(alices.as_str())),
        (format!("/requests/{running}/revoke"), None),
        (format!("/requests/{running}/revoke"), Some("forged")),
    ] {
        let mut form = vec![("comment", "no")];
        if let Some(c) = form_csrf {
            form.push(("csrf", c));
        }
        let (status, _, html) = post(&app, &bob, &path, &form).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} {form_csrf:?}");
        assert!(html.contains("csrf_failed"), "{html}");
    }
    // A valid token from another site is refused too (the browser says
    // where the form came from).
    let resp = bob
        .client()
        .post(format!("{}/requests/{pending}/reject", app.url))
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", good.as_str()), ("comment", "no")])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    assert_eq!(app.show(&pending).await?["state"], "pending");
    assert_eq!(
        app.show(&pending).await?["approvals"],
        serde_json::json!([])
    );
    assert_eq!(app.show(&running).await?["state"], "active");

    // The same token, properly sent, works.
    let (status, _, _) = post(
        &app,
        &bob,
        &format!("/requests/{pending}/reject"),
        &[("csrf", &good), ("comment", "not now")],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(app.show(&pending).await?["state"], "rejected");
    let (status, _, _) = post(
        &app,
        &bob,
        &format!("/requests/{running}/revoke"),
        &[("csrf", &good), ("comment", "incident over")],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    app.wait_state(&running, "revoked", WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_form_shows_the_error_next_to_its_field_and_keeps_what_was_typed() -> Result<()> {
    let (_dir, app) = app().await?;
    let alice = signed_in(&app, "alice").await?;
    let (_, html) = page(&app, &alice, FORM).await?;
    // The default duration is filled in, the maximum is stated.
    assert!(html.contains("name=\"duration\" value=\"1h\""), "{html}");
    assert!(html.contains("and 1h."), "{html}");
    let csrf = csrf_of(&html)?;
    let cases: [Case; 4] = [
        (
            &[("duration", "3h"), ("reason", HOSTILE)],
            "duration-error",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &[("duration", "soon"), ("reason", HOSTILE)],
            "duration-error",
            StatusCode::BAD_REQUEST,
        ),
        (
            &[("duration", "30m"), ("reason", "   ")],
            "reason-error",
            StatusCode::BAD_REQUEST,
        ),
        (
            &[
                ("duration", "30m"),
                ("reason", HOSTILE),
                ("start_mode", "later"),
                ("start", "yesterday"),
            ],
            "start-error",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (fields, error_id, expected) in cases {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let (status, _, html) = post(&app, &alice, FORM, &form).await?;
        assert_eq!(status, expected, "{fields:?}");
        assert!(
            html.contains(&format!("id=\"{error_id}\"")),
            "{fields:?}: {html}"
        );
        // Nothing typed is lost.
        for (name, value) in fields
            .iter()
            .filter(|(n, _)| *n == "duration" || *n == "reason")
        {
            let shown = value.replace('<', "&lt;").replace('>', "&gt;");
            assert!(html.contains(&shown), "{name} kept: {html}");
        }
    }
    // Nothing was created.
    let (_, list) = app.get("alice", "/api/v1/requests").await?;
    assert_eq!(list["requests"], serde_json::json!([]));

    // A role alice is not eligible for is refused outright.
    let (status, html) = page(
        &app,
        &alice,
        "/request/new?target=demo&resource=staging&role=orders_writer",
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("not_eligible"), "{html}");
    let (status, _) = page(&app, &alice, "/request/new").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_see_only_the_requests_in_their_scope_and_pages_carry_a_strict_policy() -> Result<()>
{
    let (_dir, app) = app().await?;
    let alice = signed_in(&app, "alice").await?;
    let eve = signed_in(&app, "eve").await?;
    let id = request_through_form(&app, &alice, "10m").await?;
    // eve (a developer, not an approver) cannot see alice's request.
    let (status, html) = page(&app, &eve, &format!("/requests/{id}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!html.contains("本番DB"), "{html}");
    let (_, html) = page(&app, &eve, "/approvals").await?;
    assert!(!html.contains(&id), "{html}");
    let (status, _) = page(&app, &eve, &format!("/live/requests/{id}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An id that is not one: a 4xx page, never a 500.
    for bad in [
        "/requests/%3Cscript%3E",
        "/requests/r-",
        "/requests/r-x/approve",
    ] {
        let (status, _) = page(&app, &alice, bad).await?;
        assert!(status.is_client_error(), "{bad}: {status}");
    }
    let resp = alice.get(&format!("{}/requests/{id}", app.url)).await?;
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = resp.text().await?;
    // No inline script or style anywhere in the page.
    assert!(!html.contains("<script>"), "{html}");
    assert!(!html.contains("style="), "{html}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_page_fingerprint_changes_when_a_shown_request_changes() -> Result<()> {
    let (_dir, app) = app().await?;
    let alice = signed_in(&app, "alice").await?;
    let id = request_through_form(&app, &alice, "10m").await?;
    let fp = |b: Browser, path: &'static str| {
        let url = format!("{}{path}", app.url);
        async move { b.get(&url).await?.text().await.map_err(anyhow::Error::from) }
    };
    let before = fp(alice.clone(), "/live/mine").await?;
    let (_, html) = page(&app, &alice, "/requests").await?;
    assert!(
        html.contains(&format!("data-fingerprint=\"{before}\"")),
        "{html}"
    );
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    let after = fp(alice.clone(), "/live/mine").await?;
    assert_ne!(before, after);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eligible_api_filters_and_pages_like_the_picker() -> Result<()> {
    let (_dir, app) = app().await?;
    let (status, all) = app.get("alice", "/api/v1/eligible").await?;
    assert_eq!(status, StatusCode::OK);
    let total = all["total"].as_u64().context("total")?;
    assert_eq!(
        all["eligible"].as_array().map(Vec::len),
        Some(total as usize)
    );
    assert!(total >= 4, "{all}");

    // One page at a time, in the same order, adding up to everything.
    let mut seen = Vec::new();
    for offset in (0..total).step_by(3) {
        let (status, page) = app
            .get(
                "alice",
                &format!("/api/v1/eligible?limit=3&offset={offset}"),
            )
            .await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["total"], total);
        for e in page["eligible"].as_array().context("eligible")? {
            seen.push(format!(
                "{}/{}/{}",
                e["target"], e["resource_path"], e["role"]
            ));
        }
    }
    assert_eq!(seen.len(), total as usize);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no entry twice");

    let (_, found) = app
        .get(
            "alice",
            "/api/v1/eligible?q=ORDERS&role=writer&tag=team%3Dorders",
        )
        .await?;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["eligible"][0]["resource"], "orders");
    assert_eq!(found["eligible"][0]["role"], "orders_writer");
    let (_, none) = app
        .get("alice", "/api/v1/eligible?target=elsewhere")
        .await?;
    assert_eq!(none["total"], 0);

    // The CLI asks for a page the same way and says there is more.
    let out = crate::common::cli(
        &app.url,
        "alice",
        &["eligible", "--search", "prod/orders", "--limit", "1"],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 of 2 shown"), "{stdout}");
    assert_eq!(stdout.matches("orders_").count(), 1, "{stdout}");

    for bad in [
        "limit=0",
        "limit=100000",
        "offset=-1",
        "offset=x",
        "colour=red",
    ] {
        let (status, err) = app.get("alice", &format!("/api/v1/eligible?{bad}")).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["code"], "invalid_query", "{bad}");
    }
    Ok(())
}

/// An approval policy with `step_up = true`: bob, signed in without MFA,
/// is sent to a fresh multi-factor sign-in from the page and comes back to
/// the request, where his approval then counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_needs_a_step_up_offers_the_sign_in_and_then_counts() -> Result<()> {
    use crate::oidc_common::{read_prod, OidcEnv};
    let env = OidcEnv::start_with("step_up = true").await?;
    let alice = env.sign_in("alice", false).await?;
    let (_, me) = env.me(&alice).await?;
    let csrf = me["csrf_token"].as_str().context("csrf")?.to_owned();
    let (status, created) = env
        .session_post(
            &alice,
            "/api/v1/requests",
            read_prod("障害対応"),
            Some(&csrf),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().context("id")?.to_owned();

    let bob = env.sign_in("bob", false).await?;
    let page_of = |b: Browser, path: String| {
        let url = format!("{}{path}", env.app.url);
        async move {
            let r = b.get(&url).await?;
            let status = r.status();
            Ok::<_, anyhow::Error>((status, r.text().await?))
        }
    };
    let (_, html) = page_of(bob.clone(), format!("/requests/{id}")).await?;
    let token = csrf_of(&html)?;
    let approve = format!("{}/requests/{id}/approve", env.app.url);
    let resp = bob
        .post_form(&approve, &[("csrf", &token), ("comment", "ok")])
        .await?;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let html = resp.text().await?;
    assert!(html.contains("step_up_required"), "{html}");
    let login = format!("/auth/login?step_up=1&amp;next=%2Frequests%2F{id}");
    assert!(html.contains(&login), "{html}");
    let shown = |b: Browser| {
        let url = format!("{}/api/v1/requests/{id}", env.app.url);
        async move { Ok::<_, anyhow::Error>(b.get(&url).await?.json::<serde_json::Value>().await?) }
    };
    assert_eq!(
        shown(alice.clone()).await?["approvals"],
        serde_json::json!([])
    );

    // The offered sign-in, with MFA, comes back to the request.
    let back = bob
        .follow_until(
            &format!(
                "{}/auth/login?step_up=1&next=%2Frequests%2F{id}&login_hint=bob",
                env.app.url
            ),
            &format!("{}/requests/", env.app.url),
        )
        .await?;
    assert!(back.ends_with(&format!("/requests/{id}")), "{back}");
    let (_, html) = page_of(bob.clone(), format!("/requests/{id}")).await?;
    let token = csrf_of(&html)?;
    let resp = bob
        .post_form(&approve, &[("csrf", &token), ("comment", "ok")])
        .await?;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let after = shown(alice.clone()).await?;
    assert_eq!(after["approvals"][0]["by"], "bob", "{after}");
    assert_ne!(after["state"], "pending", "{after}");
    Ok(())
}
