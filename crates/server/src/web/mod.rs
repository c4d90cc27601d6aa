//! The web application: server-rendered pages for requesting, approving,
//! watching and auditing access, served by the same binary.
//!
//! - Every page needs a browser session (`/auth/login` through the identity
//!   provider, or `/auth/token` with a local API token); without one the
//!   browser is sent to sign in and comes back.
//! - Every state-changing action is a `POST` of an HTML form carrying the
//!   session's CSRF token, compared in constant time; cross-site POSTs are
//!   refused before that (`Sec-Fetch-Site`).
//! - Pages work without JavaScript. `static/app.js` only adds local time
//!   zones, ticking countdowns and reloading when a shown request changes.
//! - A strict Content-Security-Policy allows scripts and styles from this
//!   site only: no inline script or style, so injected markup cannot run.
//!   Markup is built with `maud`, which escapes every interpolated value.

mod active;
mod admin;
mod approvals;
mod audit;
mod insights;
mod link;
mod notifications;
mod request;
mod requests;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use elevate_core::principal::Principal;
use elevate_core::request::State as RState;
use elevate_core::Timestamp;
use maud::{html, Markup, DOCTYPE};
use subtle::ConstantTimeEq;

use crate::api::AppState;
use crate::error::ApiError;

/// Pages only load what this site serves; nothing inline runs or styles.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The sign-in pages' policy: the same, except that their forms lead to
/// the identity provider (and wherever it sends the browser on), which a
/// form-action of 'self' would block mid-redirect. They show no text a
/// user wrote.
pub const SIGN_IN_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
        .merge(request::routes())
        .merge(requests::routes())
        .merge(approvals::routes())
        .merge(active::routes())
        .merge(audit::routes())
        .merge(insights::routes())
        .merge(admin::routes())
        .merge(link::routes())
        .merge(notifications::routes())
}

// ---- who is looking -------------------------------------------------------

/// The signed-in person viewing a page, with the session's CSRF token.
pub struct Viewer {
    pub p: Principal,
    pub csrf: String,
    pub admin: bool,
    pub auditor: bool,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, b: &AppState) -> Result<Self, Response> {
        match crate::web_auth::session_of(b, &parts.headers).await {
            Ok(Some((p, csrf))) => Ok(Viewer {
                admin: b.catalog().is_admin(&p),
                auditor: b.catalog().is_auditor(&p),
                p,
                csrf,
            }),
            Ok(None) => {
                // Back to this very page after signing in.
                // Pages are not nested, so this is the path asked for.
                let next = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                Err(redirect(&crate::web_auth::sign_in_url(b, next)))
            }
            Err(e) => Err(error_page(None, &e)),
        }
    }
}

/// The viewer of a request that must not redirect (the live fingerprints
/// a page polls): `None` without a session.
pub async fn viewer_of(b: &AppState, headers: &HeaderMap) -> Option<Viewer> {
    match crate::web_auth::session_of(b, headers).await {
        Ok(Some((p, csrf))) => Some(Viewer {
            admin: b.catalog().is_admin(&p),
            auditor: b.catalog().is_auditor(&p),
            p,
            csrf,
        }),
        _ => None,
    }
}

impl Viewer {
    /// Admins and auditors see everything; approvers see their scope.
    pub fn sees_all(&self) -> bool {
        self.admin || self.auditor
    }
}

// ---- forms ----------------------------------------------------------------

/// An `application/x-www-form-urlencoded` body, as pairs in order.
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field, trimmed, `None` when absent or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    pub fn checked(&self, name: &str) -> bool {
        matches!(self.get(name), Some("on" | "1" | "true" | "yes"))
    }
}

/// The check every state-changing page action passes first: the form's
/// CSRF token must be the session's, and the POST must not come from
/// another site. `Some` is the refusal page to answer with.
pub fn check_post(v: &Viewer, headers: &HeaderMap, form: &Form) -> Option<Response> {
    if cross_site(headers) {
        return Some(refused_csrf(v));
    }
    let sent = form.get("csrf").unwrap_or("");
    if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(v.csrf.as_bytes())) {
        return Some(refused_csrf(v));
    }
    None
}

/// Browsers say where a request comes from; a form posted from another
/// site is refused even before its token is looked at.
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s.eq_ignore_ascii_case("cross-site"))
}

fn refused_csrf(v: &Viewer) -> Response {
    message_page(
        Some(v),
        StatusCode::FORBIDDEN,
        "Refused",
        "csrf_failed",
        "This form is not from your current session (its security token is missing or stale). \
         Nothing was changed. Go back, reload the page and try again.",
    )
}

/// The hidden field every form carries.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

// ---- responses ----------------------------------------------------------------

pub fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Adds the page security headers.
pub fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Home,
    Request,
    Requests,
    Approvals,
    Active,
    Audit,
    Insights,
    Admin,
    None,
}

/// A whole page: header with navigation, the body, the footer.
pub fn page(v: Option<&Viewer>, nav: Nav, title: &str, body: Markup) -> Response {
    page_with_status(v, nav, StatusCode::OK, title, body)
}

pub fn page_with_status(
    v: Option<&Viewer>,
    nav: Nav,
    status: StatusCode,
    title: &str,
    body: Markup,
) -> Response {
    let link = |to: Nav, href: &str, label: &str| {
        html! {
            li { a href=(href) aria-current=[(nav == to).then_some("page")] { (label) } }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · elevate" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "elevate" }
                    @if let Some(v) = v {
                        nav aria-label="Main" {
                            ul {
                                (link(Nav::Request, "/request", "Request access"))
                                (link(Nav::Requests, "/requests", "My requests"))
                                (link(Nav::Approvals, "/approvals", "Approvals"))
                                (link(Nav::Active, "/active", "Active access"))
                                @if v.sees_all() {
                                    (link(Nav::Audit, "/audit", "Audit"))
                                    (link(Nav::Insights, "/insights", "Insights"))
                                }
                                @if v.sees_all() {
                                    (link(Nav::Admin, "/admin", "Administration"))
                                }
                            }
                        }
                        div.who {
                            span { (v.p.display_name.as_deref().unwrap_or(v.p.name.as_str())) }
                            form method="post" action="/auth/logout" {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
                footer {
                    "Times are shown in your time zone; hover for UTC."
                }
            }
        }
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    secure_headers(&mut resp);
    resp
}

/// A sign-in page (see [`SIGN_IN_CSP`]).
pub fn sign_in_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let mut resp = page_with_status(None, Nav::Home, status, title, body);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SIGN_IN_CSP),
    );
    resp
}

/// A page that only says something (an error, a refusal).
pub fn message_page(
    v: Option<&Viewer>,
    status: StatusCode,
    title: &str,
    code: &str,
    message: &str,
) -> Response {
    page_with_status(
        v,
        Nav::None,
        status,
        title,
        html! {
            p.notice.error role="alert" { (message) }
            p.muted { "Code: " code { (code) } }
            p { a href="/" { "Back to the start page" } }
        },
    )
}

/// "Sign in again, strongly": a refusal for want of a step-up, with the
/// sign-in that satisfies it, returning to `back`. 403 rather than the
/// API's 401: the session itself is fine.
pub fn step_up_page(v: &Viewer, message: &str, back: &str) -> Response {
    let login = format!(
        "/auth/login?step_up=1&next={}",
        crate::oidc::url_encode(back)
    );
    page_with_status(
        Some(v),
        Nav::None,
        StatusCode::FORBIDDEN,
        "A fresh sign-in is needed",
        html! {
            p.notice.warn role="alert" { (message) }
            p { a.button href=(login) { "Sign in again with multi-factor authentication" } }
            p.muted { "Code: " code { "step_up_required" } ". Nothing was changed; after signing in, do it again." }
            p { a href=(back) { "Back" } }
        },
    )
}

/// A refusal or failure from the broker, as a page with the same status
/// and code the API would give.
pub fn error_page(v: Option<&Viewer>, e: &ApiError) -> Response {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(error = %e.log_text(), "page failed");
    }
    let title = if status == StatusCode::NOT_FOUND {
        "Not found"
    } else if status.is_server_error() {
        "Something went wrong"
    } else {
        "Not possible"
    };
    message_page(v, status, title, e.code(), &e.message())
}

// ---- small pieces of markup ---------------------------------------------

/// A time in UTC, which `app.js` rewrites into the viewer's time zone; the
/// UTC time stays in the tooltip.
pub fn time(t: Timestamp) -> Markup {
    let utc = t.format("%Y-%m-%d %H:%M UTC").to_string();
    html! {
        time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) title=(utc) { (utc) }
    }
}

pub fn opt_time(t: Option<Timestamp>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// "1h 30m" for a number of seconds.
pub fn human_secs(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 && d == 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 && d == 0 && h == 0 {
        parts.push(format!("{s}s"));
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// Time left until `end`, ticking down in the browser.
pub fn remaining(end: Timestamp) -> Markup {
    let left = (end - Utc::now()).num_seconds();
    html! {
        span.countdown data-ends-at=(end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) {
            (human_secs(left)) " left"
        }
    }
}

/// A state as a coloured, labelled badge (the word itself carries the
/// meaning; colour only repeats it).
pub fn state_badge(state: &RState) -> Markup {
    let name = state.name();
    html! { span class={"badge state-" (name)} { (name) } }
}

pub fn break_glass_badge() -> Markup {
    html! { span.badge.breakglass { "break-glass" } }
}

// ---- home and assets ------------------------------------------------------------

async fn home(
    axum::extract::State(b): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Response {
    let Some(v) = viewer_of(&b, &headers).await else {
        return sign_in_page(
            StatusCode::OK,
            "Sign in",
            crate::web_auth::sign_in_choices(&b, "/"),
        );
    };
    requests::dashboard(&b, &v).await
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("static/app.css"))
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("static/app.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(90), "1m 30s");
        assert_eq!(human_secs(3600 + 120), "1h 2m");
        assert_eq!(human_secs(2 * 86_400 + 3600), "2d 1h");
        assert_eq!(human_secs(-5), "0s");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let m = html! { p { ("<script>alert(1)</script> 本番DBの障害対応") } };
        assert_eq!(
            m.into_string(),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt; 本番DBの障害対応</p>"
        );
    }
}
