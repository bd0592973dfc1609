//! Bearer-token authentication for the API: tokens from a file or the environment, compared in
//! constant time, with `read` and `admin` scopes and path-prefix scopes for integration routes.
//!
//! Rules, first match wins: `/healthz` and `/readyz` are open (probes); `/metrics` is open when
//! `metrics_public`; a path under a configured prefix needs that prefix's scope; other `GET` and
//! `HEAD` need `read`; everything else (creating, deleting) needs `admin`. `admin` holds every
//! scope. A missing or unknown token is 401, a known token without the scope 403. Tokens never
//! reach a log line or an error body.
//!
//! The report page (`/report*`) is for browsers, which cannot send a bearer header: without
//! credentials it answers a login form (401) that posts the token to `/report/login`, which sets
//! it in an `HttpOnly; SameSite=Strict; Path=/report` cookie (`Secure` under TLS) for a token
//! with the `read` scope. The cookie counts only for `GET`/`HEAD` of `/report*`: it can never
//! create or delete anything, nor read the API.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use meshgate_core::ConfigProblem;

/// `[auth]`: no token source means the API is open (as before this section existed).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File of tokens, one per line: `<scope> <token>` (`#` starts a comment).
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Name of an environment variable holding tokens in the same form (lines or `;`-separated).
    #[serde(default)]
    pub tokens_env: Option<String>,
    /// Serve `/metrics` without a token.
    #[serde(default)]
    pub metrics_public: bool,
    /// Path prefixes with a scope of their own (e.g. Argo/Flagger/Kayenta routes).
    #[serde(default)]
    pub scopes: Vec<PathScope>,
}

/// `[[auth.scopes]]`: requests under these prefixes need a token of this scope (or admin).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathScope {
    /// Scope name, e.g. `integrations`.
    pub scope: String,
    /// Path prefixes, e.g. `/canary`, `/flagger/`, `/api/v1/query`.
    pub prefixes: Vec<String>,
    /// Most analyses held that requests of this scope created (tokens of this scope, not
    /// `admin`); past it the oldest finished one goes early, and a create while all are running
    /// is a 429.
    #[serde(default = "default_scope_max_analyses")]
    pub max_analyses: usize,
}

fn default_scope_max_analyses() -> usize {
    100
}

/// The `[[auth.scopes]]` scope a request was let in by, with its limit on analyses: set for the
/// request's handler (a task-local, so every route that creates an analysis, integrations
/// included, counts it without passing it along).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The scope.
    pub scope: String,
    /// Its `max_analyses`.
    pub max_analyses: usize,
}

tokio::task_local! {
    static QUOTA: Option<Quota>;
}

/// The quota of the request being handled: `None` without auth, for `admin` tokens and for
/// requests outside every configured scope.
pub fn current_quota() -> Option<Quota> {
    QUOTA.try_with(|q| q.clone()).ok().flatten()
}

/// Scope names with a fixed meaning.
pub const READ: &str = "read";
/// Holds every scope.
pub const ADMIN: &str = "admin";

impl AuthConfig {
    /// True when a token source is configured.
    pub fn enabled(&self) -> bool {
        self.tokens_file.is_some() || self.tokens_env.is_some()
    }

    /// Problems visible without reading the token source.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, s) in self.scopes.iter().enumerate() {
            if !valid_scope(&s.scope) || s.scope == ADMIN || s.scope == READ {
                out.push(ConfigProblem::new(
                    format!("auth.scopes[{i}].scope"),
                    format!(
                        "{:?} must be a name of [a-z0-9_-] other than read and admin",
                        s.scope
                    ),
                ));
            }
            if s.max_analyses == 0 {
                out.push(ConfigProblem::new(
                    format!("auth.scopes[{i}].max_analyses"),
                    "must be at least 1",
                ));
            }
            if s.prefixes.is_empty() {
                out.push(ConfigProblem::new(
                    format!("auth.scopes[{i}].prefixes"),
                    "must list at least one path prefix",
                ));
            }
            for (j, p) in s.prefixes.iter().enumerate() {
                if !p.starts_with('/') {
                    out.push(ConfigProblem::new(
                        format!("auth.scopes[{i}].prefixes[{j}]"),
                        format!("{p:?} must start with /"),
                    ));
                }
            }
        }
        if let Some(v) = &self.tokens_env {
            if v.is_empty() {
                out.push(ConfigProblem::new(
                    "auth.tokens_env",
                    "must name an environment variable",
                ));
            }
        }
        out
    }
}

fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

/// Why the token source cannot be used. Messages name the place, never a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read.
    #[error("auth.tokens_file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The environment variable is unset.
    #[error("auth.tokens_env: environment variable {0} is not set")]
    Env(String),
    /// A line is not `<scope> <token>` or names an unknown scope.
    #[error("{source_name} line {line}: {message}")]
    Line {
        /// File path or variable name.
        source_name: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Auth is configured but no token was found: refuse to run open by accident.
    #[error("auth is configured but no token was loaded")]
    NoTokens,
}

struct Token {
    scope: String,
    hash: u64,
    bytes: Box<[u8]>,
}

/// Loaded tokens and path rules.
pub struct Auth {
    tokens: Vec<Token>,
    hasher: RandomState,
    metrics_public: bool,
    scopes: Vec<PathScope>,
    /// Mark the report cookie `Secure` (the API runs TLS).
    secure_cookie: bool,
}

/// The report page's cookie.
const COOKIE: &str = "meshgate_report";

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("metrics_public", &self.metrics_public)
            .finish()
    }
}

/// What a request needs.
#[derive(Debug, PartialEq, Eq)]
enum Need<'a> {
    Nothing,
    Scope(&'a str),
}

// === impl Auth ===

impl Auth {
    /// Load the tokens; `None` when auth is not configured.
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Auth>, AuthError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let mut known: Vec<&str> = vec![READ, ADMIN];
        known.extend(cfg.scopes.iter().map(|s| s.scope.as_str()));
        let hasher = RandomState::new();
        let mut tokens = Vec::new();
        let mut add = |text: &str, source_name: &str, sep: &[char]| -> Result<(), AuthError> {
            for (i, raw) in text.split(sep).enumerate() {
                let line = raw.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let bad = |message: String| AuthError::Line {
                    source_name: source_name.to_owned(),
                    line: i + 1,
                    message,
                };
                let mut parts = line.split_whitespace();
                let (Some(scope), Some(token), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(bad("expected `<scope> <token>`".into()));
                };
                if !known.contains(&scope) {
                    return Err(bad(format!(
                        "unknown scope {scope:?}, known: {}",
                        known.join(", ")
                    )));
                }
                if token.len() < 16 {
                    return Err(bad("token shorter than 16 characters".into()));
                }
                tokens.push(Token {
                    scope: scope.to_owned(),
                    hash: hasher.hash_one(token.as_bytes()),
                    bytes: token.as_bytes().into(),
                });
            }
            Ok(())
        };
        if let Some(p) = &cfg.tokens_file {
            let shown = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|e| AuthError::File {
                path: shown.clone(),
                message: e.to_string(),
            })?;
            add(&text, &shown, &['\n'])?;
        }
        if let Some(var) = &cfg.tokens_env {
            let text = std::env::var(var).map_err(|_| AuthError::Env(var.clone()))?;
            add(&text, &format!("${var}"), &['\n', ';'])?;
        }
        if tokens.is_empty() {
            return Err(AuthError::NoTokens);
        }
        Ok(Some(Auth {
            tokens,
            hasher,
            metrics_public: cfg.metrics_public,
            scopes: cfg.scopes.clone(),
            secure_cookie: false,
        }))
    }

    /// Mark the report page's cookie `Secure` (set when the API runs TLS).
    pub fn with_secure_cookie(mut self, secure: bool) -> Self {
        self.secure_cookie = secure;
        self
    }

    fn need<'a>(&'a self, method: &Method, path: &str) -> Need<'a> {
        match path {
            "/healthz" | "/readyz" => return Need::Nothing,
            "/metrics" if self.metrics_public => return Need::Nothing,
            _ => {}
        }
        for s in &self.scopes {
            if s.prefixes.iter().any(|p| path.starts_with(p.as_str())) {
                return Need::Scope(&s.scope);
            }
        }
        if method == Method::GET || method == Method::HEAD {
            Need::Scope(READ)
        } else {
            Need::Scope(ADMIN)
        }
    }

    /// The scopes of `presented`, looked up without an early exit: every configured token is
    /// compared, first by a keyed hash (the key is random per process, so timing tells nothing
    /// about how close a guess is), then byte for byte in constant time.
    fn scopes_of(&self, presented: &[u8]) -> Vec<&str> {
        let h = self.hasher.hash_one(presented);
        let mut out = Vec::new();
        for t in &self.tokens {
            let same_hash = h.to_le_bytes().ct_eq(&t.hash.to_le_bytes());
            let same = same_hash & t.bytes.as_ref().ct_eq(presented);
            if bool::from(same) {
                out.push(t.scope.as_str());
            }
        }
        out
    }

    /// Allow or refuse one request; allowed by a token of a configured scope (not `admin`), the
    /// quota it counts against.
    fn check(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Quota>, Denied> {
        let Need::Scope(need) = self.need(method, path) else {
            return Ok(None);
        };
        let Some(value) = authorization else {
            return Err(Denied::Missing);
        };
        let Some(token) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return Err(Denied::Missing);
        };
        let scopes = self.scopes_of(token.trim_ascii());
        if scopes.is_empty() {
            return Err(Denied::Unknown);
        }
        if scopes.contains(&ADMIN) {
            Ok(None)
        } else if scopes.contains(&need) {
            Ok(self.scopes.iter().find(|s| s.scope == need).map(|s| Quota {
                scope: s.scope.clone(),
                max_analyses: s.max_analyses,
            }))
        } else {
            Err(Denied::Scope(need.to_owned()))
        }
    }

    /// Put `router` behind the token check.
    pub fn protect(self: Arc<Self>, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(self, middleware))
    }
}

#[derive(Debug)]
enum Denied {
    Missing,
    Unknown,
    Scope(String),
}

/// `/report` and below.
fn is_report(path: &str) -> bool {
    path == "/report" || path.starts_with("/report/")
}

/// The token of the report cookie in `headers`, percent-decoded.
fn cookie_token(headers: &header::HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn percent_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Where to go after logging in: a `/report` path, nothing else (no open redirect).
fn report_target(next: Option<&str>) -> &str {
    match next {
        Some(n) if is_report(n) && !n.contains("//") && !n.contains('\\') => n,
        _ => "/report",
    }
}

/// The report's login form, with `status` and an error line.
fn login_response(status: StatusCode, error: Option<&str>, next: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        crate::html::login_page(error, report_target(Some(next))),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /report/login`: a token with the `read` scope becomes the report cookie.
async fn login(auth: &Auth, req: Request) -> Response {
    use axum::extract::FromRequest;
    let form = match axum::Form::<LoginForm>::from_request(req, &()).await {
        Ok(axum::Form(f)) => f,
        Err(_) => {
            return login_response(
                StatusCode::BAD_REQUEST,
                Some("the form must carry a token"),
                "/report",
            )
        }
    };
    let next = report_target(form.next.as_deref()).to_owned();
    let scopes = auth.scopes_of(form.token.trim().as_bytes());
    if scopes.is_empty() {
        tracing::debug!("report login refused: unknown token");
        return login_response(StatusCode::UNAUTHORIZED, Some("unknown token"), &next);
    }
    if !scopes.iter().any(|s| *s == READ || *s == ADMIN) {
        return login_response(
            StatusCode::FORBIDDEN,
            Some("this token lacks the \"read\" scope"),
            &next,
        );
    }
    let cookie = format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/report{}",
        percent_encode(form.token.trim().as_bytes()),
        if auth.secure_cookie { "; Secure" } else { "" }
    );
    let mut resp = axum::response::Redirect::to(&next).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn middleware(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/report/login" && req.method() == Method::POST {
        return login(&auth, req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let browser = is_report(&path) && (req.method() == Method::GET || req.method() == Method::HEAD);
    // The cookie stands in for the bearer header on the report's reads, and only there.
    let from_cookie = match (bearer, browser) {
        (None, true) => cookie_token(req.headers()).map(|t| {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(&t);
            v
        }),
        _ => None,
    };
    let verdict = auth.check(req.method(), &path, bearer.or(from_cookie.as_deref()));
    match verdict {
        Ok(quota) => QUOTA.scope(quota, next.run(req)).await,
        Err(d) if browser => {
            let error = match (&d, from_cookie.is_some()) {
                (Denied::Missing, false) => None,
                (Denied::Scope(_), _) => Some("this token lacks the \"read\" scope"),
                _ => Some("the token is not accepted (any more): log in again"),
            };
            let status = match d {
                Denied::Scope(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_response(status, error, &path)
        }
        Err(d) => {
            let (status, code, message) = match &d {
                Denied::Missing => (
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing bearer token (Authorization: Bearer <token>)".to_string(),
                ),
                Denied::Unknown => (
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "unknown token".to_string(),
                ),
                Denied::Scope(s) => (
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("this token lacks the {s:?} scope"),
                ),
            };
            tracing::debug!(method = %req.method(), path = %req.uri().path(), status = status.as_u16(), "request refused");
            let mut resp = (
                status,
                Json(meshgate_core::api::ErrorDoc::new(code, message)),
            )
                .into_response();
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"meshgate\""),
                );
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(text: &str, scopes: Vec<PathScope>) -> Auth {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, text).unwrap();
        Auth::from_config(&AuthConfig {
            tokens_file: Some(p),
            scopes,
            ..Default::default()
        })
        .unwrap()
        .unwrap()
    }

    /// A router of a report page and the analyses API behind `a`.
    fn report_router(a: Auth) -> Router {
        use axum::routing::get;
        let r = Router::new()
            .route("/report", get(|| async { "report" }))
            .route("/report/analyses/{id}", get(|| async { "one" }))
            .route(
                "/v1/analyses",
                get(|| async { "list" }).post(|| async { "created" }),
            );
        Arc::new(a).protect(r)
    }

    async fn send(
        r: &Router,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> (StatusCode, header::HeaderMap, String) {
        use tower::ServiceExt;
        let mut b = axum::http::Request::builder().method(method).uri(path);
        if let Some(c) = cookie {
            b = b.header(header::COOKIE, c);
        }
        let body = match form {
            Some(f) => {
                b = b.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                axum::body::Body::from(f.to_owned())
            }
            None => axum::body::Body::empty(),
        };
        let resp = r.clone().oneshot(b.body(body).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn the_report_cookie_logs_in_a_read_token_and_reads_only_the_report() {
        let tokens = "read rrrrrrrrrrrrrrrrrrrr\nadmin aaaaaaaa+;aaaaaaaaaaaa\nintegrations iiiiiiiiiiiiiiiiiiii\n";
        let scopes = vec![PathScope {
            scope: "integrations".into(),
            prefixes: vec!["/canary".into()],
            max_analyses: 100,
        }];
        let r = report_router(auth(tokens, scopes.clone()));
        // No credentials: the login form, 401, as HTML.
        let (st, h, body) = send(&r, Method::GET, "/report/analyses/a", None, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(body.contains(r#"action="/report/login""#), "{body}");
        assert!(
            body.contains(r#"name="next" value="/report/analyses/a""#),
            "{body}"
        );
        assert!(!body.contains("login-error"));
        // A wrong token, and one without read: the form again, with the error, no cookie.
        for (token, status, error) in [
            (
                "wrongwrongwrongwrong",
                StatusCode::UNAUTHORIZED,
                "unknown token",
            ),
            (
                "iiiiiiiiiiiiiiiiiiii",
                StatusCode::FORBIDDEN,
                "lacks the &quot;read&quot; scope",
            ),
        ] {
            let form = format!("token={token}&next=%2Freport");
            let (st, h, body) = send(&r, Method::POST, "/report/login", None, Some(&form)).await;
            assert_eq!(st, status, "{token}");
            assert!(h.get(header::SET_COOKIE).is_none());
            assert!(
                body.contains("login-error") && body.contains(error),
                "{body}"
            );
        }
        // The read token: a cookie, and back to the page asked for.
        let form = "token=rrrrrrrrrrrrrrrrrrrr&next=%2Freport%2Fanalyses%2Fa";
        let (st, h, _) = send(&r, Method::POST, "/report/login", None, Some(form)).await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        assert_eq!(h[header::LOCATION], "/report/analyses/a");
        let set = h[header::SET_COOKIE].to_str().unwrap().to_owned();
        assert_eq!(
            set,
            "meshgate_report=rrrrrrrrrrrrrrrrrrrr; HttpOnly; SameSite=Strict; Path=/report"
        );
        let cookie = "other=1; meshgate_report=rrrrrrrrrrrrrrrrrrrr";
        let (st, _, body) = send(&r, Method::GET, "/report", Some(cookie), None).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "report"));
        // An admin token's cookie (encoded: it holds + and ;) reads the report, and nothing else:
        // not the API's reads, not a POST.
        let form = "token=aaaaaaaa%2B%3Baaaaaaaaaaaa&next=https%3A%2F%2Fevil.example%2F";
        let (st, h, _) = send(&r, Method::POST, "/report/login", None, Some(form)).await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        assert_eq!(h[header::LOCATION], "/report", "no redirect off the report");
        let set = h[header::SET_COOKIE].to_str().unwrap();
        let admin = set.split(';').next().unwrap().to_owned();
        assert_eq!(admin, "meshgate_report=aaaaaaaa%2B%3Baaaaaaaaaaaa");
        let (st, _, body) = send(&r, Method::GET, "/report/analyses/x", Some(&admin), None).await;
        assert_eq!((st, body.as_str()), (StatusCode::OK, "one"));
        for (m, p) in [
            (Method::POST, "/v1/analyses"),
            (Method::GET, "/v1/analyses"),
        ] {
            let (st, _, body) = send(&r, m.clone(), p, Some(&admin), None).await;
            assert_eq!(
                st,
                StatusCode::UNAUTHORIZED,
                "{m} {p} with the cookie: {body}"
            );
            assert!(body.contains("missing bearer token"), "{body}");
        }
        // A cookie whose token is no longer known: the form, saying so.
        let (st, _, body) = send(
            &r,
            Method::GET,
            "/report",
            Some("meshgate_report=gone"),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(body.contains("login-error"), "{body}");
        // Under TLS the cookie is Secure.
        let r = report_router(auth(tokens, scopes).with_secure_cookie(true));
        let form = "token=rrrrrrrrrrrrrrrrrrrr";
        let (_, h, _) = send(&r, Method::POST, "/report/login", None, Some(form)).await;
        assert!(h[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
    }

    #[test]
    fn rules() {
        let a = auth(
            "# comment\nread rrrrrrrrrrrrrrrrrrrr\nadmin aaaaaaaaaaaaaaaaaaaa\nintegrations iiiiiiiiiiiiiiiiiiii\n",
            vec![PathScope {
                scope: "integrations".into(),
                prefixes: vec!["/canary".into(), "/flagger/".into()],
                max_analyses: 100,
            }],
        );
        let r = Some(&b"Bearer rrrrrrrrrrrrrrrrrrrr"[..]);
        let ad = Some(&b"Bearer aaaaaaaaaaaaaaaaaaaa"[..]);
        let i = Some(&b"Bearer iiiiiiiiiiiiiiiiiiii"[..]);
        assert!(a.check(&Method::GET, "/healthz", None).is_ok());
        assert!(matches!(
            a.check(&Method::GET, "/metrics", None),
            Err(Denied::Missing)
        ));
        assert!(a.check(&Method::GET, "/v1/analyses", r).is_ok());
        assert!(matches!(
            a.check(&Method::POST, "/v1/analyses", r),
            Err(Denied::Scope(_))
        ));
        assert!(a.check(&Method::POST, "/v1/analyses", ad).is_ok());
        assert!(a.check(&Method::POST, "/canary", i).is_ok());
        assert!(matches!(
            a.check(&Method::GET, "/flagger/x", r),
            Err(Denied::Scope(_))
        ));
        assert!(matches!(
            a.check(&Method::GET, "/v1/analyses", i),
            Err(Denied::Scope(_))
        ));
        assert!(a.check(&Method::GET, "/flagger/x", ad).is_ok());
        assert!(matches!(
            a.check(
                &Method::GET,
                "/v1/analyses",
                Some(b"Bearer rrrrrrrrrrrrrrrrrrrX")
            ),
            Err(Denied::Unknown)
        ));
        assert!(matches!(
            a.check(&Method::GET, "/v1/analyses", Some(b"Basic abc")),
            Err(Denied::Missing)
        ));
    }

    #[test]
    fn bad_sources_are_named_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(
            &p,
            "read secretsecretsecret\nwriter zzzzzzzzzzzzzzzzzzzzzz\n",
        )
        .unwrap();
        let e = Auth::from_config(&AuthConfig {
            tokens_file: Some(p.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2") && e.contains("writer"), "{e}");
        assert!(!e.contains("zzzz"), "the token leaked into the error: {e}");
        std::fs::write(&p, "# nothing\n").unwrap();
        let e = Auth::from_config(&AuthConfig {
            tokens_file: Some(p),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, AuthError::NoTokens));
    }
}
