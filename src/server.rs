//! The API's connections: accept, TLS handshake, HTTP/1.1, with limits no idle client exhausts.
//!
//! Every accepted connection gets its own task at once: the accept loop never waits for a
//! handshake or a request, so connections that never start TLS or never finish their request
//! head cannot hold up anyone else's (issue 13: 300 such connections filled the 256 handshake
//! slots of the old accept loop and every real request waited 9 s). Each connection is
//! *pending* until its first request head is read (after the TLS handshake with TLS on):
//!
//! - a pending connection has `handshake_timeout` for its TLS handshake and hyper's
//!   `header_read_timeout` for each request head (also how long a kept-alive connection may wait
//!   idle for its next request);
//! - every request has `body_read_timeout` for its whole body, read before any route sees it
//!   (up to `max_body_bytes`: a larger one is left to the router's 413); a body that does not
//!   arrive in time is answered 408 in the API's JSON error shape and the connection closed, so
//!   a client announcing a body it never sends holds no handler;
//! - one peer address has at most `max_pending_per_peer` pending connections: its oldest pending
//!   one is closed when it opens another, so an idle client only ever displaces its own;
//! - at `max_connections` open connections the oldest pending connection (of any peer) is
//!   closed for the new one; only when every connection is past its first request is a new
//!   connection refused (closed at once).
//!
//! On shutdown the loop stops accepting, idle connections close, and requests in flight finish.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::tls::ServerTls;

/// Largest request head (request line and headers) read; a longer one is refused by hyper
/// with a bare 431 before any route sees it. URIs get a JSON 414 from the router well below it
/// (`api::MAX_URI_BYTES`).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The connection limits of `[server]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Longest a request head may take to arrive, and a kept-alive connection may stay idle.
    pub header_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Pending connections (before their first request head) of one peer address at most.
    pub max_pending_per_peer: usize,
    /// Longest a request's body may take to arrive, once its head has.
    pub body_read_timeout: Duration,
    /// Largest body read ahead of the router (`[server] max_body_bytes`).
    pub max_body_bytes: usize,
}

/// Serve `router` on `listener` (over TLS when `tls` is given) until `stop`, then wait for the
/// connections to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    limits: Limits,
    stop: CancellationToken,
) {
    let gate = Gate::new(&limits);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = gate.admit(peer.ip()) else {
            debug!(%peer, max_connections = limits.max_connections, "API connection refused: every connection is in use");
            continue; // dropping `tcp` closes it
        };
        tracker.spawn(connection(
            tcp,
            peer,
            admitted,
            tls.clone(),
            router.clone(),
            limits.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    tls: Option<ServerTls>,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return http(TokioIo::new(tcp), peer, admitted, router, &limits, stop).await;
    };
    let evicted = admitted.evicted.clone();
    let handshake = tokio::time::timeout(limits.handshake_timeout, tls.acceptor().accept(tcp));
    let stream = tokio::select! {
        _ = stop.cancelled() => return,
        _ = evicted.cancelled() => {
            debug!(%peer, "API connection closed before its TLS handshake: displaced by a newer one");
            return;
        }
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return debug!(%peer, error = %e, "API TLS handshake failed"),
            Err(_) => return debug!(%peer, timeout = ?limits.handshake_timeout, "API TLS handshake timed out"),
        },
    };
    http(TokioIo::new(stream), peer, admitted, router, &limits, stop).await
}

async fn http<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    admitted: Admitted,
    router: Router,
    limits: &Limits,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let evicted = admitted.evicted.clone();
    let admitted = Arc::new(admitted);
    let svc = TowerToHyperService::new(router);
    let (wait, max_body) = (limits.body_read_timeout, limits.max_body_bytes);
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // A request head arrived: no longer pending.
        admitted.established();
        let svc = svc.clone();
        async move {
            match read_body(req, wait, max_body).await {
                Ok(req) => hyper::service::Service::call(&svc, req).await,
                Err(refused) => Ok(refused),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(%peer, error = %e, "API connection ended");
                }
                return;
            }
            _ = evicted.cancelled() => {
                debug!(%peer, "API connection closed before its first request: displaced by a newer one");
                return;
            }
            _ = stop.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The request with its body read within `wait`, or the answer that refuses it: 408 when the
/// body does not arrive in time, 400 when the client breaks it off. A body announced larger
/// than `max` is passed on unread, and one that grows past `max` is passed on as read so far:
/// the router's body limit answers both with its 413.
async fn read_body(
    req: hyper::Request<Incoming>,
    wait: Duration,
    max: usize,
) -> Result<hyper::Request<axum::body::Body>, axum::response::Response> {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;
    let (parts, mut body) = req.into_parts();
    let announced = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if body.is_end_stream() || announced.is_some_and(|n| n > max as u64) {
        return Ok(hyper::Request::from_parts(
            parts,
            axum::body::Body::new(body),
        ));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = bytes::BytesMut::new();
    while buf.len() <= max {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(refusal(
                    hyper::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within server.body_read_timeout ({}): {} of {} bytes read",
                        humantime::format_duration(wait),
                        buf.len(),
                        announced.map_or("an unannounced number of".to_string(), |n| n.to_string())
                    ),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(refusal(
                    hyper::StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the request body broke off after {} bytes: {e}", buf.len()),
                ))
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(hyper::Request::from_parts(
        parts,
        axum::body::Body::from(buf.freeze()),
    ))
}

/// An answer in the API's JSON error shape that also closes the connection (the rest of the
/// request may still be on its way).
fn refusal(status: hyper::StatusCode, code: &str, message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = (
        status,
        axum::Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response();
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

// === impl Gate ===

/// Open connections and the pending ones, per peer and in order of arrival.
struct Gate {
    state: Arc<Mutex<GateState>>,
    max_connections: usize,
    max_pending_per_peer: usize,
}

#[derive(Default)]
struct GateState {
    open: usize,
    next_id: u64,
    /// Pending connections by arrival (oldest first): peer and the token that closes them.
    pending: BTreeMap<u64, (IpAddr, CancellationToken)>,
    /// Pending connection ids per peer, oldest first.
    per_peer: HashMap<IpAddr, VecDeque<u64>>,
}

impl GateState {
    fn forget_pending(&mut self, id: u64) -> Option<CancellationToken> {
        let (ip, token) = self.pending.remove(&id)?;
        if let Some(q) = self.per_peer.get_mut(&ip) {
            q.retain(|x| *x != id);
            if q.is_empty() {
                self.per_peer.remove(&ip);
            }
        }
        Some(token)
    }
}

impl Gate {
    fn new(limits: &Limits) -> Self {
        Self {
            state: Arc::default(),
            max_connections: limits.max_connections.max(1),
            max_pending_per_peer: limits.max_pending_per_peer.max(1),
        }
    }

    /// Count a new connection from `ip` in, closing whichever pending connection it displaces;
    /// `None` when every connection is past its first request and the cap is reached.
    fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let mut s = self.state.lock().expect("gate lock");
        if s.open >= self.max_connections {
            let oldest = *s.pending.keys().next()?;
            if let Some(t) = s.forget_pending(oldest) {
                t.cancel();
            }
            // Its task ends soon and gives its slot back; count this one in meanwhile.
        }
        let peer_pending = s.per_peer.get(&ip).map_or(0, VecDeque::len);
        if peer_pending >= self.max_pending_per_peer {
            if let Some(&oldest) = s.per_peer.get(&ip).and_then(|q| q.front()) {
                if let Some(t) = s.forget_pending(oldest) {
                    t.cancel();
                }
            }
        }
        let id = s.next_id;
        s.next_id += 1;
        s.open += 1;
        let token = CancellationToken::new();
        s.pending.insert(id, (ip, token.clone()));
        s.per_peer.entry(ip).or_default().push_back(id);
        Some(Admitted {
            id,
            state: self.state.clone(),
            evicted: token,
        })
    }
}

/// One admitted connection; dropping it gives its slot back.
struct Admitted {
    id: u64,
    state: Arc<Mutex<GateState>>,
    /// Cancelled when a newer connection displaces this one while it is pending.
    evicted: CancellationToken,
}

impl Admitted {
    /// The connection sent a request head: it can no longer be displaced.
    fn established(&self) {
        let mut s = self.state.lock().expect("gate lock");
        s.forget_pending(self.id);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut s = self.state.lock().expect("gate lock");
        s.forget_pending(self.id);
        s.open -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_connections: usize, per_peer: usize) -> Gate {
        Gate::new(&Limits {
            handshake_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(1),
            max_connections,
            max_pending_per_peer: per_peer,
            body_read_timeout: Duration::from_secs(1),
            max_body_bytes: 1024,
        })
    }

    #[test]
    fn a_peer_over_its_pending_cap_displaces_its_own_oldest() {
        let g = gate(100, 2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = g.admit(a).unwrap();
        let b1 = g.admit(b).unwrap();
        let a2 = g.admit(a).unwrap();
        let a3 = g.admit(a).unwrap();
        assert!(a1.evicted.is_cancelled(), "a's oldest goes");
        assert!(!a2.evicted.is_cancelled() && !a3.evicted.is_cancelled());
        assert!(!b1.evicted.is_cancelled(), "another peer's stays");
    }

    #[test]
    fn at_the_cap_the_oldest_pending_goes_and_established_ones_stay() {
        let g = gate(2, 10);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = g.admit(ip).unwrap();
        first.established();
        let second = g.admit(ip).unwrap();
        let third = g.admit(ip).unwrap();
        assert!(!first.evicted.is_cancelled(), "past its first request");
        assert!(second.evicted.is_cancelled(), "the oldest pending");
        third.established();
        drop(second);
        // Both open connections are established: a new one is refused.
        assert!(g.admit(ip).is_none());
        drop(first);
        assert!(g.admit(ip).is_some(), "a slot came back");
    }
}
