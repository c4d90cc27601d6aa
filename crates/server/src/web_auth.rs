//! Browser sign-in through the identity provider: the OpenID Connect
//! authorization code flow with PKCE (S256), state and nonce, ending in a
//! server-side session behind an HttpOnly cookie.
//!
//! - `GET /auth/login?next=/path[&step_up=1][&login_hint=NAME]` stores a
//!   fresh state, nonce and PKCE verifier (server-side, keyed by the hash
//!   of the state), binds the state to this browser with a short-lived
//!   cookie, and redirects to the provider. `step_up=1` asks for the
//!   configured `acr_values`, `max_age` and a new login.
//! - `GET /auth/callback` checks that the state came back to the browser
//!   that started it, uses the flow once, exchanges the code with the
//!   verifier, verifies the ID token (signature, issuer, audience, expiry,
//!   nonce), binds the person by subject and opens a session.
//! - `POST /auth/logout` ends the session (CSRF-checked).
//!
//! A session authenticates API calls too (see [`session_caller`]); calls
//! that change anything must then carry the session's CSRF token in
//! `X-CSRF-Token`, so another site cannot make the browser act.

use axum::extract::{RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{TimeZone, Utc};
use elevate_core::principal::{AuthMethod, Authn, Principal};
use elevate_core::values::UserName;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::AppState;
use crate::error::ApiError;
use crate::identity::Profile;

/// A sign-in must come back within this long.
const LOGIN_FLOW_SECS: i64 = 600;
const LOGIN_COOKIE: &str = "elevate_login";
/// How long a browser session opened with an API token lasts (the
/// provider's `session_lifetime` applies when one is configured).
const LOCAL_SESSION_SECS: i64 = 12 * 3600;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/token", get(token_form).post(token_signin))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
}

/// A sign-in in progress.
#[derive(Serialize, Deserialize)]
struct LoginFlow {
    nonce: String,
    verifier: String,
    next: String,
    step_up: bool,
}

/// What a session row holds.
#[derive(Serialize, Deserialize)]
struct SessionDoc {
    name: String,
    issuer: String,
    subject: String,
    profile: Profile,
    acr: Option<String>,
    amr: Vec<String>,
    /// Seconds since the epoch.
    auth_time: Option<i64>,
    csrf: String,
    /// A local user who signed in with an API token: who they are is read
    /// from the config at each request, as for the token itself.
    #[serde(default)]
    local: bool,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn secure(b: &AppState) -> bool {
    b.public_url.starts_with("https://")
}

/// `__Host-` pins the cookie to this host and path `/`, over https only.
fn session_cookie_name(b: &AppState) -> &'static str {
    if secure(b) {
        "__Host-elevate_session"
    } else {
        "elevate_session"
    }
}

fn cookie(b: &AppState, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    if secure(b) {
        c.push_str("; Secure");
    }
    // Only our own URL-safe tokens go in, so this always parses.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("elevate_invalid=1"))
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    let raw = raw.unwrap_or_default();
    reqwest::Url::parse(&format!("http://q/?{raw}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Only paths on this site: a sign-in must not bounce the browser to
/// another one (open redirect). Only visible ASCII: browsers drop tabs and
/// newlines from a URL (WHATWG URL), so "/\t/evil.example" would become
/// "//evil.example"; and a header value cannot carry other characters.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.chars().all(|c| c.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `body` is markup built here with every value escaped.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    crate::web::page_with_status(
        None,
        crate::web::Nav::None,
        status,
        title,
        maud::PreEscaped(body.to_owned()),
    )
}

fn failed(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Sign-in failed",
        &format!(
            "<p>{}</p><p><a href=\"/auth/login\">Sign in again</a></p>",
            escape_html(message)
        ),
    )
}

fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn login(State(b): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let Some(oidc) = b.oidc.clone() else {
        return failed(
            StatusCode::NOT_FOUND,
            "this elevate has no identity provider configured; use an API token",
        );
    };
    let pairs = query_pairs(q);
    let meta = match oidc.metadata().await {
        Ok(m) => m,
        Err(e) => return failed(StatusCode::SERVICE_UNAVAILABLE, &e.message()),
    };
    let step_up = matches!(param(&pairs, "step_up"), Some("1" | "true"));
    let flow = LoginFlow {
        nonce: random_token(),
        verifier: random_token(),
        next: safe_next(param(&pairs, "next")),
        step_up,
    };
    let state = random_token();
    let now = Utc::now();
    let doc = match serde_json::to_string(&flow) {
        Ok(d) => d,
        Err(e) => return failed(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let Err(e) = b
        .store
        .put_login_flow(
            &hash(&state),
            &doc,
            now,
            now + chrono::Duration::seconds(LOGIN_FLOW_SECS),
        )
        .await
    {
        tracing::error!(error = %e, "cannot store a sign-in flow");
        return failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "elevate could not start the sign-in; the server log has the details",
        );
    }
    let s = &oidc.settings;
    let enc = crate::oidc::url_encode;
    let mut params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", s.client_id.clone()),
        ("redirect_uri", format!("{}/auth/callback", b.public_url)),
        ("scope", s.scopes.join(" ")),
        ("state", state.clone()),
        ("nonce", flow.nonce.clone()),
        ("code_challenge", pkce_challenge(&flow.verifier)),
        ("code_challenge_method", "S256".to_owned()),
    ];
    if step_up {
        let rule = &b.catalog().step_up;
        if !rule.acr_values.is_empty() {
            params.push(("acr_values", rule.acr_values.join(" ")));
        }
        params.push(("max_age", rule.max_age.secs().to_string()));
        // A step-up is a new authentication, not the provider's
        // remembered session.
        params.push(("prompt", "login".to_owned()));
    }
    if let Some(hint) = param(&pairs, "login_hint") {
        params.push(("login_hint", hint.to_owned()));
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    let sep = if meta.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{sep}{}", meta.authorization_endpoint, query.join("&"));
    let mut resp = redirect(&location);
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(&b, LOGIN_COOKIE, &state, "/auth", LOGIN_FLOW_SECS),
    );
    resp
}

async fn callback(
    State(b): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(oidc) = b.oidc.clone() else {
        return failed(StatusCode::NOT_FOUND, "no identity provider is configured");
    };
    let pairs = query_pairs(q);
    // The state must come back to the browser that started the sign-in:
    // otherwise someone could sign a victim in as themselves.
    let bound = param(&pairs, "state").is_some_and(|state| {
        read_cookie(&headers, LOGIN_COOKIE)
            .is_some_and(|c| bool::from(c.as_bytes().ct_eq(state.as_bytes())))
    });
    let not_bound = || {
        failed(
            StatusCode::BAD_REQUEST,
            "this sign-in was not started in this browser (state mismatch); start again",
        )
    };
    if let Some(error) = param(&pairs, "error") {
        // Only the answer to this browser's own sign-in is shown: otherwise
        // anyone could put words on elevate's page with a crafted link.
        if !bound {
            return not_bound();
        }
        // That sign-in is over: drop it rather than leave it to expire.
        if let Some(state) = param(&pairs, "state") {
            if let Err(e) = b.store.take_login_flow(&hash(state), Utc::now()).await {
                tracing::warn!(error = %e, "cannot drop a failed sign-in flow");
            }
        }
        let desc = param(&pairs, "error_description").unwrap_or("");
        let mut resp = failed(
            StatusCode::UNAUTHORIZED,
            &format!("the identity provider did not sign you in: {error} {desc}"),
        );
        resp.headers_mut()
            .append(header::SET_COOKIE, cookie(&b, LOGIN_COOKIE, "", "/auth", 0));
        return resp;
    }
    let (Some(state), Some(code)) = (param(&pairs, "state"), param(&pairs, "code")) else {
        return failed(
            StatusCode::BAD_REQUEST,
            "the sign-in answer lacks its code or state",
        );
    };
    if !bound {
        return not_bound();
    }
    let now = Utc::now();
    let flow = match b.store.take_login_flow(&hash(state), now).await {
        Ok(Some(doc)) => match serde_json::from_str::<LoginFlow>(&doc) {
            Ok(f) => f,
            Err(_) => return failed(StatusCode::BAD_REQUEST, "this sign-in is unreadable"),
        },
        Ok(None) => {
            return failed(
                StatusCode::BAD_REQUEST,
                "this sign-in was already used or has expired; start again",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read a sign-in flow");
            return failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                "elevate could not finish the sign-in",
            );
        }
    };
    let redirect_uri = format!("{}/auth/callback", b.public_url);
    let tokens = match oidc
        .exchange_code(code, &flow.verifier, &redirect_uri)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "code exchange failed");
            return failed(StatusCode::UNAUTHORIZED, &e);
        }
    };
    let Some(id_token) = tokens.id_token else {
        return failed(
            StatusCode::UNAUTHORIZED,
            "the identity provider returned no ID token (is the openid scope allowed?)",
        );
    };
    let verified = match oidc
        .verify(&id_token, &[oidc.settings.client_id.as_str()], now)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e.message(), "ID token refused");
            return failed(StatusCode::UNAUTHORIZED, &e.message());
        }
    };
    let nonce_ok = verified
        .str("nonce")
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(flow.nonce.as_bytes())));
    if !nonce_ok {
        return failed(
            StatusCode::UNAUTHORIZED,
            "the ID token does not answer this sign-in (nonce mismatch); start again",
        );
    }
    // With several audiences, the token must have been issued to us.
    if let Some(azp) = verified.str("azp") {
        if azp != oidc.settings.client_id {
            return failed(
                StatusCode::UNAUTHORIZED,
                "the ID token was issued to another client (azp)",
            );
        }
    }
    let principal = match b
        .principal_from_claims(&oidc, &verified, AuthMethod::Session, now)
        .await
    {
        Ok(p) => p,
        Err(e) => return failed(e.status(), &e.message()),
    };
    if flow.step_up {
        if let Err(e) = b.catalog().step_up.check(principal.auth.as_ref(), now) {
            return failed(StatusCode::UNAUTHORIZED, &format!("{e}"));
        }
    }
    let auth = principal.auth.clone();
    let doc = SessionDoc {
        name: principal.name.to_string(),
        issuer: verified.str("iss").unwrap_or_default().to_owned(),
        subject: verified.str("sub").unwrap_or_default().to_owned(),
        profile: Profile::of(&principal),
        acr: auth.as_ref().and_then(|a| a.acr.clone()),
        amr: auth.as_ref().map(|a| a.amr.clone()).unwrap_or_default(),
        auth_time: auth.and_then(|a| a.auth_time).map(|t| t.timestamp()),
        csrf: random_token(),
        local: false,
    };
    tracing::info!(user = %principal.name, step_up = flow.step_up, "signed in");
    let lifetime = oidc.settings.session_lifetime.as_secs() as i64;
    let mut resp = open_session(&b, &headers, &doc, lifetime, &flow.next).await;
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie(&b, LOGIN_COOKIE, "", "/auth", 0));
    resp
}

/// Stores a new session for `doc` and answers with its cookie and a
/// redirect to `next`.
async fn open_session(
    b: &AppState,
    headers: &HeaderMap,
    doc: &SessionDoc,
    lifetime: i64,
    next: &str,
) -> Response {
    let now = Utc::now();
    // A new sign-in in this browser (a step-up, another user) replaces the
    // session it had: the old one must not stay usable until it expires.
    if let Some(old) = read_cookie(headers, session_cookie_name(b)) {
        if let Err(e) = b.store.delete_session(&hash(&old)).await {
            tracing::warn!(error = %e, "cannot end the session a new sign-in replaces");
        }
    }
    let session_id = random_token();
    let expires = now + chrono::Duration::seconds(lifetime);
    let stored = match serde_json::to_string(doc) {
        Ok(text) => {
            b.store
                .create_session(&hash(&session_id), &doc.name, &text, now, expires)
                .await
        }
        Err(e) => Err(elevate_store::StoreError::Corrupt(e.to_string())),
    };
    if let Err(e) = stored {
        tracing::error!(error = %e, "cannot store a session");
        return failed(
            StatusCode::INTERNAL_SERVER_ERROR,
            "elevate could not open your session",
        );
    }
    let mut resp = redirect(next);
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie(b, session_cookie_name(b), &session_id, "/", lifetime),
    );
    resp
}

/// The session a request carries, if any, with its CSRF token.
pub async fn session_of(
    b: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Principal, String)>, ApiError> {
    let Some(id) = read_cookie(headers, session_cookie_name(b)) else {
        return Ok(None);
    };
    let now = Utc::now();
    let Some(row) = b.store.session(&hash(&id), now).await? else {
        return Ok(None);
    };
    let Ok(doc) = serde_json::from_str::<SessionDoc>(&row.doc) else {
        return Ok(None);
    };
    let Ok(name) = UserName::parse(&doc.name) else {
        return Ok(None);
    };
    let mut p = if doc.local {
        // Removed from the config: signed out.
        let Some(p) = b.directory.get(&name) else {
            return Ok(None);
        };
        p.clone()
    } else {
        doc.profile.principal(name)
    };
    p.auth = Some(Authn {
        method: AuthMethod::Session,
        issuer: (!doc.local).then_some(doc.issuer),
        acr: doc.acr,
        amr: doc.amr,
        auth_time: doc.auth_time.and_then(|s| Utc.timestamp_opt(s, 0).single()),
        expires_at: Some(row.expires_at),
    });
    Ok(Some((p, doc.csrf)))
}

/// The caller of an API request authenticated by a session cookie. A
/// request that may change something must repeat the session's CSRF token
/// in `X-CSRF-Token`.
pub async fn session_caller(b: &AppState, parts: &Parts) -> Result<Option<Principal>, ApiError> {
    let Some((p, csrf)) = session_of(b, &parts.headers).await? else {
        return Ok(None);
    };
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(ApiError::client(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "a browser session must send its CSRF token in X-CSRF-Token to change anything",
            ));
        }
    }
    Ok(Some(p))
}

/// The CSRF token of the calling session, for `GET /api/v1/me`.
pub async fn session_csrf(b: &AppState, headers: &HeaderMap) -> Option<String> {
    session_of(b, headers).await.ok().flatten().map(|(_, c)| c)
}

async fn logout(State(b): State<AppState>, headers: HeaderMap, body: String) -> Response {
    let name = session_cookie_name(&b);
    if let Ok(Some((_, csrf))) = session_of(&b, &headers).await {
        let sent_form = reqwest::Url::parse(&format!("http://q/?{body}"))
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "csrf")
                    .map(|(_, v)| v.into_owned())
            });
        let sent = sent_form.or_else(|| {
            headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        if !sent.is_some_and(|s| bool::from(s.as_bytes().ct_eq(csrf.as_bytes()))) {
            return failed(
                StatusCode::FORBIDDEN,
                "sign-out needs the session's CSRF token",
            );
        }
        if let Some(id) = read_cookie(&headers, name) {
            if let Err(e) = b.store.delete_session(&hash(&id)).await {
                tracing::error!(error = %e, "cannot delete a session");
            }
        }
    }
    let mut resp = redirect("/");
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie(&b, name, "", "/", 0));
    resp
}

/// Where a browser without a session goes to sign in, coming back to
/// `next` afterwards.
pub fn sign_in_url(b: &AppState, next: &str) -> String {
    let next = crate::oidc::url_encode(&safe_next(Some(next)));
    if b.oidc.is_some() {
        format!("/auth/login?next={next}")
    } else {
        format!("/auth/token?next={next}")
    }
}

/// The sign-in choices: the identity provider when there is one, and an
/// API token for local users.
pub fn sign_in_choices(b: &AppState, next: &str) -> maud::Markup {
    let next = safe_next(Some(next));
    maud::html! {
        @if b.oidc.is_some() {
            section.card {
                h2 { "With your organisation's account" }
                form method="get" action="/auth/login" {
                    input type="hidden" name="next" value=(next);
                    label for="login_hint" { "E-mail or user name " span.muted { "(optional)" } }
                    input #login_hint type="text" name="login_hint" autocomplete="username";
                    button type="submit" { "Sign in" }
                }
            }
        }
        section.card {
            h2 { "With an API token" }
            p.muted { "For local users of this elevate; " code { "elevate token new" } " makes one." }
            (token_form_markup(&next, None))
            @if b.demo {
                p.notice {
                    "Demo mode: the tokens are "
                    @for (i, (name, _, token)) in crate::dev::USERS.iter().enumerate() {
                        @if i > 0 { ", " }
                        code { (token) } " (" (name) ")"
                    }
                    "."
                }
            }
        }
    }
}

fn token_form_markup(next: &str, error: Option<&str>) -> maud::Markup {
    maud::html! {
        form method="post" action="/auth/token" {
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            input #token type="password" name="token" required autocomplete="current-password"
                aria-invalid=[error.map(|_| "true")]
                aria-describedby=[error.map(|_| "token-error")];
            @if let Some(e) = error {
                p #token-error .field-error role="alert" { (e) }
            }
            button type="submit" { "Sign in" }
        }
    }
}

async fn token_form(State(b): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(q);
    let next = safe_next(param(&pairs, "next"));
    crate::web::sign_in_page(StatusCode::OK, "Sign in", sign_in_choices(&b, &next))
}

/// A local user signs the browser in with their API token. The token is
/// checked like a bearer token (constant-time digest comparison) and never
/// stored; the session only names the user.
async fn token_signin(State(b): State<AppState>, headers: HeaderMap, body: String) -> Response {
    let form = crate::web::Form::parse(body.as_bytes());
    let next = safe_next(form.get("next"));
    // Another site must not sign this browser in as someone else.
    if crate::web::cross_site(&headers) {
        return failed(
            StatusCode::FORBIDDEN,
            "a sign-in must come from elevate's own page",
        );
    }
    let token = form.get("token").map(str::trim).unwrap_or("");
    let Some(p) = (!token.is_empty())
        .then(|| b.directory.authenticate(token))
        .flatten()
    else {
        tracing::info!("browser sign-in with an invalid API token");
        let body = maud::html! {
            (token_form_markup(&next, Some("This API token is not valid.")))
        };
        return crate::web::sign_in_page(StatusCode::UNAUTHORIZED, "Sign in", body);
    };
    let doc = SessionDoc {
        name: p.name.to_string(),
        issuer: String::new(),
        subject: String::new(),
        profile: Profile::default(),
        acr: None,
        amr: Vec::new(),
        auth_time: Some(Utc::now().timestamp()),
        csrf: random_token(),
        local: true,
    };
    let lifetime = b.oidc.as_ref().map_or(LOCAL_SESSION_SECS, |o| {
        o.settings.session_lifetime.as_secs() as i64
    });
    tracing::info!(user = %p.name, "signed in with an API token");
    open_session(&b, &headers, &doc, lifetime, &next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/requests?x=1")), "/requests?x=1");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil",
            "evil",
            // Browsers drop tabs and newlines: "//evil.example".
            "/\t/evil.example",
            "/\n/evil.example",
            "/caf\u{e9}",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<script>alert('1')</script> & \"x\""),
            "&lt;script&gt;alert(&#39;1&#39;)&lt;/script&gt; &amp; &quot;x&quot;"
        );
    }
}
