//! Control routes under /_sim for shell scripts and the local demo, each a
//! thin call of the Simulator method the library exposes. No authentication;
//! never recorded in the request log and never faulted.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::{RequestRecord, SimDroplet, Simulator};

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/_sim/droplets", get(droplets))
        .route("/_sim/droplets/{id}/cpu", put(set_cpu))
        .route("/_sim/droplets/{id}/serving", put(set_serving))
        .route("/_sim/droplets/{id}/power", put(set_power))
        .route("/_sim/projects", post(add_project))
        .route("/_sim/images", post(add_snapshot))
        .route("/_sim/requests", get(requests).delete(clear_requests))
        .route("/_sim/faults", put(set_faults))
        .route("/_sim/seed", post(seed))
        .route("/_sim/settings", put(settings))
}

async fn droplets(State(sim): State<Simulator>) -> Json<Vec<SimDroplet>> {
    Json(sim.droplets())
}

async fn requests(State(sim): State<Simulator>) -> Json<Vec<RequestRecord>> {
    Json(sim.requests())
}

async fn clear_requests(State(sim): State<Simulator>) -> StatusCode {
    sim.clear_requests();
    StatusCode::NO_CONTENT
}

async fn set_faults(State(sim): State<Simulator>, body: Bytes) -> Result<StatusCode, ApiError> {
    sim.set_faults(parse(&body)?);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Cpu {
    utilization: f64,
}

async fn set_cpu(
    State(sim): State<Simulator>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let cpu: Cpu = parse(&body)?;
    found(sim.set_cpu(id, cpu.utilization))
}

#[derive(Deserialize)]
struct Serving {
    serving: bool,
}

async fn set_serving(
    State(sim): State<Simulator>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let serving: Serving = parse(&body)?;
    found(sim.set_serving(id, serving.serving))
}

#[derive(Deserialize)]
struct Power {
    on: bool,
}

async fn set_power(
    State(sim): State<Simulator>,
    Path(id): Path<u64>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let power: Power = parse(&body)?;
    found(sim.set_power(id, power.on))
}

#[derive(Deserialize)]
struct Project {
    name: String,
}

async fn add_project(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let project: Project = parse(&body)?;
    let id = sim.add_project(&project.name);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"project": {"id": id, "name": project.name}})),
    ))
}

#[derive(Deserialize)]
struct Snapshot {
    name: String,
}

async fn add_snapshot(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let snapshot: Snapshot = parse(&body)?;
    let id = sim.add_snapshot(&snapshot.name);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"image": {"id": id, "name": snapshot.name}})),
    ))
}

fn found(exists: bool) -> Result<StatusCode, ApiError> {
    exists
        .then_some(StatusCode::NO_CONTENT)
        .ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
struct Seed {
    count: usize,
    name_prefix: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "serve_http_by_default")]
    serve_http: bool,
}

fn serve_http_by_default() -> bool {
    true
}

async fn seed(
    State(sim): State<Simulator>,
    body: Bytes,
) -> Result<(StatusCode, Json<Vec<SimDroplet>>), ApiError> {
    let seed: Seed = parse(&body)?;
    let seeded = sim.seed_droplets(seed.count, &seed.name_prefix, &seed.tags, seed.serve_http);
    Ok((StatusCode::CREATED, Json(seeded)))
}

#[derive(Deserialize)]
struct Settings {
    boot_delay_ms: Option<u64>,
    http_delay_ms: Option<u64>,
    latency_ms: Option<u64>,
    list_lag_ms: Option<u64>,
}

async fn settings(State(sim): State<Simulator>, body: Bytes) -> Result<StatusCode, ApiError> {
    let settings: Settings = parse(&body)?;
    let ms = Duration::from_millis;
    if let Some(delay) = settings.boot_delay_ms {
        sim.set_boot_delay(ms(delay));
    }
    if let Some(delay) = settings.http_delay_ms {
        sim.set_http_delay(ms(delay));
    }
    if let Some(latency) = settings.latency_ms {
        sim.set_latency(ms(latency));
    }
    if let Some(lag) = settings.list_lag_ms {
        sim.set_list_lag(ms(lag));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// JSON bodies whatever their content type, so `curl -d` is enough.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}
