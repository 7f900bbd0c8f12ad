//! Fast scaling: batch creates, `scale --to N`, and reads that cost no API
//! request. (Speed itself is measured by scripts/bench, not by tests.)

use std::fs;

use doproxy_sim::Faults;

use crate::support::{Project, doproxy};

/// Requests of `method` whose path starts with `prefix`, at the simulator.
fn requests(project: &Project, method: &str, prefix: &str) -> usize {
    project
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path_and_query.starts_with(prefix))
        .count()
}

#[test]
fn a_batch_create_uses_multi_create_list_polls_and_one_reload() {
    let mut project = Project::new("batch");
    let log = project.path("reloads.log");
    project.set(
        "haproxy_reload_command",
        Some(&format!("'echo reload >> {}'", log.display())),
    );
    let run = project.run(&["create", "--count", "12", "--yes"]).success();
    assert_eq!(run.stdout.lines().count(), 12);
    assert_eq!(
        requests(&project, "POST", "/v2/droplets"),
        2,
        "10 + 2 names"
    );
    assert_eq!(
        requests(&project, "GET", "/v2/droplets/"),
        0,
        "polls list by tag, never one GET per droplet"
    );
    assert!(requests(&project, "GET", "/v2/droplets?") >= 1);
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1);
    assert_eq!(project.live_config().matches("server www-").count(), 12);
}

#[test]
fn a_partly_failed_batch_keeps_what_came_up_and_destroys_the_rest() {
    let project = Project::new("partial");
    project.sim.set_faults(Faults {
        stuck_creates: 1,
        ..Faults::default()
    });
    let run = project
        .run(&["create", "--count", "3", "--timeout", "2s"])
        .fails(1, "so they were destroyed");
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    let left: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    assert_eq!(left.len(), 2);
    for id in &left {
        assert!(run.stdout.contains(&format!("Success: {id} created")));
        assert!(project.live_config().contains(&format!("server www-{id} ")));
    }
    assert_eq!(project.run(&["print"]).success().stdout.lines().count(), 2);
}

#[test]
fn scale_grows_and_shrinks_the_pool() {
    let project = Project::new("scale");
    project.run(&["scale", "--to", "3"]).success();
    assert_eq!(project.sim.droplets().len(), 3);
    let ids: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();

    let plan = project.run(&["scale", "--to", "1", "--dry-run"]).success();
    assert!(
        plan.stdout
            .starts_with("Would delete 2 droplet(s) to reach 1: "),
        "{}",
        plan.stdout
    );
    let json = project
        .run(&["scale", "--to", "1", "--dry-run", "-o", "json"])
        .success()
        .json();
    assert_eq!(json["plan"]["action"], "remove");
    assert_eq!(project.sim.droplets().len(), 3, "a dry run changes nothing");

    project.run(&["scale", "--to", "2"]).success();
    let left: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    assert_eq!(left, ids[..2], "the newest goes first");
    project.run(&["scale", "--to", "1", "--oldest"]).success();
    let left: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    assert_eq!(left, ids[1..2], "--oldest takes the oldest");
    let stay = project.run(&["scale", "--to", "1", "--dry-run"]).success();
    assert_eq!(
        stay.stdout,
        "The pool has 1 droplets already; nothing to do.\n"
    );
    project
        .run(&["scale", "--to", "0"])
        .fails(1, "add --allow-empty");
    assert_eq!(project.sim.droplets().len(), 1);
    project
        .run(&["scale", "--to", "0", "--allow-empty"])
        .success();
    assert!(project.sim.droplets().is_empty());
}

#[test]
fn reads_make_no_api_request_and_refresh_lists_per_200() {
    let project = Project::new("reads");
    let seeded = project.sim.seed_droplets(
        250,
        "auto-nginx",
        &["doproxy:auto-nginx".to_string()],
        false,
    );
    project.write_inventory(&seeded);
    project.sim.clear_requests();
    project.run(&["print"]).success();
    project.run(&["generate"]).success();
    project.run(&["print", "-o", "json"]).success();
    assert!(
        project.sim.requests().is_empty(),
        "{:?}",
        project.sim.requests()
    );
    let refreshed = project.run(&["print", "--refresh"]).success();
    assert_eq!(refreshed.stdout.lines().count(), 250);
    assert_eq!(
        requests(&project, "GET", "/v2/droplets?"),
        2,
        "one list request per 200 droplets"
    );
    assert_eq!(project.sim.requests().len(), 2);
}

#[test]
fn help_needs_no_config_token_or_network() {
    let run = crate::support::Run::from_output(doproxy().current_dir("/").arg("--help"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    for command in [
        "print",
        "create",
        "delete",
        "scale",
        "reconcile",
        "generate",
        "reload",
    ] {
        assert!(run.stdout.contains(command), "--help lacks {command}");
    }
}
