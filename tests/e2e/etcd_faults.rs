//! Faults around the etcd inventory: a run that waits beyond the lease its
//! lock was granted with, a lock lost from outside, a `watch` whose connection goes half-open,
//! a HAProxy update that fails for a while, an etcd rebuilt empty. Also that
//! people's comments in the inventory file survive doproxy's rewrites. Real
//! etcd, real binary, simulator, `haproxy -c`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use doproxy_sim::{SimConfig, SimGuard, Simulator};

use crate::etcd_server::Cluster;
use crate::etcd_server::Etcd;
use crate::support::{
    Gate, Project, Relay, Run, SIGNAL_NOTICED, Spawned, spawn, terminate, wait_until,
};

fn sim() -> Arc<SimGuard> {
    Arc::new(Simulator::spawn(SimConfig {
        boot_delay: Duration::from_millis(300),
        ..SimConfig::default()
    }))
}

/// A proxy folder keeping its inventory in etcd at `endpoint`.
fn etcd_project(label: &str, sim: Arc<SimGuard>, endpoint: &str) -> Project {
    let mut project = Project::with_sim(label, sim);
    project.use_etcd(endpoint);
    project
}

/// The droplet ID in a `Success: <id> created ...` line.
fn created_id(run: &Run) -> u64 {
    run.stdout.split(' ').nth(1).unwrap().parse().unwrap()
}

fn server(id: u64) -> String {
    format!("www-{id} ")
}

#[test]
fn a_delete_waiting_beyond_its_lease_keeps_the_etcd_lock() {
    let etcd = Etcd::start();
    let project = etcd_project("lock-wait", sim(), &etcd.url());
    project.run(&["create", "--count", "2"]).success();
    let ids: Vec<u64> = project.ids().into_iter().collect();

    // Another HAProxy update on this machine holds the update lock; the
    // delete holds the etcd lock meanwhile, and waits until its lease has
    // been renewed: it keeps the lock past the TTL it was granted with.
    let holder = FlockHolder::hold(&project.path("haproxy.cfg.lock"), project.dir.path());
    let delete = project.spawn(&["delete", "0"]);
    delete.wait_for_stderr("waiting for another doproxy run", 1);
    etcd.wait_for_a_lease_renewal();
    holder.release();

    let run = delete.wait().success();
    assert_eq!(
        run.stdout,
        format!("Success: {} deleted and removed from backend.\n", ids[0])
    );
    let left: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    assert_eq!(left, [ids[1]]);
    assert_eq!(project.ids().into_iter().collect::<Vec<_>>(), [ids[1]]);
}

#[test]
fn a_delete_that_lost_its_etcd_lock_destroys_nothing() {
    let etcd = Etcd::start();
    let mut project = etcd_project("lock-lost", sim(), &etcd.url());
    project.run(&["create", "--count", "2"]).success();
    let ids = project.ids();

    // The HAProxy check waits for the test between the delete's inventory
    // write and its destroys; meanwhile the lock's lease is revoked.
    let gate = Gate::new(project.dir.path(), "check");
    project.set(
        "haproxy_check_command",
        Some(&format!("'{}; haproxy -c -f {{file}}'", gate.shell())),
    );
    let delete = project.spawn(&["delete", "0"]);
    gate.wait_reached(Duration::from_secs(30));
    assert!(etcd.revoke_leases() >= 1, "the delete holds a lease");
    gate.open();

    let run = delete.wait();
    let deletes: Vec<String> = project
        .changing_requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes, Vec::<String>::new(), "no droplet may be destroyed");
    assert_eq!(project.sim.droplets().len(), 2);
    let run = run.fails(1, "lost the etcd lock");
    assert!(
        run.stderr
            .contains("nothing more was changed; run doproxy reconcile"),
        "{}",
        run.stderr
    );
    // The inventory still lists both: the one being deleted as destroying,
    // which the next delete or reconcile --apply finishes.
    assert_eq!(project.ids(), ids);
    let drift = project.run(&["reconcile"]).success().stdout;
    assert!(drift.contains("unfinished"), "{drift}");
}

#[test]
fn watch_catches_up_when_its_connection_goes_half_open() {
    let etcd = Etcd::start();
    let relay = Relay::start(etcd.addr());
    let sim = sim();
    let direct = etcd_project("half-open-a", sim.clone(), &etcd.url());
    let behind = etcd_project("half-open-b", sim, &relay.url());
    let watch = Watching::start(&behind);
    wait_until("watch to start", Duration::from_secs(15), || {
        behind.path("live/haproxy.cfg").exists()
    });
    let first = created_id(&direct.run(&["create"]).success());
    wait_until(
        "watch to add the first droplet",
        Duration::from_secs(15),
        || behind.live_config().contains(&server(first)),
    );

    // Every connection open now goes silent: no data, no FIN, no RST.
    relay.stall();
    let second = created_id(&direct.run(&["create"]).success());
    wait_until(
        "watch to add the second droplet despite its stalled connection",
        Duration::from_secs(30),
        || behind.live_config().contains(&server(second)),
    );
    let log = watch.stop();
    assert!(
        log.contains("without the etcd watch reporting it"),
        "watch should say it missed a change: {log}"
    );
}

#[test]
fn watch_retries_a_failed_haproxy_update_until_it_works() {
    let etcd = Etcd::start();
    let sim = sim();
    let other = etcd_project("retry-a", sim.clone(), &etcd.url());
    let id = created_id(&other.run(&["create"]).success());

    // This proxy's first three reloads fail, as while HAProxy restarts.
    let mut proxy = etcd_project("retry-b", sim, &etcd.url());
    let attempts = proxy.path("reload-attempts");
    proxy.set(
        "haproxy_reload_command",
        Some(&format!(
            "'echo x >> {0}; [ $(wc -l < {0}) -gt 3 ]'",
            attempts.display()
        )),
    );
    let tries = || {
        fs::read_to_string(&attempts)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let watch = Watching::start(&proxy);
    // A failed reload puts the old config back; after the fourth the new
    // one stays.
    wait_until(
        "watch to get its HAProxy update through",
        Duration::from_secs(30),
        || tries() >= 4 && proxy.live_config().contains(&server(id)),
    );
    let log = watch.stop();
    assert_eq!(tries(), 4, "three failed reloads, then one that worked");
    assert!(log.contains("trying again"), "{log}");
}

#[test]
fn watch_finishes_the_update_under_way_when_stopped() {
    let etcd = Etcd::start();
    let sim = sim();
    let other = etcd_project("stop-mid-a", sim.clone(), &etcd.url());
    let id = created_id(&other.run(&["create"]).success());

    // The reload waits for the test, so SIGTERM arrives in the middle of it.
    let mut proxy = etcd_project("stop-mid-b", sim, &etcd.url());
    let gate = Gate::new(proxy.dir.path(), "reload");
    proxy.set(
        "haproxy_reload_command",
        Some(&format!("'{}'", gate.shell())),
    );
    let watch = Watching::start(&proxy);
    gate.wait_reached(Duration::from_secs(15));
    watch.terminate();
    wait_until("watch to notice SIGTERM", Duration::from_secs(15), || {
        watch.log().contains(SIGNAL_NOTICED)
    });
    gate.open();
    // It stops cleanly, and only after the update it was making went live.
    watch.finish();
    assert!(proxy.live_config().contains(&server(id)));
}

#[test]
fn watch_does_not_empty_haproxy_when_etcd_comes_back_empty() {
    let mut etcd = Etcd::start();
    let project = etcd_project("etcd-lost", sim(), &etcd.url());
    project.run(&["create", "--count", "2"]).success();
    let old = project.ids();
    let watch = Watching::start(&project);
    wait_until("watch to follow etcd", Duration::from_secs(15), || {
        watch.log().contains("watching etcd")
    });

    etcd.rebuild_empty();
    wait_until(
        "watch to notice etcd was rebuilt",
        Duration::from_secs(30),
        || watch.log().contains("was rebuilt or restored"),
    );
    // Its next update says why it leaves HAProxy alone.
    wait_until(
        "watch to refuse emptying HAProxy",
        Duration::from_secs(15),
        || watch.log().contains("left alone"),
    );
    let live = project.live_config();
    for &id in &old {
        assert!(live.contains(&server(id)), "HAProxy lost {id}:\n{live}");
    }

    // The rebuilt etcd is followed: a droplet recorded there goes live.
    let new = created_id(&project.run(&["create"]).success());
    wait_until(
        "watch to follow the rebuilt etcd",
        Duration::from_secs(30),
        || {
            let live = project.live_config();
            live.contains(&server(new)) && !old.iter().any(|&id| live.contains(&server(id)))
        },
    );
    watch.stop();
}

#[test]
fn a_watch_started_on_an_empty_etcd_leaves_haproxy_its_servers() {
    let etcd = Etcd::start();
    let mut project = etcd_project("start-empty", sim(), &etcd.url());
    project.set("inventory_backend", None);
    project.omit("etcd_endpoints");
    project.run(&["create"]).success();
    let live = project.live_config();
    assert!(live.contains("server www-"), "{live}");

    // The proxy moves to an etcd that holds nothing (say, rebuilt empty).
    project.use_etcd(&etcd.url());
    let watch = Watching::start(&project);
    wait_until(
        "watch to refuse emptying HAProxy",
        Duration::from_secs(15),
        || watch.log().contains("left alone"),
    );
    assert_eq!(project.live_config(), live);
    watch.stop();
}

#[test]
fn comments_in_the_inventory_file_survive_a_delete() {
    let project = Project::new("comments");
    project.run(&["create", "--count", "3"]).success();
    let ids: Vec<String> = project.ids().iter().map(u64::to_string).collect();
    let mut lines: Vec<String> = project.inventory().lines().map(String::from).collect();
    lines.insert(1, "# shop.example.com web tier".to_string());
    lines.insert(3, "# added for the sale".to_string());
    lines.insert(5, "# old kernel, replace soon".to_string());
    lines.push("# end of pool".to_string());
    fs::write(project.path("inventory"), lines.join("\n") + "\n").unwrap();

    project.run(&["delete", "--id", &ids[1]]).success();
    // Comments as they are, droplets by their ID.
    let shape: Vec<String> = project
        .inventory()
        .lines()
        .skip(1)
        .map(|line| match line.starts_with('#') {
            true => line.to_string(),
            false => line.split(' ').next().unwrap().to_string(),
        })
        .collect();
    assert_eq!(
        shape,
        [
            "# shop.example.com web tier",
            &ids[0],
            "# added for the sale",
            "# old kernel, replace soon",
            &ids[2],
            "# end of pool",
        ]
    );
}

#[test]
fn a_member_cut_off_from_its_cluster_is_never_trusted() {
    let mut cluster = Cluster::start();
    let project = etcd_project("no-leader", sim(), &cluster.url(2));
    project.run(&["create"]).success();
    let watch = Watching::start(&project);
    wait_until("watch to follow etcd", Duration::from_secs(10), || {
        watch.log().contains("watching ")
    });

    // Member 2 alone has no leader: it must say so at once, not answer
    // from what it last knew, nor time out as if etcd were slow.
    cluster.kill(0);
    cluster.kill(1);
    wait_until(
        "member 2 to lose its leader",
        Duration::from_secs(10),
        || !cluster.has_leader(2),
    );
    let print = project.run(&["print"]);
    assert_eq!(print.code, 1, "{}", print.stdout);
    assert!(print.stderr.contains("no leader"), "{}", print.stderr);
    wait_until("watch to notice", Duration::from_secs(10), || {
        watch.log().contains("no leader")
    });
}

#[test]
fn a_member_without_a_leader_is_passed_over_for_the_next_endpoint() {
    let mut cluster = Cluster::start();
    cluster.kill(0);
    cluster.kill(1);
    wait_until(
        "member 2 to lose its leader",
        Duration::from_secs(10),
        || !cluster.has_leader(2),
    );
    // A healthy etcd listed after it stands for the majority a partition
    // leaves on the other side.
    let healthy = Etcd::start();
    let mut project = Project::new("pass-over");
    project.use_etcd(&format!("{}, {}", cluster.url(2), healthy.url()));
    let create = project.run(&["create"]).success();
    assert!(
        create
            .stderr
            .contains(&format!("has no leader; trying {}", healthy.url())),
        "{}",
        create.stderr
    );
    assert_eq!(project.run(&["print"]).success().stdout.lines().count(), 1);
    let watch = Watching::start(&project);
    wait_until(
        "watch to follow the healthy endpoint",
        Duration::from_secs(10),
        || watch.log().contains("watching "),
    );
    watch.stop();
}

/// `doproxy watch` in the background, its stderr read while it runs.
struct Watching {
    process: Spawned,
}

impl Watching {
    fn start(project: &Project) -> Watching {
        Watching {
            process: project.spawn(&["watch", "--quiet-period", "200ms"]),
        }
    }

    fn log(&self) -> String {
        self.process.stderr_so_far()
    }

    /// Sends SIGTERM, as `systemctl stop` does.
    fn terminate(&self) {
        terminate(&self.process);
    }

    /// Stops it as `systemctl stop` does and checks that it stopped
    /// cleanly; returns what it logged.
    fn stop(self) -> String {
        self.terminate();
        self.finish()
    }

    /// Waits for it to exit after `terminate` and checks that it stopped
    /// cleanly; returns what it logged.
    fn finish(self) -> String {
        let run = self.process.wait();
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stderr.contains("stopped by SIGTERM"), "{}", run.stderr);
        run.stderr
    }
}

/// Holds an flock on a file from another process (util-linux `flock`), as
/// another doproxy run would, until released or dropped.
struct FlockHolder {
    process: Spawned,
    gate: Gate,
}

impl FlockHolder {
    fn hold(lock: &Path, scratch: &Path) -> FlockHolder {
        let gate = Gate::new(scratch, "flock");
        let process = spawn(
            Command::new("flock")
                .arg(lock)
                .args(["sh", "-c", &gate.shell()])
                .stdin(Stdio::null()),
        );
        gate.wait_reached(Duration::from_secs(10));
        FlockHolder { process, gate }
    }

    fn release(self) {
        self.gate.open();
        self.process.wait().success();
    }
}
