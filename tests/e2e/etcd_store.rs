//! The etcd store itself: every lock is given back as soon as a command is
//! done with it, so proxies take turns without waiting out a lease; a save
//! of any size takes effect whole or not at all, and inventories written
//! in the layout before generations still load. Real etcd, the simulator,
//! the real binary.

use std::fs;
use std::ops::Range;
use std::time::Duration;

use crate::etcd_server::Etcd;
use crate::support::{Lint, Metrics, Project, Relay, Run, two_proxies, wait_until};

/// The seconds a run spent waiting for the inventory lock, from the
/// metrics it left in its textfile.
#[track_caller]
fn lock_wait_seconds(textfile: &str) -> f64 {
    Metrics::check(textfile, Lint::Strict)
        .value("doproxy_lock_wait_seconds_total", &[])
        .unwrap_or_else(|| panic!("no lock wait in:\n{textfile}"))
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

/// Makes `project` a proxy of pool `pool`, its droplets named `<pool>-<n>`.
fn join_pool(project: &mut Project, pool: &str) {
    project.set("pool", Some(pool));
    project.set(
        "droplet_options",
        Some(&format!(
            "{{hostname_prefix: {pool}, region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}}"
        )),
    );
}

/// The names `print` lists.
fn names(project: &Project) -> Vec<String> {
    let json = project.run(&["print", "-o", "json"]).success().json();
    json.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_pools_on_one_etcd_never_share_keys_or_a_lock() {
    let etcd = Etcd::start();
    let (mut web, mut api) = two_proxies("own-prefix", &etcd);
    join_pool(&mut web, "web");
    join_pool(&mut api, "api");
    fs::create_dir_all(api.path("textfile")).unwrap();
    api.set("metrics_textfile", Some("textfile/doproxy.prom"));
    web.run(&["create"]).success();

    // api creates while web's create holds web's lock through slow API
    // calls: api does not wait for it.
    web.sim.set_latency(Duration::from_secs(2));
    let web_create = web.spawn(&["create"]);
    wait_until(
        "web's create to take its lock",
        Duration::from_secs(10),
        || !etcd.keys("/doproxy/doproxy:web/lock/").is_empty(),
    );
    api.run(&["create"]).success();
    let waited = lock_wait_seconds(&fs::read_to_string(api.path("textfile/doproxy.prom")).unwrap());
    assert!(waited < 1.0, "api waited {waited:.1} s for web's lock");
    Run::wait(web_create).success();
    web.sim.set_latency(Duration::ZERO);

    assert_eq!(names(&web), ["web-0", "web-1"]);
    assert_eq!(names(&api), ["api-0"]);
    let keys = etcd.keys("/");
    assert!(
        keys.iter()
            .all(|key| key.starts_with("/doproxy/doproxy:web/")
                || key.starts_with("/doproxy/doproxy:api/")),
        "{keys:#?}"
    );
    assert!(web.run(&["doctor"]).stdout.contains(&format!(
        "✓ inventory: etcd {} /doproxy/doproxy:web/ holds 2 droplet(s)",
        etcd.url()
    )));
}

#[test]
fn a_pool_left_under_the_shared_prefix_is_told_to_move_and_moves_whole() {
    let etcd = Etcd::start();
    let (mut web, mut api) = two_proxies("shared-prefix", &etcd);
    join_pool(&mut web, "web");
    join_pool(&mut api, "api");
    // Before each pool had its own prefix, both kept their droplets under
    // /doproxy/doproxy/; doctor flags the other pool's there.
    for project in [&mut web, &mut api] {
        project.set("etcd_prefix", Some("/doproxy/doproxy/"));
    }
    web.run(&["create", "--count", "2"]).success();
    api.run(&["create"]).success();
    let doctor = web.run(&["doctor"]).stdout;
    assert!(
        doctor.contains("✗ inventory: ")
            && doctor.contains(
                "/doproxy/doproxy/ holds 3 droplet(s), 1 of them not of pool doproxy:web (api-0)"
            ),
        "{doctor}"
    );

    // Upgraded to the default prefix, each pool's own: refused until moved,
    // with the way out in one line.
    for project in [&mut web, &mut api] {
        project.set("etcd_prefix", None);
    }
    let refused = web.run(&["create"]).fails(1, "doproxy inventory migrate");
    assert!(
        refused
            .stderr
            .contains("holds 2 droplet(s) of pool doproxy:web")
            && refused.stderr.contains("etcd_prefix: /doproxy/doproxy/"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        web.sim.droplets().len(),
        3,
        "a refused create created nothing"
    );
    // Nor do the pool's proxies elect a leader apart from the old version's.
    web.run(&["failover"]).fails(1, "doproxy inventory migrate");

    let moved = web.run(&["inventory", "migrate"]).success();
    assert_eq!(
        moved.stdout,
        "Moved 2 droplet(s) of pool doproxy:web from /doproxy/doproxy/ to /doproxy/doproxy:web/.\n"
    );
    assert_eq!(names(&web), ["web-0", "web-1"]);
    // The pool's trail moved with it, without the other pool's events.
    let created = web
        .run(&["history", "--kind", "droplet.created", "-o", "json"])
        .success()
        .json();
    let created = created.as_array().unwrap();
    assert!(
        created.iter().all(|event| event["pool"] == "doproxy:web"),
        "{created:?}"
    );
    let droplets: usize = created
        .iter()
        .map(|event| event["droplets"].as_array().unwrap().len())
        .sum();
    assert_eq!(droplets, 2, "{created:?}");
    api.run(&["print"])
        .fails(1, "holds 1 droplet(s) of pool doproxy:api");
    api.run(&["inventory", "migrate"]).success();
    assert_eq!(names(&api), ["api-0"]);
    assert_eq!(
        etcd.keys("/doproxy/doproxy/droplets/"),
        ["/doproxy/doproxy/droplets/current"],
        "the shared prefix is empty"
    );
    web.run(&["create"]).success();
    assert_eq!(names(&web), ["web-0", "web-1", "web-2"]);
    web.run(&["inventory", "migrate"])
        .fails(1, "holds no droplet of pool doproxy:web");
}

/// Inventory file lines for droplets `ids`, active, on loopback addresses
/// nothing listens on.
fn inventory_lines(ids: Range<u64>) -> String {
    ids.map(|id| {
        let (high, low) = (id / 250 % 250, id % 250 + 1);
        format!("{id} auto-nginx-{id} 127.250.{high}.{low} 127.251.{high}.{low} active -\n")
    })
    .collect()
}

fn servers(project: &Project) -> usize {
    project.live_config().matches("    server www-").count()
}

#[test]
fn a_big_save_cut_short_by_etcd_leaves_the_inventory_as_it_was() {
    let etcd = Etcd::start();
    let link = Relay::start(etcd.addr());
    let (mut a, mut b) = two_proxies("whole-save", &etcd);
    a.use_etcd(&link.url());
    for project in [&mut a, &mut b] {
        project.set("etcd_prefix", Some("/whole/"));
    }
    let watch_b = b.spawn(&["watch", "--quiet-period", "200ms"]);
    let (big, other) = (a.path("big"), a.path("other"));
    fs::write(&big, inventory_lines(1000..1150)).unwrap();
    fs::write(&other, inventory_lines(2000..2120)).unwrap();
    let (big, other) = (big.to_str().unwrap(), other.to_str().unwrap());

    // 150 droplets take two slices besides the lock's own transaction;
    // etcd goes away for A as the second slice is sent.
    link.die_at(TXN, 3);
    let cut = a.run(&["inventory", "import", big]);
    assert!(link.is_dead(), "the save ended before the fault: {cut:?}");
    assert_eq!(b.ids().len(), 0, "B sees part of a save that failed");
    cut.fails(1, "nothing was saved");

    // Back in touch (A's dead lock cleared), the same save goes through whole.
    link.heal();
    etcd.revoke_leases();
    a.run(&["inventory", "import", big]).success();
    assert_eq!(b.ids().len(), 150);
    wait_until(
        "B's watch to add 150 servers",
        Duration::from_secs(20),
        || servers(&b) == 150,
    );

    // A change of more than a transaction holds: another generation, then
    // one flip to it, and the old one is gone.
    a.run(&["inventory", "import", "--replace", other])
        .success();
    wait_until(
        "B's watch to switch to the other 120",
        Duration::from_secs(20),
        || servers(&b) == 120 && b.live_config().contains("www-2000 "),
    );
    let keys = etcd.keys("/whole/droplets/");
    assert_eq!(keys.len(), 121, "{keys:#?}");
    assert_eq!(keys[0], "/whole/droplets/current");
    assert!(keys[1..].iter().all(|k| k.starts_with("/whole/droplets/g")));

    // B's watch only ever installed whole inventories.
    let log = watch_b.stderr_so_far();
    let counts: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split("HAProxy reloaded with ").nth(1)?.split(' ').next())
        .collect();
    assert!(
        counts.iter().all(|n| ["0", "150", "120"].contains(n)),
        "B's HAProxy got a part of a save: {counts:?}\n{log}"
    );
}

#[test]
fn an_inventory_in_the_layout_before_generations_loads_and_moves_on_its_first_save() {
    let etcd = Etcd::start();
    let mut project = Project::new("old-layout");
    project.use_etcd(&etcd.url());
    project.set("etcd_prefix", Some("/old/"));
    for (n, id) in [(0, 101u64), (1, 102)] {
        etcd.put(
            &format!("/old/droplets/{id:020}"),
            &format!(
                r#"{{"id":{id},"name":"auto-nginx-{n}","private_ip":"127.250.0.{n}","public_ip":null,"status":"active","created_at":null}}"#
            ),
        );
    }
    let print = project.run(&["print"]).success().stdout;
    assert!(
        print.starts_with("0) auto-nginx-0  (pvt ip: 127.250.0.0, status: active, id: 101)\n"),
        "{print}"
    );
    assert_eq!(print.lines().count(), 2, "{print}");

    project.run(&["create"]).success();
    let new = project.sim.droplets()[0].id;
    assert_eq!(project.ids(), [101, 102, new].into_iter().collect());
    assert_eq!(
        etcd.keys("/old/droplets/"),
        [
            "/old/droplets/current".to_string(),
            "/old/droplets/g1/00000000000000000101".to_string(),
            "/old/droplets/g1/00000000000000000102".to_string(),
            format!("/old/droplets/g1/{new:020}"),
        ]
    );
}

/// How a transaction request starts on the wire.
const TXN: &[u8] = b"POST /v3/kv/txn ";
