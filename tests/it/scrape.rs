//! The scraper's fetch against a real server: gzip, status codes, body cap, timeout.

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use meshgate::scrape::{fetch, http_client, ScrapeConfig, ScrapeError};

const PAGE: &str =
    "# TYPE istio_requests_total counter\nistio_requests_total{response_code=\"200\"} 7\n";

async fn server() -> String {
    let app = Router::new()
        .route(
            "/gzip",
            get(|headers: HeaderMap| async move {
                let accepts = headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                assert!(accepts.contains("gzip"), "the scraper must ask for gzip");
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(PAGE.as_bytes()).unwrap();
                ([(header::CONTENT_ENCODING, "gzip")], enc.finish().unwrap())
            }),
        )
        .route(
            "/two-members",
            get(|| async {
                // `gzip -c a b`: a body of two gzip members is one page (RFC 1952).
                let (head, tail) = PAGE.split_at(20);
                let mut body = Vec::new();
                for part in [head, tail] {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    enc.write_all(part.as_bytes()).unwrap();
                    body.extend(enc.finish().unwrap());
                }
                ([(header::CONTENT_ENCODING, "gzip")], body)
            }),
        )
        .route(
            "/corrupt",
            get(|| async {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(PAGE.as_bytes()).unwrap();
                let mut body = enc.finish().unwrap();
                let n = body.len();
                body[n / 2] ^= 0xff;
                body.truncate(n - 4);
                ([(header::CONTENT_ENCODING, "gzip")], body)
            }),
        )
        .route(
            "/br",
            get(|| async { ([(header::CONTENT_ENCODING, "br")], PAGE) }),
        )
        .route(
            "/500",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response() }),
        )
        .route("/big", get(|| async { "x".repeat(10_000) }))
        .route(
            "/bomb",
            get(|| async {
                // 1 MB of zeros compresses to about 1 KB: the cap applies after decompression.
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                enc.write_all(&vec![b'0'; 1_000_000]).unwrap();
                ([(header::CONTENT_ENCODING, "gzip")], enc.finish().unwrap())
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The scrapers' own client (it asks for gzip and leaves the decoding to `fetch`).
fn client() -> reqwest::Client {
    http_client(&ScrapeConfig::default()).unwrap()
}

#[tokio::test]
async fn a_page_decoded_by_the_client_itself_is_read_as_it_is() {
    // reqwest's own decoder removes Content-Encoding: fetch then takes the body as the page.
    let base = server().await;
    let decoding = reqwest::Client::builder().gzip(true).build().unwrap();
    let body = fetch(
        &decoding,
        &format!("{base}/gzip"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), PAGE);
}

#[tokio::test]
async fn every_gzip_member_is_decoded_and_bad_bodies_are_named() {
    let base = server().await;
    let body = fetch(
        &client(),
        &format!("{base}/two-members"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), PAGE);
    let e = fetch(
        &client(),
        &format!("{base}/corrupt"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScrapeError::Body(_)), "{e}");
    assert!(
        e.to_string().starts_with("body read failed: gzip body of "),
        "{e}"
    );
    let e = fetch(
        &client(),
        &format!("{base}/br"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "body read failed: the target answered Content-Encoding \"br\", which was not asked for (only gzip is)"
    );
}

#[tokio::test]
async fn gzip_page_is_decoded() {
    let base = server().await;
    let body = fetch(
        &client(),
        &format!("{base}/gzip"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), PAGE);
}

#[tokio::test]
async fn non_2xx_is_an_error_with_the_status() {
    let base = server().await;
    let e = fetch(
        &client(),
        &format!("{base}/500"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScrapeError::Status(500)), "{e}");
    assert_eq!(e.to_string(), "http status 500");
}

#[tokio::test]
async fn body_cap_applies_before_and_after_decompression() {
    let base = server().await;
    let e = fetch(
        &client(),
        &format!("{base}/big"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScrapeError::TooLarge(4096)), "{e}");
    let e = fetch(
        &client(),
        &format!("{base}/bomb"),
        Duration::from_secs(2),
        100_000,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScrapeError::TooLarge(100_000)), "{e}");
}

#[tokio::test]
async fn slow_target_times_out() {
    let base = server().await;
    let started = std::time::Instant::now();
    let e = fetch(
        &client(),
        &format!("{base}/slow"),
        Duration::from_millis(200),
        4096,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScrapeError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn connection_refused_and_bad_host_are_request_errors() {
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = fetch(
        &client(),
        &format!("http://127.0.0.1:{port}/x"),
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScrapeError::Request(_)), "{e}");
    let e = fetch(
        &client(),
        "http://no-such-host.invalid/x",
        Duration::from_secs(2),
        4096,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, ScrapeError::Request(_) | ScrapeError::Timeout(_)),
        "{e}"
    );
}
