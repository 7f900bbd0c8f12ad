//! Metrics: `watch` and `autoscale` serve Prometheus metrics on loopback,
//! one-shot commands add theirs up in a node-exporter textfile, and the
//! built-in template can turn on HAProxy's own exporter. Every scrape is
//! checked by Prometheus' own checker (`promtool check metrics`), which
//! refuses anything malformed, and doproxy's own also anything against
//! Prometheus' conventions.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime};

use crate::etcd_server::Etcd;
use crate::support::{Lint, Metrics, Project, Spawned, free_port, http_get, terminate, wait_until};
use doproxy_sim::Faults;

/// GET /metrics, checked as `lint` says and read (HAProxy's exporter
/// answers in chunks); None until something answers 200.
fn scrape_as(address: SocketAddr, lint: Lint) -> Option<Metrics> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status == "200").then(|| Metrics::check(&body, lint))
}

/// doproxy's own /metrics, checked strictly; None until it answers 200.
fn scrape(address: SocketAddr) -> Option<Metrics> {
    scrape_as(address, Lint::Strict)
}

/// The body of a chunked HTTP answer.
fn dechunk(mut chunked: &str) -> String {
    let mut body = String::new();
    while let Some((size, rest)) = chunked.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&rest[..size]);
        chunked = &rest[size + 2..];
    }
    body
}

/// Starts `start(address)` on a free loopback address and waits until it
/// serves metrics there; one that exits first (someone took the port
/// meanwhile) is started again on another.
#[track_caller]
fn serving_metrics(mut start: impl FnMut(SocketAddr) -> Spawned) -> (Spawned, SocketAddr) {
    let mut said = String::new();
    for _ in 0..3 {
        let address = free_port();
        let mut process = start(address);
        let mut exited = false;
        wait_until("metrics to be served", Duration::from_secs(15), || {
            exited = !process.is_running();
            exited || scrape(address).is_some()
        });
        if !exited {
            return (process, address);
        }
        said = process.stderr_so_far();
    }
    panic!("nothing served metrics on three free ports:\n{said}");
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn watch_serves_metrics_on_loopback_until_stopped() {
    let etcd = Etcd::start();
    let sim = std::sync::Arc::new(doproxy_sim::Simulator::spawn(doproxy_sim::SimConfig {
        boot_delay: Duration::from_millis(300),
        ..doproxy_sim::SimConfig::default()
    }));
    let proxy = |name: &str| {
        let mut project = Project::with_sim(&format!("metrics-watch-{name}"), sim.clone());
        project.use_etcd(&etcd.url());
        project
    };
    let (a, mut b) = (proxy("a"), proxy("b"));
    let _haproxy = b.start_haproxy();
    let (watch, address) = serving_metrics(|address| {
        b.set("metrics_listen", Some(&address.to_string()));
        b.spawn(&["watch", "--quiet-period", "200ms"])
    });
    a.run(&["create", "--count", "2"]).success();
    let ids: Vec<u64> = a.ids().into_iter().collect();
    a.run(&["delete", "--id", &ids[0].to_string()]).success();
    wait_until(
        "watch to count the pool and its update",
        Duration::from_secs(15),
        || {
            let scrape = scrape(address).unwrap();
            scrape.value("doproxy_pool_droplets", &[("status", "active")]) == Some(1.0)
                && scrape.sum("doproxy_pool_droplets") == 1.0
                && scrape.value("doproxy_haproxy_runtime_updates_total", &[]) >= Some(1.0)
        },
    );
    let scrape = scrape(address).unwrap();
    assert_eq!(
        scrape.value("doproxy_haproxy_reloads_total", &[]),
        Some(0.0)
    );
    assert_eq!(scrape.kind("doproxy_haproxy_reloads_total"), "counter");
    assert_eq!(scrape.kind("doproxy_pool_droplets"), "gauge");
    let reconciled = scrape
        .value("doproxy_last_reconcile_success_timestamp_seconds", &[])
        .unwrap();
    assert!((now() - reconciled).abs() < 120.0, "{reconciled}");
    assert_eq!(
        scrape.value(
            "doproxy_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Only /metrics is served.
    let other = http_get(address, "/").unwrap_err();
    assert!(other.starts_with("status 404"), "{other}");

    // SIGTERM stops watch, and its endpoint with it.
    terminate(&watch);
    let run = watch.wait();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(http_get(address, "/metrics").is_err());
}

#[test]
fn autoscale_serves_its_decisions_and_a_remote_address_is_refused() {
    let mut project = Project::new("metrics-autoscale");
    project.set(
        "autoscale",
        Some("{min: 1, max: 3, sessions_per_server: 1000, interval: 300ms}"),
    );
    let _haproxy = project.start_haproxy();
    project.run(&["create"]).success();

    // The endpoint has no authentication: not on an address others reach.
    project.set("metrics_listen", Some("0.0.0.0:9477"));
    project
        .run(&["autoscale"])
        .fails(1, "metrics_listen 0.0.0.0:9477 is not a loopback address");
    project.set("metrics_listen", None);

    let (_autoscale, address) = serving_metrics(|address| {
        project.spawn(&["autoscale", "--metrics-listen", &address.to_string()])
    });
    wait_until("two decisions", Duration::from_secs(20), || {
        scrape(address).is_some_and(|s| {
            s.value("doproxy_autoscale_decisions_total", &[("action", "hold")])
                .is_some_and(|n| n >= 2.0)
        })
    });
    let scrape = scrape(address).unwrap();
    for gauge in [
        "doproxy_autoscale_current_droplets",
        "doproxy_autoscale_desired_droplets",
        "doproxy_autoscale_target_droplets",
    ] {
        assert_eq!(scrape.value(gauge, &[]), Some(1.0), "{gauge}");
        assert_eq!(scrape.kind(gauge), "gauge");
    }
    assert_eq!(
        scrape.value("doproxy_pool_droplets", &[("status", "active")]),
        Some(1.0)
    );
    // Every decision is recorded under the inventory lock.
    assert!(scrape.value("doproxy_lock_waits_total", &[]).unwrap() >= 2.0);
    assert!(
        scrape
            .value("doproxy_lock_wait_seconds_total", &[])
            .unwrap()
            >= 0.0
    );
}

#[test]
fn one_shot_commands_add_up_their_metrics_in_a_textfile() {
    let mut project = Project::new("metrics-textfile");
    let _haproxy = project.start_haproxy();
    fs::create_dir_all(project.path("textfile")).unwrap();
    project.set("metrics_textfile", Some("textfile/doproxy.prom"));
    let textfile = || {
        let text = fs::read_to_string(project.path("textfile/doproxy.prom")).unwrap();
        Metrics::check(&text, Lint::Strict)
    };

    project.run(&["create", "--count", "2"]).success();
    let after_create = textfile();
    let value = |s: &Metrics, name: &str, labels: &[(&str, &str)]| s.value(name, labels);
    assert_eq!(
        value(
            &after_create,
            "doproxy_api_requests_total",
            &[("method", "POST"), ("status", "202")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after_create,
            "doproxy_scale_events_total",
            &[("direction", "out")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after_create,
            "doproxy_scaled_droplets_total",
            &[("direction", "out")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&after_create, "doproxy_haproxy_runtime_updates_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&after_create, "doproxy_haproxy_reloads_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &after_create,
            "doproxy_pool_droplets",
            &[("status", "active")]
        ),
        Some(2.0)
    );
    let gets = value(
        &after_create,
        "doproxy_api_requests_total",
        &[("method", "GET"), ("status", "200")],
    )
    .unwrap();
    assert!(gets >= 1.0);

    // A delete whose first DELETE fails: it is retried, and every count of
    // the create is still there, added to.
    project.sim.set_faults(Faults {
        fail_deletes: 1,
        ..Faults::default()
    });
    project.run(&["delete", "0"]).success();
    let after_delete = textfile();
    assert_eq!(
        value(
            &after_delete,
            "doproxy_api_requests_total",
            &[("method", "POST"), ("status", "202")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after_delete,
            "doproxy_api_requests_total",
            &[("method", "DELETE"), ("status", "500")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after_delete,
            "doproxy_api_requests_total",
            &[("method", "DELETE"), ("status", "204")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after_delete,
            "doproxy_api_errors_total",
            &[("status", "500")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&after_delete, "doproxy_api_retries_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after_delete,
            "doproxy_scale_events_total",
            &[("direction", "in")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after_delete,
            "doproxy_scale_events_total",
            &[("direction", "out")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&after_delete, "doproxy_haproxy_runtime_updates_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &after_delete,
            "doproxy_pool_droplets",
            &[("status", "active")]
        ),
        Some(1.0)
    );
    assert!(
        value(&after_delete, "doproxy_lock_waits_total", &[]).unwrap()
            > value(&after_create, "doproxy_lock_waits_total", &[]).unwrap()
    );
    // Replaced atomically: nothing but the file (and its lock) in the folder.
    let mut names: Vec<String> = fs::read_dir(project.path("textfile"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["doproxy.prom", "doproxy.prom.lock"]);

    // Read-only commands leave it alone.
    let before = fs::read_to_string(project.path("textfile/doproxy.prom")).unwrap();
    project.run(&["print"]).success();
    assert_eq!(
        fs::read_to_string(project.path("textfile/doproxy.prom")).unwrap(),
        before
    );
}

#[test]
fn the_built_in_template_can_serve_haproxys_own_exporter() {
    let mut project = Project::new("metrics-haproxy");
    let stats = free_port();
    project.set("haproxy_stats_bind", Some(&stats.to_string()));
    let _haproxy = project.start_haproxy();
    project.run(&["create", "--count", "2"]).success();
    wait_until(
        "HAProxy's exporter to see both servers",
        Duration::from_secs(15),
        || {
            scrape_as(stats, Lint::ParseOnly).is_some_and(|s| {
                s.value(
                    "haproxy_backend_active_servers",
                    &[("proxy", "www-backend")],
                ) == Some(2.0)
            })
        },
    );
    assert!(http_get(stats, "/stats").is_ok());
}

#[test]
fn the_metrics_check_refuses_what_prometheus_would_and_reads_labels_whole() {
    let refused = |text: &'static str, lint: Lint| {
        std::panic::catch_unwind(|| Metrics::check(text, lint)).is_err()
    };
    let conventional = "# HELP doproxy_x_total X.\n# TYPE doproxy_x_total counter\n";
    // Malformed: refused however lenient.
    for lint in [Lint::Strict, Lint::ParseOnly] {
        assert!(refused("doproxy_x_total{a=1} 1\n", lint));
        assert!(refused("doproxy_x_total one\n", lint));
    }
    // A counter without HELP or `_total`: only doproxy's own is held to it.
    assert!(refused(
        "# TYPE doproxy_x counter\ndoproxy_x 1\n",
        Lint::Strict
    ));
    assert!(!refused(
        "# TYPE doproxy_x counter\ndoproxy_x 1\n",
        Lint::ParseOnly
    ));

    let text = format!(
        "{conventional}doproxy_x_total{{path=\"/a,b\\\"c\\\\d\\ne\",code=\"200\"}} 3 1700000000000\n"
    );
    let metrics = Metrics::check(&text, Lint::Strict);
    assert_eq!(metrics.kind("doproxy_x_total"), "counter");
    assert_eq!(
        metrics.value(
            "doproxy_x_total",
            &[("code", "200"), ("path", "/a,b\"c\\d\ne")]
        ),
        Some(3.0)
    );
    assert_eq!(metrics.value("doproxy_x_total", &[("code", "200")]), None);
}
