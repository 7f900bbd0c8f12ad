//! Autoscale: load through a real HAProxy grows the pool, quiet shrinks it
//! after the cooldown (draining each droplet) without a failed request; CPU
//! from the simulated Monitoring API drives decisions; every decision is
//! recorded.

use std::time::Duration;

use crate::support::{Project, Traffic, http_get, wait_until};

fn servers(project: &Project) -> usize {
    project.live_config().matches("    server www-").count()
}

#[test]
fn load_grows_the_pool_and_quiet_shrinks_it_after_the_cooldown() {
    let mut project = Project::new("autoscale");
    project.set(
        "autoscale",
        Some("{min: 1, max: 3, sessions_per_server: 2, cooldown: 2s, interval: 300ms}"),
    );
    let haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    wait_until("HAProxy to serve", Duration::from_secs(10), || {
        http_get(haproxy.frontend, "/").is_ok()
    });

    // Six clients each keeping a slow request open: 6 sessions on 1 server,
    // 3 × 2 wanted.
    let first = project.sim.droplets()[0].id;
    let busy = Traffic::start(haproxy.frontend, 6, "/slow?ms=300");
    let autoscale = project.background(&["autoscale"]);
    wait_until("the pool to grow to 3", Duration::from_secs(30), || {
        servers(&project) == 3
    });
    let busy = busy.finish();
    let added: Vec<String> = project
        .sim
        .droplets()
        .iter()
        .filter(|d| d.id != first)
        .map(|d| project.page(d.id))
        .collect();

    // Slow requests while it shrinks, one step per cooldown, draining each:
    // a droplet destroyed before its requests end fails them.
    let light = Traffic::start(haproxy.frontend, 2, "/slow?ms=1000");
    wait_until("the pool to shrink to 1", Duration::from_secs(30), || {
        servers(&project) == 1 && project.sim.droplets().len() == 1
    });
    let light = light.finish();
    busy.assert_no_failure();
    light.assert_no_failure();
    // The load reached the droplets autoscale added before they left.
    assert_eq!(added.len(), 2);
    light.assert_each_answered(&added, 1);

    let scale_ins = || {
        let history = project
            .run(&["autoscale", "--history", "-o", "json"])
            .success()
            .json();
        history
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "scale_in")
            .map(|r| {
                (
                    r["current"].as_u64().unwrap(),
                    r["target"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    wait_until(
        "the last decision to be recorded",
        Duration::from_secs(10),
        || scale_ins().len() == 2,
    );
    drop(autoscale);
    assert_eq!(scale_ins(), [(3, 2), (2, 1)], "one step at a time");
    let history = project
        .run(&["autoscale", "--history", "-o", "json"])
        .success()
        .json();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "scale_out")
    );
}

#[test]
fn cpu_from_monitoring_drives_a_scale_out_and_dry_runs_change_nothing() {
    let mut project = Project::new("cpu");
    project.set(
        "autoscale",
        Some("{min: 1, max: 4, cpu_percent: 50, cooldown: 1h}"),
    );
    project.run(&["create"]).success();
    let id = project.sim.droplets()[0].id;
    project.sim.set_cpu(id, 90.0);

    let plan = project
        .run(&["autoscale", "--dry-run", "-o", "json"])
        .success()
        .json();
    assert_eq!(plan["decision"]["action"], "scale_out");
    assert_eq!(plan["decision"]["target"], 2, "ceil(1 × 90 / 50)");
    assert!((plan["decision"]["readings"][0]["value"].as_f64().unwrap() - 90.0).abs() < 1.0);
    assert_eq!(project.sim.droplets().len(), 1, "a dry run changes nothing");

    let run = project.run(&["autoscale", "--once"]).success();
    assert!(run.stdout.contains("scale_out 1 -> 2"), "{}", run.stdout);
    assert_eq!(project.sim.droplets().len(), 2);

    // Quiet now, but the cooldown holds the pool.
    for droplet in project.sim.droplets() {
        project.sim.set_cpu(droplet.id, 5.0);
    }
    let held = project.run(&["autoscale", "--once"]).success();
    assert!(held.stdout.contains("cooling down"), "{}", held.stdout);
    assert_eq!(project.sim.droplets().len(), 2);
    let history = project.run(&["autoscale", "--history"]).success();
    assert_eq!(history.stdout.lines().count(), 3);
}

#[test]
fn missing_metrics_never_shrink_the_pool() {
    let mut project = Project::new("blind");
    // Sessions come from HAProxy's admin socket, which is not configured.
    project.set(
        "autoscale",
        Some("{min: 1, max: 4, sessions_per_server: 10, cooldown: 0s}"),
    );
    project.run(&["create", "--count", "2"]).success();
    let run = project.run(&["autoscale", "--once"]).success();
    assert!(run.stdout.contains("hold 2 -> 2"), "{}", run.stdout);
    assert!(run.stdout.contains("haproxy_socket"), "{}", run.stdout);
    assert_eq!(project.sim.droplets().len(), 2);

    project.omit("autoscale");
    project
        .run(&["autoscale", "--once"])
        .fails(1, "no autoscale section");
}
