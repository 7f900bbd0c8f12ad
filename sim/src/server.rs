//! The API listener and what stands in front of the routes: the request log,
//! latency, faults, authentication and rate limit headers. Connections are
//! served through hyper directly because a dropped-connection fault must close
//! the TCP connection without a byte of response, which axum::serve cannot do:
//! the service returns an error and hyper closes the connection.

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::faults::{self, Injected};
use crate::listen::{accept_loop, serve_http1};
use crate::state::{RATE_LIMIT, RequestRecord};
use crate::{Simulator, admin, api, metadata, reserved_ips, time};

/// The error that makes hyper close a connection without a response.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DropConnection {}

pub(crate) async fn run(
    sim: &Simulator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let router = Router::new()
        .merge(api::routes())
        .merge(reserved_ips::routes())
        .merge(metadata::routes())
        .merge(admin::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .with_state(sim.clone());
    accept_loop(listener, shutdown, |stream| {
        let (sim, router) = (sim.clone(), router.clone());
        async move {
            serve_http1(stream, |request| {
                handle(sim.clone(), router.clone(), request)
            })
            .await;
        }
    })
    .await;
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Records /v2 and /metadata requests; puts /v2 ones through `gate`.
async fn handle(
    sim: Simulator,
    router: Router,
    request: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let path = request.uri().path();
    let is_api = path == "/v2" || path.starts_with("/v2/");
    if !is_api && !path.starts_with("/metadata") {
        return Ok(call(router, request).await);
    }
    let at = SystemTime::now();
    let method = request.method().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.to_owned(), |pq| pq.as_str().to_owned());
    let outcome = if is_api {
        gate(&sim, router, request).await
    } else {
        Outcome::Respond(call(router, request).await, None)
    };
    let (result, status, fault) = match outcome {
        Outcome::Respond(response, fault) => {
            let status = response.status().as_u16();
            (Ok(response), status, fault)
        }
        Outcome::Drop(fault) => (Err(DropConnection), 0, Some(fault)),
    };
    sim.lock().record(RequestRecord {
        method,
        path_and_query,
        status,
        at,
        fault: fault.map(str::to_owned),
    });
    result
}

/// What happens to one /v2 request, and the fault injected, if any.
enum Outcome {
    Respond(Response<Body>, Option<&'static str>),
    Drop(&'static str),
}

/// A hold, latency and random faults, then `answer`; every response
/// carries the rate limit headers.
async fn gate(sim: &Simulator, router: Router, request: Request<Incoming>) -> Outcome {
    let held = sim
        .lock()
        .hold
        .as_mut()
        .and_then(|hold| hold.take(request.method().as_str(), request.uri().path()));
    if let Some(mut released) = held {
        let _ = released.wait_for(|go| *go).await;
    }
    let (latency, injected, (remaining, reset)) = {
        let mut state = sim.lock();
        let now = SystemTime::now();
        (
            state.settings.latency,
            state.faults.roll(),
            state.rate_limit.tick(now),
        )
    };
    tokio::time::sleep(latency).await;
    let outcome = match injected {
        Some(Injected::Drop) => Outcome::Drop(Injected::Drop.name()),
        Some(Injected::RateLimit) => {
            let mut response = ApiError::too_many_requests().into_response();
            let reset = time::epoch_secs(SystemTime::now()) + 1;
            with_rate_limit(&mut response, 0, reset);
            let retry_after = HeaderValue::from_static("1");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
            return Outcome::Respond(response, Some(Injected::RateLimit.name()));
        }
        Some(Injected::ServerError) => Outcome::Respond(
            ApiError::server_error().into_response(),
            Some(Injected::ServerError.name()),
        ),
        None => answer(sim, router, request).await,
    };
    match outcome {
        Outcome::Respond(mut response, fault) => {
            with_rate_limit(&mut response, remaining, reset);
            Outcome::Respond(response, fault)
        }
        dropped => dropped,
    }
}

/// Authentication, the scheduled faults, and the route.
async fn answer(sim: &Simulator, router: Router, request: Request<Incoming>) -> Outcome {
    if !authorized(sim, &request) {
        return Outcome::Respond(ApiError::unauthorized().into_response(), None);
    }
    let is_delete =
        request.method() == Method::DELETE && request.uri().path().starts_with("/v2/droplets/");
    if is_delete && faults::take(&mut sim.lock().faults.fail_deletes) {
        return Outcome::Respond(
            ApiError::server_error().into_response(),
            Some("fail_delete"),
        );
    }
    let is_create = request.method() == Method::POST && request.uri().path() == "/v2/droplets";
    let response = call(router, request).await;
    if is_create
        && response.status() == StatusCode::ACCEPTED
        && faults::take(&mut sim.lock().faults.drop_create_responses)
    {
        return Outcome::Drop("drop_create_response");
    }
    Outcome::Respond(response, None)
}

fn authorized(sim: &Simulator, request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.trim() == sim.inner.token
        })
}

fn with_rate_limit(response: &mut Response<Body>, remaining: u32, reset: u64) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("ratelimit-limit", RATE_LIMIT.into()),
        ("ratelimit-remaining", remaining.into()),
        ("ratelimit-reset", reset),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
}

async fn call(router: Router, request: Request<Incoming>) -> Response<Body> {
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    }
}
