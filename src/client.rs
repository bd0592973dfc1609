//! What the CLI clients (`gate`, `demo`, `plan status`) share: reading an API answer as its
//! document type from `meshgate_core::api`, or an error naming the endpoint and the field.

use serde::de::DeserializeOwned;

/// An answer that could not be read as the document expected.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// The body could not be read (connection cut, timeout).
    #[error("{endpoint}: cannot read the answer: {error}")]
    Read {
        /// Method and URL, e.g. `GET http://127.0.0.1:9400/v1/skew`.
        endpoint: String,
        /// What went wrong.
        error: String,
    },
    /// The body is not the document (not JSON, or a field missing, renamed or of another type:
    /// a daemon of another version, or not a meshgate daemon).
    #[error("{endpoint}: the answer is not the document this client reads ({error}); is the daemon of another meshgate version?")]
    Shape {
        /// Method and URL.
        endpoint: String,
        /// The serde error: it names the field and the position.
        error: String,
    },
}

/// Read the body of `resp`, the answer of `endpoint`, as a `T`.
pub async fn read_doc<T: DeserializeOwned>(
    endpoint: &str,
    resp: reqwest::Response,
) -> Result<T, DocError> {
    let body = resp.bytes().await.map_err(|e| DocError::Read {
        endpoint: endpoint.to_owned(),
        error: crate::tls::error_chain(&e),
    })?;
    parse_doc(endpoint, &body)
}

/// `body`, the answer of `endpoint`, as a `T`.
pub fn parse_doc<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, DocError> {
    serde_json::from_slice(body).map_err(|e| DocError::Shape {
        endpoint: endpoint.to_owned(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_core::api::{ErrorDoc, VerdictDoc};

    #[test]
    fn a_renamed_field_names_the_endpoint_and_the_field() {
        let body = br#"{"error": {"kode": "not_found", "message": "m"}}"#;
        let e = parse_doc::<ErrorDoc>("GET http://x/v1/plan/status", body).unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("GET http://x/v1/plan/status: "), "{m}");
        assert!(m.contains("missing field `code`"), "{m}");
        let e = parse_doc::<VerdictDoc>("GET http://x/v1/analyses/a/verdict", b"{}").unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
    }
}
