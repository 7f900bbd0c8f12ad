//! Scaling under faults: signals at every moment of a create, runs that
//! scale at once, droplets destroyed by someone else mid-wait, an inventory
//! that cannot be written, lists that lag, and two pools in one account.
//! Whatever happens, the simulator's droplets and the inventory agree.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use doproxy_sim::Faults;

use crate::support::{Project, Run, SIGNAL_NOTICED, Spawned, wait_until};

/// Generous: the machine is shared by several builds.
const WAIT: Duration = Duration::from_secs(60);
/// Boots that do not end while a test runs.
const FOREVER: Duration = Duration::from_secs(3600);

/// Takes the inventory's lock file, as a run that holds it would: runs
/// started meanwhile wait for it (and say so) until it is dropped.
pub(crate) fn hold_inventory_lock(project: &Project) -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(project.path("inventory.lock"))
        .unwrap();
    file.lock().unwrap();
    file
}

/// What a run waiting for the lock says.
pub(crate) const WAITING_FOR_LOCK: &str = "waiting for another doproxy run";

fn sim_ids(project: &Project) -> BTreeSet<u64> {
    project.sim.droplets().iter().map(|d| d.id).collect()
}

/// Inventory lines with status `new`.
fn new_entries(project: &Project) -> usize {
    project
        .inventory()
        .lines()
        .filter(|l| l.contains(" new "))
        .count()
}

fn posts(project: &Project) -> usize {
    project
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query == "/v2/droplets")
        .count()
}

/// Whether a run started after the simulator's first `before` requests has
/// created droplets and then listed the pool: it polls for their boot (a
/// signal from then on ends that wait).
fn waits_for_boots(project: &Project, before: usize) -> bool {
    let requests = project.sim.requests().split_off(before);
    let created = requests
        .iter()
        .position(|r| r.method == "POST" && r.path_and_query == "/v2/droplets");
    created.is_some_and(|at| {
        requests[at + 1..]
            .iter()
            .any(|r| r.method == "GET" && r.path_and_query.starts_with("/v2/droplets?"))
    })
}

/// No droplet the API made is missing from the inventory, and no entry
/// names a droplet that is gone.
#[track_caller]
fn assert_inventory_true(project: &Project) {
    assert_eq!(project.ids(), sim_ids(project), "{}", project.inventory());
}

/// The advice every stopped create gives.
#[track_caller]
fn assert_says_what_to_run(run: &Run, ids: &BTreeSet<u64>) {
    let spaced: Vec<String> = ids.iter().map(u64::to_string).collect();
    for needle in [
        "recorded in the inventory as new",
        "doproxy reconcile --apply",
        &format!("doproxy delete --id {}", spaced.join(" ")),
    ] {
        assert!(
            run.stderr.contains(needle),
            "lacks {needle:?}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn a_signal_before_the_create_request_changes_nothing() {
    let project = Project::new("signal-before");
    let lock = hold_inventory_lock(&project);
    let create = project.spawn(&["create"]);
    create.wait_for_stderr(WAITING_FOR_LOCK, 1);
    create.signal(libc::SIGINT);
    // The wait ends at once: the lock is still held.
    create.wait_within(WAIT).fails(
        1,
        "stopped by SIGINT before any droplet was created; nothing changed",
    );
    drop(lock);
    assert_eq!(posts(&project), 0);
    assert!(project.sim.droplets().is_empty());
    assert_inventory_true(&project);
}

#[test]
fn a_signal_during_a_create_request_records_its_droplets_and_sends_no_further_batch() {
    let project = Project::new("signal-during-post");
    // The first batch's request waits at the API until the signal is in.
    project.sim.hold_requests("POST", "/v2/droplets");
    let create = project.spawn(&["create", "--count", "12", "--yes"]);
    wait_until("the create request", WAIT, || {
        project.sim.held_requests() == 1
    });
    create.signal(libc::SIGTERM);
    create.wait_for_stderr(SIGNAL_NOTICED, 1);
    project.sim.release_requests();
    let run = create
        .wait_within(WAIT)
        .fails(1, "stopped by SIGTERM after creating droplet(s)");
    assert_eq!(posts(&project), 1, "the second batch was sent");
    assert_eq!(project.sim.droplets().len(), 10);
    assert_inventory_true(&project);
    assert_eq!(new_entries(&project), 10);
    assert_says_what_to_run(&run, &sim_ids(&project));
}

#[test]
fn a_signal_while_scale_waits_for_boots_leaves_them_recorded() {
    let project = Project::new("signal-boot");
    project.sim.set_boot_delay(FOREVER);
    let before = project.sim.requests().len();
    let scale = project.spawn(&["scale", "--to", "2"]);
    wait_until("the run to wait for the boots", WAIT, || {
        waits_for_boots(&project, before)
    });
    assert_eq!(new_entries(&project), 2, "{}", project.inventory());
    scale.signal(libc::SIGTERM);
    // At once, not after --timeout (10 minutes).
    let run = scale
        .wait_within(WAIT)
        .fails(1, "booted; they are recorded");
    assert_inventory_true(&project);
    assert_says_what_to_run(&run, &sim_ids(&project));
    assert_eq!(posts(&project), 1);
}

#[test]
fn a_signal_during_the_health_check_leaves_droplets_reconcile_adds() {
    let project = Project::new("signal-ready");
    project.sim.set_http_delay(FOREVER);
    let create = project.spawn(&["create"]);
    create.wait_for_stderr("to answer GET", 1);
    create.signal(libc::SIGTERM);
    let run = create
        .wait_within(WAIT)
        .fails(1, "were checked for readiness; they are recorded");
    assert_inventory_true(&project);
    let id = project.sim.droplets()[0].id;
    assert_says_what_to_run(&run, &BTreeSet::from([id]));
    assert_eq!(new_entries(&project), 1);
    assert!(!project.live_config().contains(&format!("www-{id}")));

    // What the sentence says to run, once the droplet answers.
    project.sim.set_serving(id, true);
    wait_until("the droplet to answer", WAIT, || {
        project.sim.droplets()[0].serving_http
    });
    project.run(&["reconcile", "--apply"]).success();
    assert!(project.inventory().contains(" active "));
    assert!(project.live_config().contains(&format!("server www-{id} ")));
}

#[test]
fn autoscale_once_stopped_mid_scale_out_records_it_and_later_decisions_count_the_boots() {
    let mut project = Project::new("signal-autoscale");
    project.set(
        "autoscale",
        Some("{min: 1, max: 3, cpu_percent: 30, cooldown: 1h}"),
    );
    project.run(&["create"]).success();
    let first = project.sim.droplets()[0].id;
    project.sim.set_cpu(first, 90.0);
    project.sim.set_boot_delay(FOREVER);

    let before = project.sim.requests().len();
    let autoscale = project.spawn(&["autoscale", "--once"]);
    wait_until("the run to wait for the boots", WAIT, || {
        waits_for_boots(&project, before)
    });
    assert_eq!(new_entries(&project), 2, "{}", project.inventory());
    autoscale.signal(libc::SIGTERM);
    autoscale
        .wait_within(WAIT)
        .fails(1, "stopped by SIGTERM while droplet(s)");
    assert_inventory_true(&project);
    let history = project
        .run(&["autoscale", "--history", "-o", "json"])
        .success()
        .json();
    assert_eq!(history[0]["action"], "scale_out");
    let outcome = history[0]["outcome"].as_str().unwrap();
    assert!(outcome.contains("stopped by SIGTERM"), "{outcome}");

    // The two booting droplets count: 1 serving at 90% wants 3, the pool has 3.
    for _ in 0..2 {
        let run = project
            .run(&["autoscale", "--once", "--timeout", "5s"])
            .success();
        assert!(run.stdout.contains("hold 3 -> 3"), "{}", run.stdout);
    }
    assert_eq!(project.sim.droplets().len(), 3);
    assert_eq!(posts(&project), 2);
}

#[test]
fn two_scale_runs_started_together_make_the_pool_exactly_the_size_asked() {
    let project = Project::new("scale-race");
    project.run(&["create", "--count", "2"]).success();
    // Both plan while the lock is taken, then take turns on it.
    let lock = hold_inventory_lock(&project);
    let runs: Vec<Spawned> = (0..2)
        .map(|_| project.spawn(&["scale", "--to", "4"]))
        .collect();
    for run in &runs {
        run.wait_for_stderr(WAITING_FOR_LOCK, 1);
    }
    drop(lock);
    for run in runs {
        run.wait_within(WAIT).success();
    }
    assert_eq!(project.sim.droplets().len(), 4);
    assert_inventory_true(&project);
    assert_eq!(project.live_config().matches("server www-").count(), 4);
}

#[test]
fn autoscale_never_adds_again_what_a_running_create_boots() {
    let mut project = Project::new("autoscale-booting");
    project.set(
        "autoscale",
        Some("{min: 1, max: 3, cpu_percent: 30, cooldown: 1h}"),
    );
    project.run(&["create"]).success();
    let first = project.sim.droplets()[0].id;
    project.sim.set_cpu(first, 90.0);
    project.sim.set_boot_delay(FOREVER);
    // A cron job's create, still waiting for its droplets to boot.
    let create = project.spawn(&["create", "--count", "2"]);
    wait_until("the create to record its droplets", WAIT, || {
        new_entries(&project) == 2
    });
    for _ in 0..2 {
        let run = project
            .run(&["autoscale", "--once", "--timeout", "5s"])
            .success();
        assert!(run.stdout.contains("hold 3 -> 3"), "{}", run.stdout);
    }
    assert_eq!(project.sim.droplets().len(), 3, "more than max 3");
    create.signal(libc::SIGTERM);
    create
        .wait_within(WAIT)
        .fails(1, "booted; they are recorded");
    assert_inventory_true(&project);
}

#[test]
fn create_notices_at_once_when_others_destroy_its_booting_droplets() {
    let project = Project::new("destroyed-mid-boot");
    project.sim.set_boot_delay(FOREVER);
    let create = project.spawn(&["create", "--count", "2", "--timeout", "10m"]);
    wait_until("both droplets to be recorded", WAIT, || {
        new_entries(&project) == 2
    });
    let ids: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    // One by another doproxy run, one by someone at the API.
    project
        .run(&["delete", "--id", &ids[0].to_string()])
        .success();
    assert!(project.sim.destroy_droplet(ids[1]));
    // Within seconds, not after the 10 minutes of --timeout.
    let run = create
        .wait_within(WAIT)
        .fails(1, "another doproxy run or someone");
    for (id, name) in [(ids[0], "auto-nginx-0"), (ids[1], "auto-nginx-1")] {
        assert!(
            run.stderr.contains(&format!("{id} ({name})")),
            "{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("no longer exist"), "{}", run.stderr);
    assert!(project.sim.droplets().is_empty());
    assert_inventory_true(&project);
}

#[test]
fn create_notices_at_once_when_others_destroy_a_droplet_it_checks_for_readiness() {
    let mut project = Project::new("destroyed-mid-check");
    project.set("ready_timeout", Some("10m"));
    // Active at once, but its application never starts.
    project.sim.set_http_delay(FOREVER);
    let create = project.spawn(&["create"]);
    create.wait_for_stderr("waiting for droplet", 1);
    let id = project.sim.droplets()[0].id;
    assert!(project.sim.destroy_droplet(id));
    // Within seconds, not after the 10 minutes of ready_timeout.
    let run = create.wait_within(WAIT).fails(1, "no longer exist");
    assert!(
        run.stderr.contains(&format!("{id} (auto-nginx-0)")),
        "{}",
        run.stderr
    );
    assert_eq!(
        project
            .inventory()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count(),
        0
    );
    assert_inventory_true(&project);
}

/// Makes a folder read-only until dropped: by its mode, and for root (whom
/// modes do not stop) with the immutable attribute.
struct ReadOnly {
    folder: PathBuf,
    immutable: bool,
}

impl ReadOnly {
    fn new(folder: &Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(folder, fs::Permissions::from_mode(0o555)).unwrap();
        let probe = folder.join(".probe");
        let immutable = fs::write(&probe, "").is_ok();
        if immutable {
            fs::remove_file(&probe).unwrap();
            Run::from_output(Command::new("chattr").arg("+i").arg(folder)).success();
        }
        assert!(
            fs::write(&probe, "").is_err(),
            "the folder is still writable"
        );
        ReadOnly {
            folder: folder.to_path_buf(),
            immutable,
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            Run::from_output(Command::new("chattr").arg("-i").arg(&self.folder));
        }
        let _ = fs::set_permissions(&self.folder, fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn droplets_the_inventory_cannot_record_are_named_with_the_way_out() {
    let mut project = Project::new("unrecorded");
    // Only the inventory's folder turns read-only: a staged config that
    // cannot be written is caught before the create.
    project.set("haproxy_cfg_file", Some("live/staged.cfg"));
    let lock = hold_inventory_lock(&project);
    let create = project.spawn(&["create"]);
    create.wait_for_stderr(WAITING_FOR_LOCK, 1);
    // Read-only once the run has opened the lock file, before it creates.
    let read_only = ReadOnly::new(project.dir.path());
    drop(lock);
    let run = create.wait_within(WAIT).fails(1, "could not be recorded");
    let id = project.sim.droplets()[0].id;
    assert!(
        run.stderr
            .contains(&format!("droplet(s) {id} were created")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("doproxy reconcile --apply"),
        "{}",
        run.stderr
    );

    drop(read_only);
    project.run(&["reconcile", "--apply"]).success();
    assert_inventory_true(&project);
}

#[test]
fn a_lost_create_is_looked_up_while_lists_lag_instead_of_sent_again() {
    let project = Project::new("list-lag");
    project.sim.set_list_lag(Duration::from_secs(3));
    project.sim.set_faults(Faults {
        drop_create_responses: 1,
        ..Faults::default()
    });
    let run = project.run(&["create"]).success();
    assert!(
        run.stderr.contains("looking the droplets up"),
        "{}",
        run.stderr
    );
    assert_eq!(posts(&project), 1, "the create was sent again");
    assert_eq!(project.sim.droplets().len(), 1);
    assert_inventory_true(&project);
}

/// A second pool in `project`'s account: its own folder, hostname prefix
/// `api`, default tags.
fn second_pool(project: &Project) -> Project {
    let mut other = Project::with_sim("pool-api", project.sim.clone());
    other.set(
        "droplet_options",
        Some("{hostname_prefix: api, region: nyc3, size: s-1vcpu-1gb, image: ubuntu-24-04-x64}"),
    );
    other
}

#[test]
fn two_pools_in_one_account_see_only_their_own_droplets() {
    let web = Project::new("pool-web");
    let api = second_pool(&web);
    web.run(&["create", "--count", "2"]).success();
    api.run(&["create", "--count", "2"]).success();
    let of = |prefix: &str| -> BTreeSet<u64> {
        let droplets = web.sim.droplets();
        droplets
            .iter()
            .filter(|d| d.name.starts_with(prefix))
            .map(|d| d.id)
            .collect()
    };
    assert_eq!(web.ids(), of("auto-nginx-"));
    assert_eq!(api.ids(), of("api-"));
    for droplet in web.sim.droplets() {
        let pool = droplet.name.rsplit_once('-').unwrap().0;
        assert_eq!(
            droplet.tags,
            [format!("doproxy:{pool}"), "doproxy".to_string()]
        );
    }
    // Every list by tag, creates' waits included, asked for one pool only.
    let lists: Vec<String> = web
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path_and_query.starts_with("/v2/droplets?"))
        .map(|r| r.path_and_query)
        .collect();
    assert!(!lists.is_empty());
    for list in &lists {
        assert!(
            list.contains("tag_name=doproxy%3Aauto-nginx")
                || list.contains("tag_name=doproxy%3Aapi"),
            "{list}"
        );
    }

    for pool in [&web, &api] {
        let refreshed = pool.run(&["print", "--refresh"]).success();
        assert_eq!(refreshed.stdout.lines().count(), 2);
        assert!(
            !refreshed.stderr.contains("not among"),
            "{}",
            refreshed.stderr
        );
        let drift = pool.run(&["reconcile"]).success();
        assert_eq!(
            drift.stdout,
            "No drift: the inventory matches DigitalOcean.\n"
        );
    }
    // The other pool's droplets are no orphans to prune.
    web.run(&["reconcile", "--apply", "--prune"]).success();
    assert_eq!(api.ids(), of("api-"));
    assert_eq!(of("api-").len(), 2);
}

#[test]
fn droplets_from_before_pool_tags_are_tagged_by_reconcile_and_others_left_alone() {
    let project = Project::new("pool-upgrade");
    // Made by an earlier doproxy: tagged `doproxy` only, for this pool and
    // for another one in the same account.
    let legacy = vec!["doproxy".to_string()];
    let ours = project.sim.seed_droplets(2, "auto-nginx", &legacy, true);
    let theirs = project.sim.seed_droplets(1, "api", &legacy, true);
    project.write_inventory(&ours);

    let report = project.run(&["reconcile", "-o", "json"]).success().json();
    let untagged: BTreeSet<u64> = report["drift"]["untagged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(untagged, ours.iter().map(|d| d.id).collect());
    assert_eq!(report["drift"]["orphans"], serde_json::json!([]));

    project.run(&["reconcile", "--apply", "--prune"]).success();
    for droplet in project.sim.droplets() {
        let expected: &[&str] = if droplet.id == theirs[0].id {
            &["doproxy"]
        } else {
            &["doproxy", "doproxy:auto-nginx"]
        };
        assert_eq!(droplet.tags, expected, "{}", droplet.name);
    }
    assert_eq!(
        project.run(&["reconcile"]).success().stdout,
        "No drift: the inventory matches DigitalOcean.\n"
    );
    assert_eq!(project.sim.droplets().len(), 3);
}

#[test]
fn ambiguous_names_zero_timeouts_and_port_zero_are_refused() {
    let mut project = Project::new("small-defects");
    project.run(&["create", "--count", "2"]).success();
    let ids: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    let twins = project.inventory().replace("auto-nginx-1", "auto-nginx-0");
    fs::write(project.path("inventory"), &twins).unwrap();
    project.sim.clear_requests();
    project.run(&["delete", "--name", "auto-nginx-0"]).fails(
        1,
        &format!(
            "2 droplets are named \"auto-nginx-0\" (IDs {}, {})",
            ids[0], ids[1]
        ),
    );
    assert_eq!(project.changing_requests(), Vec::<String>::new());
    assert_eq!(project.inventory(), twins);

    for args in [
        &["create", "--timeout", "0s"][..],
        &["scale", "--to", "3", "--timeout", "0s"],
    ] {
        project.run(args).fails(2, "longer than 0s");
    }
    project.set("backend_port", Some("0"));
    project.run(&["print"]).fails(1, "backend_port in");
    assert_eq!(project.changing_requests(), Vec::<String>::new());
}

#[test]
fn autoscale_records_an_action_that_failed() {
    let mut project = Project::new("autoscale-failed");
    project.set(
        "autoscale",
        Some("{min: 2, max: 3, cpu_percent: 50, cooldown: 1h}"),
    );
    project.set(
        "droplet_options",
        Some("{hostname_prefix: auto-nginx, region: nyc3, size: s-no-such-size, image: ubuntu-24-04-x64}"),
    );
    project
        .run(&["autoscale", "--once"])
        .fails(1, "cannot create droplet(s)");
    let history = project
        .run(&["autoscale", "--history", "-o", "json"])
        .success()
        .json();
    let records = history.as_array().unwrap();
    assert_eq!(records.len(), 1, "{history:#}");
    assert_eq!(records[0]["action"], "scale_out");
    let outcome = records[0]["outcome"].as_str().unwrap();
    assert!(outcome.contains("cannot create droplet(s)"), "{outcome}");
    assert!(project.sim.droplets().is_empty());
}
