//! Reserved IPs, proxy droplets with their own metadata, and the forwarder
//! behind a reserved IP, seen from outside over real TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use doproxy_sim::{SimConfig, Simulator};
use serde_json::{Value, json};

/// One HTTP/1.0 exchange: status and body.
fn http(addr: SocketAddr, method: &str, target: &str, body: Option<Value>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {target} HTTP/1.0\r\nHost: sim\r\nAuthorization: Bearer sim-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn json_of(answer: (u16, String), status: u16) -> Value {
    assert_eq!(answer.0, status, "{}", answer.1);
    serde_json::from_str(&answer.1).unwrap()
}

/// A frontend that answers every connection with `name` and closes it.
fn frontend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(name.as_bytes());
        }
    });
    addr
}

/// What the forwarder at `addr` answers: the holder's name, or None when
/// the connection is closed without a byte.
fn through(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    (!answer.is_empty()).then_some(answer)
}

#[test]
fn a_reserved_ip_moves_between_proxies_and_its_traffic_follows() {
    let sim = Simulator::spawn(SimConfig::default());
    let api: SocketAddr = sim.url().trim_start_matches("http://").parse().unwrap();
    let a = sim.add_proxy("proxy-a", frontend("a"));
    let b = sim.add_proxy("proxy-b", frontend("b"));
    let reserved = sim.create_reserved_ip();
    assert!(reserved.ip.is_loopback());
    assert_eq!(reserved.forwarder.ip(), reserved.ip);

    // Each proxy's metadata answers as that proxy.
    for proxy in [&a, &b] {
        let base: SocketAddr = proxy
            .metadata_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let path = proxy.metadata_url.splitn(4, '/').nth(3).unwrap();
        let (status, id) = http(base, "GET", &format!("/{path}/metadata/v1/id"), None);
        assert_eq!((status, id), (200, proxy.id.to_string()));
        let (_, name) = http(base, "GET", &format!("/{path}/metadata/v1/hostname"), None);
        assert_eq!(name, proxy.name);
    }
    let unknown = http(api, "GET", "/proxies/1/metadata/v1/id", None);
    assert_eq!(unknown.0, 404);

    // Unassigned: no droplet, and the forwarder closes connections.
    let path = format!("/v2/reserved_ips/{}", reserved.ip);
    let shown = json_of(http(api, "GET", &path, None), 200);
    assert_eq!(shown["reserved_ip"]["droplet"], Value::Null);
    assert_eq!(through(reserved.forwarder), None);

    sim.set_reserved_ip_delay(Duration::from_millis(300));
    let actions = format!("{path}/actions");
    let assign = |id: u64| {
        http(
            api,
            "POST",
            &actions,
            Some(json!({"type": "assign", "droplet_id": id})),
        )
    };
    let action = json_of(assign(a.id), 201);
    assert_eq!(action["action"]["status"], "in-progress");
    assert_eq!(action["action"]["type"], "assign_ip");
    // While it is pending the IP is locked and another action refused.
    assert_eq!(
        json_of(http(api, "GET", &path, None), 200)["reserved_ip"]["locked"],
        true
    );
    let refused = assign(b.id);
    assert_eq!(refused.0, 422, "{}", refused.1);
    assert!(refused.1.contains("pending event"), "{}", refused.1);

    let poll = format!("{actions}/{}", action["action"]["id"]);
    let started = Instant::now();
    while json_of(http(api, "GET", &poll, None), 200)["action"]["status"] != "completed" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the assign never completed"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let shown = json_of(http(api, "GET", &path, None), 200);
    assert_eq!(shown["reserved_ip"]["droplet"]["id"], a.id);
    assert_eq!(shown["reserved_ip"]["locked"], false);
    assert_eq!(through(reserved.forwarder).as_deref(), Some("a"));

    // Assigning to the holder changes nothing; moving it moves the traffic.
    sim.set_reserved_ip_delay(Duration::ZERO);
    json_of(assign(a.id), 201);
    assert_eq!(sim.reserved_ip_holder(reserved.ip), Some(a.id));
    json_of(assign(b.id), 201);
    assert_eq!(sim.reserved_ip_holder(reserved.ip), Some(b.id));
    assert_eq!(through(reserved.forwarder).as_deref(), Some("b"));
    let holders: Vec<u64> = sim
        .reserved_ip_assignments()
        .iter()
        .map(|a| a.droplet_id)
        .collect();
    assert_eq!(holders, [a.id, a.id, b.id]);

    // Unknown droplets and addresses are refused; unassign leaves it free.
    assert_eq!(assign(1).0, 422);
    assert_eq!(
        http(api, "GET", "/v2/reserved_ips/203.0.113.9", None).0,
        404
    );
    json_of(
        http(api, "POST", &actions, Some(json!({"type": "unassign"}))),
        201,
    );
    assert_eq!(sim.reserved_ip_holder(reserved.ip), None);
    let list = json_of(http(api, "GET", "/v2/reserved_ips", None), 200);
    assert_eq!(list["reserved_ips"][0]["ip"], reserved.ip.to_string());

    // Someone else's action keeps it locked, where they put it: refused.
    sim.lock_reserved_ip(reserved.ip, Some(b.id), Duration::from_secs(60));
    assert_eq!(
        json_of(http(api, "GET", &path, None), 200)["reserved_ip"]["locked"],
        true
    );
    assert_eq!(assign(a.id).0, 422);
    assert_eq!(sim.reserved_ip_holder(reserved.ip), Some(b.id));
    let asked: Vec<(Option<u64>, bool)> = sim
        .reserved_ip_requests()
        .iter()
        .map(|r| (r.droplet_id, r.accepted))
        .collect();
    assert_eq!(
        asked,
        [
            (Some(a.id), true),
            (Some(b.id), false),
            (Some(a.id), true),
            (Some(b.id), true),
            (None, true),
            (Some(a.id), false),
        ]
    );
    // Someone at the control panel moves it at once.
    assert!(sim.assign_reserved_ip(reserved.ip, a.id));
    assert_eq!(through(reserved.forwarder).as_deref(), Some("a"));
    assert_eq!(
        sim.reserved_ip_assignments().last().unwrap().droplet_id,
        a.id
    );
    assert!(!sim.assign_reserved_ip(reserved.ip, 1));
    assert!(!sim.assign_reserved_ip("203.0.113.9".parse().unwrap(), a.id));
}
