//! The etcd store itself: every lock is given back as soon as a command is
//! done with it, so proxies take turns without waiting out a lease. Real
//! etcd, the simulator, the real binary.

use std::fs;
use std::time::Duration;

use crate::etcd_server::Etcd;
use crate::support::{Run, two_proxies, wait_until};

/// The seconds a run spent waiting for the inventory lock, from the
/// metrics it left in its textfile.
fn lock_wait_seconds(textfile: &str) -> f64 {
    textfile
        .lines()
        .find_map(|line| line.strip_prefix("doproxy_lock_wait_seconds_total "))
        .unwrap_or_else(|| panic!("no lock wait in:\n{textfile}"))
        .parse()
        .unwrap()
}

#[test]
fn a_create_right_after_another_proxys_scale_in_takes_the_lock_at_once() {
    let etcd = Etcd::start();
    let (mut a, mut b) = two_proxies("lock-release", &etcd);
    a.set(
        "autoscale",
        Some("{min: 1, max: 2, cpu_percent: 50, cooldown: 0s}"),
    );
    a.run(&["create", "--count", "2"]).success();
    for droplet in a.sim.droplets() {
        a.sim.set_cpu(droplet.id, 5.0);
    }
    fs::create_dir_all(b.path("textfile")).unwrap();
    b.set("metrics_textfile", Some("textfile/doproxy.prom"));

    // A scales in (a delete, then it records its decision under the lock
    // again); B creates the moment A's delete is through.
    let scale_in = a.spawn(&["autoscale", "--once"]);
    wait_until("A to destroy a droplet", Duration::from_secs(30), || {
        a.sim.droplets().len() == 1
    });
    let create = b.run(&["create"]).success();
    let scale_in = Run::wait(scale_in).success();
    assert!(
        scale_in.stdout.contains("scale_in 2 -> 1"),
        "{}",
        scale_in.stdout
    );
    let waited = lock_wait_seconds(&fs::read_to_string(b.path("textfile/doproxy.prom")).unwrap());
    eprintln!("lock wait of a create right after a scale-in on another proxy: {waited:.2} s");
    assert!(
        waited < 1.0,
        "B waited {waited:.1} s for the lock A's scale-in left behind:\n{}",
        create.stderr
    );
    assert_eq!(a.ids().len(), 2);
}
