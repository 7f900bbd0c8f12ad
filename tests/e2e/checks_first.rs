//! Check before paying, before draining and before asking: nothing is
//! created that HAProxy could not serve, nothing drained that could not be
//! destroyed, many droplets at once only when someone said yes, no question
//! asked while the pool's lock is held; and `reconcile` tells scripts
//! whether it found drift and joins droplets still booting in one run.
//! The real binary, the simulator, real HAProxy.

use std::fs;
use std::process::Command;

use crate::support::{Project, Run, TOKEN, repo_file, wait_until};

/// What a token DigitalOcean no longer accepts looks like to doproxy.
const REVOKED: &str = "dop_v1_revoked";

/// Create requests the simulator received.
fn posts(project: &Project) -> usize {
    project
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query == "/v2/droplets")
        .count()
}

/// Asserts that no droplet was paid for: none exists, none was asked for.
#[track_caller]
fn assert_nothing_created(project: &Project) {
    assert_eq!(posts(project), 0, "a create request was sent");
    assert!(project.sim.droplets().is_empty());
    assert!(project.ids().is_empty(), "{}", project.inventory());
}

/// The built-in template with `from` replaced by `to` in its server line,
/// written to the project's folder and set as haproxy_template_file.
fn use_template_changing(project: &mut Project, from: &str, to: &str) {
    let builtin = fs::read_to_string(repo_file("templates/haproxy.cfg.tera")).unwrap();
    let server_line = builtin.lines().find(|l| l.contains("server {{")).unwrap();
    assert!(server_line.contains(from), "{server_line}");
    let changed = builtin.replace(server_line, &server_line.replace(from, to));
    fs::write(project.path("changed.tera"), changed).unwrap();
    project.set("haproxy_template_file", Some("changed.tera"));
}

/// Runs `doproxy args` under a pseudo-terminal (util-linux `script`) that
/// types `answer` and Enter once doproxy runs.
fn answering(project: &Project, args: &str, answer: &str) -> Run {
    let command = format!(
        "DIGITALOCEAN_ACCESS_TOKEN={TOKEN} {} --config {} {args}",
        env!("CARGO_BIN_EXE_doproxy"),
        project.path("doproxy.yml").display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .env_remove("DIGITALOCEAN_ACCESS_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = script.spawn().expect("script (util-linux) runs a terminal");
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{answer}").unwrap();
    Run::wait(child)
}

#[test]
fn nothing_is_created_that_haproxy_could_not_serve() {
    let mut project = Project::new("unservable");

    // A template that renders only while the pool has no server: the check
    // is meaningful because it renders the droplets about to be made.
    use_template_changing(&mut project, "{{ server.address }}", "{{ server.addr }}");
    project.run(&["reload"]).success();
    project
        .run(&["create"])
        .fails(1, "no droplet was created: the HAProxy template");
    assert_nothing_created(&project);

    // A server line HAProxy rejects, for scale as for create.
    use_template_changing(&mut project, "check #", "check no-such-option #");
    project.run(&["reload"]).success();
    for args in [&["create", "--count", "2"][..], &["scale", "--to", "3"]] {
        let run = project
            .run(args)
            .fails(1, "no droplet was created: the config with the new servers did not pass haproxy_check_command");
        assert!(run.stderr.contains("no-such-option"), "{}", run.stderr);
    }
    assert_nothing_created(&project);

    // An admin socket nothing answers on.
    project.set("haproxy_template_file", None);
    project.set("haproxy_socket", Some("nothing-listens.sock"));
    project.run(&["create"]).fails(
        1,
        "no droplet was created: new servers could not join HAProxy: cannot talk to HAProxy's admin socket",
    );
    assert_nothing_created(&project);

    // Replacements are checked too: a rollout makes nothing it could not serve.
    project.set("haproxy_socket", None);
    project.run(&["create"]).success();
    let before = project.ids();
    use_template_changing(&mut project, "check #", "check no-such-option #");
    project.run(&["rollout"]).fails(1, "no droplet was created");
    assert_eq!(posts(&project), 1, "only the first create");
    assert_eq!(project.ids(), before);
}

#[test]
fn a_refused_token_stops_a_delete_before_any_drain() {
    let mut project = Project::new("revoked");
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "2"]).success();
    let ids: Vec<u64> = project.ids().into_iter().collect();
    let pages: Vec<String> = ids.iter().map(|id| project.page(*id)).collect();
    let reaches_both = || {
        let answers: Vec<String> = haproxy.get_many(10).into_iter().flatten().collect();
        pages.iter().all(|page| answers.contains(page))
    };
    wait_until(
        "HAProxy to route to both droplets",
        std::time::Duration::from_secs(30),
        reaches_both,
    );
    let inventory = project.inventory();
    project.sim.clear_requests();

    for args in [&["delete", "0"][..], &["scale", "--to", "1"]] {
        let run = Run::from_output(
            project
                .command(args)
                .env("DIGITALOCEAN_ACCESS_TOKEN", REVOKED),
        )
        .fails(
            1,
            "nothing was drained or destroyed, since the API must accept the token before droplets leave HAProxy: the DigitalOcean API refused the token (401 Unauthorized)",
        );
        assert!(!run.stderr.contains(REVOKED) && !run.stdout.contains(REVOKED));
    }
    assert_eq!(project.changing_requests(), Vec::<String>::new());
    assert_eq!(project.inventory(), inventory, "statuses changed");
    assert!(reaches_both(), "HAProxy no longer routes to both droplets");
    let health = project.run(&["print", "--health"]).success().stdout;
    assert_eq!(health.matches("haproxy: UP").count(), 2, "{health}");
}

#[test]
fn adding_many_droplets_at_once_needs_a_yes() {
    let mut project = Project::new("many");
    let help = project.run(&["create", "--help"]).success().stdout;
    assert!(
        help.contains("1 to 100") && help.contains("--yes"),
        "{help}"
    );
    let help = project.run(&["scale", "--help"]).success().stdout;
    assert!(
        help.contains("0 to 1000") && help.contains("--yes"),
        "{help}"
    );

    // The default threshold is 10; a script cannot answer a question.
    project.run(&["create", "--count", "11"]).fails(
        1,
        "create --count 11 would create 11 droplets, more than confirm_creates_above (10), and was not confirmed, so nothing was created; add --yes to go ahead",
    );
    project.run(&["scale", "--to", "11"]).fails(
        1,
        "scale --to 11 would create 11 droplets, more than confirm_creates_above (10)",
    );
    assert_nothing_created(&project);

    // Up to the threshold no one is asked; above it --yes goes ahead.
    project.set("confirm_creates_above", Some("2"));
    project.run(&["create", "--count", "2"]).success();
    project
        .run(&["scale", "--to", "5"])
        .fails(1, "scale --to 5 would create 3 droplets");
    assert_eq!(project.sim.droplets().len(), 2);
    project.run(&["scale", "--to", "5", "--yes"]).success();
    project.run(&["create", "--count", "3", "--yes"]).success();
    assert_eq!(project.sim.droplets().len(), 8);

    // On a terminal it asks; only a yes creates.
    let declined = answering(&project, "create --count 3", "n");
    assert_eq!(declined.code, 1, "{declined:?}");
    assert!(
        declined
            .stdout
            .contains("create --count 3 creates 3 droplets"),
        "{declined:?}"
    );
    assert_eq!(project.sim.droplets().len(), 8);
    let agreed = answering(&project, "create --count 3", "y");
    assert_eq!(agreed.code, 0, "{agreed:?}");
    assert_eq!(project.sim.droplets().len(), 11);
    assert_eq!(project.ids().len(), 11);
}

#[test]
fn reconcile_exit_code_tells_scripts_whether_it_found_drift() {
    let project = Project::new("exit-code");
    project.run(&["create"]).success();
    project.run(&["reconcile", "--exit-code"]).success();

    let pool_tag = ["doproxy:auto-nginx".to_string()];
    project.sim.seed_droplets(1, "auto-nginx", &pool_tag, true);
    // Without the flag, drift is no failure: as before.
    let run = project.run(&["reconcile"]).success();
    assert!(run.stdout.starts_with("orphan: "), "{}", run.stdout);
    let run = project.run(&["reconcile", "--exit-code"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.starts_with("orphan: "), "{}", run.stdout);
    // Found and fixed is still found.
    let run = project.run(&["reconcile", "--apply", "--exit-code"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.contains("Fixed: "), "{}", run.stdout);
    project.run(&["reconcile", "--exit-code"]).success();
    assert_eq!(project.ids().len(), 2);
}
