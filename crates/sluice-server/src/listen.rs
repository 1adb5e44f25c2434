//! Accepting connections on both ports: at most [`crate::Limits::max_connections`] at once, TLS when
//! configured, and for HTTP the connection itself, until shutdown.
//!
//! HTTP is HTTP/1.1 and HTTP/2 on the same port, told apart by the connection's first bytes
//! (HTTP/2's preface: clients that know the server speaks it, such as the AWS SDK for
//! JavaScript, or that agreed on `h2` in the TLS handshake); every route answers in both.
//!
//! A connection past the limit is answered at once rather than left unseen in the kernel's
//! queue: HTTP with a 503 `too_many_connections` (over TLS it is closed: there is no cheap way
//! to say it), PostgreSQL with SQLSTATE 53300 as PostgreSQL does. Handshakes run in each
//! connection's own task, bounded by [`HANDSHAKE_TIMEOUT`], so a slow client never holds up the
//! others; HTTP requests must send their headers within [`HEADER_TIMEOUT`], so a client that
//! never finishes one cannot hold its connection (and a permit) forever.
//!
//! One accept loop serves both ports ([`accept_loop`]): it admits connections up to the
//! limit, hands each to its port's server in a task of its own, and at shutdown stops
//! accepting and returns once every connection has closed (every permit is back). Each port
//! drains its connections its own way: HTTP finishes the request each connection serves
//! (hyper's graceful shutdown); PostgreSQL lets the queries in flight finish (see `pg`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServerError;

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long, and how many bytes, a refused connection is read after its answer (see `linger`).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 1 << 20;

/// How often an HTTP/2 connection is pinged, and how long the answer may take: a peer gone
/// without closing its connection is found out.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The connection limit of one port.
#[derive(Clone)]
pub struct Connections {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Connections {
    /// A limit of `max` connections open at once.
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A permit for one more connection, if the limit allows.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// The limit, as configured.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits until every connection has closed.
    async fn closed(&self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }
}

/// The TLS acceptor for a certificate chain and key in PEM files (PKCS#8, PKCS#1 or SEC1 keys),
/// offering `alpn` protocols. A file that cannot be used stops start-up: a server never falls
/// back to plain text.
pub fn tls_acceptor(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<TlsAcceptor, ServerError> {
    let unusable = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        ServerError::Config(format!("cannot use the TLS {what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unusable("certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(unusable("certificate", cert, &"it holds no certificate"));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| unusable("key", key, &e))?;
    // rustls is built with two crypto providers here (ring and aws-lc-rs, through different
    // dependencies), so it cannot pick one by itself: name it.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, private))
        .map_err(|e| unusable("certificate and key", cert, &e))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections on `listener` until `stop` turns true: each admitted one is served by
/// `serve` in a task of its own, holding its permit; one past the limit is answered by
/// `refuse`. Returns once every connection has closed.
pub async fn accept_loop<S, F, R, G>(
    listener: TcpListener,
    connections: Connections,
    mut stop: watch::Receiver<bool>,
    refuse: R,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> G,
    G: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = accept(&listener) => accepted,
        };
        let Some(permit) = connections.admit() else {
            tokio::spawn(refuse(tcp));
            continue;
        };
        let served = serve(tcp, peer);
        tokio::spawn(async move {
            let _permit = permit;
            served.await;
        });
    }
    connections.closed().await;
}

/// Serves `app` on `listener` until `stop` turns true, then until every connection has closed.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    connections: Connections,
    stop: watch::Receiver<bool>,
) {
    let (max, encrypted) = (connections.max(), tls.is_some());
    accept_loop(
        listener,
        connections,
        stop.clone(),
        |tcp| refuse_http(tcp, encrypted, max),
        |tcp, peer| {
            let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
            async move {
                match tls {
                    None => serve_connection(tcp, app, stop).await,
                    Some(tls) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                            Ok(Ok(stream)) => serve_connection(stream, app, stop).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            }
        },
    )
    .await;
}

/// The next connection. Errors of accepting (a full file table, a connection reset before it
/// was taken) are logged and waited out: the loop must go on.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection<I>(io: I, app: Router, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = TowerToHyperService::new(app);
    // Told of every request, so that a connection that never sends one is closed: HTTP/1's
    // header timeout starts only once the protocol is known, and HTTP/2 has none.
    let asked = Arc::new(Notify::new());
    let service = {
        let asked = asked.clone();
        service_fn(move |request| {
            asked.notify_one();
            app.call(request)
        })
    };
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE);
    let connection = http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        Err(_) = tokio::time::timeout(HEADER_TIMEOUT, asked.notified()) => {
            tracing::debug!("closed a connection that sent no request");
            return;
        }
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "an HTTP connection ended with an error");
    }
}

/// Waits until `stop` turns true.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn refuse_http(mut tcp: TcpStream, tls: bool, max: usize) {
    tracing::warn!(max, "refused a connection: too many connections");
    if tls {
        return;
    }
    let body = serde_json::json!({
        "code": "too_many_connections",
        "error": format!(
            "the server has {max} connections open (limits.max_connections): retry later"
        ),
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        linger(&mut tcp).await
    })
    .await;
}

/// Reads and discards what the client still sends (its request, sent before it saw the answer)
/// until it closes, for at most [`LINGER`] and [`LINGER_BYTES`]: closing a socket with unread
/// bytes resets the connection, and the client would see a broken pipe instead of the answer.
async fn linger(tcp: &mut TcpStream) -> std::io::Result<()> {
    let mut sink = tokio::io::sink();
    let mut unread = (&mut *tcp).take(LINGER_BYTES);
    tokio::time::timeout(LINGER, tokio::io::copy(&mut unread, &mut sink))
        .await
        .map_err(std::io::Error::from)?
        .map(drop)
}

/// Refuses a PostgreSQL connection past the limit as PostgreSQL does: a FATAL 53300, sent after
/// the client's startup message (declining TLS or GSS encryption first, which clients ask for
/// before it), so that it reaches the user as the reason.
pub async fn refuse_pg(mut tcp: TcpStream, max: usize) {
    tracing::warn!(max, "refused a PostgreSQL connection: too many connections");
    let mut fields = Vec::new();
    for (kind, value) in [
        (b'S', "FATAL".to_string()),
        (b'V', "FATAL".to_string()),
        (b'C', "53300".to_string()),
        (
            b'M',
            format!("sorry, too many clients already ({max}, limits.max_connections)"),
        ),
    ] {
        fields.push(kind);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&fields);
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        // SSLRequest and GSSENCRequest: 8 bytes, length 8, then a code; declined with 'N'.
        const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];
        loop {
            let length = tcp.read_u32().await? as usize;
            let mut packet = vec![0; length.saturating_sub(4).min(10_000)];
            tcp.read_exact(&mut packet).await?;
            let code = packet
                .get(..4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
            if length == 8 && code.is_some_and(|c| ENCRYPTION_REQUESTS.contains(&c)) {
                tcp.write_all(b"N").await?;
                continue;
            }
            break;
        }
        tcp.write_all(&message).await?;
        tcp.shutdown().await
    })
    .await;
}
