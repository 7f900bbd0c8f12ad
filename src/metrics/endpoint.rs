//! The `/metrics` endpoint of long-running commands: a small HTTP/1.1
//! server on a loopback address, bounded in what it reads and how long a
//! scrape may take.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{Settings, encode, snapshot};
use crate::shutdown::Shutdown;

/// How long one scrape may take, and the most of a request read.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUEST: usize = 16 * 1024;

/// The metrics endpoint of a long-running command.
struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    /// Listens on `address`: a loopback address, unless `allow_remote`
    /// (the endpoint has no authentication).
    async fn bind(address: SocketAddr, allow_remote: bool) -> Result<Endpoint> {
        check_unauthenticated_listener(
            "metrics_listen",
            &address.to_string(),
            address.ip().is_loopback(),
            allow_remote,
        )?;
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!(
                "cannot serve metrics on {address}; choose a free address with metrics_listen (or --metrics-listen)"
            )
        })?;
        tracing::info!("serving Prometheus metrics on http://{address}/metrics");
        Ok(Endpoint { listener })
    }

    /// Answers scrapes until a stop is asked for; each in its own task,
    /// bounded in time, so a slow client holds up nothing.
    async fn serve(self, shutdown: &Shutdown) {
        let mut scrapes = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.signalled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        scrapes.spawn(tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream)));
                    }
                    Err(err) => {
                        // Out of file descriptors, say: try again shortly.
                        tracing::warn!("cannot accept a metrics connection: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = scrapes.join_next(), if !scrapes.is_empty() => {}
            }
        }
    }
}

/// Refuses to let an endpoint without authentication (doproxy's metrics,
/// HAProxy's stats page and exporter) listen where other machines reach
/// it, unless metrics_allow_remote says so; `key` and `address` name it.
pub fn check_unauthenticated_listener(
    key: &str,
    address: &str,
    loopback: bool,
    allow_remote: bool,
) -> Result<()> {
    if !loopback && !allow_remote {
        bail!(
            "{key} {address} is not a loopback address, and what listens there has no authentication; listen on 127.0.0.1 and let Prometheus reach it through a tunnel or a proxy, or set metrics_allow_remote: true"
        );
    }
    Ok(())
}

/// The endpoint of a long-running command, serving in a task of its own
/// until a stop is asked for or this is dropped.
pub struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves metrics on the listen address of `settings`; None when it has
/// none.
pub async fn serve(settings: &Settings, shutdown: &Shutdown) -> Result<Option<Serving>> {
    let Some(address) = settings.listen else {
        return Ok(None);
    };
    let endpoint = Endpoint::bind(address, settings.allow_remote).await?;
    let shutdown = shutdown.clone();
    Ok(Some(Serving(tokio::spawn(async move {
        endpoint.serve(&shutdown).await
    }))))
}

/// Reads one HTTP request and answers it: the metrics for GET (or HEAD)
/// /metrics, 404 or 405 otherwise.
pub(super) async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&request);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            encode(&snapshot()),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "doproxy serves its metrics on /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
