//! Shared helpers for the web page tests: a cookie-keeping browser signed
//! in with a local user's API token (`POST /auth/token`), and the CSRF
//! token a page's forms carry.

use anyhow::{bail, Context, Result};
use elevate_testkit::oidc::Browser;
use reqwest::StatusCode;

use crate::common::{token, TestApp};

/// A browser signed in as `user` (a configured user whose token is
/// `t-USER`).
pub async fn signed_in(app: &TestApp, user: &str) -> Result<Browser> {
    let browser = Browser::new()?;
    let resp = browser
        .post_form(
            &format!("{}/auth/token", app.url),
            &[("token", &token(user)), ("next", "/")],
        )
        .await?;
    if resp.status() != StatusCode::SEE_OTHER {
        bail!("sign-in as {user}: {}", resp.status());
    }
    Ok(browser)
}

/// GET a page: its status and HTML.
pub async fn page(app: &TestApp, browser: &Browser, path: &str) -> Result<(StatusCode, String)> {
    let resp = browser.get(&format!("{}{path}", app.url)).await?;
    let status = resp.status();
    Ok((status, resp.text().await?))
}

/// The CSRF token in the first form of `html`.
pub fn csrf_of(html: &str) -> Result<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).context("no CSRF field on the page")? + marker.len();
    let end = html[start..].find('"').context("unterminated CSRF field")?;
    Ok(html[start..start + end].to_owned())
}

/// POST a form (without following the redirect): status, Location, body.
pub async fn post(
    app: &TestApp,
    browser: &Browser,
    path: &str,
    form: &[(&str, &str)],
) -> Result<(StatusCode, Option<String>, String)> {
    let resp = browser
        .post_form(&format!("{}{path}", app.url), form)
        .await?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, location, resp.text().await?))
}
