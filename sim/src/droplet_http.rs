//! Each droplet's own web server on `<private_ip>:<droplet_port>` (and on the
//! simulator's second port when told): the page the tutorial's user data
//! installs, for HAProxy to health-check and balance across. Any method on
//! any path answers 200 with the page, but for the paths a test gave answers
//! of their own (`Simulator::set_answer`); `/slow?ms=N` answers after N ms,
//! to have requests in flight while a backend drains.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use crate::Simulator;
use crate::listen::{accept_loop, serve_http1};
use crate::state::Answers;

/// What one droplet's server serves, where and from when.
pub(crate) struct Server {
    pub(crate) droplet_id: u64,
    /// Tells this task from earlier ones of the same droplet.
    pub(crate) generation: u64,
    /// The droplet port's address first.
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) start_at: SystemTime,
    pub(crate) page: String,
    pub(crate) answers: Answers,
}

/// Starts the server task; aborting it closes the listeners and every
/// connection. A server whose start time has come binds before this returns,
/// and the bool says it listens; a later one binds when its time comes.
pub(crate) fn spawn(sim: Simulator, runtime: &Handle, server: Server) -> (AbortHandle, bool) {
    let due = server.start_at <= SystemTime::now();
    let bound = if due { bind(&server) } else { None };
    let listening = bound.is_some();
    let task = runtime.spawn(async move {
        let listeners = match bound {
            Some(listeners) => listeners,
            None if due => return,
            None => {
                if let Ok(wait) = server.start_at.duration_since(SystemTime::now()) {
                    tokio::time::sleep(wait).await;
                }
                let Some(listeners) = bind(&server) else {
                    return;
                };
                sim.droplet_listening(server.droplet_id, server.generation);
                listeners
            }
        };
        let page: Arc<str> = server.page.into();
        let mut serving = tokio::task::JoinSet::new();
        for listener in listeners {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(err) => return eprintln!("doproxy-sim: droplet {}: {err}", server.droplet_id),
            };
            let (page, answers) = (page.clone(), server.answers.clone());
            serving.spawn(accept_loop(
                listener,
                std::future::pending(),
                move |stream| {
                    let (page, answers) = (page.clone(), answers.clone());
                    async move {
                        serve_http1(stream, |request| {
                            respond(request, page.clone(), answers.clone())
                        })
                        .await;
                    }
                },
            ));
        }
        serving.join_all().await;
    });
    (task.abort_handle(), listening)
}

/// Binds every address of the server, or none. The task of a server just
/// stopped may still hold an address for a moment: that is waited out.
fn bind(server: &Server) -> Option<Vec<std::net::TcpListener>> {
    server
        .addrs
        .iter()
        .map(|&addr| {
            let mut attempts = 0;
            loop {
                let bound = std::net::TcpListener::bind(addr)
                    .and_then(|listener| listener.set_nonblocking(true).map(|()| listener));
                match bound {
                    Err(err) if err.kind() == ErrorKind::AddrInUse && attempts < 100 => {
                        attempts += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(err) => {
                        eprintln!(
                            "doproxy-sim: droplet {} cannot listen on {addr}: {err}",
                            server.droplet_id
                        );
                        return None;
                    }
                    Ok(listener) => return Some(listener),
                }
            }
        })
        .collect()
}

async fn respond(
    request: Request<Incoming>,
    page: Arc<str>,
    answers: Answers,
) -> Result<Response<Body>, Infallible> {
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
    let answer = answers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(request.uri().path())
        .cloned();
    let (status, body) = match answer {
        Some((status, body)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        ),
        None => (StatusCode::OK, page.to_string()),
    };
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body))
        .expect("a static header is valid"))
}
