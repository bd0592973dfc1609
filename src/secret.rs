//! A bearer token read from a file, re-read when the file changes, as client-go and kube-rs do
//! for a projected service-account token: Kubernetes rotates such files in place (a new token
//! every hour or so), so a token read once at start stops working.
//!
//! One reader for every client that sends a token from a file (Kubernetes discovery, the
//! Prometheus backend): the file is stat'ed on each use and read again when its modification time
//! or length changed; a file that cannot be read or is empty then keeps the last good token (with
//! a warning), since the next rotation usually follows within seconds. At start, an unreadable or
//! empty file is an error naming the key and the file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::{info, warn};

/// A token file and its last good token.
#[derive(Debug)]
pub struct TokenFile {
    /// The config key that names the file, for messages (`discovery.kubernetes.token_file`).
    key: String,
    path: PathBuf,
    /// (token, modification time, length) of the last good read.
    cached: Mutex<(String, Option<SystemTime>, u64)>,
}

impl TokenFile {
    /// Reads `path` now: an error names `key` and the file when it cannot be read or holds no
    /// token.
    pub fn open(key: &str, path: &Path) -> Result<TokenFile, String> {
        let first = read(key, path)?;
        Ok(TokenFile {
            key: key.to_owned(),
            path: path.to_owned(),
            cached: Mutex::new(first),
        })
    }

    /// The current token: read again when the file changed; the last good one when the new
    /// content cannot be read or is empty.
    pub fn token(&self) -> String {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()));
        if let Some((mtime, len)) = now {
            if (mtime, len) != (c.1, c.2) {
                match read(&self.key, &self.path) {
                    Ok(fresh) => {
                        if fresh.0 != c.0 {
                            info!(key = %self.key, path = %self.path.display(), "token file changed, using the new token");
                        }
                        *c = fresh;
                    }
                    Err(e) => warn!(error = %e, "keeping the last good token"),
                }
            }
        }
        c.0.clone()
    }
}

fn read(key: &str, path: &Path) -> Result<(String, Option<SystemTime>, u64), String> {
    let shown = || format!("{key} {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", shown()))?;
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", shown()))?
        .trim()
        .to_owned();
    if token.is_empty() {
        return Err(format!("{}: the file is empty (no token)", shown()));
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(format!(
            "{}: the token holds a control character (a file of several lines?)",
            shown()
        ));
    }
    Ok((token, meta.modified().ok(), meta.len()))
}

#[cfg(test)]
mod tests {
    use super::TokenFile;

    #[test]
    fn empty_or_missing_files_are_errors_naming_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        let e = TokenFile::open("prometheus.bearer_token_file", &p).unwrap_err();
        assert!(
            e.starts_with("prometheus.bearer_token_file ") && e.contains("token"),
            "{e}"
        );
        std::fs::write(&p, "  \n").unwrap();
        let e = TokenFile::open("prometheus.bearer_token_file", &p).unwrap_err();
        assert!(e.ends_with("the file is empty (no token)"), "{e}");
        std::fs::write(&p, "a\nb\n").unwrap();
        let e = TokenFile::open("k", &p).unwrap_err();
        assert!(e.contains("control character"), "{e}");
    }

    #[test]
    fn a_rotated_token_is_used_and_a_broken_rotation_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "first\n").unwrap();
        let t = TokenFile::open("k", &p).unwrap();
        assert_eq!(t.token(), "first");
        // A different length is seen even within the file system's mtime resolution.
        std::fs::write(&p, "second-token\n").unwrap();
        assert_eq!(t.token(), "second-token");
        std::fs::write(&p, "").unwrap();
        assert_eq!(t.token(), "second-token");
        std::fs::remove_file(&p).unwrap();
        assert_eq!(t.token(), "second-token");
        std::fs::write(&p, "third\n").unwrap();
        assert_eq!(t.token(), "third");
    }
}
