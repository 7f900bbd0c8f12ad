//! HAProxy when things go wrong: commands that hang, an admin socket that
//! never answers, a run killed between installing a config and reloading, a
//! signal in the middle of a drain, an interrupted delete finished under
//! load, another pool's droplets under the same tag, and what doctor says
//! about all that. Real HAProxy, real etcd, the simulator.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::etcd_server::Etcd;
use crate::support::{
    Gate, InFlight, Project, Refusing, Run, SIGNAL_NOTICED, ServerStat, running_as_root,
    server_stat, show_stat, terminate, wait_until,
};

/// The ID in `Success: <id> created and added to backend.`
fn created_id(run: &Run) -> u64 {
    run.stdout
        .split(' ')
        .nth(1)
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no created ID in {:?}", run.stdout))
}

/// The servers the HAProxy behind `socket` runs in its backend (none
/// while the socket does not answer).
fn running(socket: &Path) -> Vec<ServerStat> {
    show_stat(socket).unwrap_or_default()
}

fn running_names(socket: &Path) -> BTreeSet<String> {
    running(socket).into_iter().map(|s| s.name).collect()
}

/// The value of `key` in the project's doproxy.yml.
fn setting(project: &Project, key: &str) -> String {
    fs::read_to_string(project.path("doproxy.yml"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} is not set"))
        .to_string()
}

/// The droplet IDs of the inventory file, in its order (the lines `print`
/// numbers).
fn inventory_ids(project: &Project) -> Vec<u64> {
    project
        .inventory()
        .lines()
        .filter_map(|line| line.split(' ').next()?.parse().ok())
        .collect()
}

/// Rewrites the status of droplet `id` in the inventory file, as a run cut
/// short after writing it would have left it.
fn set_status(project: &Project, id: u64, status: &str) {
    let inventory = project.inventory();
    let rewritten: Vec<String> = inventory
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(' ').collect();
            if fields[0] == id.to_string() {
                fields[4] = status;
            }
            fields.join(" ")
        })
        .collect();
    fs::write(project.path("inventory"), rewritten.join("\n") + "\n").unwrap();
}

/// How long requests that hold a drain open until the test signals the run
/// take: long enough for a loaded machine to get there, short enough not to
/// keep the test waiting for their answers long after.
const HOLDS_A_DRAIN_MS: u64 = 8_000;

/// `count` requests to `/slow?ms=<ms>` through `frontend`, in flight at
/// once. Keep `ms` under the template's `timeout server 30s`.
fn slow_requests(frontend: SocketAddr, count: usize, ms: u64) -> InFlight {
    let patience = Duration::from_millis(ms) + Duration::from_secs(60);
    InFlight::start(frontend, count, &format!("/slow?ms={ms}"), patience)
}

/// A unix socket that accepts every connection and then answers forever,
/// one byte at a time, never finishing: neither a read timeout nor EOF ever
/// comes. Stops, and its threads end, when dropped.
struct EndlessSocket {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EndlessSocket {
    fn start(path: &Path) -> EndlessSocket {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut answering = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let stopped = stopped.clone();
                answering.push(thread::spawn(move || {
                    stream.set_nonblocking(false).unwrap();
                    while !stopped.load(Ordering::Relaxed) && stream.write_all(b"#").is_ok() {
                        thread::sleep(Duration::from_millis(100));
                    }
                }));
            }
            for answer in answering {
                let _ = answer.join();
            }
        });
        EndlessSocket {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EndlessSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn hanging_haproxy_commands_are_killed_within_their_bound() {
    let mut project = Project::new("hung-commands");
    project.run(&["create"]).success();
    let live = project.live_config();

    // A reload that never ends: the whole command dies at the bound, the
    // live config is put back, and nothing is left running (the wait fails
    // if the run leaves anything behind).
    project.set("haproxy_reload_command", Some("'sleep 6071'"));
    project.set("haproxy_reload_timeout", Some("1s"));
    let run = project
        .spawn(&["create"])
        .wait_within(Duration::from_secs(60));
    run.fails(
        1,
        "haproxy_reload_command `sleep 6071` did not finish within 1s",
    );
    assert_eq!(
        project.live_config(),
        live,
        "the live config was not put back"
    );
    project.set("haproxy_reload_command", None);
    project.set("haproxy_reload_timeout", None);
    // The locks are free at once, and the droplet the run recorded joins.
    project
        .run(&["reconcile", "--apply", "--lock-timeout", "0s"])
        .success();
    assert_eq!(project.live_config().matches("server www-").count(), 2);

    // The same for a check that never ends; the live config is not touched,
    // and the check comes before the create: nothing is paid for.
    let live = project.live_config();
    let droplets = project.sim.droplets().len();
    project.set("haproxy_check_command", Some("'sleep 6072; true'"));
    project.set("haproxy_check_timeout", Some("1s"));
    let run = project
        .spawn(&["create"])
        .wait_within(Duration::from_secs(60));
    run.fails(
        1,
        "haproxy_check_command `sleep 6072; true` did not finish within 1s",
    );
    assert_eq!(project.live_config(), live);
    assert_eq!(project.sim.droplets().len(), droplets);
    project.set("haproxy_check_command", None);
    project.set("haproxy_check_timeout", None);
    project
        .run(&["reconcile", "--apply", "--lock-timeout", "0s"])
        .success();
    assert_eq!(project.live_config(), live);
}

#[test]
fn an_admin_socket_that_never_finishes_answering_cannot_hang_print_or_delete() {
    let mut project = Project::new("endless-socket");
    project.run(&["create", "--count", "2"]).success();

    // Nothing listens: JSON still lists the inventory, --health too, with
    // the states unknown; both say why.
    project.set("haproxy_socket", Some("admin.sock"));
    let json = project.run(&["print", "-o", "json"]).success();
    assert_eq!(json.json().as_array().unwrap().len(), 2);
    assert!(
        json.json()[0].get("haproxy_state").is_none(),
        "{}",
        json.stdout
    );
    assert!(
        json.stderr.contains("without HAProxy's view"),
        "{}",
        json.stderr
    );
    let health = project.run(&["print", "--health"]).success();
    assert_eq!(health.stdout.matches("haproxy: unknown)").count(), 2);
    assert!(
        health
            .stderr
            .contains("cannot talk to HAProxy's admin socket"),
        "{}",
        health.stderr
    );

    let _socket = EndlessSocket::start(&project.path("admin.sock"));
    project.set("haproxy_socket_timeout", Some("1s"));
    let bound = Duration::from_secs(60);
    let health = project
        .spawn(&["print", "--health"])
        .wait_within(bound)
        .success();
    assert!(
        health
            .stderr
            .contains("did not answer `show stat` within 1s"),
        "{}",
        health.stderr
    );
    let json = project
        .spawn(&["print", "-o", "json"])
        .wait_within(bound)
        .success();
    assert_eq!(json.json().as_array().unwrap().len(), 2);

    let inventory = project.inventory();
    project
        .spawn(&["delete", "0"])
        .wait_within(bound)
        .fails(1, "nothing was deleted");
    assert_eq!(project.inventory(), inventory);
    assert_eq!(project.sim.droplets().len(), 2);
}

#[test]
fn a_slow_check_command_does_not_cost_the_etcd_lock() {
    let etcd = Etcd::start();
    let mut project = Project::new("slow-check");
    project.use_etcd(&etcd.url());
    project.run(&["create", "--count", "2"]).success();
    // The check waits until the lock's lease has been renewed while it ran:
    // only a runtime that keeps renewing the lease while the check runs
    // still holds the lock afterwards, however long the check takes.
    let gate = Gate::new(project.dir.path(), "check");
    project.set(
        "haproxy_check_command",
        Some(&format!("'{}; true'", gate.shell())),
    );
    let delete = project.spawn(&["delete", "0"]);
    gate.wait_reached(Duration::from_secs(30));
    etcd.wait_for_a_lease_renewal();
    gate.open();
    delete.wait().success();
    assert_eq!(project.ids().len(), 1);
    assert_eq!(project.sim.droplets().len(), 1);
}

#[test]
fn a_run_killed_between_install_and_reload_is_caught_up() {
    let mut project = Project::new("install-not-load");
    // The reload path: a runtime update would never run the reload command.
    project.set("haproxy_runtime_updates", Some("false"));
    let haproxy = project.start_haproxy();
    let socket = haproxy.socket.clone();
    let reload = setting(&project, "haproxy_reload_command");
    let first = created_id(&project.run(&["create"]).success());

    // The reload command kills doproxy (sh's parent) just before reloading.
    let killed = |project: &mut Project, args: &[&str]| {
        project.set("haproxy_reload_command", Some("'kill -9 $PPID'"));
        let run = project.run(args);
        assert_eq!(run.code, -1, "not killed: {}", run.stderr);
        project.set("haproxy_reload_command", Some(&reload));
    };
    killed(&mut project, &["create"]);
    let second = *inventory_ids(&project).last().unwrap();
    assert!(
        project
            .live_config()
            .contains(&format!("server www-{second} "))
    );
    let before: BTreeSet<String> = [format!("www-{first}")].into();
    assert_eq!(running_names(&socket), before);

    // doctor and reconcile see it; reconcile --apply fixes it.
    let doctor = project.run(&["doctor"]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    assert!(
        doctor
            .stdout
            .contains("✗ live config: HAProxy has not loaded"),
        "{}",
        doctor.stdout
    );
    let drift = project.run(&["reconcile"]).success();
    assert!(
        drift.stdout.contains("haproxy: HAProxy has not loaded")
            && !drift.stdout.contains("No drift"),
        "{}",
        drift.stdout
    );
    project.run(&["reconcile", "--apply"]).success();
    let both: BTreeSet<String> = [format!("www-{first}"), format!("www-{second}")].into();
    assert_eq!(running_names(&socket), both);
    wait_until("both droplets to serve", Duration::from_secs(15), || {
        let pages: BTreeSet<String> = haproxy.get_many(6).into_iter().flatten().collect();
        pages.contains(&project.page(first)) && pages.contains(&project.page(second))
    });
    project.assert_haproxy_in_step();

    // A create whose own droplet never becomes ready changes no server, yet
    // reloads the config HAProxy missed.
    killed(&mut project, &["create"]);
    let third = *inventory_ids(&project).last().unwrap();
    assert!(!running_names(&socket).contains(&format!("www-{third}")));
    project.set("ready_timeout", Some("1s"));
    project.sim.set_http_delay(Duration::from_secs(3600));
    project
        .run(&["create"])
        .fails(1, "kept out of HAProxy as unready");
    assert!(running_names(&socket).contains(&format!("www-{third}")));

    // And a plain reload.
    killed(&mut project, &["delete", "--id", &third.to_string()]);
    assert!(running_names(&socket).contains(&format!("www-{third}")));
    project.run(&["reload"]).success();
    assert!(!running_names(&socket).contains(&format!("www-{third}")));

    // A reload after which the same worker still answers did not happen:
    // a failure, the live config put back, nothing recorded as loaded.
    let (live, loaded) = (
        project.live_config(),
        fs::read_to_string(project.path("live/haproxy.cfg.loaded")).unwrap(),
    );
    assert_eq!(live, loaded);
    project.set("haproxy_reload_command", Some("'true'"));
    project.set("haproxy_reload_timeout", Some("2s"));
    let nowhere = Refusing::new();
    project.set("frontend_bind", Some(&nowhere.addr.to_string()));
    project.run(&["reload"]).fails(1, "still answers");
    assert_eq!(project.live_config(), live);
    assert_eq!(
        fs::read_to_string(project.path("live/haproxy.cfg.loaded")).unwrap(),
        loaded
    );
    drop(haproxy);
}

#[test]
fn sigterm_during_a_drain_rolls_the_delete_back() {
    let mut project = Project::new("drain-signal");
    let haproxy = project.start_haproxy();
    let socket = haproxy.socket.clone();
    project.run(&["create", "--count", "2"]).success();
    let target = inventory_ids(&project)[0];
    wait_until("both servers to be UP", Duration::from_secs(15), || {
        running(&socket).iter().filter(|s| s.status == "UP").count() == 2
    });
    let (inventory, live) = (project.inventory(), project.live_config());
    // Open sessions on both servers keep the drain waiting.
    let requests = slow_requests(haproxy.frontend, 4, HOLDS_A_DRAIN_MS);
    wait_until("a session on the target", Duration::from_secs(10), || {
        server_stat(&socket, target).is_some_and(|s| s.sessions > 0)
    });
    let delete = project.spawn(&["delete", "0", "--drain-timeout", "5m"]);
    wait_until("the drain to start", Duration::from_secs(20), || {
        server_stat(&socket, target).is_some_and(|s| s.status == "DRAIN")
    });
    terminate(&delete);
    let run = delete
        .wait_within(Duration::from_secs(10))
        .fails(1, "stopped by SIGTERM");
    assert!(
        run.stderr.contains("nothing was deleted")
            && run
                .stderr
                .contains(&format!("droplet {target} is back in rotation"))
            && run
                .stderr
                .contains(&format!("run doproxy delete --id {target}")),
        "{}",
        run.stderr
    );
    assert_eq!(project.inventory(), inventory);
    assert_eq!(project.live_config(), live);
    assert_eq!(project.sim.droplets().len(), 2);
    assert_eq!(server_stat(&socket, target).unwrap().status, "UP");
    assert_eq!(requests.failures(), Vec::<String>::new());

    // A signal while HAProxy is being updated lets the update finish, then
    // stops before destroying anything.
    let gate = Gate::new(project.dir.path(), "check");
    project.set(
        "haproxy_check_command",
        Some(&format!("'{}; haproxy -c -f {{file}}'", gate.shell())),
    );
    let delete = project.spawn(&["delete", "0"]);
    gate.wait_reached(Duration::from_secs(20));
    terminate(&delete);
    delete.wait_for_stderr(SIGNAL_NOTICED, 1);
    gate.open();
    let run = delete
        .wait_within(Duration::from_secs(30))
        .fails(1, "stopped by SIGTERM");
    assert!(
        run.stderr.contains(&format!(
            "droplet {target} left HAProxy but was not destroyed; the inventory keeps it as destroying, so run doproxy reconcile --apply"
        )),
        "{}",
        run.stderr
    );
    assert!(server_stat(&socket, target).is_none(), "still in HAProxy");
    assert!(!project.live_config().contains(&format!("www-{target}")));
    assert!(project.inventory().contains(" destroying "));
    assert_eq!(project.sim.droplets().len(), 2);
    project.set("haproxy_check_command", None);
    project.run(&["reconcile", "--apply"]).success();
    assert_eq!(project.sim.droplets().len(), 1);
}

/// A project behind a real HAProxy with three serving droplets, the first
/// marked `destroying` as a delete cut short leaves it: out of the
/// inventory's config, still serving in HAProxy.
fn interrupted_delete(label: &str) -> (Project, crate::support::Haproxy, Vec<u64>) {
    let mut project = Project::new(label);
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "3"]).success();
    let ids = inventory_ids(&project);
    wait_until("three servers to be UP", Duration::from_secs(15), || {
        running(&haproxy.socket)
            .iter()
            .filter(|s| s.status == "UP")
            .count()
            == 3
    });
    set_status(&project, ids[0], "destroying");
    (project, haproxy, ids)
}

#[test]
fn finishing_an_interrupted_delete_drains_it_first() {
    for finish in [
        &["reconcile", "--apply"][..],
        &["delete", "--id", "<third>"][..],
    ] {
        let (project, haproxy, ids) = interrupted_delete("finish-drains");
        let socket = haproxy.socket.clone();
        let requests = slow_requests(haproxy.frontend, 8, 4_000);
        wait_until("8 requests in flight", Duration::from_secs(10), || {
            let servers = running(&socket);
            servers.iter().map(|s| s.sessions).sum::<u64>() == 8
                && servers
                    .iter()
                    .any(|s| s.name == format!("www-{}", ids[0]) && s.sessions > 0)
        });
        let third = ids[2].to_string();
        let args: Vec<&str> = finish
            .iter()
            .map(|a| if *a == "<third>" { third.as_str() } else { a })
            .collect();
        project.run(&args).success();
        assert_eq!(requests.failures(), Vec::<String>::new(), "{args:?}");
        assert!(project.sim.droplets().iter().all(|d| d.id != ids[0]));
        assert!(!project.ids().contains(&ids[0]));
        assert!(!running_names(&socket).contains(&format!("www-{}", ids[0])));
    }
}

#[test]
fn sigterm_during_reconciles_drain_destroys_nothing() {
    let (project, haproxy, ids) = interrupted_delete("reconcile-signal");
    let socket = haproxy.socket.clone();
    let requests = slow_requests(haproxy.frontend, 3, HOLDS_A_DRAIN_MS);
    wait_until(
        "a session on the leaving droplet",
        Duration::from_secs(10),
        || server_stat(&socket, ids[0]).is_some_and(|s| s.sessions > 0),
    );
    let reconcile = project.spawn(&["reconcile", "--apply", "--drain-timeout", "5m"]);
    wait_until("the drain to start", Duration::from_secs(20), || {
        server_stat(&socket, ids[0]).is_some_and(|s| s.status == "DRAIN")
    });
    let inventory = project.inventory();
    terminate(&reconcile);
    let run = reconcile
        .wait_within(Duration::from_secs(10))
        .fails(1, "stopped by SIGTERM");
    assert!(
        run.stderr.contains(&format!(
            "nothing was deleted: droplet {} stays marked destroying; run doproxy reconcile --apply",
            ids[0]
        )),
        "{}",
        run.stderr
    );
    assert_eq!(project.inventory(), inventory);
    assert!(
        project
            .inventory()
            .lines()
            .any(|l| l.starts_with(&format!("{} ", ids[0])) && l.contains(" destroying ")),
        "{}",
        project.inventory()
    );
    assert_eq!(project.sim.droplets().len(), 3);
    assert_eq!(requests.failures(), Vec::<String>::new());
    project.run(&["reconcile", "--apply"]).success();
    assert_eq!(project.sim.droplets().len(), 2);
}

#[test]
fn prune_never_touches_another_pools_droplets_and_asks_first() {
    let project = Project::new("prune");
    project.run(&["create", "--count", "2"]).success();
    let own = project.ids();
    // Another pool carries this pool's tag (a copied config); and a create
    // lost its inventory line.
    let shop: BTreeSet<u64> = project
        .sim
        .seed_droplets(2, "shop", &["doproxy:auto-nginx".to_string()], true)
        .iter()
        .map(|d| d.id)
        .collect();
    let orphan = created_id(&project.run(&["create"]).success());
    let lines: Vec<String> = project
        .inventory()
        .lines()
        .filter(|l| !l.starts_with(&orphan.to_string()))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(project.path("inventory"), lines.concat()).unwrap();

    let report = project.run(&["reconcile", "-o", "json"]).success().json();
    let ids = |v: &serde_json::Value| -> BTreeSet<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&report["drift"]["orphans"]), [orphan].into());
    assert_eq!(ids(&report["drift"]["foreign"]), shop);
    let text = project.run(&["reconcile"]).success().stdout;
    assert!(
        text.contains(&format!("orphan: {orphan} auto-nginx-2 "))
            && text.contains("shop-0 carries the pool's tag but is not named auto-nginx-<n>"),
        "{text}"
    );

    // Without a terminal and without --yes: the list, and nothing changes.
    let inventory = project.inventory();
    project.sim.clear_requests();
    let refused = project
        .run(&["reconcile", "--apply", "--prune"])
        .fails(1, "add --yes");
    assert!(
        refused
            .stdout
            .contains(&format!("to prune: {orphan} auto-nginx-2\n")),
        "{}",
        refused.stdout
    );
    assert!(
        refused
            .stdout
            .lines()
            .all(|l| !(l.starts_with("to prune: ") && l.contains("shop-"))),
        "{}",
        refused.stdout
    );
    assert_eq!(project.inventory(), inventory);
    assert_eq!(project.changing_requests(), Vec::<String>::new());

    project
        .run(&["reconcile", "--apply", "--prune", "--yes"])
        .success();
    let left: BTreeSet<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    assert_eq!(left, own.union(&shop).copied().collect());
    // Nor are they ever adopted.
    project.run(&["reconcile", "--apply"]).success();
    assert_eq!(project.ids(), own);
}

/// `command` run as user nobody when this test runs as root (who may write
/// anywhere), otherwise as it is.
fn unprivileged(command: Command) -> Command {
    if !running_as_root() {
        return command;
    }
    let mut outer = Command::new("setpriv");
    outer
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => outer.env(name, value),
            None => outer.env_remove(name),
        };
    }
    outer
}

#[test]
fn doctor_flags_a_read_only_folder_and_systemctl_without_systemd() {
    let mut project = Project::new("doctor-faults");
    let folder: PathBuf = project.dir.path().to_path_buf();
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o555)).unwrap();
    let run = Run::from_output(&mut unprivileged(project.command(&["doctor"])));
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let failed: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with('✗')).collect();
    assert_eq!(failed.len(), 1, "{}", run.stdout);
    assert!(
        failed[0].starts_with("✗ folders: cannot create files in ")
            && failed[0].contains(&format!("{} (of inventory_file)", folder.display())),
        "{}",
        failed[0]
    );
    let good = project.run(&["doctor"]).success();
    assert!(good.stdout.contains("✓ folders: "), "{}", good.stdout);

    project.set("haproxy_reload_command", Some("'systemctl reload haproxy'"));
    let run = project.run(&["doctor"]);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains(" reload command: "))
        .unwrap()
        .to_string();
    if Path::new("/run/systemd/system").exists() {
        assert!(line.starts_with("✓ "), "{line}");
    } else {
        assert_eq!(run.code, 1);
        assert!(
            line.starts_with("✗ reload command: ")
                && line.contains("set haproxy_reload_command to `service haproxy reload`"),
            "{line}"
        );
    }
}
