//! Bearer-token authentication for the API: tokens from a file or the environment, compared in
//! constant time, with `read` and `admin` scopes and path-prefix scopes for integration routes.
//!
//! Rules, first match wins: `/healthz` and `/readyz` are open (probes); `/metrics` is open when
//! `metrics_public`; a path under a configured prefix needs that prefix's scope; other `GET` and
//! `HEAD` need `read`; everything else (creating, deleting) needs `admin`. `admin` holds every
//! scope. A missing or unknown token is 401, a known token without the scope 403. Tokens never
//! reach a log line or an error body.

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
}

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
        }))
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

async fn middleware(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let verdict = auth.check(
        req.method(),
        req.uri().path(),
        req.headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    match verdict {
        Ok(quota) => QUOTA.scope(quota, next.run(req)).await,
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
