//! Nothing lost: concurrent runs, runs killed at random moments, a flaky API,
//! lost answers and corrupt files never cost an untracked droplet, a duplicate
//! or a broken inventory.

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use doproxy_sim::{DropletStatus, Faults};

use crate::support::{Project, Run, assert_haproxy_accepts, wait_until};

/// IDs of the droplets carrying the pool's tag, at the simulator.
fn tagged(project: &Project) -> BTreeSet<u64> {
    project
        .sim
        .droplets()
        .into_iter()
        .filter(|d| d.tags.iter().any(|t| t == "doproxy:auto-nginx"))
        .map(|d| d.id)
        .collect()
}

#[test]
fn twenty_concurrent_creates_make_exactly_twenty_droplets() {
    let project = Project::new("concurrent");
    let runs: Vec<_> = (0..20).map(|_| project.spawn(&["create"])).collect();
    for run in runs {
        Run::wait(run).success();
    }
    let droplets = project.sim.droplets();
    assert_eq!(droplets.len(), 20);
    let names: BTreeSet<String> = droplets.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names.len(), 20, "duplicate names: {names:?}");
    assert_eq!(project.ids(), tagged(&project));
    let live = project.live_config();
    assert_eq!(live.matches(" check # id:").count(), 20, "{live}");
    assert_haproxy_accepts(&project.path("live/haproxy.cfg"));
}

#[test]
fn runs_killed_at_random_moments_leave_nothing_unrecorded() {
    let project = Project::new("kill");
    project.run(&["create", "--count", "4"]).success();
    // Each run is killed at a random moment within the time a whole run of
    // it takes here and now, up to a cap that keeps the sleeping short on
    // a machine slowed down by others.
    let timed = |args: &[&str], cap_ms: u64| {
        let started = Instant::now();
        project.run(args).success();
        (started.elapsed().as_millis() as u64).clamp(1, cap_ms)
    };
    let runs: [(&[&str], u64); 2] = [
        (&["create"], timed(&["create"], 800)),
        (&["delete", "0"], timed(&["delete", "0"], 250)),
    ];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    for trial in 0..12 {
        let (args, window_ms) = runs[trial % 2];
        let mut run = project.spawn(args);
        // A random moment is the point of this test, not a wait for a condition.
        std::thread::sleep(Duration::from_millis(rng.u64(..window_ms)));
        run.kill().unwrap(); // SIGKILL, as a crash: what it started runs on
        drop(run);
    }
    // A droplet the last killed create made may still be booting; the
    // second reconcile below can only find no drift once it has booted.
    wait_until("every droplet to boot", Duration::from_secs(10), || {
        project
            .sim
            .droplets()
            .iter()
            .all(|d| d.status == DropletStatus::Active)
    });
    let reconcile = project.run(&["reconcile", "--apply"]).success();
    assert_eq!(
        project.ids(),
        tagged(&project),
        "seed {seed}; reconcile said:\n{}",
        reconcile.stdout
    );
    let again = project.run(&["reconcile"]).success();
    assert_eq!(
        again.stdout, "No drift: the inventory matches DigitalOcean.\n",
        "seed {seed}"
    );
}

#[test]
fn a_flaky_api_never_makes_a_duplicate() {
    let mut project = Project::new("flaky");
    // Each failed create costs a 30 s lookup before it is sent again, so the
    // budget must allow a few; one failed delete makes a fault certain
    // whatever the dice say.
    project.set("api_retry_budget", Some("10m"));
    project.sim.set_faults(Faults {
        error_rate: 0.25,
        drop_rate: 0.05,
        fail_deletes: 1,
        ..Faults::default()
    });
    // Each create may meet several unclear answers in a row, each costing
    // its 30 s lookup: more than the usual bound on a run.
    let unlucky = Duration::from_secs(300);
    for args in [&["create", "--count", "2"][..], &["create"]] {
        project.spawn(args).wait_within(unlucky).success();
    }
    let refreshed = project.run(&["print", "--refresh"]).success();
    assert_eq!(refreshed.stdout.lines().count(), 3);
    project.run(&["delete", "1"]).success();
    project.run(&["reconcile", "--apply"]).success();
    let faults = project
        .sim
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert!(faults > 0, "the simulator injected no fault");
    project.sim.set_faults(Faults::default());
    let names: Vec<String> = project.sim.droplets().into_iter().map(|d| d.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(project.ids(), tagged(&project));
}

#[test]
fn a_lost_create_answer_makes_exactly_one_droplet() {
    let project = Project::new("lost");
    project.sim.set_faults(Faults {
        drop_create_responses: 1,
        ..Faults::default()
    });
    let run = project.run(&["create"]).success();
    assert_eq!(project.sim.droplets().len(), 1);
    let id = project.sim.droplets()[0].id;
    assert_eq!(
        run.stdout,
        format!("Success: {id} created and added to backend.\n")
    );
    let posts = project
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "the create was sent again");
}

#[test]
fn a_failed_destroy_stays_marked_until_reconcile_finishes_it() {
    let mut project = Project::new("destroy");
    project.run(&["create", "--count", "2"]).success();
    let doomed = project.sim.droplets()[0].id;
    project.set("api_retry_budget", Some("1s"));
    project.sim.set_faults(Faults {
        fail_deletes: 1_000,
        ..Faults::default()
    });
    project
        .run(&["delete", "--id", &doomed.to_string()])
        .fails(1, "stays in the inventory as destroying");
    assert!(
        project
            .inventory()
            .contains(&format!("{doomed} auto-nginx-0"))
    );
    assert!(project.inventory().contains(" destroying "));
    assert!(
        !project.live_config().contains(&format!("www-{doomed}")),
        "still in HAProxy"
    );

    project.sim.set_faults(Faults::default());
    let drift = project.run(&["reconcile"]).success();
    assert!(
        drift
            .stdout
            .contains(&format!("unfinished delete: {doomed} auto-nginx-0")),
        "{}",
        drift.stdout
    );
    project.run(&["reconcile", "--apply"]).success();
    assert!(project.sim.droplets().iter().all(|d| d.id != doomed));
    assert_eq!(project.ids(), tagged(&project));
}

#[test]
fn reconcile_reports_drift_and_changes_nothing_without_apply() {
    let mut project = Project::new("drift");
    // The droplets seeded here never answer: each pass that adopts them
    // waits no longer than this for them.
    project.set("ready_timeout", Some("1s"));
    project.run(&["create", "--count", "2"]).success();
    let orphan =
        project
            .sim
            .seed_droplets(1, "auto-nginx", &["doproxy:auto-nginx".to_string()], false)[0]
            .id;
    // Made by the Ruby DOProxy: untagged, named like the pool's droplets.
    let untagged = project.sim.seed_droplets(1, "auto-nginx", &[], false)[0].id;
    let inventory = format!("{}{untagged}\n", project.inventory());
    fs::write(project.path("inventory"), &inventory).unwrap();
    project.run(&["print"]).success(); // fills in the legacy line
    let inventory = project.inventory();
    project.sim.clear_requests();

    let report = project.run(&["reconcile", "-o", "json"]).success().json();
    assert_eq!(report["drift"]["orphans"][0]["id"], orphan);
    assert_eq!(report["drift"]["untagged"][0]["id"], untagged);
    assert_eq!(report["applied"], false);
    assert_eq!(project.inventory(), inventory);
    assert_eq!(project.changing_requests(), Vec::<String>::new());

    project.run(&["reconcile", "--apply"]).success();
    assert_eq!(project.ids(), tagged(&project));
    assert!(project.ids().contains(&orphan) && project.ids().contains(&untagged));

    let stray =
        project
            .sim
            .seed_droplets(1, "auto-nginx", &["doproxy:auto-nginx".to_string()], false)[0]
            .id;
    project
        .run(&["reconcile", "--apply", "--prune", "--yes"])
        .success();
    assert!(
        project.sim.droplets().iter().all(|d| d.id != stray),
        "the orphan was not pruned"
    );
    assert_eq!(project.ids(), tagged(&project));
}

#[test]
fn a_corrupt_inventory_line_is_named_and_the_file_left_alone() {
    let project = Project::new("corrupt");
    project.run(&["create"]).success();
    let garbled = format!("{}4711 auto-nginx-9 127.0.0\n", project.inventory());
    fs::write(project.path("inventory"), &garbled).unwrap();
    project.sim.clear_requests();
    for args in [
        &["print"][..],
        &["create"],
        &["delete", "0"],
        &["reconcile", "--apply"],
    ] {
        project.run(args).fails(1, "line 3");
    }
    let run = project.run(&["print"]);
    assert!(
        run.stderr
            .contains(&project.path("inventory").display().to_string()),
        "{}",
        run.stderr
    );
    assert_eq!(
        fs::read_to_string(project.path("inventory")).unwrap(),
        garbled
    );
    assert_eq!(project.changing_requests(), Vec::<String>::new());
}
