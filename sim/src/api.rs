//! The /v2 routes doproxy uses, answering with the shapes of the official
//! OpenAPI spec. Authentication, rate limit headers and faults are applied in
//! front of these, by the server.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::Simulator;
use crate::catalog::{self, IMAGES, REGIONS, SIZES, SSH_KEYS};
use crate::create;
use crate::error::ApiError;
use crate::state::{Action, Droplet, DropletStatus};
use crate::time::{self, rfc3339};

/// The account's droplet limit; high enough for benchmarks.
const DROPLET_LIMIT: usize = 10_000;

type Params = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<Simulator> {
    Router::new()
        .route("/v2/account", get(account))
        .route("/v2/account/keys", get(ssh_keys))
        .route("/v2/account/keys/{key}", get(ssh_key))
        .route("/v2/actions", get(actions))
        .route("/v2/actions/{id}", get(action))
        .route(
            "/v2/droplets",
            get(list_droplets)
                .post(create_droplets)
                .delete(delete_droplets_by_tag),
        )
        .route("/v2/droplets/{id}", get(get_droplet).delete(delete_droplet))
        .route("/v2/images", get(images))
        .route("/v2/images/{id}", get(image))
        .route("/v2/regions", get(regions))
        .route("/v2/sizes", get(sizes))
        .route("/v2/monitoring/metrics/droplet/cpu", get(cpu_metrics))
        .route("/v2/tags", axum::routing::post(create_tag))
        .route(
            "/v2/tags/{tag}/resources",
            axum::routing::post(tag_resources),
        )
        .route(
            "/v2/projects/{project_id}/resources",
            axum::routing::post(assign_resources),
        )
}

/// The spec's projects_assign_resources: 404 for a project the account
/// lacks, 422 for a URN that is not `do:<type>:<id>`; otherwise 200 with
/// each resource's status (`assigned`, `already_assigned`, or `not_found`
/// for droplets that do not exist and other resource types).
async fn assign_resources(
    State(sim): State<Simulator>,
    Path(project_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
    let urns: Vec<&str> = body
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|items| items.iter().map(Value::as_str).collect())
        .ok_or_else(|| ApiError::unprocessable("resources must be an array of URNs"))?;
    let mut state = sim.lock();
    if !state.projects.contains_key(&project_id) {
        return Err(ApiError::not_found());
    }
    let now = rfc3339(SystemTime::now());
    let mut assigned = Vec::new();
    for urn in urns {
        let Some((kind, id)) = urn
            .strip_prefix("do:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(kind, id)| !kind.is_empty() && !id.is_empty())
        else {
            return Err(ApiError::unprocessable(format!(
                "{urn:?} is not a URN such as do:droplet:13457723"
            )));
        };
        let droplet = (kind == "droplet")
            .then(|| id.parse::<u64>().ok())
            .flatten()
            .and_then(|id| state.droplets.get_mut(&id));
        let status = match droplet {
            None => "not_found",
            Some(droplet) if droplet.project_id.as_deref() == Some(&project_id) => {
                "already_assigned"
            }
            Some(droplet) => {
                droplet.project_id = Some(project_id.clone());
                "assigned"
            }
        };
        assigned.push(json!({
            "urn": urn,
            "assigned_at": now,
            "links": {"self": format!("{}/v2/{kind}s/{id}", sim.url())},
            "status": status,
        }));
    }
    Ok(Json(json!({ "resources": assigned })))
}

/// 201 with the tag, whether or not it existed (tag creation is idempotent).
async fn create_tag(State(sim): State<Simulator>, body: Bytes) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return Err(ApiError::unprocessable("name is required"));
    };
    if !create::is_valid_tag(name) {
        return Err(ApiError::unprocessable(format!(
            "tag name {name:?} is invalid"
        )));
    }
    let mut state = sim.lock();
    state.tags.insert(name.to_string());
    let count = state
        .droplets
        .values()
        .filter(|d| d.tags.iter().any(|t| t == name))
        .count();
    let tag =
        json!({"tag": {"name": name, "resources": {"count": count, "droplets": {"count": count}}}});
    Ok((StatusCode::CREATED, Json(tag)).into_response())
}

/// Tags droplets; 404 for an unknown tag or droplet, 204 otherwise.
async fn tag_resources(
    State(sim): State<Simulator>,
    Path(tag): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("The request body is not valid JSON."))?;
    let resources = body
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::unprocessable("resources must be an array of resource_id and resource_type")
        })?;
    let mut state = sim.lock();
    let known = state.tags.contains(&tag) || state.droplets.values().any(|d| d.tags.contains(&tag));
    if !known {
        return Err(ApiError::not_found());
    }
    let mut ids = Vec::new();
    for resource in resources {
        let id = resource
            .get("resource_id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse::<u64>().ok());
        match (id, resource.get("resource_type").and_then(Value::as_str)) {
            (Some(id), Some("droplet")) if state.droplets.contains_key(&id) => ids.push(id),
            (_, Some("droplet")) => return Err(ApiError::not_found()),
            _ => return Err(ApiError::unprocessable("only droplets can be tagged here")),
        }
    }
    for id in ids {
        let droplet = state.droplets.get_mut(&id).expect("checked above");
        if !droplet.tags.contains(&tag) {
            droplet.tags.push(tag.clone());
        }
    }
    Ok(no_content())
}

async fn account() -> Json<Value> {
    Json(json!({"account": {
        "droplet_limit": DROPLET_LIMIT,
        "floating_ip_limit": 3,
        "email": "sammy@example.com",
        "name": "Sammy the Shark",
        "uuid": "b6fc48dbf6d9156cace5f3c78dc9851d957381ef",
        "email_verified": true,
        "status": "active",
        "status_message": "",
        "team": {"uuid": "5df3e3004a17e242b7c20ca6c9fc25b701a47ece", "name": "doproxy"},
    }}))
}

async fn ssh_keys(State(sim): State<Simulator>, Query(q): Params) -> Json<Value> {
    paginated(&sim, "/v2/account/keys", &q, "ssh_keys", SSH_KEYS, |k| {
        k.json()
    })
}

async fn ssh_key(Path(key): Path<String>) -> Result<Json<Value>, ApiError> {
    let key = catalog::ssh_key(&key).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({"ssh_key": key.json()})))
}

async fn regions(State(sim): State<Simulator>, Query(q): Params) -> Json<Value> {
    paginated(&sim, "/v2/regions", &q, "regions", REGIONS, |r| r.json())
}

async fn sizes(State(sim): State<Simulator>, Query(q): Params) -> Json<Value> {
    paginated(&sim, "/v2/sizes", &q, "sizes", SIZES, |s| s.json())
}

/// The catalog's public distribution images and the account's snapshots:
/// `private=true` lists the snapshots alone, `type=distribution` the
/// public ones, `type=application` and `tag_name` nothing.
async fn images(State(sim): State<Simulator>, Query(q): Params) -> Json<Value> {
    let snapshots = sim.lock().snapshots.clone();
    let private = q.get("private").is_some_and(|p| p == "true");
    let images: Vec<&catalog::Image> = match q.get("type").map(String::as_str) {
        _ if q.contains_key("tag_name") => Vec::new(),
        Some("application") => Vec::new(),
        Some("distribution") if private => Vec::new(),
        Some("distribution") => IMAGES.iter().collect(),
        _ if private => snapshots,
        _ => IMAGES.iter().chain(snapshots).collect(),
    };
    paginated(&sim, "/v2/images", &q, "images", &images, |i| i.json())
}

async fn image(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let snapshots = sim.lock().snapshots.clone();
    let image = catalog::image_in(&id, &snapshots).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({"image": image.json()})))
}

async fn actions(State(sim): State<Simulator>, Query(q): Params) -> Json<Value> {
    let now = SystemTime::now();
    let state = sim.lock();
    let actions: Vec<&Action> = state.actions.values().collect();
    paginated(&sim, "/v2/actions", &q, "actions", &actions, |a| {
        action_json(a, now)
    })
}

async fn action(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let state = sim.lock();
    let action = id
        .parse()
        .ok()
        .and_then(|id| state.actions.get(&id))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(
        json!({"action": action_json(action, SystemTime::now())}),
    ))
}

/// `tag_name` (exact) and `name` (exact, case-insensitive) filters;
/// `type=gpus` lists nothing, there are no GPU droplets.
async fn list_droplets(State(sim): State<Simulator>, Query(q): Params) -> Json<Value> {
    let now = SystemTime::now();
    let state = sim.lock();
    let gpus = q.get("type").is_some_and(|t| t == "gpus");
    let droplets: Vec<&Droplet> = state
        .droplets
        .values()
        .filter(|_| !gpus)
        .filter(|d| d.created_at + state.settings.list_lag <= now)
        .filter(|d| q.get("tag_name").is_none_or(|tag| d.tags.contains(tag)))
        .filter(|d| {
            q.get("name")
                .is_none_or(|name| d.name.eq_ignore_ascii_case(name))
        })
        .collect();
    paginated(&sim, "/v2/droplets", &q, "droplets", &droplets, |d| {
        droplet_json(&sim, d, now)
    })
}

async fn get_droplet(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let state = sim.lock();
    let droplet = id
        .parse()
        .ok()
        .and_then(|id| state.droplets.get(&id))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(
        json!({"droplet": droplet_json(&sim, droplet, SystemTime::now())}),
    ))
}

/// 202 with the new droplets (status `new`, no addresses yet) and a link to
/// each one's create action.
async fn create_droplets(State(sim): State<Simulator>, body: Bytes) -> Result<Response, ApiError> {
    let snapshots = sim.lock().snapshots.clone();
    let (new, multi) = create::parse(&body, &snapshots)?;
    let now = SystemTime::now();
    let (ids, body) = {
        let mut state = sim.lock();
        if state.droplets.len() + new.names.len() > DROPLET_LIMIT {
            return Err(ApiError::unprocessable(format!(
                "creating this/these droplet(s) will exceed your droplet limit ({DROPLET_LIMIT})"
            )));
        }
        let ids = state.create(&sim.inner.subnet, &new, now);
        let created: Vec<&Droplet> = ids.iter().map(|id| &state.droplets[id]).collect();
        let links = json!({"actions": created.iter().map(|d| json!({
            "id": d.action_id,
            "rel": "create",
            "href": format!("{}/v2/actions/{}", sim.url(), d.action_id),
        })).collect::<Vec<_>>()});
        let mut droplets = created.iter().map(|d| droplet_json(&sim, d, now));
        let body = if multi {
            json!({"droplets": droplets.collect::<Vec<_>>(), "links": links})
        } else {
            json!({"droplet": droplets.next(), "links": links})
        };
        (ids, body)
    };
    sim.sync_servers(&ids);
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn delete_droplet(
    State(sim): State<Simulator>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::not_found())?;
    sim.lock()
        .droplets
        .remove(&id)
        .ok_or_else(ApiError::not_found)?;
    Ok(no_content())
}

async fn delete_droplets_by_tag(
    State(sim): State<Simulator>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let tag = q
        .get("tag_name")
        .ok_or_else(|| ApiError::bad_request("tag_name is required"))?;
    sim.lock().droplets.retain(|_, d| !d.tags.contains(tag));
    Ok(no_content())
}

/// 204, with a content type as the spec's no_content_with_content_type says.
fn no_content() -> Response {
    (
        StatusCode::NO_CONTENT,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
    )
        .into_response()
}

/// A prometheus matrix of per-mode CPU seconds. Only droplets created with
/// `monitoring` run the metrics agent: for any other host, as for an unknown
/// one, the API has no series and answers an empty result.
async fn cpu_metrics(
    State(sim): State<Simulator>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let param = |name: &str| {
        q.get(name)
            .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))?
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("{name} must be an integer")))
    };
    let (host_id, start, end) = (param("host_id")?, param("start")?, param("end")?);
    if end < start {
        return Err(ApiError::bad_request("end must not be before start"));
    }
    let now = SystemTime::now();
    let result = match sim.lock().droplets.get(&host_id) {
        Some(d) if d.has_feature("monitoring") && d.status(now) == DropletStatus::Active => {
            d.cpu.series(host_id, start, end)
        }
        _ => Vec::new(),
    };
    Ok(Json(json!({
        "status": "success",
        "data": {"resultType": "matrix", "result": result},
    })))
}

/// The spec's `droplet` schema; addresses only once active.
fn droplet_json(sim: &Simulator, d: &Droplet, now: SystemTime) -> Value {
    let status = d.status(now);
    let (v4, v6) = if status != DropletStatus::New {
        let private = json!({
            "ip_address": d.private_ip.to_string(),
            "netmask": "255.255.0.0",
            "gateway": "nil",
            "type": "private",
        });
        let public = json!({
            "ip_address": d.public_ip.to_string(),
            "netmask": "255.255.255.0",
            "gateway": sim.inner.subnet.public_gateway().to_string(),
            "type": "public",
        });
        // Documentation addresses (2001:db8::/32): shown, never reachable.
        let v6 = d.has_feature("ipv6").then(|| {
            json!({
                "ip_address": format!("2001:db8:0:1::{:x}", d.id % 0xffff),
                "netmask": 64,
                "gateway": "2001:db8:0:1::1",
                "type": "public",
            })
        });
        (vec![private, public], Vec::from_iter(v6))
    } else {
        (Vec::new(), Vec::new())
    };
    let next_backup_window = d.has_feature("backups").then(|| {
        let day = Duration::from_secs(86_400);
        let midnight = time::epoch_secs(d.created_at) / 86_400 * 86_400;
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(midnight) + day;
        json!({"start": rfc3339(start), "end": rfc3339(start + day - Duration::from_secs(3600))})
    });
    json!({
        "id": d.id,
        "name": d.name,
        "memory": d.size.memory,
        "vcpus": d.size.vcpus,
        "disk": d.size.disk,
        "disk_info": [{"type": "local", "size": {"amount": d.size.disk, "unit": "gib"}}],
        "locked": false,
        "status": status.as_str(),
        "kernel": null,
        "created_at": rfc3339(d.created_at),
        "features": d.features,
        "backup_ids": [],
        "next_backup_window": next_backup_window,
        "snapshot_ids": [],
        "image": d.image.json(),
        "volume_ids": [],
        "size": d.size.json(),
        "size_slug": d.size.slug,
        "networks": {"v4": v4, "v6": v6},
        "region": d.region.json(),
        "tags": d.tags,
        "vpc_uuid": d.vpc_uuid,
    })
}

/// The spec's `action` schema: in progress until the droplet is active.
fn action_json(a: &Action, now: SystemTime) -> Value {
    let completed = now >= a.completed_at;
    json!({
        "id": a.id,
        "status": if completed { "completed" } else { "in-progress" },
        "type": "create",
        "started_at": rfc3339(a.started_at),
        "completed_at": completed.then(|| rfc3339(a.completed_at)),
        "resource_id": a.droplet_id,
        "resource_type": "droplet",
        "region": a.region.json(),
        "region_slug": a.region.slug,
    })
}

/// One page of `items` under `key`, with the spec's `links.pages` (absolute
/// URLs on the simulator, only those that apply) and `meta.total`.
/// `page` defaults to 1; `per_page` to 20, at most 200.
fn paginated<T>(
    sim: &Simulator,
    path: &str,
    q: &HashMap<String, String>,
    key: &str,
    items: &[T],
    render: impl Fn(&T) -> Value,
) -> Json<Value> {
    let number = |name: &str| {
        q.get(name)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
    };
    let page = number("page").unwrap_or(1);
    let per_page = number("per_page").unwrap_or(20).min(200);
    let last = items.len().div_ceil(per_page).max(1);
    let shown: Vec<Value> = items
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(render)
        .collect();
    // Other query parameters (filters) carry over into the links.
    let filters: BTreeMap<&String, &String> = q
        .iter()
        .filter(|(k, _)| *k != "page" && *k != "per_page")
        .collect();
    let link = |page: usize| {
        let mut url = format!("{}{path}?page={page}&per_page={per_page}", sim.url());
        for (k, v) in &filters {
            url.push_str(&format!("&{}={}", encode(k), encode(v)));
        }
        url
    };
    let mut pages = serde_json::Map::new();
    if page > 1 {
        pages.insert("first".to_owned(), link(1).into());
        pages.insert("prev".to_owned(), link((page - 1).min(last)).into());
    }
    if page < last {
        pages.insert("next".to_owned(), link(page + 1).into());
        pages.insert("last".to_owned(), link(last).into());
    }
    Json(json!({
        key: shown,
        "links": {"pages": pages},
        "meta": {"total": items.len()},
    }))
}

/// Percent-encodes a query component.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn encodes_query_components() {
        assert_eq!(encode("env:prod web"), "env%3Aprod%20web");
        assert_eq!(encode("doproxy-1.x_~"), "doproxy-1.x_~");
    }
}
