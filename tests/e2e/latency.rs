//! Latency-based scaling: droplets that answer slowly through a real
//! HAProxy (its `show stat` rtime) scale the pool out; fast ones hold it.

use std::time::Duration;

use crate::support::{Project, Traffic, http_get, wait_until};

#[test]
fn slow_answers_scale_the_pool_out_and_fast_ones_hold_it() {
    let mut project = Project::new("latency");
    project.set(
        "autoscale",
        Some("{min: 1, max: 3, response_time_ms: 100, cooldown: 1h}"),
    );
    let haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    wait_until("HAProxy to serve", Duration::from_secs(10), || {
        http_get(haproxy.frontend, "/").is_ok()
    });

    // Fast answers: well under the target. (rtime averages a server's last
    // 1,024 requests, so a few fast ones leave room for the slow ones.)
    for _ in 0..10 {
        http_get(haproxy.frontend, "/").unwrap();
    }
    let held = project
        .run(&["autoscale", "--once", "-o", "json"])
        .success()
        .json();
    assert_eq!(held["decision"]["action"], "hold", "{held}");
    let reading = &held["decision"]["readings"][0];
    assert_eq!(reading["metric"], "response_time_ms");
    assert!(reading["value"].as_f64().unwrap() < 100.0, "{reading}");

    // Slow answers (400 ms each), still coming in while autoscale reads:
    // HAProxy's average response time climbs past the target, and the pool
    // grows to ceil(1 × ~300 / 100), within max 3.
    let slow = Traffic::start(haproxy.frontend, 2, "/slow?ms=400");
    wait_until(
        "slow requests to be answered",
        Duration::from_secs(30),
        || {
            slow.record()
                .answered_by(&project.page(project.sim.droplets()[0].id))
                >= 30
        },
    );
    let grown = project
        .run(&["autoscale", "--once", "-o", "json"])
        .success()
        .json();
    slow.finish_without_failures();
    let value = grown["decision"]["readings"][0]["value"].as_f64().unwrap();
    assert!(value >= 200.0, "{grown}");
    assert_eq!(grown["decision"]["action"], "scale_out", "{grown}");
    assert_eq!(grown["decision"]["target"], 3, "{grown}");
    assert_eq!(project.sim.droplets().len(), 3);
}
