//! The simulator seen from outside, as doproxy's client sees it: real TCP,
//! hand-written HTTP/1.1, no HTTP client dependency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use doproxy_sim::{DropletStatus, Faults, SimConfig, SimGuard, Simulator};
use serde_json::{Value, json};

const TOKEN: &str = "sim-token";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on a fresh connection and reads until the server closes
/// it. Err if the connection ends without a byte of response.
fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    stream
        .write_all(format!("{head}\r\n{body}").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(0) => return Err("connection closed without a response".to_owned()),
        Ok(_) => {}
        Err(e) if raw.is_empty() => return Err(format!("connection error: {e}")),
        Err(e) => panic!("read failed after {} bytes: {e}", raw.len()),
    }
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| l.split_once(": ").unwrap())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    );
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn addr(sim: &Simulator) -> SocketAddr {
    sim.url().trim_start_matches("http://").parse().unwrap()
}

fn api(sim: &Simulator, method: &str, target: &str, body: Option<Value>) -> Reply {
    send(addr(sim), method, target, Some(TOKEN), body.as_ref()).unwrap()
}

fn spawn(boot_delay_ms: u64) -> SimGuard {
    Simulator::spawn(SimConfig {
        boot_delay: Duration::from_millis(boot_delay_ms),
        ..SimConfig::default()
    })
}

fn create_body(extra: Value) -> Value {
    let mut body = json!({"region": "nyc3", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "tags": ["doproxy"], "monitoring": true});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn droplet_page(sim: &Simulator, ip: &str, path: &str) -> Result<Reply, String> {
    let addr = SocketAddr::new(ip.parse().unwrap(), sim.droplet_port());
    send(addr, "GET", path, None, None)
}

#[test]
fn single_create_is_new_then_active_with_addresses_and_a_page() {
    let sim = spawn(300);
    let created = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"name": "web-1"}))),
    );
    assert_eq!(created.status, 202, "{}", created.body);
    let body = created.json();
    let droplet = &body["droplet"];
    assert_eq!(droplet["status"], "new");
    assert_eq!(droplet["networks"]["v4"], json!([]));
    assert_eq!(droplet["tags"], json!(["doproxy"]));
    for field in [
        "memory",
        "vcpus",
        "disk",
        "locked",
        "created_at",
        "features",
        "backup_ids",
        "next_backup_window",
        "snapshot_ids",
        "image",
        "volume_ids",
        "size",
        "size_slug",
        "region",
        "vpc_uuid",
    ] {
        assert!(droplet.get(field).is_some(), "droplet lacks {field}");
    }
    let id = droplet["id"].as_u64().unwrap();
    assert!((100_000_000..1_000_000_000).contains(&id));
    let action = &body["links"]["actions"][0];
    assert_eq!(action["rel"], "create");
    assert_eq!(
        action["href"],
        format!("{}/v2/actions/{}", sim.url(), action["id"])
    );
    let action_path = format!("/v2/actions/{}", action["id"]);
    assert_eq!(
        api(&sim, "GET", &action_path, None).json()["action"]["status"],
        "in-progress"
    );

    let path = format!("/v2/droplets/{id}");
    wait_for("active", || {
        api(&sim, "GET", &path, None).json()["droplet"]["status"] == "active"
    });
    let droplet = api(&sim, "GET", &path, None).json()["droplet"].clone();
    let v4 = droplet["networks"]["v4"].as_array().unwrap();
    let address = |kind: &str| {
        v4.iter().find(|n| n["type"] == kind).unwrap()["ip_address"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let private_ip = address("private");
    assert!(private_ip.starts_with("127.") && address("public").starts_with("127."));
    assert_eq!(
        api(&sim, "GET", &action_path, None).json()["action"]["status"],
        "completed"
    );

    wait_for("the droplet's page", || {
        droplet_page(&sim, &private_ip, "/").is_ok()
    });
    let page = droplet_page(&sim, &private_ip, "/").unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        page.body,
        format!("Droplet: web-1, ID: {id}, IP Address: {private_ip}\n")
    );
    let seen = &sim.droplets()[0];
    assert_eq!(
        (seen.status, seen.serving_http),
        (DropletStatus::Active, true)
    );
}

#[test]
fn multi_create_answers_droplets_and_one_action_each() {
    let sim = spawn(50);
    let reply = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"names": ["web-1", "web-2"]}))),
    );
    assert_eq!(reply.status, 202);
    let body = reply.json();
    assert_eq!(body["droplets"].as_array().unwrap().len(), 2);
    assert_eq!(body["links"]["actions"].as_array().unwrap().len(), 2);
    assert!(body.get("droplet").is_none());
    let one = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"names": ["web-3"]}))),
    );
    assert_eq!(one.json()["droplets"].as_array().unwrap().len(), 1);
    let eleven: Vec<String> = (0..11).map(|n| format!("web-{n}")).collect();
    let too_many = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({ "names": eleven }))),
    );
    assert_eq!(too_many.status, 422);
    wait_for("all active", || {
        sim.droplets()
            .iter()
            .all(|d| d.status == DropletStatus::Active)
    });
    assert_eq!(sim.droplets().len(), 3);
}

#[test]
fn lists_paginate_with_links_and_filter_by_tag() {
    let sim = spawn(0);
    let tagged = sim.seed_droplets(5, "a", &["a".to_owned()], false);
    sim.seed_droplets(3, "b", &["b".to_owned()], false);
    let list = |query: &str| api(&sim, "GET", &format!("/v2/droplets?{query}"), None).json();
    let link = |page: usize| {
        format!(
            "{}/v2/droplets?page={page}&per_page=2&tag_name=a",
            sim.url()
        )
    };

    let middle = list("tag_name=a&per_page=2&page=2");
    assert_eq!(middle["meta"]["total"], 5);
    let ids: Vec<u64> = middle["droplets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [tagged[2].id, tagged[3].id]);
    assert_eq!(
        middle["links"]["pages"],
        json!({"first": link(1), "prev": link(1), "next": link(3), "last": link(3)})
    );
    assert_eq!(
        list("tag_name=a&per_page=2")["links"]["pages"],
        json!({"next": link(2), "last": link(3)})
    );
    assert_eq!(
        list("tag_name=a&per_page=2&page=3")["links"]["pages"],
        json!({"first": link(1), "prev": link(2)})
    );

    let all = list("");
    assert_eq!(all["meta"]["total"], 8);
    assert_eq!(all["links"]["pages"], json!({}));
    assert_eq!(list("name=B-1")["droplets"][0]["name"], "b-1");
    assert_eq!(list("tag_name=none")["meta"]["total"], 0);
    for catalog in ["regions", "sizes", "images", "account/keys"] {
        let key = if catalog == "account/keys" {
            "ssh_keys"
        } else {
            catalog
        };
        let page = api(&sim, "GET", &format!("/v2/{catalog}?per_page=1"), None).json();
        assert_eq!(page[key].as_array().unwrap().len(), 1, "{catalog}");
        assert!(page["links"]["pages"]["next"].is_string(), "{catalog}");
    }
}

#[test]
fn errors_have_the_api_bodies() {
    let sim = spawn(0);
    let base = addr(&sim);
    let unauthorized = json!({"id": "Unauthorized", "message": "Unable to authenticate you"});
    for token in [None, Some("wrong")] {
        let reply = send(base, "GET", "/v2/droplets", token, None).unwrap();
        assert_eq!((reply.status, reply.json()), (401, unauthorized.clone()));
        assert_eq!(reply.header("ratelimit-limit"), Some("5000"));
    }
    let not_found = json!({"id": "not_found", "message": "The resource you were accessing could not be found."});
    for target in [
        "/v2/droplets/123",
        "/v2/droplets/abc",
        "/v2/nothing",
        "/nothing",
    ] {
        let reply = api(&sim, "GET", target, None);
        assert_eq!(
            (reply.status, reply.json()),
            (404, not_found.clone()),
            "{target}"
        );
    }
    assert_eq!(api(&sim, "DELETE", "/v2/droplets/123", None).status, 404);
    let invalid_size = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"name": "web-1", "size": "huge"}))),
    );
    assert_eq!(
        (invalid_size.status, invalid_size.json()),
        (
            422,
            json!({"id": "unprocessable_entity", "message": "You specified an invalid size for Droplet creation."})
        )
    );
    let null_user_data = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"name": "web-1", "user_data": null}))),
    );
    assert_eq!(null_user_data.status, 422);
    assert_eq!(null_user_data.json()["id"], "unprocessable_entity");
    assert!(sim.droplets().is_empty());
}

#[test]
fn a_dropped_connection_gets_no_response_bytes() {
    let sim = spawn(0);
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let dropped = send(addr(&sim), "GET", "/v2/account", Some(TOKEN), None);
    assert!(
        dropped.is_err(),
        "got a response: {}",
        dropped.unwrap().body
    );
    let log = sim.requests();
    assert_eq!((log[0].status, log[0].fault.as_deref()), (0, Some("drop")));
    // Metadata and admin routes are never faulted.
    assert_eq!(
        send(addr(&sim), "GET", "/metadata/v1/id", None, None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        send(addr(&sim), "GET", "/_sim/droplets", None, None)
            .unwrap()
            .status,
        200
    );
    sim.set_faults(Faults::default());
    assert_eq!(api(&sim, "GET", "/v2/account", None).status, 200);
}

#[test]
fn a_lost_create_response_still_creates_the_droplet() {
    let sim = spawn(0);
    sim.set_faults(Faults {
        drop_create_responses: 1,
        ..Faults::default()
    });
    let lost = send(
        addr(&sim),
        "POST",
        "/v2/droplets",
        Some(TOKEN),
        Some(&create_body(json!({"name": "web-1"}))),
    );
    assert!(lost.is_err());
    assert_eq!(sim.droplets()[0].name, "web-1");
    let log = sim.requests();
    assert_eq!(
        (log[0].status, log[0].fault.as_deref()),
        (0, Some("drop_create_response"))
    );
    let answered = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"name": "web-2"}))),
    );
    assert_eq!(answered.status, 202);
    assert_eq!(sim.droplets().len(), 2);
}

#[test]
fn error_faults_rate_limit_and_fail_deletes() {
    let sim = spawn(0);
    let id = sim.seed_droplets(1, "web", &[], false)[0].id;
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let replies: Vec<Reply> = (0..16)
        .map(|_| api(&sim, "GET", "/v2/account", None))
        .collect();
    let limited = replies.iter().find(|r| r.status == 429).expect("some 429s");
    assert_eq!(
        limited.json(),
        json!({"id": "too_many_requests", "message": "API Rate limit exceeded."})
    );
    assert_eq!(
        (
            limited.header("ratelimit-remaining"),
            limited.header("retry-after")
        ),
        (Some("0"), Some("1"))
    );
    assert!(replies.iter().any(|r| r.status == 500));
    assert!(replies.iter().all(|r| r.status == 429 || r.status == 500));

    sim.set_faults(Faults {
        fail_deletes: 1,
        ..Faults::default()
    });
    let path = format!("/v2/droplets/{id}");
    assert_eq!(api(&sim, "DELETE", &path, None).status, 500);
    assert_eq!(sim.droplets().len(), 1);
    assert_eq!(api(&sim, "DELETE", &path, None).status, 204);
    assert!(sim.droplets().is_empty());
}

#[test]
fn delete_stops_the_droplet_server_and_its_connections() {
    let sim = spawn(0);
    let seeded = sim.seed_droplets(2, "web", &["gone".to_owned()], true);
    let target = SocketAddr::new(seeded[0].private_ip.into(), sim.droplet_port());
    assert!(seeded[0].serving_http);
    // An open keep-alive connection that has been served once.
    let mut open = TcpStream::connect(target).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    open.write_all(b"GET /slow?ms=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0; 512];
    assert!(open.read(&mut buf).unwrap() > 0);

    let reply = api(
        &sim,
        "DELETE",
        &format!("/v2/droplets/{}", seeded[0].id),
        None,
    );
    assert_eq!(reply.status, 204);
    assert!(matches!(open.read(&mut buf), Ok(0) | Err(_)));
    assert!(TcpStream::connect(target).is_err());
    assert_eq!(
        api(&sim, "DELETE", "/v2/droplets?tag_name=gone", None).status,
        204
    );
    assert!(sim.droplets().is_empty());
}

#[test]
fn set_serving_stops_and_restarts_a_server() {
    let sim = spawn(0);
    let droplet = sim.seed_droplets(1, "web", &[], true).remove(0);
    let ip = droplet.private_ip.to_string();
    assert!(sim.set_serving(droplet.id, false));
    assert!(!sim.droplets()[0].serving_http);
    assert!(droplet_page(&sim, &ip, "/").is_err());
    assert!(sim.set_serving(droplet.id, true));
    assert!(sim.droplets()[0].serving_http);
    assert_eq!(droplet_page(&sim, &ip, "/").unwrap().status, 200);
    assert!(!sim.set_serving(1, true));
}

#[test]
fn a_droplet_answers_what_it_was_told_on_a_path_and_on_the_second_port_when_told() {
    let sim = spawn(0);
    let droplets = sim.seed_droplets(2, "web", &[], true);
    let (sick, well) = (&droplets[0], &droplets[1]);
    assert!(sim.set_answer(sick.id, "/healthz", 503, "starting\n"));
    let ip = sick.private_ip.to_string();
    let health = droplet_page(&sim, &ip, "/healthz?full=1").unwrap();
    assert_eq!((health.status, health.body.as_str()), (503, "starting\n"));
    // Its other paths, and the other droplet's same path, serve the page.
    let page = droplet_page(&sim, &ip, "/").unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&sick.name), "{}", page.body);
    let other = droplet_page(&sim, &well.private_ip.to_string(), "/healthz").unwrap();
    assert_eq!(other.status, 200);
    assert!(!sim.set_answer(1, "/healthz", 200, ""));

    // The second port, once told: the same answers as on the droplet port.
    let second = SocketAddr::new(sick.private_ip.into(), sim.second_port());
    assert!(TcpStream::connect(second).is_err());
    assert!(sim.set_on_second_port(sick.id, true));
    let health = send(second, "GET", "/healthz", None, None).unwrap();
    assert_eq!(health.status, 503);
    assert_eq!(droplet_page(&sim, &ip, "/").unwrap().status, 200);
    assert!(sim.set_on_second_port(sick.id, false));
    assert!(TcpStream::connect(second).is_err());
    assert!(!sim.set_on_second_port(1, true));
}

#[test]
fn held_requests_wait_until_released() {
    let sim = spawn(0);
    sim.hold_requests("GET", "/v2/account");
    let held = {
        let addr = addr(&sim);
        std::thread::spawn(move || send(addr, "GET", "/v2/account", Some(TOKEN), None))
    };
    wait_for("the request to be held", || sim.held_requests() == 1);
    // Other requests pass.
    assert_eq!(api(&sim, "GET", "/v2/droplets", None).status, 200);
    assert!(!held.is_finished());
    sim.release_requests();
    assert_eq!(held.join().unwrap().unwrap().status, 200);
    assert_eq!(sim.held_requests(), 0);
    assert_eq!(api(&sim, "GET", "/v2/account", None).status, 200);
}

#[test]
fn a_powered_off_droplet_is_off_and_serves_nothing_until_powered_on() {
    let sim = spawn(0);
    let droplet = sim.seed_droplets(1, "web", &[], true).remove(0);
    let ip = droplet.private_ip.to_string();
    assert!(sim.set_power(droplet.id, false));
    assert_eq!(sim.droplets()[0].status, DropletStatus::Off);
    assert!(droplet_page(&sim, &ip, "/").is_err());
    let listed = api(&sim, "GET", &format!("/v2/droplets/{}", droplet.id), None).json();
    assert_eq!(listed["droplet"]["status"], "off");
    assert_eq!(
        listed["droplet"]["networks"]["v4"][0]["ip_address"], ip,
        "an off droplet keeps its addresses"
    );
    assert!(sim.set_power(droplet.id, true));
    assert_eq!(sim.droplets()[0].status, DropletStatus::Active);
    assert_eq!(droplet_page(&sim, &ip, "/").unwrap().status, 200);
    assert!(!sim.set_power(1, false));
}

#[test]
fn snapshots_are_private_images_droplets_can_be_created_from() {
    let sim = spawn(0);
    let id = sim.add_snapshot("web-2026-11-28");
    let image = api(&sim, "GET", &format!("/v2/images/{id}"), None).json();
    assert_eq!(image["image"]["public"], false);
    assert_eq!(image["image"]["slug"], Value::Null);
    let private = api(&sim, "GET", "/v2/images?private=true", None).json();
    assert_eq!(private["images"].as_array().unwrap().len(), 1);
    assert_eq!(private["images"][0]["id"], id);
    let all = api(&sim, "GET", "/v2/images?per_page=200", None).json();
    assert_eq!(all["meta"]["total"], 5);
    let reply = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"name": "web-1", "image": id}))),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(sim.droplets()[0].image, id.to_string());
    let reply = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"name": "web-2", "image": id + 1}))),
    );
    assert_eq!(reply.status, 422);
}

#[test]
fn droplets_are_assigned_to_projects_the_account_has() {
    let sim = spawn(0);
    let droplet = sim.seed_droplets(1, "web", &[], true).remove(0);
    assert_eq!(droplet.image, "ubuntu-24-04-x64");
    assert_eq!(droplet.project_id, None);
    let project = sim.add_project("web");
    let urn = format!("do:droplet:{}", droplet.id);
    let body = json!({"resources": [urn, "do:droplet:1", "do:domain:example.com"]});
    let path = format!("/v2/projects/{project}/resources");
    let reply = api(&sim, "POST", &path, Some(body.clone()));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    let statuses: Vec<&str> = answer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["assigned", "not_found", "not_found"]);
    assert_eq!(sim.droplets()[0].project_id.as_deref(), Some(&*project));
    let again = api(&sim, "POST", &path, Some(json!({"resources": [urn]})));
    assert_eq!(again.json()["resources"][0]["status"], "already_assigned");
    let unknown = "4e1bfbc3-dc3e-41f2-a18f-1b4d7ba71679";
    let reply = api(
        &sim,
        "POST",
        &format!("/v2/projects/{unknown}/resources"),
        Some(body),
    );
    assert_eq!(reply.status, 404);
    let bad = api(
        &sim,
        "POST",
        &path,
        Some(json!({"resources": ["droplet:1"]})),
    );
    assert_eq!(bad.status, 422);
}

#[test]
fn cpu_metrics_give_back_the_utilization_set() {
    let sim = spawn(0);
    let id = sim.seed_droplets(1, "web", &[], false)[0].id;
    assert!(sim.set_cpu(id, 85.0));
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let query = |host: u64| {
        api(
            &sim,
            "GET",
            &format!(
                "/v2/monitoring/metrics/droplet/cpu?host_id={host}&start={}&end={end}",
                end - 300
            ),
            None,
        )
        .json()
    };
    let metrics = query(id);
    assert_eq!(
        (&metrics["status"], &metrics["data"]["resultType"]),
        (&json!("success"), &json!("matrix"))
    );
    let delta = |series: &Value| {
        let values = series["values"].as_array().unwrap();
        let at = |i: usize| values[i][1].as_str().unwrap().parse::<f64>().unwrap();
        at(values.len() - 1) - at(0)
    };
    let result = metrics["data"]["result"].as_array().unwrap();
    let idle = result
        .iter()
        .find(|s| s["metric"]["mode"] == "idle")
        .unwrap();
    assert_eq!(idle["metric"]["host_id"], id.to_string());
    let total: f64 = result.iter().map(delta).sum();
    let utilization = 1.0 - delta(idle) / total;
    assert!((utilization - 0.85).abs() < 0.001, "{utilization}");
    assert_eq!(query(1)["data"]["result"], json!([]));
}

#[test]
fn metadata_and_admin_routes() {
    let sim = Simulator::spawn(SimConfig {
        proxy_public_ip: "127.0.0.9".parse().unwrap(),
        ..SimConfig::default()
    });
    let get = |path: &str| send(addr(&sim), "GET", path, None, None).unwrap();
    assert_eq!(
        get("/metadata/v1/interfaces/public/0/ipv4/address").body,
        "127.0.0.9"
    );
    let private = get("/metadata/v1/interfaces/private/0/ipv4/address").body;
    assert!(
        private.starts_with("127.") && private.ends_with(".0.1"),
        "{private}"
    );
    assert_eq!(
        get("/metadata/v1.json").json()["droplet_id"].to_string(),
        get("/metadata/v1/id").body
    );

    let admin = |method: &str, path: &str, body: Value| {
        send(addr(&sim), method, path, None, Some(&body)).unwrap()
    };
    let seeded = admin(
        "POST",
        "/_sim/seed",
        json!({"count": 2, "name_prefix": "x", "tags": ["doproxy"], "serve_http": false}),
    );
    assert_eq!(seeded.status, 201);
    let id = seeded.json()[0]["id"].as_u64().unwrap();
    assert_eq!(
        admin(
            "PUT",
            &format!("/_sim/droplets/{id}/cpu"),
            json!({"utilization": 50.0})
        )
        .status,
        204
    );
    assert_eq!(
        admin("PUT", "/_sim/droplets/1/serving", json!({"serving": true})).status,
        404
    );
    assert_eq!(
        admin(
            "PUT",
            "/_sim/settings",
            json!({"boot_delay_ms": 10, "latency_ms": 0})
        )
        .status,
        204
    );
    assert_eq!(
        admin("PUT", "/_sim/faults", json!({"fail_deletes": 1})).status,
        204
    );
    assert_eq!(
        api(&sim, "DELETE", &format!("/v2/droplets/{id}"), None).status,
        500
    );
    assert_eq!(get("/_sim/droplets").json().as_array().unwrap().len(), 2);
    let log = get("/_sim/requests").json();
    let paths: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path_and_query"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert_eq!(log[4]["fault"], "fail_delete");
    assert_eq!(admin("DELETE", "/_sim/requests", json!({})).status, 204);
    assert!(sim.requests().is_empty());
}

#[test]
fn simulators_in_one_process_do_not_collide() {
    let sims: Vec<SimGuard> = (0..4).map(|_| spawn(0)).collect();
    let ips: Vec<_> = sims
        .iter()
        .map(|s| s.seed_droplets(1, "web", &[], true)[0].private_ip)
        .collect();
    for (i, ip) in ips.iter().enumerate() {
        assert!(
            ips[..i]
                .iter()
                .all(|other| other.octets()[1] != ip.octets()[1])
        );
        let page = droplet_page(&sims[i], &ip.to_string(), "/").unwrap();
        assert!(page.body.ends_with(&format!("IP Address: {ip}\n")));
    }
    let api_addr = addr(&sims[0]);
    let droplet_addr = SocketAddr::new(ips[0].into(), sims[0].droplet_port());
    drop(sims);
    assert!(TcpStream::connect(api_addr).is_err());
    assert!(TcpStream::connect(droplet_addr).is_err());
}

#[test]
fn list_lag_hides_new_droplets_from_lists_but_not_from_get() {
    let sim = spawn(0);
    sim.set_list_lag(Duration::from_secs(600));
    let created = api(
        &sim,
        "POST",
        "/v2/droplets",
        Some(create_body(json!({"name": "web-1"}))),
    );
    let id = created.json()["droplet"]["id"].as_u64().unwrap();
    let listed = api(&sim, "GET", "/v2/droplets?tag_name=doproxy", None).json();
    assert_eq!(listed["droplets"].as_array().unwrap().len(), 0);
    assert_eq!(
        api(&sim, "GET", &format!("/v2/droplets/{id}"), None).status,
        200
    );
    sim.set_list_lag(Duration::ZERO);
    let listed = api(&sim, "GET", "/v2/droplets?tag_name=doproxy", None).json();
    assert_eq!(listed["droplets"][0]["id"], id);

    assert!(sim.destroy_droplet(id));
    assert!(!sim.destroy_droplet(id));
    assert_eq!(
        api(&sim, "GET", &format!("/v2/droplets/{id}"), None).status,
        404
    );
}
