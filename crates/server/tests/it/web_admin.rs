//! The "Active access" page (who holds what now, and revoking it) and the
//! administration pages (the loaded policy, "who can get this?", "what may
//! this person request?"), each seen by people of every kind.

use std::time::Duration;

use anyhow::{ensure, Result};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{body, dry_run_config, Setup, TestApp};
use crate::web_common::{csrf_of, page, post, signed_in};

const WAIT: Duration = Duration::from_secs(10);

const HOSTILE_REASON: &str = "<script>alert(1)</script> 本番DBの障害対応";

async fn start() -> Result<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("elevate.db");
    let app = TestApp::start(&dry_run_config(&db, &Setup::default())?).await?;
    Ok((app, dir))
}

/// An active grant of alice's on demo/orders, approved by bob.
async fn active_grant_of_alice(app: &TestApp, role: &str, reason: &str) -> Result<String> {
    let mut request = body("demo", "orders", role, "10m");
    request["reason"] = json!(reason);
    let id = app.request("alice", request).await?;
    app.approve("bob", &id).await?;
    app.wait_state(&id, "active", WAIT).await?;
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_access_shows_each_person_only_their_scope_with_text_escaped() -> Result<()> {
    let (app, _dir) = start().await?;
    let id = active_grant_of_alice(&app, "orders_reader", HOSTILE_REASON).await?;

    let alice = signed_in(&app, "alice").await?;
    let (status, html) = page(&app, &alice, "/active").await?;
    assert_eq!(status, StatusCode::OK);
    ensure!(html.contains(&id), "alice does not see her own grant");
    ensure!(
        html.contains("End my access"),
        "alice is offered no way to end her own grant early"
    );
    ensure!(
        !html.contains("<script>alert(1)</script>"),
        "the justification was rendered as markup"
    );
    ensure!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; 本番DBの障害対応"),
        "the justification is not shown (escaped)"
    );
    ensure!(
        html.contains("dry-run"),
        "the dry-run target is not flagged"
    );

    // bob approves prod: he sees alice's grant and may revoke it.
    let bob = signed_in(&app, "bob").await?;
    let (_, html) = page(&app, &bob, "/active").await?;
    ensure!(html.contains(&id), "the approver does not see the grant");
    ensure!(
        html.contains(&format!("action=\"/active/{id}/revoke\"")) && html.contains(">Revoke<"),
        "the approver has no Revoke button"
    );
    ensure!(
        html.contains("data-confirm="),
        "revoking asks no confirmation"
    );

    // The filter narrows by person, resource or role.
    let (_, html) = page(&app, &bob, "/active?q=ALICE").await?;
    ensure!(html.contains(&id), "filtering by requester lost the grant");
    let (_, html) = page(&app, &bob, "/active?q=orders_writer").await?;
    ensure!(
        !html.contains(&id),
        "filtering by another role kept the grant"
    );

    // eve is a developer like alice, but neither her approver nor an admin.
    let eve = signed_in(&app, "eve").await?;
    let (status, html) = page(&app, &eve, "/active").await?;
    assert_eq!(status, StatusCode::OK);
    ensure!(!html.contains(&id), "eve sees alice's grant");
    ensure!(!html.contains("本番DB"), "eve sees alice's justification");

    // dave is admin and auditor: everything, with a Revoke button.
    let dave = signed_in(&app, "dave").await?;
    let (_, html) = page(&app, &dave, "/active").await?;
    ensure!(
        html.contains(&id) && html.contains(">Revoke<"),
        "the admin cannot see or revoke the grant"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_from_the_page_needs_the_session_token_and_the_right_to_revoke() -> Result<()> {
    let (app, _dir) = start().await?;
    let id = active_grant_of_alice(&app, "orders_writer", "incident INC-7").await?;
    let path = format!("/active/{id}/revoke");

    let bob = signed_in(&app, "bob").await?;
    let (_, html) = page(&app, &bob, "/active").await?;
    let token = csrf_of(&html)?;

    // No token, or someone else's: refused, nothing changed.
    let (status, _, _) = post(&app, &bob, &path, &[("comment", "no token")]).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let eve = signed_in(&app, "eve").await?;
    let (_, eve_html) = page(&app, &eve, "/active").await?;
    let eve_token = csrf_of(&eve_html)?;
    ensure!(eve_token != token, "two sessions share a CSRF token");
    let (status, _, _) = post(&app, &bob, &path, &[("csrf", &eve_token)]).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.show(&id).await?["state"], "active");

    // eve, with her own valid token, cannot revoke a grant outside her
    // scope: to her it does not exist.
    let (status, _, html) = post(&app, &eve, &path, &[("csrf", &eve_token)]).await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "{html}");
    assert_eq!(app.show(&id).await?["state"], "active");

    // A malformed id is bad input, not a failure.
    let (status, _, _) = post(&app, &bob, "/active/nonsense/revoke", &[("csrf", &token)]).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // bob, the approver, with his token: revoked, and told so.
    let (status, location, _) = post(
        &app,
        &bob,
        &path,
        &[("csrf", &token), ("comment", "incident over / 対応完了")],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = location.unwrap_or_default();
    assert_eq!(location, format!("/active?revoked={id}"));
    let revoked = app.wait_state(&id, "revoked", WAIT).await?;
    ensure!(
        revoked.to_string().contains("grant.revoked"),
        "no grant.revoked event: {revoked}"
    );
    let (_, html) = page(&app, &bob, &location).await?;
    ensure!(html.contains("Revoked"), "no notice after revoking");

    // Revoking it again is a conflict shown as a page, not a crash.
    let (status, _, _) = post(&app, &bob, &path, &[("csrf", &token)]).await?;
    assert_eq!(status, StatusCode::CONFLICT);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_may_end_only_her_own_grant_early() -> Result<()> {
    let (app, _dir) = start().await?;
    let alices = active_grant_of_alice(&app, "orders_reader", "checking an order").await?;
    let mut request = body("demo", "orders", "orders_reader", "10m");
    request["reason"] = json!("eve's own work");
    let eves = app.request("eve", request).await?;
    app.approve("bob", &eves).await?;
    app.wait_state(&eves, "active", WAIT).await?;

    let alice = signed_in(&app, "alice").await?;
    let (_, html) = page(&app, &alice, "/active").await?;
    let token = csrf_of(&html)?;
    ensure!(!html.contains(&eves), "alice sees eve's grant");

    // Not hers: the engine hides it (404) and changes nothing.
    let (status, _, _) = post(
        &app,
        &alice,
        &format!("/active/{eves}/revoke"),
        &[("csrf", &token)],
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(app.show(&eves).await?["state"], "active");

    // Hers: the engine lets a requester revoke her own grant, recorded as
    // a deactivation (ending her own access early), not a revocation.
    let (status, location, _) = post(
        &app,
        &alice,
        &format!("/active/{alices}/revoke"),
        &[("csrf", &token), ("comment", "done early")],
    )
    .await?;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some(&*format!("/active?revoked={alices}"))
    );
    let ended = app.wait_state(&alices, "revoked", WAIT).await?;
    ensure!(
        ended.to_string().contains("grant.deactivated"),
        "ending one's own grant is not recorded as a deactivation: {ended}"
    );
    assert_eq!(app.show(&eves).await?["state"], "active");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_is_only_for_admins_and_auditors() -> Result<()> {
    let (app, _dir) = start().await?;
    let alice = signed_in(&app, "alice").await?;
    for path in [
        "/admin",
        "/admin/who?target=demo&resource=orders&role=orders_writer",
        "/admin/user?name=alice",
    ] {
        let (status, html) = page(&app, &alice, path).await?;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        ensure!(html.contains("forbidden"), "{path}: no error code shown");
        ensure!(
            !html.contains("developers-prod"),
            "{path}: the policy leaks to a requester"
        );
    }

    let dave = signed_in(&app, "dave").await?;
    let (status, html) = page(&app, &dave, "/admin").await?;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "developers-prod",
        "prod-dba",
        "billing-two-person",
        "group:developers",
        "group:security",
        "orders_writer",
        "team=orders",
        "dry-run",
    ] {
        ensure!(html.contains(expected), "/admin does not show {expected}");
    }
    // The filter narrows the lists.
    let (status, html) = page(&app, &dave, "/admin?q=billing-two").await?;
    assert_eq!(status, StatusCode::OK);
    ensure!(html.contains("billing-two-person") && !html.contains(">prod-dba<"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_ask_who_can_get_a_role_and_who_holds_it() -> Result<()> {
    let (app, _dir) = start().await?;
    let id = active_grant_of_alice(&app, "orders_writer", "migration").await?;
    let dave = signed_in(&app, "dave").await?;

    let (status, html) = page(
        &app,
        &dave,
        "/admin/who?target=demo&resource=orders&role=orders_writer",
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    for expected in [
        "developers-prod",
        "group:developers",
        "members known to elevate: alice, eve",
        "prod/orders",
        "prod-dba",
        "group:dba",
        &id,
    ] {
        ensure!(
            html.contains(expected),
            "/admin/who does not show {expected}"
        );
    }
    let people = html
        .split("People who can request it now")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default();
    ensure!(
        people.contains("alice") && people.contains("eve") && !people.contains("bob"),
        "wrong people: {people}"
    );

    // Billing needs two approvals.
    let (_, html) = page(
        &app,
        &dave,
        "/admin/who?target=demo&resource=billing&role=orders_reader",
    )
    .await?;
    ensure!(html.contains("billing-two-person"));

    // Nothing covers prod itself (eligibility is for what is under it).
    let (status, html) = page(
        &app,
        &dave,
        "/admin/who?target=demo&resource=prod&role=orders_writer",
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    ensure!(html.contains("nobody can request this"));

    // Unknown names are 404, incomplete questions 400: pages, never 500.
    for (path, expected) in [
        (
            "/admin/who?target=demo&resource=nope&role=orders_writer",
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/who?target=nope&resource=orders&role=orders_writer",
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/who?target=demo&resource=orders&role=superuser",
            StatusCode::NOT_FOUND,
        ),
        (
            "/admin/who?target=demo&resource=orders",
            StatusCode::BAD_REQUEST,
        ),
        ("/admin/who", StatusCode::OK),
    ] {
        let (status, html) = page(&app, &dave, path).await?;
        assert_eq!(status, expected, "{path}");
        ensure!(
            html.contains("Who can get a role"),
            "{path}: no form to ask again"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_ask_what_a_person_is_eligible_for() -> Result<()> {
    let (app, _dir) = start().await?;
    let dave = signed_in(&app, "dave").await?;

    let (status, html) = page(&app, &dave, "/admin/user?name=Alice").await?;
    assert_eq!(status, StatusCode::OK, "{html}");
    for expected in [
        "prod/orders",
        "prod/billing",
        "orders_writer",
        "orders_reader",
        "developers-prod",
        "Eligible now (4)",
    ] {
        ensure!(
            html.contains(expected),
            "/admin/user does not show {expected}"
        );
    }
    let (_, html) = page(&app, &dave, "/admin/user?name=alice&q=billing").await?;
    ensure!(
        html.contains("Eligible now (2 matching the filter)") && !html.contains("prod/orders<")
    );

    // bob approves but may request nothing.
    let (status, html) = page(&app, &dave, "/admin/user?name=bob").await?;
    assert_eq!(status, StatusCode::OK);
    ensure!(html.contains("Eligible now (0)"));

    for (path, expected) in [
        ("/admin/user?name=mallory", StatusCode::NOT_FOUND),
        ("/admin/user?name=a%3Ab", StatusCode::BAD_REQUEST),
        ("/admin/user?name=alice&page=zero", StatusCode::BAD_REQUEST),
        ("/admin/user?name=alice&page=99", StatusCode::OK),
        ("/admin/user", StatusCode::OK),
    ] {
        let (status, html) = page(&app, &dave, path).await?;
        assert_eq!(status, expected, "{path}");
        ensure!(
            html.contains("What is a person eligible for?"),
            "{path}: no form"
        );
    }
    let (_, html) = page(&app, &dave, "/admin/user?name=mallory").await?;
    ensure!(html.contains("No user named"));
    Ok(())
}

/// The "People who can request it now" heading and list of a who page.
fn people_section(html: &str) -> String {
    html.split("People who can request it now")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default()
        .to_owned()
}

/// With an identity provider, group members are the people who signed in
/// with that group: "who can get it?" names them, and only those whose
/// attributes meet the eligibility's conditions can request it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_can_get_a_role_names_the_provider_group_members_who_signed_in() -> anyhow::Result<()> {
    use crate::oidc_common::{users_with_dave, OidcEnv};
    let env = OidcEnv::start_for(users_with_dave(), |t| t).await?;
    // alice (department sre) and erin (marketing) are developers; carol
    // never signs in.
    env.sign_in("alice", false).await?;
    env.sign_in("erin", false).await?;
    let dave = env.sign_in("dave", false).await?;
    let get = |path: &str| {
        let url = format!("{}{path}", env.app.url);
        let b = dave.clone();
        async move {
            let r = b.get(&url).await?;
            Ok::<_, anyhow::Error>((r.status(), r.text().await?))
        }
    };
    let (status, html) = get("/admin/who?target=demo&resource=orders&role=orders_writer").await?;
    assert_eq!(status, reqwest::StatusCode::OK, "{html}");
    assert!(
        html.contains("members known to elevate: alice, erin"),
        "{html}"
    );
    let people = people_section(&html);
    // Writing needs department sre: alice, not erin.
    assert!(people.starts_with(" (1)"), "{people}");
    assert!(
        people.contains("alice") && !people.contains("erin"),
        "{people}"
    );

    let (_, html) = get("/admin/who?target=demo&resource=orders&role=orders_reader").await?;
    let people = people_section(&html);
    assert!(people.starts_with(" (2)"), "{people}");
    assert!(
        !people.contains("carol") && !people.contains("dave"),
        "{people}"
    );
    // The approvers' group: nobody from it has signed in.
    assert!(
        html.contains("group:dba <span class=\"muted\">(no member known to elevate)</span>"),
        "{html}"
    );
    Ok(())
}
