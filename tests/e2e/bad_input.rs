//! Bad input: one sentence on stderr saying what to do, exit 1 (2 for usage),
//! no API call that changes anything, inventory and live config untouched.

use std::fs;

use crate::support::{Project, Run, doproxy};

/// A project with two droplets created, HAProxy config installed, and the
/// request log cleared; `check` runs after each bad command.
fn project_with_two() -> Project {
    let project = Project::new("bad");
    project.run(&["create", "--count", "2"]).success();
    project.sim.clear_requests();
    project
}

/// Asserts that `run` changed nothing: no mutating API request, same
/// inventory, same live config.
#[track_caller]
fn assert_untouched(project: &Project, inventory: &str, live: &str) {
    assert_eq!(project.changing_requests(), Vec::<String>::new());
    assert_eq!(project.inventory(), inventory);
    assert_eq!(project.live_config(), live);
}

#[test]
fn config_problems_name_the_file_or_key() {
    let run = Run::from_output(doproxy().current_dir("/tmp").arg("print"));
    run.fails(1, "doproxy.yml");

    let mut project = project_with_two();
    let (inventory, live) = (project.inventory(), project.live_config());
    fs::write(project.path("broken.yml"), "droplet_options: [unclosed\n").unwrap();
    let run = Run::from_output(
        doproxy()
            .arg("--config")
            .arg(project.path("broken.yml"))
            .arg("print"),
    );
    run.fails(1, "broken.yml");

    project.set(
        "droplet_options",
        Some("{hostname_prefix: x, region: nyc3, size: [1], image: y}"),
    );
    project.run(&["create"]).fails(1, "droplet_options.size");
    project.set("droplet_options", None);

    project.set("userdata_file", Some("missing-user-data.yml"));
    project.run(&["create"]).fails(1, "missing-user-data.yml");
    project.set("userdata_file", None);

    let no_token = Run::from_output(
        doproxy()
            .arg("--config")
            .arg(project.path("doproxy.yml"))
            .args(["delete", "0"]),
    );
    no_token.fails(1, "DIGITALOCEAN_ACCESS_TOKEN");
    assert_untouched(&project, &inventory, &live);
}

#[test]
fn delete_targets_are_all_checked_before_anything_changes() {
    let project = project_with_two();
    let (inventory, live) = (project.inventory(), project.live_config());
    project.run(&["delete", "0", "2"]).fails(1, "no line 2");
    project
        .run(&["delete", "abc"])
        .fails(2, "invalid value 'abc'");
    project.run(&["delete", "--id", "1"]).fails(1, "ID 1");
    project
        .run(&["delete", "--name", "nope"])
        .fails(1, "\"nope\"");
    project.run(&[]).fails(2, "Usage");
    assert_untouched(&project, &inventory, &live);
    assert_eq!(project.sim.droplets().len(), 2);
}

#[test]
fn api_refusals_are_explained() {
    let mut project = project_with_two();
    let (inventory, live) = (project.inventory(), project.live_config());
    let wrong_token = Run::from_output(
        doproxy()
            .env("DIGITALOCEAN_ACCESS_TOKEN", "not-the-token")
            .arg("--config")
            .arg(project.path("doproxy.yml"))
            .arg("create"),
    );
    let wrong_token = wrong_token.fails(1, "refused the token");
    assert!(!wrong_token.stderr.contains("not-the-token"));

    project.set(
        "droplet_options",
        Some("{hostname_prefix: x, region: nyc3, size: s-64vcpu-huge, image: ubuntu-24-04-x64}"),
    );
    project
        .run(&["create"])
        .fails(1, "You specified an invalid size for Droplet creation.");
    // The refused creates were attempts, not changes: nothing was made.
    assert_eq!(project.sim.droplets().len(), 2);
    assert_eq!(project.inventory(), inventory);
    assert_eq!(project.live_config(), live);
}

#[test]
fn a_config_haproxy_rejects_is_never_installed() {
    let mut project = project_with_two();
    let (inventory, live) = (project.inventory(), project.live_config());
    let template =
        fs::read_to_string(crate::support::repo_file("templates/haproxy.cfg.tera")).unwrap();
    fs::write(
        project.path("bad.tera"),
        template.replace("balance roundrobin", "balance sideways"),
    )
    .unwrap();
    project.set("haproxy_template_file", Some("bad.tera"));
    project.set("haproxy_check_command", Some("haproxy -c -f {file}"));
    let haproxy_says = "balance only supports 'roundrobin'";
    project.run(&["reload"]).fails(1, haproxy_says);
    project.run(&["delete", "0"]).fails(1, haproxy_says);
    assert_untouched(&project, &inventory, &live);
    assert_eq!(project.sim.droplets().len(), 2);
}
