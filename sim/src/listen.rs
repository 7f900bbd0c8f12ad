//! How the simulator's listeners serve: an accept loop that gives each
//! connection a task of its own, and HTTP/1.1 on one connection. Shared by
//! the API server, the droplets' HTTP servers and the reserved IPs'
//! forwarders; it knows none of them.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Accepts connections until `shutdown` resolves, serving each with `serve`
/// in its own task; the tasks are aborted (their connections closed) when
/// this returns or is dropped.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off a little.
                    eprintln!("doproxy-sim: accept on {:?} failed: {err}", listener.local_addr());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Serves HTTP/1.1 (keep-alive) on one connection until the client closes it
/// or the service fails, which closes it without answering.
pub(crate) async fn serve_http1<F, Fut, E>(stream: TcpStream, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service_fn(handle))
        .await;
}
