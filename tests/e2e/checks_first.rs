//! Check before paying, before draining and before asking: nothing is
//! created that HAProxy could not serve, nothing drained that could not be
//! destroyed, many droplets at once only when someone said yes, no question
//! asked while the pool's lock is held; and `reconcile` tells scripts
//! whether it found drift and joins droplets still booting in one run.
//! The real binary, the simulator, real HAProxy.

use std::fs;
use std::io::Write;
use std::process::{ChildStdin, Stdio};
use std::time::Duration;

use crate::support::{Project, Run, Spawned, repo_file, spawn, terminate, wait_until};

/// Generous: the machine is shared by several builds.
const WAIT: Duration = Duration::from_secs(60);

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

/// A doproxy run under a pseudo-terminal that a test answers when it asks;
/// killed with all it started when dropped.
struct Terminal(Spawned);

impl Terminal {
    fn start(project: &Project, args: &str) -> Terminal {
        Terminal(spawn(
            project
                .on_a_terminal(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        ))
    }

    /// Waits until the terminal shows `needle`.
    #[track_caller]
    fn wait_for(&self, needle: &str) {
        wait_until(&format!("the terminal to show {needle:?}"), WAIT, || {
            self.0.stdout_so_far().contains(needle)
        });
    }

    /// Types `line` and Enter.
    fn answer(&self, line: &str) {
        let mut keyboard: &ChildStdin = self.0.stdin.as_ref().unwrap();
        writeln!(keyboard, "{line}").unwrap();
    }

    /// Waits for the exit; its code and everything the terminal showed.
    #[track_caller]
    fn finish(self) -> (i32, String) {
        let run = self.0.wait_within(WAIT);
        (run.code, run.stdout)
    }
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
    // New servers start one check short of full health (`rising (UP
    // 1/2)`); once both are fully UP, a drain would show.
    let fully_up = || {
        let health = project.run(&["print", "--health"]).success().stdout;
        health.matches("haproxy: UP)").count() == 2
    };
    wait_until("both servers to be fully UP", WAIT, fully_up);
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
    assert!(fully_up(), "a server left full health");
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
    let question = "create --count 3 creates 3 droplets, each billed from now on. Go ahead? [y/N]";
    for (answer, code, droplets) in [("n", 1, 8), ("y", 0, 11)] {
        let create = Terminal::start(&project, "create --count 3");
        create.wait_for(question);
        create.answer(answer);
        let (exit, screen) = create.finish();
        assert_eq!(exit, code, "{screen}");
        assert_eq!(project.sim.droplets().len(), droplets);
    }
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

#[test]
fn reconcile_asks_about_pruning_without_holding_the_lock() {
    let project = Project::new("prune-question");
    project.run(&["create"]).success();
    let pool_tag = ["doproxy:auto-nginx".to_string()];
    let orphan = project.sim.seed_droplets(1, "auto-nginx", &pool_tag, true)[0].id;
    let question = "Destroy these 1 droplet(s)? [y/N]";

    let prune = Terminal::start(&project, "reconcile --apply --prune");
    prune.wait_for(question);
    // The question waits for a person; other runs need not wait for it.
    project.run(&["create", "--lock-timeout", "2s"]).success();
    prune.answer("y");
    let (code, screen) = prune.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(project.sim.droplets().iter().all(|d| d.id != orphan));
    assert_eq!(project.ids().len(), 2);

    // What was agreed to is checked again under the lock.
    let first = project.sim.seed_droplets(1, "auto-nginx", &pool_tag, true)[0].id;
    let prune = Terminal::start(&project, "reconcile --apply --prune");
    prune.wait_for(question);
    let second = project.sim.seed_droplets(1, "auto-nginx", &pool_tag, true)[0].id;
    prune.answer("y");
    let (code, screen) = prune.finish();
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.contains("the pool's orphans changed while you were asked, so nothing was changed"),
        "{screen}"
    );
    let left: Vec<u64> = project.sim.droplets().iter().map(|d| d.id).collect();
    assert!(left.contains(&first) && left.contains(&second), "{left:?}");
}

#[test]
fn reconcile_joins_droplets_an_interrupted_create_left_booting_in_one_run() {
    let project = Project::new("interrupted-boot");
    project.sim.set_boot_delay(Duration::from_secs(4));
    let create = project.spawn(&["create"]);
    wait_until("the droplet to be recorded", WAIT, || {
        project.inventory().contains(" new ")
    });
    terminate(&create);
    Run::wait(create).fails(1, "they are recorded in the inventory as new");
    let id = project.sim.droplets()[0].id;
    assert_eq!(project.sim.droplets()[0].status.as_str(), "new");

    let run = project.run(&["reconcile", "--apply"]).success();
    assert!(run.stdout.contains("added 1 ready"), "{}", run.stdout);
    assert!(
        project
            .inventory()
            .contains(&format!("{id} auto-nginx-0 127.")),
        "{}",
        project.inventory()
    );
    assert!(
        project.inventory().contains(" active "),
        "{}",
        project.inventory()
    );
    assert!(project.live_config().contains(&format!("server www-{id} ")));
    project.assert_haproxy_in_step();
}
