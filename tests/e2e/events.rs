//! Events: every change reaches a local webhook exactly once and the audit
//! trail (`doproxy history`, in a file or in etcd) in order; a webhook that
//! hangs or fails never holds up the change.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::etcd_server::Etcd;
use crate::support::{Project, http_get, wait_until};

const WAIT: Duration = Duration::from_secs(120);

/// How a receiver answers.
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    Status500,
    Status404,
    /// Reads the request and never answers.
    Hang,
}

/// A webhook on loopback: records every body POSTed to it.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(answer: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        // Ends with the test process; it holds no child process.
        std::thread::spawn(move || {
            let mut hung = Vec::new();
            for stream in listener.incoming().flatten() {
                if let Some(body) = read_request(&stream) {
                    kept.lock().unwrap().push(body);
                }
                let mut stream = stream;
                match answer {
                    Answer::Ok => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                    Answer::Status500 => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                    Answer::Status404 => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                    Answer::Hang => hung.push(stream),
                }
            }
        });
        Receiver { addr, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Value> {
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The kinds of `events`, in order.
fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_webhook_sees_every_change_once_and_history_lists_them_in_order() {
    let receiver = Receiver::start(Answer::Ok);
    let slack = Receiver::start(Answer::Ok);
    let mut project = Project::new("events-hook");
    project.set(
        "notify",
        Some(&format!(
            "[{{url: \"{}\"}}, {{url: \"{}\", format: slack, kinds: [droplet.destroyed]}}]",
            receiver.url(),
            slack.url()
        )),
    );
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "2"]).success();
    wait_until("HAProxy to serve", WAIT, || {
        http_get(haproxy.frontend, "/").is_ok()
    });
    let ids: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    project.run(&["delete", "0"]).success();

    // Each one-shot command delivered before it exited.
    let sent = receiver.bodies();
    assert_eq!(
        kinds(&sent),
        [
            "droplet.created",
            "droplet.joined",
            "droplet.drained",
            "droplet.destroyed"
        ],
        "{sent:#?}"
    );
    assert_eq!(sent[0]["droplets"], serde_json::json!(ids));
    assert_eq!(sent[3]["droplets"], serde_json::json!([ids[0]]));
    assert_eq!(sent[0]["severity"], "info");
    assert_eq!(sent[0]["pool"], "doproxy:auto-nginx");
    assert!(
        sent[0]["command"]
            .as_str()
            .unwrap()
            .ends_with("create --count 2"),
        "{}",
        sent[0]
    );
    assert!(!sent[0]["user"].as_str().unwrap().is_empty());
    assert!(!sent[0]["proxy"].as_str().unwrap().is_empty());
    let texts = slack.bodies();
    assert_eq!(texts.len(), 1, "{texts:?}");
    let text = texts[0]["text"].as_str().unwrap();
    assert!(
        text.contains("droplet.destroyed") && text.contains(&ids[0].to_string()),
        "{text}"
    );

    // The trail holds the same events, in order.
    let history = project.run(&["history", "-o", "json"]).success().json();
    let history = history.as_array().unwrap().clone();
    assert_eq!(history, sent);
    let lines = project
        .run(&["history", "--kind", "droplet.created"])
        .success();
    assert_eq!(lines.stdout.lines().count(), 1, "{}", lines.stdout);
    assert!(
        lines.stdout.contains("droplet.created [info]"),
        "{}",
        lines.stdout
    );
    project
        .run(&["history", "--kind", "nothing"])
        .fails(1, "--kind \"nothing\" names no event kind");
    let recent = project
        .run(&["history", "--since", "1h", "-o", "json"])
        .success();
    assert_eq!(recent.json().as_array().unwrap().len(), 4);
}

#[test]
fn a_webhook_that_hangs_or_fails_never_holds_up_a_change() {
    let hanging = Receiver::start(Answer::Hang);
    let failing = Receiver::start(Answer::Status500);
    let gone = Receiver::start(Answer::Status404);
    let mut project = Project::new("events-down");
    project.set("metrics_textfile", Some("doproxy.prom"));
    project.set(
        "notify",
        Some(&format!(
            "[{{url: \"{}\", timeout: 60s}}, {{url: \"{}\", retries: 1}}, {{url: \"{}\", retries: 3}}]",
            hanging.url(),
            failing.url(),
            gone.url()
        )),
    );
    let started = Instant::now();
    let run = project.run(&["create", "--count", "1"]).success();
    let took = started.elapsed();
    // The hanging hook's timeout is 60 s: the create waited at most the
    // 3 s flush for it.
    assert!(took < Duration::from_secs(30), "create took {took:?}");
    assert_eq!(project.sim.droplets().len(), 1);
    let failing_hook = format!("cannot notify webhook http://{}", failing.addr);
    assert_eq!(
        run.stderr.matches(&failing_hook).count(),
        1,
        "logged once: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("notifications still undelivered"),
        "{}",
        run.stderr
    );
    // Two events, each tried twice at the failing hook, and once where a
    // 404 says it would be the same next time.
    wait_until("the failing hook to be tried", WAIT, || {
        failing.bodies().len() == 4
    });
    assert_eq!(gone.bodies().len(), 2);
    let textfile = std::fs::read_to_string(project.path("doproxy.prom")).unwrap();
    assert!(
        textfile.contains("doproxy_notifications_total{result=\"failed\"} 4"),
        "{textfile}"
    );
    // The change is in the trail all the same.
    let history = project.run(&["history", "-o", "json"]).success().json();
    assert_eq!(
        kinds(history.as_array().unwrap()),
        ["droplet.created", "droplet.joined"]
    );
}

#[test]
fn history_lists_a_rollout_and_a_heal_in_order() {
    let mut project = Project::new("events-history");
    project.run(&["create", "--count", "1"]).success();
    project.set(
        "droplet_options",
        Some(
            "{hostname_prefix: auto-nginx, region: nyc3, size: s-1vcpu-1gb, image: debian-12-x64}",
        ),
    );
    project.run(&["rollout"]).success();
    let rolled = project.sim.droplets()[0].id;
    project.sim.set_power(rolled, false);
    project.run(&["heal", "--once"]).success();
    // Held back still: not told again.
    project.run(&["heal", "--once"]).success();

    let history = project.run(&["history", "-o", "json"]).success().json();
    let events = history.as_array().unwrap();
    let steps: Vec<String> = kinds(events)
        .into_iter()
        .filter(|k| k == "rollout.step" || k == "heal.replaced")
        .collect();
    assert_eq!(steps, ["rollout.step", "heal.replaced"], "{events:#?}");
    let heal = events
        .iter()
        .find(|e| e["kind"] == "heal.replaced")
        .unwrap();
    assert_eq!(heal["droplets"][0], rolled);
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    let healed = project.run(&["heal", "--history"]).success();
    assert_eq!(healed.stdout.lines().count(), 1, "{}", healed.stdout);
    assert!(healed.stdout.contains("heal.replaced"), "{}", healed.stdout);
}

#[test]
fn every_kind_of_change_reaches_the_webhook_once_and_the_etcd_trail_in_order() {
    let receiver = Receiver::start(Answer::Ok);
    let etcd = Etcd::start();
    let mut project = Project::new("events-all");
    project.use_etcd(&etcd.url());
    let reserved = project.sim.create_reserved_ip();
    project.set("reserved_ip", Some(&reserved.ip.to_string()));
    project.set(
        "notify",
        Some(&format!("[{{url: \"{}\"}}]", receiver.url())),
    );
    // Two droplets off at once, one replacement an hour: one is held back.
    project.set("heal", Some("{max_share_per_hour: 20}"));
    let haproxy = project.start_haproxy();
    let proxy = project.sim.add_proxy("proxy-a", haproxy.frontend);
    project.set("metadata_url", Some(&proxy.metadata_url));

    project.run(&["create", "--count", "2"]).success();
    wait_until("HAProxy to serve", WAIT, || {
        http_get(haproxy.frontend, "/").is_ok()
    });
    let history_kinds = |project: &Project| {
        kinds(
            project
                .run(&["history", "-o", "json"])
                .success()
                .json()
                .as_array()
                .unwrap(),
        )
    };

    // Failover: elected, then the reserved IP moved here.
    let failover = project.spawn(&["failover"]);
    wait_until("the failover events", WAIT, || {
        history_kinds(&project).contains(&"failover.ip_moved".to_string())
    });
    failover.signal(libc::SIGTERM);
    failover.wait_within(WAIT);
    assert_eq!(project.sim.reserved_ip_holder(reserved.ip), Some(proxy.id));

    // A rollout of both droplets to a new image.
    project.set(
        "droplet_options",
        Some(
            "{hostname_prefix: auto-nginx, region: nyc3, size: s-1vcpu-1gb, image: debian-12-x64}",
        ),
    );
    project.run(&["rollout"]).success();

    // Load: autoscale scales out to its max.
    project.set(
        "autoscale",
        Some("{min: 1, max: 3, cpu_percent: 50, cooldown: 1h}"),
    );
    for droplet in project.sim.droplets() {
        project.sim.set_cpu(droplet.id, 90.0);
    }
    project.run(&["autoscale", "--once"]).success();

    project.omit("autoscale");

    // Two droplets off: one replaced, one held back by the hourly limit.
    let pool: Vec<u64> = project
        .sim
        .droplets()
        .iter()
        .filter(|d| d.name.starts_with("auto-nginx"))
        .map(|d| d.id)
        .collect();
    assert_eq!(pool.len(), 3, "the pool autoscale grew");
    let off = [pool[0], pool[1]];
    for id in off {
        project.sim.set_power(id, false);
    }
    project.run(&["heal", "--once"]).success();

    // Someone destroys the droplet held back: reconcile fixes the inventory.
    project.sim.destroy_droplet(off[1]);
    project.run(&["reconcile", "--apply"]).success();

    // A change that fails.
    project.run(&["delete", "--id", "999999"]).fails(1, "");

    let sent = receiver.bodies();
    let history = project.run(&["history", "-o", "json"]).success().json();
    assert_eq!(
        history.as_array().unwrap(),
        &sent,
        "the hook saw the trail, in order"
    );
    let seen = kinds(&sent);
    for kind in [
        "droplet.created",
        "droplet.joined",
        "droplet.drained",
        "droplet.destroyed",
        "failover.elected",
        "failover.ip_moved",
        "rollout.step",
        "scale.decision",
        "heal.replaced",
        "heal.refused",
        "reconcile.fixed",
        "command.failed",
    ] {
        assert!(seen.iter().any(|k| k == kind), "no {kind} in {seen:?}");
    }
    let count = |kind: &str| seen.iter().filter(|k| *k == kind).count();
    // Once per change: the failover's two, one step per rolled droplet,
    // one decision, one heal, one refusal, one fix, and the failed delete.
    assert_eq!(
        (count("failover.elected"), count("failover.ip_moved")),
        (1, 1),
        "{seen:?}"
    );
    assert_eq!(count("rollout.step"), 2, "{seen:?}");
    assert_eq!(count("scale.decision"), 1, "{seen:?}");
    assert_eq!(
        (count("heal.replaced"), count("heal.refused")),
        (1, 1),
        "{seen:?}"
    );
    assert_eq!(count("reconcile.fixed"), 1, "{seen:?}");
    assert_eq!(count("command.failed"), 1, "{seen:?}");
    let ip_moved = sent
        .iter()
        .find(|e| e["kind"] == "failover.ip_moved")
        .unwrap();
    assert_eq!(ip_moved["droplets"], serde_json::json!([proxy.id]));
    let times: Vec<&str> = sent.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "in order");
}
