//! The OpenAPI document is served without authentication and cannot drift
//! silently from the code: every route of the router (and each of its
//! methods) is documented and nothing else is, every `$ref` resolves, and
//! every error code it lists is one the server really produces (and vice
//! versa).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{dry_run_config, Setup, TestApp};

const API_SOURCE: &str = include_str!("../../src/api.rs");
const ERROR_SOURCE: &str = include_str!("../../src/error.rs");
const DOMAIN_ERROR_SOURCE: &str = include_str!("../../../core/src/error.rs");
/// Token refusals (`TokenError::code`).
const OIDC_SOURCE: &str = include_str!("../../src/oidc.rs");
/// Where callers are authenticated outside api.rs.
const AUTH_SOURCES: [&str; 2] = [
    include_str!("../../src/identity.rs"),
    include_str!("../../src/web_auth.rs"),
];
/// Session refusals (`aws-sts` credentials and console URLs).
const SESSION_SOURCE: &str = include_str!("../../src/sessions.rs");
/// Refresh and reconciliation of discovering targets.
const DISCOVERY_SOURCE: &str = include_str!("../../src/discovery.rs");
/// Request creation asks the target (`target_refused`, `target_unavailable`).
const ENGINE_SOURCE: &str = include_str!("../../src/engine.rs");
const DOCUMENT: &str = include_str!("../../src/openapi.json");

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The text of `fn router` in api.rs.
fn router_source() -> Result<&'static str> {
    let start = API_SOURCE
        .find("pub fn router(")
        .context("api.rs has no `pub fn router(`")?;
    let len = API_SOURCE[start..]
        .find("\n}\n")
        .context("cannot find the end of `fn router`")?;
    Ok(&API_SOURCE[start..start + len])
}

/// The text from just after an opening parenthesis at `open` to its
/// matching closing one.
fn balanced(text: &str, open: usize) -> Result<&str> {
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(&text[open + 1..open + i]);
                }
            }
            _ => {}
        }
    }
    anyhow::bail!("unbalanced parentheses in the router source")
}

/// The first string literal in `text`.
fn first_literal(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// Every (documented path, methods) the router serves, read from its source:
/// `.route("...", get(..).post(..))`, with routes before `.nest("/api/v1",
/// ...)` nested under that prefix.
fn router_routes() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let src = router_source()?;
    let nest_at = src
        .find(".nest(\"")
        .context("the router nests no API router")?;
    let prefix = first_literal(&src[nest_at..]).context("nest without a prefix")?;
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (at, _) in src.match_indices(".route(") {
        let open = at + ".route".len();
        let args = balanced(src, open)?;
        let raw = first_literal(args).context("a route without a path literal")?;
        // axum 0.8 writes captures as `{id}`, like OpenAPI; map the older
        // `:id` form too, should it come back.
        let path: String = raw
            .split('/')
            .map(|seg| match seg.strip_prefix(':') {
                Some(name) => format!("{{{name}}}"),
                None => seg.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let path = if at < nest_at {
            format!("{prefix}{path}")
        } else {
            path
        };
        // Method routers are the identifiers directly followed by `(`.
        let handlers = &args[args.find(',').context("a route without handlers")?..];
        let mut methods = BTreeSet::new();
        for (paren, _) in handlers.match_indices('(') {
            let ident: String = handlers[..paren]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if HTTP_METHODS.contains(&ident.as_str()) {
                methods.insert(ident);
            }
        }
        ensure!(!methods.is_empty(), "route {path} has no method in {args}");
        routes.entry(path).or_default().extend(methods);
    }
    ensure!(routes.len() >= 10, "too few routes found: {routes:?}");
    Ok(routes)
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "$ref" {
                    if let Some(s) = child.as_str() {
                        out.push(s.to_owned());
                    }
                }
                collect_refs(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

/// Every operation of the document: (METHOD path, operation).
fn operations(doc: &Value) -> Result<Vec<(String, &Value)>> {
    let paths = doc["paths"].as_object().context("no paths")?;
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().context("a path item is not an object")?;
        for (method, operation) in item {
            if HTTP_METHODS.contains(&method.as_str()) {
                out.push((format!("{} {path}", method.to_uppercase()), operation));
            }
        }
    }
    Ok(out)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The codes an error response description names, written "`code`: why".
fn codes_in_description(text: &str) -> BTreeSet<String> {
    let pieces: Vec<&str> = text.split('`').collect();
    // Odd pieces are inside backticks; a code is one followed by ':'.
    (1..pieces.len().saturating_sub(1))
        .step_by(2)
        .filter(|&i| pieces[i + 1].starts_with(':'))
        .map(|i| pieces[i].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_describes_every_route() -> Result<()> {
    let dir = tempfile::TempDir::new()?;
    let app = TestApp::start(&dry_run_config(
        &dir.path().join("elevate.db"),
        &Setup::default(),
    )?)
    .await?;

    // Served without a token, as JSON, byte for byte the embedded file.
    let (status, doc) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await?;
    ensure!(status == StatusCode::OK, "{status} {doc}");
    ensure!(doc["openapi"] == "3.1.0", "openapi is {}", doc["openapi"]);
    ensure!(doc["info"]["title"] == "elevate", "{}", doc["info"]);
    let embedded: Value = serde_json::from_str(DOCUMENT)?;
    ensure!(
        doc == embedded,
        "the served document is not the embedded one"
    );
    let response = reqwest::get(format!("{}/api/v1/openapi.json", app.url)).await?;
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    ensure!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );

    // Paths and methods: the router's and the document's are the same.
    let routes = router_routes()?;
    let paths = doc["paths"].as_object().context("no paths")?;
    for (path, methods) in &routes {
        let item = paths
            .get(path)
            .with_context(|| format!("route {path} is not in the OpenAPI document"))?;
        let documented: BTreeSet<String> = item
            .as_object()
            .context("path item is not an object")?
            .keys()
            .filter(|k| HTTP_METHODS.contains(&k.as_str()))
            .cloned()
            .collect();
        ensure!(
            &documented == methods,
            "{path}: the router serves {methods:?} but the document describes {documented:?}"
        );
    }
    for path in paths.keys() {
        ensure!(
            routes.contains_key(path),
            "the document describes {path}, which the router does not serve"
        );
    }

    // Every templated path declares its parameters as path parameters.
    for (path, item) in paths {
        let mut declared: BTreeSet<String> = BTreeSet::new();
        let mut params: Vec<&Value> = item["parameters"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for method in HTTP_METHODS {
            if let Some(a) = item[method]["parameters"].as_array() {
                params.extend(a.iter());
            }
        }
        for p in params {
            let p = match p["$ref"].as_str() {
                Some(r) => resolve(&doc, r).with_context(|| format!("dangling {r}"))?,
                None => p,
            };
            if p["in"] == "path" {
                declared.insert(p["name"].as_str().unwrap_or_default().to_owned());
            }
        }
        let templated: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        ensure!(
            declared == templated,
            "{path}: path parameters {declared:?}, template {templated:?}"
        );
    }

    // Every $ref resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    ensure!(!refs.is_empty(), "no $ref at all");
    for r in &refs {
        ensure!(resolve(&doc, r).is_some(), "dangling $ref {r}");
    }

    // Every authenticated operation documents 401; the open ones opt out.
    let open: BTreeSet<&str> = [
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /api/v1/openapi.json",
        "GET /api/v1/auth/config",
    ]
    .into_iter()
    .collect();
    ensure!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    for (name, operation) in operations(&doc)? {
        ensure!(
            operation["responses"].is_object(),
            "{name} has no responses"
        );
        if open.contains(name.as_str()) {
            ensure!(
                operation["security"] == serde_json::json!([]),
                "{name} should need no authentication"
            );
        } else {
            ensure!(
                operation.get("security").is_none(),
                "{name} overrides the bearer security"
            );
            ensure!(
                operation["responses"].get("401").is_some(),
                "{name} does not document 401"
            );
        }
    }

    // The state filter documents exactly the states the server accepts.
    let states_at = API_SOURCE
        .find("const STATES")
        .context("api.rs has no STATES")?;
    let states_src = &API_SOURCE[states_at..];
    let states_src = &states_src[states_src.find('[').context("STATES")? + 1..];
    let states_src = &states_src[states_src.find('[').context("STATES")?..];
    let states_src = &states_src[..states_src.find(']').context("STATES")?];
    let accepted: BTreeSet<String> = states_src
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    let documented: BTreeSet<String> = strings(&doc["components"]["schemas"]["State"]["enum"])
        .into_iter()
        .collect();
    ensure!(
        accepted.len() == 12,
        "states parsed from api.rs: {accepted:?}"
    );
    ensure!(
        accepted == documented,
        "api.rs accepts {accepted:?}, the document lists {documented:?}"
    );
    Ok(())
}

/// The codes the source can produce: `DomainError::code`, `ApiError::code`,
/// `TokenError::code` and every `ApiError::client(STATUS, "code", ...)` in
/// api.rs, identity.rs and web_auth.rs.
fn produced_codes() -> Result<BTreeSet<String>> {
    let mut codes = BTreeSet::new();
    for source in [DOMAIN_ERROR_SOURCE, ERROR_SOURCE, OIDC_SOURCE] {
        let start = source.find("fn code(").context("no fn code(")?;
        let body = &source[start..];
        let body = &body[..body.find("\n    }\n").context("end of fn code")?];
        for piece in body.split("=> \"").skip(1) {
            codes.insert(piece[..piece.find('"').context("literal")?].to_owned());
        }
    }
    for piece in [API_SOURCE, SESSION_SOURCE, DISCOVERY_SOURCE]
        .into_iter()
        .chain(AUTH_SOURCES)
        .flat_map(|source| source.split("ApiError::client(").skip(1))
    {
        codes.insert(
            first_literal(piece)
                .context("client error without code")?
                .to_owned(),
        );
    }
    Ok(codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_error_code_is_a_real_code() -> Result<()> {
    let dir = tempfile::TempDir::new()?;
    let app = TestApp::start(&dry_run_config(
        &dir.path().join("elevate.db"),
        &Setup::default(),
    )?)
    .await?;
    let (status, doc) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await?;
    ensure!(status == StatusCode::OK, "{status} {doc}");

    let sources = [
        API_SOURCE,
        ERROR_SOURCE,
        DOMAIN_ERROR_SOURCE,
        OIDC_SOURCE,
        AUTH_SOURCES[0],
        AUTH_SOURCES[1],
        SESSION_SOURCE,
        DISCOVERY_SOURCE,
        ENGINE_SOURCE,
    ];
    let mut documented: BTreeSet<String> = strings(&doc["x-error-codes"]).into_iter().collect();
    ensure!(
        !documented.is_empty(),
        "no root x-error-codes (not_found, method_not_allowed)"
    );
    for (name, operation) in operations(&doc)? {
        let listed: BTreeSet<String> = strings(&operation["x-error-codes"]).into_iter().collect();
        ensure!(
            operation["x-error-codes"].is_array(),
            "{name} has no x-error-codes"
        );
        // The machine-readable list and the error responses' prose agree.
        let mut described = BTreeSet::new();
        let responses = operation["responses"]
            .as_object()
            .with_context(|| format!("{name}: no responses"))?;
        for (status, response) in responses {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let response = match response["$ref"].as_str() {
                Some(r) => resolve(&doc, r).with_context(|| format!("dangling {r}"))?,
                None => response,
            };
            if response["content"]["application/json"]["schema"]["$ref"]
                != "#/components/schemas/Error"
            {
                // The one error status whose body is not an Error.
                ensure!(
                    name == "GET /readyz" && status == "503",
                    "{name} {status}: not an Error body"
                );
                continue;
            }
            let text = response["description"].as_str().unwrap_or_default();
            let codes = codes_in_description(text);
            ensure!(
                !codes.is_empty(),
                "{name} {status}: no code named in {text:?}"
            );
            described.extend(codes);
        }
        ensure!(
            listed == described,
            "{name}: x-error-codes {listed:?} but the responses describe {described:?}"
        );
        documented.extend(listed);
    }

    for code in &documented {
        let quoted = format!("\"{code}\"");
        ensure!(
            sources.iter().any(|s| s.contains(&quoted)),
            "the document names error code {code}, which no source produces"
        );
    }
    // And the other way: no code the server can return is undocumented.
    let produced = produced_codes()?;
    ensure!(
        produced.len() >= 20,
        "too few codes found in the sources: {produced:?}"
    );
    let missing: Vec<&String> = produced.difference(&documented).collect();
    ensure!(
        missing.is_empty(),
        "error codes the server produces but the document never names: {missing:?}"
    );

    // Spot checks of what the brief promises clients.
    let codes_of = |path: &str, method: &str| -> BTreeSet<String> {
        strings(&doc["paths"][path][method]["x-error-codes"])
            .into_iter()
            .collect()
    };
    let approve = codes_of("/api/v1/requests/{id}/approve", "post");
    for c in [
        "self_approval",
        "not_approver",
        "already_approved",
        "invalid_state",
    ] {
        ensure!(approve.contains(c), "approve does not document {c}");
    }
    let create = codes_of("/api/v1/requests", "post");
    for c in [
        "duration_too_long",
        "unknown_target",
        "malformed_json",
        "body_too_large",
        "unsupported_media_type",
        "unauthenticated",
        "invalid_token",
    ] {
        ensure!(create.contains(c), "create does not document {c}");
    }
    ensure!(codes_of("/api/v1/requests/{id}/extend", "post").contains("extension_pending"));
    ensure!(
        doc["components"]["schemas"]["CreateRequest"]["additionalProperties"] == false
            && doc["components"]["schemas"]["ExtendRequest"]["additionalProperties"] == false
            && doc["components"]["schemas"]["CommentBody"]["additionalProperties"] == false,
        "bodies the server reads with deny_unknown_fields must refuse unknown properties"
    );
    Ok(())
}
