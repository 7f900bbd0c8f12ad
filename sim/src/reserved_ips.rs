//! Reserved IPs (formerly floating IPs): an address that moves between
//! droplets through `assign` and `unassign` actions, as two proxies behind
//! one address use it. Each reserved IP is a loopback address of the
//! simulator's subnet with a forwarder listening on it (`forwarder`), so a
//! test sends traffic to "the reserved IP" and reaches whichever proxy holds
//! it. Proxies are droplets too (`Simulator::add_proxy`), each with its own
//! metadata service and the frontend the forwarder sends to.
//!
//! An action completes `delay` after it was accepted (the API's assign takes
//! seconds); until then the reserved IP is `locked` and a new action is
//! refused with 422, as the API refuses one while an event is pending. A
//! test can lock an IP for as long as it likes with an action of someone
//! else's (`lock_reserved_ip`), and sees every action asked for, accepted or
//! refused (`reserved_ip_requests`).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Simulator;
use crate::catalog::{self, Region};
use crate::error::ApiError;
use crate::reserved_ip_state::{IpAction, ReservedIp, ReservedIps, SimAssignment, SimIpRequest};
use crate::state::{Droplet, NewDroplets};
use crate::time::rfc3339;

/// A reserved IP as a test sees it: its address, and the forwarder's address
/// on it that reaches the proxy holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimReservedIp {
    pub ip: Ipv4Addr,
    pub forwarder: SocketAddr,
}

/// A proxy droplet as a test sees it: its droplet ID and the metadata URL
/// (for doproxy's `metadata_url`) that answers as that droplet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimProxy {
    pub id: u64,
    pub name: String,
    pub metadata_url: String,
}

impl Simulator {
    /// A proxy droplet named `name` whose HAProxy frontend listens on
    /// `frontend`: listed like any droplet (untagged), with a metadata
    /// service of its own at the returned URL.
    pub fn add_proxy(&self, name: &str, frontend: SocketAddr) -> SimProxy {
        let new = NewDroplets {
            names: vec![name.to_string()],
            serve_http: false,
            ..NewDroplets::seeded()
        };
        let mut state = self.lock();
        let id = state.create(&self.inner.subnet, &new, SystemTime::now())[0];
        state.reserved_ips.frontends.insert(id, frontend);
        SimProxy {
            id,
            name: name.to_string(),
            metadata_url: format!("{}/proxies/{id}", self.url()),
        }
    }

    /// A new reserved IP in nyc3, held by no droplet, with its forwarder
    /// listening. Panics before the simulator serves.
    pub fn create_reserved_ip(&self) -> SimReservedIp {
        let subnet = self.inner.subnet.proxy_private_ip().octets()[1];
        let mut state = self.lock();
        let ip = (2..250)
            .map(|host| Ipv4Addr::new(127, subnet, 255, host))
            .find(|ip| !state.reserved_ips.ips.contains_key(ip))
            .expect("doproxy-sim: at most 248 reserved IPs");
        state.reserved_ips.ips.insert(
            ip,
            ReservedIp {
                region: catalog::region("nyc3").expect("nyc3 is in the catalog"),
                droplet: None,
                pending: None,
                locked_until: None,
            },
        );
        drop(state);
        let forwarder = crate::forwarder::start(self.clone(), ip);
        SimReservedIp { ip, forwarder }
    }

    /// The droplet holding `ip` now, if any.
    pub fn reserved_ip_holder(&self, ip: Ipv4Addr) -> Option<u64> {
        let mut state = self.lock();
        state.settle_reserved_ips(SystemTime::now());
        state.reserved_ips.ips.get(&ip)?.droplet
    }

    /// Every completed assign so far, oldest first.
    pub fn reserved_ip_assignments(&self) -> Vec<SimAssignment> {
        let mut state = self.lock();
        state.settle_reserved_ips(SystemTime::now());
        state.reserved_ips.assignments.clone()
    }

    /// Someone else's action on `ip` (the control panel, another tool): the
    /// IP moves to `holder` (None: no droplet) at once and stays locked for
    /// `locked_for`, every action on it refused with 422 meanwhile.
    pub fn lock_reserved_ip(&self, ip: Ipv4Addr, holder: Option<u64>, locked_for: Duration) {
        let now = SystemTime::now();
        let mut state = self.lock();
        state.settle_reserved_ips(now);
        let reserved = state
            .reserved_ips
            .ips
            .get_mut(&ip)
            .expect("doproxy-sim: lock a reserved IP made with create_reserved_ip");
        reserved.droplet = holder;
        reserved.locked_until = Some(now + locked_for);
    }

    /// Every action asked for on reserved IPs so far, oldest first.
    pub fn reserved_ip_requests(&self) -> Vec<SimIpRequest> {
        self.lock().reserved_ips.requests.clone()
    }

    /// Moves `ip` to droplet `droplet_id` at once, as someone at the control
    /// panel would (recorded among the assignments). Returns false if
    /// either is unknown.
    pub fn assign_reserved_ip(&self, ip: Ipv4Addr, droplet_id: u64) -> bool {
        let mut state = self.lock();
        let now = SystemTime::now();
        state.settle_reserved_ips(now);
        if !state.droplets.contains_key(&droplet_id) {
            return false;
        }
        let reserved = &mut state.reserved_ips;
        let Some(held) = reserved.ips.get_mut(&ip) else {
            return false;
        };
        held.droplet = Some(droplet_id);
        reserved.assignments.push(SimAssignment {
            ip,
            droplet_id,
            requested_at: now,
            completed_at: now,
        });
        true
    }

    /// How long assign and unassign actions take from now on.
    pub fn set_reserved_ip_delay(&self, delay: Duration) {
        self.lock().reserved_ips.delay = delay;
    }

    /// Where the proxy holding `ip` serves, if one does.
    pub(crate) fn reserved_ip_route(&self, ip: Ipv4Addr) -> Option<SocketAddr> {
        let mut state = self.lock();
        state.settle_reserved_ips(SystemTime::now());
        state.reserved_ips.route(ip)
    }
}

impl crate::state::State {
    pub(crate) fn settle_reserved_ips(&mut self, now: SystemTime) {
        let droplets = &self.droplets;
        self.reserved_ips
            .settle(now, |id| droplets.contains_key(&id));
    }
}

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/v2/reserved_ips", get(list))
        .route("/v2/reserved_ips/{ip}", get(show))
        .route("/v2/reserved_ips/{ip}/actions", post(act))
        .route("/v2/reserved_ips/{ip}/actions/{id}", get(action))
}

async fn list(
    State(sim): State<Simulator>,
    Query(_): Query<HashMap<String, String>>,
) -> Json<Value> {
    let now = SystemTime::now();
    let mut state = sim.lock();
    state.settle_reserved_ips(now);
    let ips: Vec<Value> = state
        .reserved_ips
        .ips
        .iter()
        .map(|(ip, r)| reserved_ip_json(&state.droplets, *ip, r, now))
        .collect();
    let total = ips.len();
    Json(json!({"reserved_ips": ips, "links": {}, "meta": {"total": total}}))
}

async fn show(
    State(sim): State<Simulator>,
    Path(ip): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut state = sim.lock();
    let now = SystemTime::now();
    state.settle_reserved_ips(now);
    let (ip, reserved) = find(&state.reserved_ips, &ip)?;
    Ok(Json(
        json!({"reserved_ip": reserved_ip_json(&state.droplets, ip, reserved, now)}),
    ))
}

/// 201 with the new action; 422 while another action is pending, or for a
/// droplet that does not exist.
async fn act(
    State(sim): State<Simulator>,
    Path(ip): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
    let now = SystemTime::now();
    let mut state = sim.lock();
    state.settle_reserved_ips(now);
    let (ip, reserved) = find(&state.reserved_ips, &ip)?;
    let target = match body.get("type").and_then(Value::as_str) {
        Some("assign") => {
            let id = body
                .get("droplet_id")
                .and_then(Value::as_u64)
                .ok_or_else(|| ApiError::unprocessable("droplet_id is required to assign"))?;
            if !state.droplets.contains_key(&id) {
                return Err(ApiError::unprocessable(format!(
                    "Droplet {id} could not be found."
                )));
            }
            Some(id)
        }
        Some("unassign") => None,
        _ => {
            return Err(ApiError::unprocessable("type must be assign or unassign"));
        }
    };
    let locked = reserved.locked(now);
    let region = reserved.region;
    let registry = &mut state.reserved_ips;
    registry.requests.push(SimIpRequest {
        ip,
        droplet_id: target,
        at: now,
        accepted: !locked,
    });
    if locked {
        return Err(ApiError::unprocessable(
            "The reserved IP has a pending event.",
        ));
    }
    let id = registry.next_action_id;
    registry.next_action_id += 1;
    let action = IpAction {
        id,
        ip,
        target,
        started_at: now,
        completed_at: now + registry.delay,
        outcome: None,
    };
    let body = json!({"action": action_json(&action, region)});
    registry.actions.insert(id, action);
    registry.ips.get_mut(&ip).expect("found above").pending = Some(id);
    // A zero delay completes at once.
    state.settle_reserved_ips(now);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn action(
    State(sim): State<Simulator>,
    Path((ip, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let now = SystemTime::now();
    let mut state = sim.lock();
    state.settle_reserved_ips(now);
    let (ip, reserved) = find(&state.reserved_ips, &ip)?;
    let action = id
        .parse()
        .ok()
        .and_then(|id| state.reserved_ips.actions.get(&id))
        .filter(|a| a.ip == ip)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(
        json!({"action": action_json(action, reserved.region)}),
    ))
}

fn find<'a>(registry: &'a ReservedIps, ip: &str) -> Result<(Ipv4Addr, &'a ReservedIp), ApiError> {
    let ip: Ipv4Addr = ip.parse().map_err(|_| ApiError::not_found())?;
    let reserved = registry.ips.get(&ip).ok_or_else(ApiError::not_found)?;
    Ok((ip, reserved))
}

/// The spec's `reserved_ip` schema; `droplet` is the holder's droplet
/// object (id, name, status and networks suffice for doproxy) or null.
fn reserved_ip_json(
    droplets: &BTreeMap<u64, Droplet>,
    ip: Ipv4Addr,
    r: &ReservedIp,
    now: SystemTime,
) -> Value {
    let droplet = r.droplet.and_then(|id| droplets.get(&id)).map(|d| {
        json!({
            "id": d.id,
            "name": d.name,
            "status": "active",
            "tags": d.tags,
            "networks": {"v4": [{"ip_address": d.public_ip.to_string(), "type": "public"}]},
        })
    });
    json!({
        "ip": ip.to_string(),
        "region": r.region.json(),
        "droplet": droplet,
        "locked": r.locked(now),
        "project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988",
    })
}

/// The spec's `action` schema for a reserved IP action.
fn action_json(a: &IpAction, region: &Region) -> Value {
    let status = match a.outcome {
        Some(true) => "completed",
        Some(false) => "errored",
        None => "in-progress",
    };
    json!({
        "id": a.id,
        "status": status,
        "type": if a.target.is_some() { "assign_ip" } else { "unassign_ip" },
        "started_at": rfc3339(a.started_at),
        "completed_at": (status != "in-progress").then(|| rfc3339(a.completed_at)),
        "resource_id": u32::from(a.ip),
        "resource_type": "reserved_ip",
        "region": region.json(),
        "region_slug": region.slug,
    })
}
