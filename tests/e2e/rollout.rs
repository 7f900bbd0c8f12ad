//! Keeping the pool current: every droplet records what it was built from,
//! `print` marks those that no longer match droplet_options, the new
//! droplet options reach the API, and `rollout` replaces droplets under load
//! without a failed request or a dip below the capacity floor, resuming
//! where a killed run stopped.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use doproxy_sim::{SimConfig, Simulator};

use crate::etcd_server::Etcd;
use crate::support::{
    Project, Run, Spawned, Traffic, http_get, repo_file, show_stat, spawn, terminate, wait_until,
};

/// Generous: the machine is shared by several builds.
const WAIT: Duration = Duration::from_secs(120);

const OPTIONS: &str =
    "{hostname_prefix: auto-nginx, region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}";

/// droplet_options with `image` instead of the test default.
fn options_with_image(image: &str) -> String {
    OPTIONS.replace("ubuntu-24-04-x64", image)
}

/// `sha256:` and the first 16 hex digits of the file's SHA-256, as
/// `sha256sum` prints it.
fn sha256_prefix(path: &std::path::Path) -> String {
    let text = Run::from_output(std::process::Command::new("sha256sum").arg(path)).stdout;
    format!("sha256:{}", &text[..16])
}

#[test]
fn print_marks_droplets_built_from_other_options_and_keeps_the_others_lines() {
    let mut project = Project::new("stale");
    project.run(&["create", "--count", "2"]).success();
    let digest = sha256_prefix(&repo_file("user-data.yml"));
    let inventory = project.inventory();
    assert_eq!(
        inventory
            .lines()
            .filter(|l| l.ends_with(&format!(
                " image=ubuntu-24-04-x64 size=s-1vcpu-1gb region=nyc3 user_data={digest} tags=doproxy:auto-nginx,doproxy vpc=-"
            )))
            .count(),
        2,
        "{inventory}"
    );
    let droplets = project.sim.droplets();
    let original = |line: usize, id: u64, ip: std::net::Ipv4Addr| {
        format!("{line}) auto-nginx-{line}  (pvt ip: {ip}, status: active, id: {id})")
    };
    let expected: Vec<String> = droplets
        .iter()
        .enumerate()
        .map(|(i, d)| original(i, d.id, d.private_ip))
        .collect();
    let print = project.run(&["print"]).success();
    assert_eq!(print.stdout.lines().collect::<Vec<_>>(), expected);
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[0]["stale"], serde_json::json!([]));
    assert_eq!(json[0]["build"]["image"], "ubuntu-24-04-x64");

    // A new image: both are stale, and say why.
    project.set(
        "droplet_options",
        Some(&options_with_image("debian-12-x64")),
    );
    let print = project.run(&["print"]).success();
    for (line, expected) in print.stdout.lines().zip(&expected) {
        assert_eq!(line, format!("{expected} [stale: image]"));
    }
    fs::write(
        project.path("user-data.yml"),
        "#cloud-config\nruncmd: [true]\n",
    )
    .unwrap();
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[1]["stale"], serde_json::json!(["image", "user_data"]));

    // Droplets from before builds were recorded are neither marked nor
    // passed for current: their staleness is unknown.
    project.write_inventory(&droplets);
    let print = project.run(&["print"]).success();
    assert_eq!(print.stdout.lines().collect::<Vec<_>>(), expected);
    let json = project.run(&["print", "-o", "json"]).success().json();
    assert_eq!(json[0]["stale"], serde_json::Value::Null);
}

#[test]
fn new_droplet_options_reach_the_api_and_a_failed_project_assignment_keeps_the_droplet() {
    let mut project = Project::new("options");
    let web = project.sim.add_project("web");
    let vpc = "760e09ef-dc84-11e8-981e-3cfdfeaae000";
    let options = |project_id: &str| {
        OPTIONS.replace(
            '}',
            &format!(
                ", vpc_uuid: {vpc}, ipv6: true, backups: true, monitoring: false, with_droplet_agent: false, project_id: {project_id}}}"
            ),
        )
    };
    project.set("droplet_options", Some(&options(&web)));
    project.run(&["create"]).success();
    let droplet = project.sim.droplets().remove(0);
    assert_eq!(droplet.vpc_uuid, vpc);
    assert_eq!(droplet.features, ["backups", "ipv6", "private_networking"]);
    assert_eq!(droplet.project_id.as_deref(), Some(web.as_str()));
    assert!(
        project.inventory().contains(&format!(" vpc={vpc}")),
        "{}",
        project.inventory()
    );

    // A project the account lacks: the droplet is made, recorded and
    // serves all the same; the run says what went wrong (exit 1).
    project.set(
        "droplet_options",
        Some(&options("4e1bfbc3-dc3e-41f2-a18f-1b4d7ba71679")),
    );
    project
        .run(&["create"])
        .fails(1, "could not be assigned to project 4e1bfbc3");
    let second = project
        .sim
        .droplets()
        .into_iter()
        .find(|d| d.id != droplet.id)
        .unwrap();
    assert_eq!(second.project_id, None);
    assert!(project.ids().contains(&second.id));
    assert!(
        project
            .live_config()
            .contains(&format!("server www-{} ", second.id))
    );
}

/// Serving servers (state UP, not draining) in HAProxy's backend, read
/// from its admin socket; None while the socket does not answer (a reload
/// hands it over).
fn serving_in_haproxy(socket: &Path) -> Option<usize> {
    let servers = show_stat(socket)?;
    Some(
        servers
            .iter()
            .filter(|s| s.status.starts_with("UP"))
            .count(),
    )
}

/// Samples HAProxy's serving servers until finished or dropped; the fewest
/// seen, and how many samples were taken.
struct CapacityWatch {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<(usize, usize)>>,
}

impl CapacityWatch {
    fn start(socket: PathBuf) -> CapacityWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let (mut fewest, mut samples) = (usize::MAX, 0);
            while !stopping.load(Ordering::Relaxed) {
                if let Some(serving) = serving_in_haproxy(&socket) {
                    fewest = fewest.min(serving);
                    samples += 1;
                }
                thread::sleep(Duration::from_millis(20));
            }
            (fewest, samples)
        });
        CapacityWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for CapacityWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Asserts the pool ended as `count` droplets on `image`, each recorded once
/// with that build and no replacement link, none stale, and no drift.
#[track_caller]
fn assert_rolled_out(project: &Project, count: usize, image: &str) {
    let droplets = project.sim.droplets();
    assert_eq!(droplets.len(), count, "{droplets:#?}");
    assert!(droplets.iter().all(|d| d.image == image), "{droplets:#?}");
    let inventory = project.inventory();
    let lines: Vec<&str> = inventory.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), count, "{inventory}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" active ") && l.contains(&format!(" image={image} "))),
        "{inventory}"
    );
    assert!(!inventory.contains("replaces="), "{inventory}");
    let print = project.run(&["print"]).success();
    assert!(!print.stdout.contains("stale"), "{}", print.stdout);
    let reconcile = project.run(&["reconcile"]).success();
    assert!(
        reconcile.stdout.contains("No drift"),
        "{}",
        reconcile.stdout
    );
    for d in &droplets {
        assert!(
            project
                .live_config()
                .contains(&format!("server www-{} ", d.id)),
            "{}",
            project.live_config()
        );
    }
}

#[test]
fn a_rollout_under_load_fails_no_request_and_never_drops_below_the_floor() {
    let mut project = Project::new("rollout-load");
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "6"]).success();
    wait_until("HAProxy to serve", WAIT, || {
        http_get(haproxy.frontend, "/").is_ok()
    });
    let before: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    // The new version: a snapshot of a droplet running it.
    let snapshot = project.sim.add_snapshot("web-v2").to_string();
    project.set("droplet_options", Some(&options_with_image(&snapshot)));
    let plan = project
        .run(&["rollout", "--dry-run", "-o", "json"])
        .success()
        .json();
    assert_eq!(plan["replace"].as_array().unwrap().len(), 6, "{plan}");
    assert_eq!(plan["floor"], 6);
    assert_eq!(project.sim.droplets().len(), 6, "a dry run changes nothing");

    let capacity = CapacityWatch::start(haproxy.socket.clone());
    // Slow requests, some in flight on every old droplet as it leaves: one
    // destroyed before its requests end fails them.
    let load = Traffic::start(haproxy.frontend, 8, "/slow?ms=1500");
    let run = project
        .run(&["rollout", "--max-surge", "2", "-o", "json"])
        .success();
    let (fewest, samples) = capacity.finish();
    assert!(samples > 20, "too few capacity samples: {samples}");
    assert!(fewest >= 6, "capacity fell to {fewest} serving servers");
    // Every replacement serves the load.
    let replacements: Vec<String> = project
        .sim
        .droplets()
        .iter()
        .map(|d| project.page(d.id))
        .collect();
    wait_until("the load to reach every replacement", WAIT, || {
        replacements
            .iter()
            .all(|page| load.record().answered_by(page) >= 3)
    });
    load.finish_without_failures();

    let report = run.json();
    let replaced = report["replaced"].as_array().unwrap();
    assert_eq!(replaced.len(), 6, "{report}");
    let olds: BTreeSet<u64> = replaced
        .iter()
        .map(|r| r["old"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(olds, before.into_iter().collect());
    assert_rolled_out(&project, 6, &snapshot);
    // Nothing is stale any more, so --only-stale has nothing to do.
    let again = project.run(&["rollout", "--only-stale"]).success();
    assert!(
        again.stdout.contains("Nothing to roll out"),
        "{}",
        again.stdout
    );
}

/// A moment to kill a run at: what it is, whether reloads that take a
/// droplet out wait there, and how to tell it came.
type Moment<'a> = (&'a str, bool, &'a dyn Fn(&Project) -> bool);

/// A rollout started in the background, to be killed.
fn rollout_in_background(project: &Project) -> Spawned {
    spawn(
        project
            .command(&["rollout"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

#[test]
fn a_rollout_killed_at_any_step_resumes_and_replaces_each_droplet_once() {
    let mut project = Project::new("rollout-kill");
    // Slow boots hold each replacement's boot long enough to kill it there.
    project.sim.set_boot_delay(Duration::from_millis(1500));
    project.run(&["create", "--count", "6"]).success();
    // While `pause` exists, a reload that takes an old droplet out (the
    // inventory marks it destroying) waits: the moment to kill it there.
    let pause = project.path("pause");
    project.set(
        "haproxy_reload_command",
        Some(&format!(
            "'if grep -q \" destroying \" {}; then i=0; while [ -e {} ] && [ $i -lt 1200 ]; do i=$((i+1)); sleep 0.05; done; fi'",
            project.path("inventory").display(),
            pause.display()
        )),
    );
    project.set(
        "droplet_options",
        Some(&options_with_image("debian-12-x64")),
    );
    project.sim.clear_requests();

    let replacing = |project: &Project| {
        project
            .inventory()
            .lines()
            .filter(|l| l.contains("replaces="))
            .count()
    };
    // Killed while a replacement boots, while an old droplet is on its way
    // out, and once more while the next replacement boots.
    let moments: [Moment; 3] = [
        ("a replacement to be recorded", false, &|p| {
            replacing(p) == 1
        }),
        ("an old droplet to be leaving", true, &|p| {
            p.inventory().contains(" destroying ")
        }),
        ("a later replacement to be recorded", false, &|p| {
            replacing(p) == 1
                && p.sim
                    .droplets()
                    .iter()
                    .filter(|d| d.image == "debian-12-x64")
                    .count()
                    >= 2
        }),
    ];
    for (what, leaving, moment) in moments {
        if leaving {
            fs::write(&pause, "").unwrap();
        }
        let mut child = rollout_in_background(&project);
        wait_until(what, WAIT, || moment(&project));
        child.kill().unwrap();
        if leaving {
            fs::remove_file(&pause).unwrap();
        }
    }
    let run = project.run(&["rollout", "-o", "json"]).success();
    assert!(run.json()["resumed"].as_bool().unwrap(), "{}", run.stdout);
    assert_rolled_out(&project, 6, "debian-12-x64");
    let creates = project
        .changing_requests()
        .iter()
        .filter(|r| r.as_str() == "POST /v2/droplets")
        .count();
    assert_eq!(creates, 6, "each droplet is replaced exactly once");
    assert!(
        fs::read_to_string(project.path("inventory.rollout"))
            .unwrap()
            .contains("\"under_way\":null"),
        "a finished rollout is forgotten"
    );
}

#[test]
fn new_droplets_that_never_answer_stop_the_rollout_and_the_old_ones_keep_serving() {
    let mut project = Project::new("rollout-unready");
    project.run(&["create", "--count", "2"]).success();
    let old: BTreeSet<u64> = project.ids();
    project.set("ready_timeout", Some("1s"));
    project.set(
        "droplet_options",
        Some(&options_with_image("debian-12-x64")),
    );
    project.sim.set_http_delay(Duration::from_secs(3600));
    let run = project
        .run(&["rollout"])
        .fails(1, "the old droplets those were to replace keep serving");
    assert!(
        run.stderr.contains("run doproxy rollout again"),
        "{}",
        run.stderr
    );
    assert_eq!(project.ids(), old, "the old droplets stay");
    assert_eq!(
        project.sim.droplets().len(),
        2,
        "the failed one is destroyed"
    );
    for id in &old {
        assert!(project.live_config().contains(&format!("server www-{id} ")));
    }

    // Fixed: the next run continues the same rollout to the end.
    project.sim.set_http_delay(Duration::ZERO);
    project.set("ready_timeout", None);
    let run = project.run(&["rollout", "-o", "json"]).success();
    assert!(run.json()["resumed"].as_bool().unwrap());
    assert_rolled_out(&project, 2, "debian-12-x64");
}

#[test]
fn sigterm_stops_a_rollout_with_one_sentence_and_the_next_run_finishes_it() {
    let mut project = Project::new("rollout-term");
    project.sim.set_boot_delay(Duration::from_millis(1500));
    project.run(&["create", "--count", "2"]).success();
    project.set(
        "droplet_options",
        Some(&options_with_image("debian-12-x64")),
    );
    let child = project.spawn(&["rollout"]);
    wait_until("a replacement to be recorded", WAIT, || {
        project.inventory().contains("replaces=")
    });
    terminate(&child);
    let stopped = child.wait().fails(1, "stopped by SIGTERM");
    assert!(
        stopped
            .stderr
            .contains("run doproxy rollout again to continue"),
        "{}",
        stopped.stderr
    );
    assert_eq!(project.ids().len(), 3, "the replacement stays recorded");
    project.run(&["rollout"]).success();
    assert_rolled_out(&project, 2, "debian-12-x64");
}

#[test]
fn a_rollout_killed_on_one_proxy_is_finished_from_the_other_through_etcd() {
    let etcd = Etcd::start();
    let sim = Arc::new(Simulator::spawn(SimConfig {
        boot_delay: Duration::from_millis(1500),
        ..SimConfig::default()
    }));
    let proxy = |name: &str| {
        let mut project = Project::with_sim(&format!("rollout-etcd-{name}"), sim.clone());
        project.use_etcd(&etcd.url());
        project.set(
            "droplet_options",
            Some(&options_with_image("debian-12-x64")),
        );
        project
    };
    let (mut a, b) = (proxy("a"), proxy("b"));
    a.set("droplet_options", Some(OPTIONS));
    a.run(&["create", "--count", "3"]).success();
    a.set(
        "droplet_options",
        Some(&options_with_image("debian-12-x64")),
    );
    sim.clear_requests();

    let child = rollout_in_background(&a);
    wait_until("a replacement to be recorded in etcd", WAIT, || {
        b.run(&["inventory", "export"]).stdout.contains("replaces=")
    });
    drop(child);
    let run = b.run(&["rollout", "-o", "json"]).success();
    assert!(run.json()["resumed"].as_bool().unwrap(), "{}", run.stdout);
    let droplets = sim.droplets();
    assert_eq!(droplets.len(), 3, "{droplets:#?}");
    assert!(droplets.iter().all(|d| d.image == "debian-12-x64"));
    let creates = b
        .changing_requests()
        .iter()
        .filter(|r| r.as_str() == "POST /v2/droplets")
        .count();
    assert_eq!(creates, 3, "each droplet is replaced exactly once");
    let exported = b.run(&["inventory", "export"]).success().stdout;
    assert!(!exported.contains("replaces="), "{exported}");
    assert_eq!(
        exported.matches(" image=debian-12-x64 ").count(),
        3,
        "{exported}"
    );
}
