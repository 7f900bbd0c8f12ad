//! The droplet metadata service (169.254.169.254 on a real droplet) as seen
//! from the proxy droplet doproxy runs on: no authentication, text/plain
//! values, and the whole document at /metadata/v1.json. Each proxy droplet
//! added with `Simulator::add_proxy` has its own service under
//! `/proxies/<droplet ID>` (its `metadata_url`), answering as that droplet.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::Simulator;
use crate::error::ApiError;

const HOSTNAME: &str = "doproxy-proxy";
const REGION: &str = "nyc3";

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/metadata/v1/id", get(id))
        .route("/metadata/v1/hostname", get(async || HOSTNAME))
        .route("/metadata/v1/region", get(async || REGION))
        .route(
            "/metadata/v1/interfaces/public/0/ipv4/address",
            get(public_ipv4),
        )
        .route(
            "/metadata/v1/interfaces/private/0/ipv4/address",
            get(private_ipv4),
        )
        .route("/metadata/v1.json", get(document))
        .route("/proxies/{id}/metadata/v1/id", get(proxy_id))
        .route("/proxies/{id}/metadata/v1/hostname", get(proxy_hostname))
        .route(
            "/proxies/{id}/metadata/v1/interfaces/public/0/ipv4/address",
            get(proxy_public_ipv4),
        )
        .route(
            "/proxies/{id}/metadata/v1/interfaces/private/0/ipv4/address",
            get(proxy_private_ipv4),
        )
}

/// One answer about proxy droplet `id`; 404 for any other droplet.
fn proxy_value(
    sim: &Simulator,
    id: u64,
    value: impl Fn(&crate::state::Droplet) -> String,
) -> Result<String, ApiError> {
    let state = sim.lock();
    if !state.reserved_ips.frontends.contains_key(&id) {
        return Err(ApiError::not_found());
    }
    state
        .droplets
        .get(&id)
        .map(value)
        .ok_or_else(ApiError::not_found)
}

async fn proxy_id(State(sim): State<Simulator>, Path(id): Path<u64>) -> Result<String, ApiError> {
    proxy_value(&sim, id, |d| d.id.to_string())
}

async fn proxy_hostname(
    State(sim): State<Simulator>,
    Path(id): Path<u64>,
) -> Result<String, ApiError> {
    proxy_value(&sim, id, |d| d.name.clone())
}

async fn proxy_public_ipv4(
    State(sim): State<Simulator>,
    Path(id): Path<u64>,
) -> Result<String, ApiError> {
    proxy_value(&sim, id, |d| d.public_ip.to_string())
}

async fn proxy_private_ipv4(
    State(sim): State<Simulator>,
    Path(id): Path<u64>,
) -> Result<String, ApiError> {
    proxy_value(&sim, id, |d| d.private_ip.to_string())
}

async fn id(State(sim): State<Simulator>) -> String {
    sim.inner.proxy_id.to_string()
}

async fn public_ipv4(State(sim): State<Simulator>) -> String {
    sim.inner.proxy_public_ip.to_string()
}

async fn private_ipv4(State(sim): State<Simulator>) -> String {
    sim.inner.subnet.proxy_private_ip().to_string()
}

async fn document(State(sim): State<Simulator>) -> Json<Value> {
    let interface = |kind: &str, ip: String, netmask: &str, mac: &str| {
        json!({
            "ipv4": {"ip_address": ip, "netmask": netmask, "gateway": "127.0.0.1"},
            "mac": mac,
            "type": kind,
        })
    };
    Json(json!({
        "droplet_id": sim.inner.proxy_id,
        "hostname": HOSTNAME,
        "vendor_data": "",
        "public_keys": [],
        "region": REGION,
        "interfaces": {
            "public": [interface("public", sim.inner.proxy_public_ip.to_string(), "255.255.255.0", "04:01:2a:0f:2a:01")],
            "private": [interface("private", sim.inner.subnet.proxy_private_ip().to_string(), "255.255.0.0", "04:01:2a:0f:2a:02")],
        },
        "floating_ip": {"ipv4": {"active": false}},
        "dns": {"nameservers": ["127.0.0.53"]},
        "features": {"dhcp_enabled": false},
    }))
}
