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
use crate::state::Subnet;

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
            "/metadata/v1/interfaces/public/0/anchor_ipv4/address",
            get(anchor_ipv4),
        )
        .route(
            "/metadata/v1/interfaces/private/0/ipv4/address",
            get(private_ipv4),
        )
        .route("/metadata/v1.json", get(document))
        .route("/proxies/{id}/metadata/v1/{*key}", get(proxy_value))
}

/// One value of proxy droplet `id`'s own service; 404 for any other
/// droplet or value.
async fn proxy_value(
    State(sim): State<Simulator>,
    Path((id, key)): Path<(u64, String)>,
) -> Result<String, ApiError> {
    let state = sim.lock();
    let droplet = state
        .droplets
        .get(&id)
        .filter(|_| state.reserved_ips.frontends.contains_key(&id))
        .ok_or_else(ApiError::not_found)?;
    Ok(match key.as_str() {
        "id" => droplet.id.to_string(),
        "hostname" => droplet.name.clone(),
        "interfaces/public/0/ipv4/address" => droplet.public_ip.to_string(),
        "interfaces/public/0/anchor_ipv4/address" => {
            Subnet::anchor_ip(droplet.private_ip).to_string()
        }
        "interfaces/private/0/ipv4/address" => droplet.private_ip.to_string(),
        _ => return Err(ApiError::not_found()),
    })
}

async fn id(State(sim): State<Simulator>) -> String {
    sim.inner.proxy_id.to_string()
}

async fn public_ipv4(State(sim): State<Simulator>) -> String {
    sim.inner.proxy_public_ip.to_string()
}

async fn anchor_ipv4(State(sim): State<Simulator>) -> String {
    sim.inner.subnet.proxy_anchor_ip().to_string()
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
