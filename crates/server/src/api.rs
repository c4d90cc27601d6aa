//! The HTTP JSON API under `/api/v1`, plus `/healthz`, `/readyz` and
//! `/metrics`. Handlers parse input into domain values, call the
//! [`Broker`], and render views; every client mistake becomes a 4xx with a
//! stable code (see [`crate::error`]), never a 500.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use elevate_core::principal::Principal;
use elevate_core::request::{Kind, Review, State as RState};
use elevate_core::values::{Comment, Name, RequestId};
use elevate_store::{AuditFilter, AuditRecord, RequestFilter, StoredRequest};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::{Broker, CreateInput};
use crate::error::ApiError;

pub type AppState = Arc<Broker>;

pub fn router(broker: AppState, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/me", get(me))
        .route("/auth/config", get(auth_config))
        .route("/eligible", get(eligible))
        .route("/requests", post(create_request).get(list_requests))
        .route("/requests/{id}", get(show_request))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/reject", post(reject))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/requests/{id}/extend", post(extend))
        .route("/requests/{id}/acknowledge", post(acknowledge))
        .route("/requests/{id}/credentials", post(session_credentials))
        .route("/requests/{id}/console", post(session_console))
        .route("/grants", get(list_grants))
        .route("/targets/{id}/refresh", post(refresh_target))
        .route("/targets/{id}/reconcile", post(reconcile_target))
        .route("/targets/{id}/reconciliation", get(last_reconciliation))
        .route("/check", get(check))
        .route("/audit", get(audit_list))
        .route("/audit/export", get(audit_export))
        .route("/audit/verify", get(audit_verify))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/api/v1", api)
        .merge(crate::web_auth::routes())
        .merge(crate::web::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            broker.clone(),
            count_responses,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(broker)
}

async fn count_responses(State(b): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    b.metrics.http_response(resp.status().as_u16());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn not_found() -> ApiError {
    ApiError::client(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}

// ---- extractors ---------------------------------------------------------

/// The authenticated caller.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(header::AUTHORIZATION) else {
            // No bearer token: a browser session, if any.
            if let Some(p) = crate::web_auth::session_caller(state, parts).await? {
                return Ok(Caller(p));
            }
            return Err(ApiError::client(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "send an API token as 'Authorization: Bearer TOKEN', or sign in",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::client(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "the Authorization header must be 'Bearer TOKEN'",
                )
            })?;
        authenticate_bearer(state, token).await.map(Caller)
    }
}

/// A local API token (`elv_...`), or a JWT from the identity provider.
async fn authenticate_bearer(b: &AppState, token: &str) -> Result<Principal, ApiError> {
    let oidc = b.oidc.as_ref().filter(|_| {
        !token.starts_with(crate::auth::TOKEN_PREFIX) && crate::oidc::looks_like_jwt(token)
    });
    let Some(oidc) = oidc else {
        let mut p = b.directory.authenticate(token).ok_or_else(|| {
            ApiError::client(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this API token is not valid",
            )
        })?;
        p.auth = Some(elevate_core::principal::Authn::token());
        return Ok(p);
    };
    let now = Utc::now();
    let verified = oidc
        .verify(token, &oidc.bearer_audiences(), now)
        .await
        .map_err(|e| {
            let status = match e {
                crate::oidc::TokenError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            // Codes from `TokenError::code` (documented with the 401s).
            ApiError::Client {
                status,
                code: e.code(),
                message: e.message(),
            }
        })?;
    b.principal_from_claims(
        oidc,
        &verified,
        elevate_core::principal::AuthMethod::Oidc,
        now,
    )
    .await
}

/// JSON body with rejections turned into our error format.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(e) => ApiError::client(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("the body is not valid JSON: {}", e.body_text()),
                ),
                JsonRejection::JsonDataError(e) => ApiError::client(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.body_text(),
                ),
                JsonRejection::MissingJsonContentType(_) => ApiError::client(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with 'Content-Type: application/json'",
                ),
                JsonRejection::BytesRejection(_) => ApiError::client(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is too large",
                ),
                other => {
                    ApiError::client(StatusCode::BAD_REQUEST, "bad_request", other.body_text())
                }
            }),
        }
    }
}

/// The `{id}` path segment, with rejections (e.g. invalid UTF-8) in our
/// error format.
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| Id(p.0))
            .map_err(|e| ApiError::client(StatusCode::BAD_REQUEST, "invalid_input", e.body_text()))
    }
}

/// Query string with rejections turned into our error format.
pub struct Q<T>(pub T);

impl<S, T> FromRequestParts<S> for Q<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::client(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
            })
    }
}

fn request_id(raw: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(raw).map_err(ApiError::from)
}

fn comment(raw: Option<&str>) -> Result<Comment, ApiError> {
    Comment::parse(raw.unwrap_or("")).map_err(ApiError::from)
}

fn parse_time(field: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("{field}: \"{raw}\" is not an RFC 3339 time like 2026-11-24T09:00:00Z"),
            )
        })
}

// ---- views --------------------------------------------------------------

pub(crate) fn status_text(s: &StoredRequest) -> String {
    let r = &s.request;
    let base = match &r.state {
        RState::Pending { .. } => {
            format!("pending ({} approval(s) so far)", r.approvals.len())
        }
        RState::Approved { .. } if s.apply_failures > 0 => {
            format!(
                "applying, target failing ({} failed attempt(s), retrying)",
                s.apply_failures
            )
        }
        RState::Approved { .. } => "approved, being applied".into(),
        RState::Ending { .. } if s.removal_failures > 0 => {
            format!(
                "revocation failing ({} attempt(s), retrying)",
                s.removal_failures
            )
        }
        RState::Ending { .. } => "being removed".into(),
        RState::Failed { reason, .. } if s.removal_failures > 0 => format!(
            "failed: {reason}; cleanup revocation failing ({} attempt(s), retrying)",
            s.removal_failures
        ),
        RState::Failed { reason, .. } => format!("failed: {reason}"),
        other => other.name().to_owned(),
    };
    if r.review == Review::Awaiting {
        format!("{base}; break-glass, awaiting review")
    } else {
        base
    }
}

pub fn view(b: &Broker, s: &StoredRequest) -> Value {
    let r = &s.request;
    let catalog = b.catalog();
    let target = catalog.targets.get(&r.target);
    let requirement = b.requirement_of(r);
    let window = r.state.window();
    let (decided_by, decision_comment, ended_at) = match &r.state {
        RState::Rejected { by, comment, at } => (
            Some(by.to_string()),
            Some(comment.as_str().to_owned()),
            Some(*at),
        ),
        RState::Revoked { by, reason, at, .. } => (
            Some(by.to_string()),
            Some(reason.as_str().to_owned()),
            Some(*at),
        ),
        RState::Cancelled { by, reason, at } => {
            (Some(by.to_string()), Some(reason.clone()), Some(*at))
        }
        RState::Ended { at, .. } | RState::Expired { at } | RState::Extended { at } => {
            (None, None, Some(*at))
        }
        RState::Failed { at, reason, .. } => (None, Some(reason.clone()), Some(*at)),
        RState::Ending {
            removal: elevate_core::request::Removal::Revoked { by, reason },
            ..
        } => (Some(by.to_string()), Some(reason.as_str().to_owned()), None),
        _ => (None, None, None),
    };
    json!({
        "id": r.id,
        "kind": match r.kind { Kind::Access => "access", Kind::Extension { .. } => "extension" },
        "extends": match &r.kind { Kind::Extension { of } => Some(of.to_string()), Kind::Access => None },
        "requester": r.requester,
        "target": r.target,
        "target_kind": target.map(|t| t.kind.as_str()),
        "dry_run": target.is_some_and(|t| t.dry_run),
        "resource": r.resource,
        "resource_path": target.map(|t| t.path(&r.resource)),
        "role": r.role,
        "justification": r.justification,
        "ticket": r.ticket,
        "duration": r.duration,
        "requested_start": r.requested_start,
        "break_glass": r.break_glass,
        "review": match &r.review {
            Review::NotNeeded => "not_needed",
            Review::Awaiting => "awaiting",
            Review::Acknowledged { .. } => "acknowledged",
        },
        "reviewed_by": match &r.review { Review::Acknowledged { by, .. } => Some(by.to_string()), _ => None },
        "eligibility": r.eligibility,
        "created_at": r.created_at,
        "state": r.state.name(),
        "status": status_text(s),
        "expires_at": match &r.state { RState::Pending { expires_at } => Some(*expires_at), _ => None },
        "starts_at": window.map(|w| w.starts_at),
        "ends_at": window.map(|w| w.ends_at),
        "active_since": match &r.state { RState::Active { since, .. } => Some(*since), _ => None },
        "ended_at": ended_at,
        "approvals": r.approvals,
        "quorum": requirement.as_ref().map(|q| q.quorum),
        "approvers": requirement.as_ref().map(|q| q.approvers.iter().map(|a| a.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "decided_by": decided_by,
        "decision_comment": decision_comment,
        "removal_failures": s.removal_failures,
        "apply_failures": s.apply_failures,
    })
}

fn audit_view(e: &AuditRecord) -> Value {
    json!({
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "request": e.request,
        "details": e.details,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}

// ---- handlers -----------------------------------------------------------

async fn me(
    State(b): State<AppState>,
    headers: axum::http::HeaderMap,
    Caller(p): Caller,
) -> Json<Value> {
    let auth = p.auth.as_ref().map(|a| {
        json!({
            "method": a.method,
            "issuer": a.issuer,
            "expires_at": a.expires_at,
            "acr": a.acr,
            "amr": a.amr,
            "auth_time": a.auth_time,
        })
    });
    let csrf = match p.auth.as_ref().map(|a| a.method) {
        Some(elevate_core::principal::AuthMethod::Session) => {
            crate::web_auth::session_csrf(&b, &headers).await
        }
        _ => None,
    };
    Json(json!({
        "name": p.name,
        "email": p.email,
        "display_name": p.display_name,
        "groups": p.groups,
        "attributes": p.attributes,
        "admin": b.catalog().is_admin(&p),
        "auditor": b.catalog().is_auditor(&p),
        "auth": auth,
        "csrf_token": csrf,
    }))
}

/// What a client needs to sign in (no authentication: it is asked before
/// there is any).
async fn auth_config(State(b): State<AppState>) -> Json<Value> {
    let oidc = b.oidc.as_ref().map(|o| {
        let rule = &b.catalog().step_up;
        json!({
            "issuer": o.settings.issuer,
            "cli_client_id": o.settings.cli_client_id,
            "scopes": o.settings.scopes,
            "step_up": {
                "acr_values": rule.acr_values.join(" "),
                "max_age": rule.max_age.secs(),
            },
        })
    });
    Json(json!({ "oidc": oidc }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EligibleQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<u64>,
}

/// Everything the caller may request, or with any filter or paging
/// parameter one page of it (catalogs reach hundreds of thousands of
/// choices; a page never materialises the rest).
async fn eligible(
    State(b): State<AppState>,
    Caller(p): Caller,
    Q(q): Q<EligibleQuery>,
) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let paged = q.q.is_some()
        || q.target.is_some()
        || q.role.is_some()
        || q.tag.is_some()
        || q.limit.is_some()
        || q.offset.is_some();
    if !paged {
        // The same walk as a page, to the end: path order, and faster than
        // collecting into a map first.
        let all = b.catalog().browse_eligible(
            &p,
            now,
            &elevate_core::browse::BrowseFilter::default(),
            0,
            usize::MAX,
        );
        return Ok(Json(json!({ "total": all.total, "eligible": all.entries })));
    }
    let limit = limit(q.limit)? as usize;
    let offset = usize::try_from(q.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let filter = elevate_core::browse::BrowseFilter::from_input(
        q.q.as_deref().unwrap_or(""),
        q.target.as_deref().unwrap_or(""),
        q.role.as_deref().unwrap_or(""),
        q.tag.as_deref().unwrap_or(""),
    );
    let page = b.catalog().browse_eligible(&p, now, &filter, offset, limit);
    Ok(Json(
        json!({ "total": page.total, "eligible": page.entries }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    target: String,
    resource: String,
    role: String,
    /// `"1h30m"` or a number of seconds.
    duration: DurationField,
    #[serde(default)]
    start: Option<String>,
    reason: String,
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    break_glass: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationField {
    Seconds(u64),
    Text(String),
}

impl DurationField {
    fn text(self) -> String {
        match self {
            DurationField::Seconds(n) => n.to_string(),
            DurationField::Text(t) => t,
        }
    }
}

async fn create_request(
    State(b): State<AppState>,
    Caller(p): Caller,
    Body(body): Body<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let start = body
        .start
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_time("start", s))
        .transpose()?;
    let created = b
        .create(
            &p,
            CreateInput {
                target: body.target,
                resource: body.resource,
                role: body.role,
                duration: body.duration.text(),
                start,
                reason: body.reason,
                ticket: body.ticket.filter(|t| !t.trim().is_empty()),
                break_glass: body.break_glass,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view(&b, &created))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

const STATES: [&str; 12] = [
    "pending",
    "scheduled",
    "approved",
    "active",
    "ending",
    "ended",
    "revoked",
    "rejected",
    "cancelled",
    "expired",
    "failed",
    "extended",
];

fn states_filter(raw: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(|s| {
            let s = s.trim();
            if STATES.contains(&s) {
                Ok(s.to_owned())
            } else {
                Err(ApiError::client(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("unknown state \"{s}\" (known: {})", STATES.join(", ")),
                ))
            }
        })
        .collect()
}

fn limit(raw: Option<i64>) -> Result<i64, ApiError> {
    match raw {
        None => Ok(500),
        Some(n) if (1..=10_000).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "limit must be between 1 and 10000",
        )),
    }
}

async fn list_scoped(
    b: &Broker,
    p: &Principal,
    scope: &str,
    states: Vec<String>,
    limit: i64,
) -> Result<Vec<Value>, ApiError> {
    let all_visible = b.catalog().is_admin(p) || b.catalog().is_auditor(p);
    let filter = match scope {
        "mine" => RequestFilter {
            requester: Some(p.name.to_string()),
            states,
            limit: Some(limit),
        },
        "pending" => RequestFilter {
            requester: None,
            states: vec!["pending".into()],
            limit: Some(10_000),
        },
        "all" => RequestFilter {
            requester: None,
            states,
            limit: Some(if all_visible { limit } else { 10_000 }),
        },
        other => {
            return Err(ApiError::client(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("scope \"{other}\" is not one of mine, pending, all"),
            ))
        }
    };
    let rows = b.store.list_requests(&filter).await?;
    let out = rows
        .iter()
        .filter(|s| match scope {
            // What waits for *me*: in my scope, not mine, not yet approved by me.
            "pending" => {
                let r = &s.request;
                r.requester != p.name
                    && !r.approvals.iter().any(|a| a.by == p.name)
                    && b.requirement_of(r).is_some_and(|q| q.allows(p))
            }
            "all" => all_visible || b.can_see(p, &s.request),
            _ => true,
        })
        .take(limit as usize)
        .map(|s| view(b, s))
        .collect();
    Ok(out)
}

async fn list_requests(
    State(b): State<AppState>,
    Caller(p): Caller,
    Q(q): Q<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let states = states_filter(q.state.as_deref())?;
    let scope = q.scope.as_deref().unwrap_or("mine");
    let requests = list_scoped(&b, &p, scope, states, limit(q.limit)?).await?;
    Ok(Json(json!({ "requests": requests })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsQuery {
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn list_grants(
    State(b): State<AppState>,
    Caller(p): Caller,
    Q(q): Q<GrantsQuery>,
) -> Result<Json<Value>, ApiError> {
    let states: Vec<String> = if q.active.unwrap_or(false) {
        ["approved", "active", "ending"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        [
            "scheduled",
            "approved",
            "active",
            "ending",
            "ended",
            "revoked",
            "failed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let scope = q.scope.as_deref().unwrap_or("mine");
    if scope == "pending" {
        return Err(ApiError::client(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "scope must be mine or all",
        ));
    }
    let grants = list_scoped(&b, &p, scope, states, limit(q.limit)?).await?;
    Ok(Json(json!({ "grants": grants })))
}

async fn show_request(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
) -> Result<Json<Value>, ApiError> {
    let id = request_id(&id)?;
    let stored = b.load(&id).await?;
    if !b.can_see(&p, &stored.request) {
        return Err(ApiError::NotFound);
    }
    let mut v = view(&b, &stored);
    let attempts = b.store.attempts(&id).await?;
    let events = b
        .store
        .audit_events(&AuditFilter {
            request: Some(id.to_string()),
            ..Default::default()
        })
        .await?;
    let extensions = b.store.extensions_of(&id).await?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("attempts".into(), json!(attempts));
        obj.insert(
            "events".into(),
            Value::Array(events.iter().map(audit_view).collect()),
        );
        obj.insert(
            "extensions".into(),
            Value::Array(extensions.iter().map(|e| view(&b, e)).collect()),
        );
    }
    Ok(Json(v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: Option<String>,
}

/// Action endpoints accept an empty body as "no comment".
async fn optional_comment(req: Request) -> Result<CommentBody, ApiError> {
    optional_body(req).await
}

/// A JSON body that may be left out (empty or whitespace: the default).
async fn optional_body<T: serde::de::DeserializeOwned + Default>(
    req: Request,
) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| {
            ApiError::client(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is too large",
            )
        })?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice::<T>(&bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::client(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            )
        } else {
            ApiError::client(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                e.to_string(),
            )
        }
    })
}

/// The decisions that take an optional comment and return the request.
#[derive(Clone, Copy)]
enum Decision {
    Approve,
    Reject,
    Cancel,
    Revoke,
    Acknowledge,
}

async fn decide(
    b: AppState,
    p: Principal,
    id: String,
    req: Request,
    decision: Decision,
) -> Result<Json<Value>, ApiError> {
    let id = request_id(&id)?;
    let body = optional_comment(req).await?;
    let comment = comment(body.comment.as_deref())?;
    let r = match decision {
        Decision::Approve => b.approve(&p, &id, comment).await?,
        Decision::Reject => b.reject(&p, &id, comment).await?,
        Decision::Cancel => b.cancel(&p, &id, comment).await?,
        Decision::Revoke => b.revoke(&p, &id, comment).await?,
        Decision::Acknowledge => b.acknowledge(&p, &id, comment).await?,
    };
    Ok(Json(view(&b, &r)))
}

async fn approve(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    decide(b, p, id, req, Decision::Approve).await
}

async fn reject(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    decide(b, p, id, req, Decision::Reject).await
}

async fn cancel(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    decide(b, p, id, req, Decision::Cancel).await
}

/// By the requester this is an early deactivation.
async fn revoke(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    decide(b, p, id, req, Decision::Revoke).await
}

async fn acknowledge(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    decide(b, p, id, req, Decision::Acknowledge).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    duration: DurationField,
    reason: String,
    #[serde(default)]
    ticket: Option<String>,
}

async fn extend(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    Body(body): Body<ExtendBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = request_id(&id)?;
    let ticket = body.ticket.filter(|t| !t.trim().is_empty());
    let r = b
        .extend(
            &p,
            &id,
            &body.duration.text(),
            &body.reason,
            ticket.as_deref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view(&b, &r))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    #[serde(default)]
    duration: Option<DurationField>,
}

async fn issue(
    b: &AppState,
    p: &Principal,
    id: &str,
    req: Request,
    kind: crate::sessions::SessionKind,
) -> Result<crate::sessions::Issued, ApiError> {
    let id = request_id(id)?;
    let body: SessionBody = optional_body(req).await?;
    let duration = body.duration.map(DurationField::text);
    b.issue_session(p, &id, kind, duration.as_deref()).await
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Temporary AWS credentials for the caller's active grant.
async fn session_credentials(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let s = issue(&b, &p, &id, req, crate::sessions::SessionKind::Credentials)
        .await?
        .session;
    Ok(Json(json!({
        "access_key_id": s.access_key_id,
        "secret_access_key": s.secret_access_key,
        "session_token": s.session_token,
        "expiration": rfc3339(s.expiration),
        "source_identity": s.source_identity,
        "session_name": s.session_name,
        "role_arn": s.role_arn,
        "duration_secs": s.duration_secs,
    })))
}

/// An AWS console sign-in URL for the caller's active grant.
async fn session_console(
    State(b): State<AppState>,
    Caller(p): Caller,
    Id(id): Id,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let issued = issue(&b, &p, &id, req, crate::sessions::SessionKind::Console).await?;
    Ok(Json(json!({
        "url": issued.console_url,
        "expiration": rfc3339(issued.session.expiration),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckQuery {
    target: String,
    resource: String,
    role: String,
    /// Whom to ask about; default the caller. Asking about someone else is
    /// for admins and auditors.
    #[serde(default)]
    user: Option<String>,
}

/// The decision point: may this user request (target, resource, role), and
/// do they hold it right now? For integrations that must ask at the moment
/// of use, and for people wondering why they cannot do something.
async fn check(
    State(b): State<AppState>,
    Caller(p): Caller,
    Q(q): Q<CheckQuery>,
) -> Result<Json<Value>, ApiError> {
    let subject = match q.user.as_deref() {
        None => p.clone(),
        Some(raw) => {
            let name = elevate_core::values::UserName::parse(raw)?;
            if name != p.name && !b.catalog().is_admin(&p) && !b.catalog().is_auditor(&p) {
                return Err(ApiError::client(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "only admins and auditors may check another user",
                ));
            }
            // Configured users and people who signed in through the
            // identity provider alike.
            b.person(&name).await?.ok_or_else(|| {
                ApiError::client(
                    StatusCode::NOT_FOUND,
                    "unknown_user",
                    format!("no user \"{name}\""),
                )
            })?
        }
    };
    let target = elevate_core::values::Name::parse("target", &q.target)?;
    let resource = elevate_core::values::Name::parse("resource", &q.resource)?;
    let role = elevate_core::values::Name::parse("role", &q.role)?;
    let now = Utc::now();
    let catalog = b.catalog();
    let permit = catalog.permit(
        &subject,
        elevate_core::policy::Ask {
            target: &target,
            resource: &resource,
            role: &role,
            duration: b.catalog().limits.min_duration,
            has_ticket: true,
            break_glass: false,
            // "May request" is about eligibility; a step-up is asked for
            // when the request is made.
            check_step_up: false,
        },
        now,
    );
    let (eligible, terms, reason) = match permit {
        Ok(permit) => {
            let e = permit.eligibility;
            (
                true,
                json!({
                    "eligibility": e.id,
                    "max_duration": e.max_duration,
                    "approval_required": e.approval_required,
                    "ticket_required": e.ticket_required,
                    "break_glass": e.break_glass,
                    "not_after": e.not_after,
                }),
                None,
            )
        }
        // Unknown names are the caller's mistake, not a "no".
        Err(
            e @ (elevate_core::DomainError::UnknownTarget(_)
            | elevate_core::DomainError::UnknownResource { .. }
            | elevate_core::DomainError::UnknownRole { .. }),
        ) => return Err(e.into()),
        Err(e) => (false, Value::Null, Some(e.to_string())),
    };
    let grant = b
        .store
        .active_grant(
            subject.name.as_str(),
            target.as_str(),
            resource.as_str(),
            role.as_str(),
            now,
        )
        .await?;
    Ok(Json(json!({
        "user": subject.name,
        "target": target,
        "resource": resource,
        "role": role,
        "eligible": eligible,
        "terms": terms,
        "not_eligible_because": reason,
        "elevated": grant.is_some(),
        "grant": grant.map(|g| json!({
            "id": g.request.id,
            "ends_at": g.request.state.window().map(|w| w.ends_at),
        })),
    })))
}

fn require_auditor(b: &Broker, p: &Principal) -> Result<(), ApiError> {
    if b.catalog().is_admin(p) || b.catalog().is_auditor(p) {
        Ok(())
    } else {
        Err(ApiError::client(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admins and auditors may read the audit trail",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    request: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

fn audit_filter(q: &AuditQuery) -> Result<AuditFilter, ApiError> {
    Ok(AuditFilter {
        since: q
            .since
            .as_deref()
            .map(|s| parse_time("since", s))
            .transpose()?,
        request: q
            .request
            .as_deref()
            .map(request_id)
            .transpose()?
            .map(|r| r.to_string()),
        after_seq: None,
        limit: q.limit.map(|l| limit(Some(l))).transpose()?,
    })
}

async fn audit_list(
    State(b): State<AppState>,
    Caller(p): Caller,
    Q(q): Q<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    require_auditor(&b, &p)?;
    let mut filter = audit_filter(&q)?;
    filter.limit = Some(filter.limit.unwrap_or(1000));
    let events = b.store.audit_events(&filter).await?;
    Ok(Json(
        json!({ "events": events.iter().map(audit_view).collect::<Vec<_>>() }),
    ))
}

async fn audit_export(
    State(b): State<AppState>,
    Caller(p): Caller,
    Q(q): Q<AuditQuery>,
) -> Result<Response, ApiError> {
    require_auditor(&b, &p)?;
    let filter = audit_filter(&q)?;
    // Streamed page by page: a long history never sits in memory whole.
    const PAGE: i64 = 5000;
    let remaining = filter.limit.unwrap_or(i64::MAX);
    let pages = futures_util::stream::unfold(
        (b.store.clone(), filter, 0_i64, remaining),
        |(store, filter, after, remaining)| async move {
            if remaining <= 0 {
                return None;
            }
            let page = AuditFilter {
                after_seq: Some(after),
                limit: Some(remaining.min(PAGE)),
                ..filter.clone()
            };
            match store.audit_events(&page).await {
                Ok(events) if events.is_empty() => None,
                Ok(events) => {
                    let last = events.last().map_or(after, |e| e.seq);
                    let mut chunk = String::new();
                    for e in &events {
                        chunk.push_str(&audit_view(e).to_string());
                        chunk.push('\n');
                    }
                    let left = remaining - events.len() as i64;
                    Some((Ok::<_, std::io::Error>(chunk), (store, filter, last, left)))
                }
                Err(e) => {
                    // Headers are gone already: end the body early; the
                    // truncated last line tells the reader it is incomplete.
                    tracing::error!(error = %e, "audit export failed part-way");
                    Some((
                        Err(std::io::Error::other("audit export failed")),
                        (store, filter, after, 0),
                    ))
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}

async fn audit_verify(
    State(b): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Value>, ApiError> {
    require_auditor(&b, &p)?;
    let v = b.store.verify_audit().await?;
    Ok(Json(json!(v)))
}

/// Refuses everyone but admins, saying what only they may do.
fn require_admin(b: &Broker, p: &Principal, what: &str) -> Result<(), ApiError> {
    if b.catalog().is_admin(p) {
        Ok(())
    } else {
        Err(ApiError::client(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("only admins may {what}"),
        ))
    }
}

/// Targets named in a path: a config name, never created by a client.
fn target_name(raw: &str) -> Result<Name, ApiError> {
    Ok(Name::parse("target", raw)?)
}

/// Reading a discovering target again (`elevate targets refresh`):
/// admins only, since it calls the target's APIs.
async fn refresh_target(
    State(b): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&b, &p, "refresh a target")?;
    let summary = b.refresh_target(&target_name(&id)?).await?;
    Ok(Json(json!(summary)))
}

/// Reconciling a target now (`elevate targets reconcile`): admins only,
/// since with `reconcile = "remove"` it takes access away.
async fn reconcile_target(
    State(b): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&b, &p, "reconcile a target")?;
    let report = b.reconcile_target(&target_name(&id)?).await?;
    Ok(Json(json!(report)))
}

/// The last reconciliation report of a target: admins and auditors.
async fn last_reconciliation(
    State(b): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_auditor(&b, &p)?;
    let target = target_name(&id)?;
    if !b.discovery.contains_key(&target) {
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            "not_discovering",
            format!("\"{target}\" is not a target elevate reconciles"),
        ));
    }
    match b.last_reconciliation(&target).await? {
        Some(report) => Ok(Json(json!(report))),
        None => Err(ApiError::client(
            StatusCode::NOT_FOUND,
            "not_reconciled",
            format!("target \"{target}\" has not been reconciled yet"),
        )),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(b): State<AppState>) -> Response {
    // A load balancer's probe has a short timeout of its own: answer
    // "not ready" within it rather than wait for the pool's connect timeout
    // while the database is unreachable.
    let probe = async {
        b.store.ping().await?;
        b.store.schema_version().await
    };
    let (db, version) = match tokio::time::timeout(std::time::Duration::from_secs(2), probe).await {
        Ok(Ok(version)) => (true, version),
        _ => (false, 0),
    };
    let current = version == elevate_store::SCHEMA_VERSION as i64;
    let status = if db && current {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "database": db,
            "engine": b.store.engine().name(),
            "schema_version": version,
            "migrations_current": current,
        })),
    )
        .into_response()
}

async fn metrics(State(b): State<AppState>) -> Response {
    let text = b.metrics.render(&b.store).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
