//! The only place that speaks HTTP: `get`, `post`, and `get_to` for
//! streamed answers to the elevate server, and [`Provider`] for the
//! identity provider during `elevate login`.
//!
//! Everything else in the crate turns commands into calls and answers into
//! text without a network, so it is tested without a server. (The loopback
//! listener that receives the browser's answer is in `callback`.)

use std::io::Write;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Response, Url};
use serde_json::Value;

use crate::error::{error_from_answer, CliError};
use crate::text::one_line;

/// How long to wait for the TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may stay silent mid-answer. A read timeout rather
/// than a total one, so a long `audit export` is not cut off.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one elevate server, authenticated unless made with
/// [`Client::anonymous`].
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// `{url}/api/v1`, the base every path is appended to.
    api: Url,
    /// The URL as the user gave it, for error messages.
    shown_url: String,
}

impl Client {
    /// Checks the token and URL and prepares the connection; sends nothing.
    pub(crate) fn new(url: &str, token: Option<&str>) -> Result<Self, CliError> {
        let token = token.map(str::trim).filter(|token| !token.is_empty());
        let token = token.ok_or(CliError::NoToken)?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| CliError::InvalidToken)?;
        // Keeps the token out of any debug output of the request.
        authorization.set_sensitive(true);
        Self::build(url, Some(authorization))
    }

    /// A connection without a token, for what the server tells anyone
    /// (`auth/config`, read before signing in).
    pub(crate) fn anonymous(url: &str) -> Result<Self, CliError> {
        Self::build(url, None)
    }

    fn build(url: &str, authorization: Option<HeaderValue>) -> Result<Self, CliError> {
        let mut headers = HeaderMap::new();
        if let Some(authorization) = authorization {
            headers.insert(AUTHORIZATION, authorization);
        }
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));

        let api = api_base(url)?;
        let http = http_client(headers).map_err(|error| CliError::Unreachable {
            url: url.to_string(),
            reason: error_reason(&error),
        })?;
        Ok(Self {
            http,
            api,
            shown_url: url.to_string(),
        })
    }

    /// `GET {api}/{path}?{query}`, answer read as JSON.
    pub(crate) async fn get(
        &self,
        path: &[String],
        query: &[(String, String)],
    ) -> Result<Value, CliError> {
        let request = self.http.get(self.endpoint(path)).query(query);
        let response = self.send(request).await?;
        read_json(response).await
    }

    /// `POST {api}/{path}` with a JSON body, answer read as JSON.
    pub(crate) async fn post(&self, path: &[String], body: &Value) -> Result<Value, CliError> {
        let request = self.http.post(self.endpoint(path)).json(body);
        let response = self.send(request).await?;
        read_json(response).await
    }

    /// `GET {api}/{path}`, the answer body copied to `out` as it arrives.
    pub(crate) async fn get_to(
        &self,
        path: &[String],
        out: &mut (dyn Write + Send),
    ) -> Result<(), CliError> {
        let request = self.http.get(self.endpoint(path));
        let mut response = self.send(request).await?;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| self.unreachable(&error))?
        {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok(())
    }

    /// The API URL for `path`; each segment is percent-encoded, so an id
    /// can never climb to another endpoint.
    fn endpoint(&self, path: &[String]) -> Url {
        let mut url = self.api.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(path);
        }
        url
    }

    /// Sends and turns every non-2xx answer into an error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, CliError> {
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(error_from_answer(
            status.as_u16(),
            &status.to_string(),
            &body,
        ))
    }

    fn unreachable(&self, error: &reqwest::Error) -> CliError {
        CliError::Unreachable {
            url: self.shown_url.clone(),
            reason: error_reason(error),
        }
    }
}

/// The HTTP client every connection uses.
fn http_client(headers: HeaderMap) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .default_headers(headers)
        .user_agent(concat!("elevate-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        // A redirect would carry the bearer token (or the authorization code
        // and verifier) somewhere the user did not name; neither the API nor
        // a token endpoint has reason to redirect, so report it.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// What the identity provider answered: status and raw body, read by
/// `oidc`, since providers answer errors in their own format.
#[derive(Debug)]
pub(crate) struct ProviderAnswer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Plain HTTP to the identity provider during `elevate login`: discovery
/// and the token endpoint. No elevate token is ever sent on it.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    http: reqwest::Client,
}

impl Provider {
    pub(crate) fn new() -> Result<Self, CliError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = http_client(headers).map_err(|error| CliError::ProviderUnreachable {
            url: String::new(),
            reason: error_reason(&error),
        })?;
        Ok(Self { http })
    }

    /// `GET url`.
    pub(crate) async fn get(&self, url: &Url) -> Result<ProviderAnswer, CliError> {
        self.send(url, self.http.get(url.clone())).await
    }

    /// `POST url` with a form body.
    pub(crate) async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<ProviderAnswer, CliError> {
        self.send(url, self.http.post(url.clone()).form(form)).await
    }

    async fn send(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<ProviderAnswer, CliError> {
        let unreachable = |error: reqwest::Error| CliError::ProviderUnreachable {
            url: url.to_string(),
            reason: error_reason(&error),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        Ok(ProviderAnswer {
            status,
            body: body.to_vec(),
        })
    }
}

/// Whether two `--url`s name the same elevate server (a trailing slash or
/// letter case in the host makes no difference).
pub(crate) fn same_server(first: &str, second: &str) -> bool {
    match (api_base(first), api_base(second)) {
        (Ok(first), Ok(second)) => first == second,
        _ => first.trim() == second.trim(),
    }
}

/// `{url}/api/v1` from what the user passed as `--url`, which may carry a
/// path prefix when elevate sits behind a reverse proxy.
fn api_base(url: &str) -> Result<Url, CliError> {
    let invalid = |reason: &str| CliError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let mut api = Url::parse(url.trim()).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(api.scheme(), "http" | "https") {
        return Err(invalid("expected an http:// or https:// URL"));
    }
    if api.query().is_some() || api.fragment().is_some() {
        return Err(invalid("expected no query or fragment"));
    }
    api.path_segments_mut()
        .map_err(|()| invalid("expected an http:// or https:// URL"))?
        .pop_if_empty()
        .extend(["api", "v1"]);
    Ok(api)
}

/// The most telling part of a transport error, on one line: the innermost
/// cause ("Connection refused (os error 111)") rather than reqwest's
/// "error sending request for url (...)".
fn error_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    one_line(&innermost.to_string())
}

/// A success answer as JSON; an empty body reads as `null`.
async fn read_json(response: Response) -> Result<Value, CliError> {
    let body = response
        .bytes()
        .await
        .map_err(|error| CliError::Protocol(format!("answer cut off: {}", error_reason(&error))))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body).map_err(|error| {
        CliError::Protocol(format!(
            "answer is not JSON: {}",
            one_line(&error.to_string())
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str, path: &[&str]) -> String {
        let client = Client::new(url, Some("token")).unwrap();
        let path: Vec<String> = path.iter().map(|segment| segment.to_string()).collect();
        client.endpoint(&path).to_string()
    }

    #[test]
    fn paths_are_appended_under_api_v1() {
        assert_eq!(
            endpoint("http://127.0.0.1:7070", &["requests", "r-1", "approve"]),
            "http://127.0.0.1:7070/api/v1/requests/r-1/approve"
        );
    }

    #[test]
    fn a_path_prefix_in_the_url_is_kept() {
        assert_eq!(
            endpoint("https://tools.example/elevate/", &["me"]),
            "https://tools.example/elevate/api/v1/me"
        );
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(
            endpoint("http://h", &["requests", "../../admin?x=1"]),
            "http://h/api/v1/requests/..%2F..%2Fadmin%3Fx=1"
        );
    }

    #[test]
    fn missing_or_blank_token_is_refused_before_any_call() {
        for token in [None, Some(""), Some("  ")] {
            let error = Client::new("http://127.0.0.1:7070", token).unwrap_err();
            assert!(matches!(error, CliError::NoToken));
        }
    }

    #[test]
    fn token_with_a_line_break_inside_is_refused() {
        let error = Client::new("http://h", Some("abc\ndef")).unwrap_err();
        assert!(matches!(error, CliError::InvalidToken));
    }

    #[test]
    fn same_server_ignores_trailing_slash_and_host_case() {
        assert!(same_server(
            "https://Elevate.example",
            "https://elevate.example/"
        ));
        assert!(same_server("https://h/elevate/", "https://h/elevate"));
        assert!(!same_server("https://h/elevate", "https://h/"));
        assert!(!same_server("http://h", "https://h"));
    }

    #[test]
    fn non_http_urls_are_refused() {
        for url in ["ftp://h", "mailto:a@b", "not a url", "http://h/?x=1"] {
            let error = Client::new(url, Some("t")).unwrap_err();
            assert!(error.to_string().starts_with("invalid --url"), "{error}");
        }
    }
}
