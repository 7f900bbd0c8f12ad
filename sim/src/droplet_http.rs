//! Each droplet's own web server on `<private_ip>:<droplet_port>`: the page the
//! tutorial's user data installs, for HAProxy to health-check and balance
//! across. Any method on any path answers 200; `/slow?ms=N` answers after N
//! ms, to have requests in flight while a backend drains.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, Response, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::Simulator;
use crate::server::{accept_loop, serve_http1};

/// What one droplet's server serves, where and from when.
pub(crate) struct Server {
    pub(crate) droplet_id: u64,
    /// Tells this task from earlier ones of the same droplet.
    pub(crate) generation: u64,
    pub(crate) addr: SocketAddr,
    pub(crate) start_at: SystemTime,
    pub(crate) page: String,
}

/// Starts the server task; aborting it closes the listener and every
/// connection. A server whose start time has come binds before this returns,
/// and the bool says it listens; a later one binds when its time comes.
pub(crate) fn spawn(sim: Simulator, runtime: &Handle, server: Server) -> (AbortHandle, bool) {
    let due = server.start_at <= SystemTime::now();
    let bound = if due { bind(&server) } else { None };
    let listening = bound.is_some();
    let task = runtime.spawn(async move {
        let listener = match bound {
            Some(listener) => listener,
            None if due => return,
            None => {
                if let Ok(wait) = server.start_at.duration_since(SystemTime::now()) {
                    tokio::time::sleep(wait).await;
                }
                let Some(listener) = bind(&server) else {
                    return;
                };
                sim.droplet_listening(server.droplet_id, server.generation);
                listener
            }
        };
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => return eprintln!("doproxy-sim: droplet {}: {err}", server.droplet_id),
        };
        let page: Arc<str> = server.page.into();
        accept_loop(listener, std::future::pending(), move |stream| {
            let page = page.clone();
            async move {
                serve_http1(stream, |request| respond(request, page.clone())).await;
            }
        })
        .await;
    });
    (task.abort_handle(), listening)
}

fn bind(server: &Server) -> Option<std::net::TcpListener> {
    let bound = std::net::TcpListener::bind(server.addr)
        .and_then(|listener| listener.set_nonblocking(true).map(|()| listener));
    bound
        .inspect_err(|err| {
            eprintln!(
                "doproxy-sim: droplet {} cannot listen on {}: {err}",
                server.droplet_id, server.addr
            );
        })
        .ok()
}

async fn respond(request: Request<Incoming>, page: Arc<str>) -> Result<Response<Body>, Infallible> {
    if request.uri().path() == "/slow" {
        let ms = request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("ms="))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(page.to_string()))
        .expect("a static header is valid"))
}
