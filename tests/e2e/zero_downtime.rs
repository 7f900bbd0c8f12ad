//! Zero downtime: droplets join only when ready, leave only after draining,
//! HAProxy reloads only when needed and never loses its servers by accident,
//! and live traffic sees no failure while the pool grows and shrinks.

use std::fs;
use std::time::Duration;

use crate::support::{InFlight, Project, Traffic, http_get, wait_until};

#[test]
fn scaling_up_and_down_under_load_fails_no_request() {
    let mut project = Project::new("load");
    let haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    wait_until("HAProxy to serve", Duration::from_secs(10), || {
        http_get(haproxy.frontend, "/").is_ok()
    });

    let load = Traffic::start(haproxy.frontend, 3, "/");
    let before = project.ids();
    project.run(&["create", "--count", "2"]).success();
    let added: Vec<String> = project
        .ids()
        .difference(&before)
        .map(|&id| project.page(id))
        .collect();
    // The droplets added serve the load.
    wait_until(
        "the load to reach the droplets added",
        Duration::from_secs(15),
        || {
            added
                .iter()
                .all(|page| load.record().answered_by(page) >= 3)
        },
    );
    // Each droplet leaves with a slow request in flight on it: destroyed
    // before that request ends, as a scale-down that skips the drain would
    // do, it fails the request.
    let leave = |project: &Project| {
        let first = project.run(&["print", "-o", "json"]).success().json()[0]["id"]
            .as_u64()
            .unwrap();
        let servers = project.live_config().matches("server www-").count();
        let slow = InFlight::start(
            haproxy.frontend,
            2 * servers,
            "/slow?ms=3000",
            Duration::from_secs(60),
        );
        wait_until(
            "a slow request on the leaving droplet",
            Duration::from_secs(15),
            || haproxy.sessions_on(first) > 0,
        );
        project.run(&["delete", "0"]).success();
        assert_eq!(slow.failures(), Vec::<String>::new());
    };
    leave(&project);
    project.run(&["reload"]).success();
    leave(&project);
    load.finish_without_failures()
        .assert_each_answered(&added, 3);
    assert_eq!(project.sim.droplets().len(), 1);
}

#[test]
fn a_droplet_that_never_answers_is_never_added() {
    let mut project = Project::new("unready");
    project.set("ready_timeout", Some("1s"));
    project.sim.set_http_delay(Duration::from_secs(3600));
    let run = project
        .run(&["create"])
        .fails(1, "kept out of HAProxy as unready");
    assert_eq!(run.stdout, "");
    let droplet = project.sim.droplets()[0].clone();
    assert!(project.inventory().contains(&format!(
        "{} auto-nginx-0 {} ",
        droplet.id, droplet.private_ip
    )));
    assert!(project.inventory().contains(" unready "));
    assert!(
        !project
            .live_config()
            .contains(&format!("www-{}", droplet.id))
    );

    // Once it answers, reconcile adds it.
    project.sim.set_serving(droplet.id, true);
    let reconcile = project.run(&["reconcile", "--apply"]).success();
    assert!(
        reconcile
            .stdout
            .contains(&format!("booted: {} auto-nginx-0", droplet.id)),
        "{}",
        reconcile.stdout
    );
    assert!(
        project
            .live_config()
            .contains(&format!("server www-{} ", droplet.id))
    );

    // --destroy-unready gives up on a droplet that never answers.
    project
        .run(&["create", "--destroy-unready"])
        .fails(1, "so they were destroyed");
    assert_eq!(project.sim.droplets().len(), 1);
    assert_eq!(project.run(&["print"]).success().stdout.lines().count(), 1);
}

#[test]
fn a_rejected_config_keeps_the_previous_one_serving() {
    let mut project = Project::new("keep");
    let haproxy = project.start_haproxy();
    project.run(&["create"]).success();
    wait_until("HAProxy to serve", Duration::from_secs(10), || {
        http_get(haproxy.frontend, "/").is_ok()
    });
    let live = project.live_config();
    let template =
        fs::read_to_string(crate::support::repo_file("templates/haproxy.cfg.tera")).unwrap();
    fs::write(
        project.path("bad.tera"),
        template.replace("timeout client  30s", "timeout client  soon"),
    )
    .unwrap();
    project.set("haproxy_template_file", Some("bad.tera"));
    project.run(&["reload"]).fails(1, "timeout client");
    assert_eq!(project.live_config(), live);
    for answer in haproxy.get_many(10) {
        answer.expect("the previous config still serves");
    }
}

#[test]
fn haproxy_reloads_once_per_command_and_only_on_change() {
    let mut project = Project::new("reloads");
    let log = project.path("reloads.log");
    project.set(
        "haproxy_reload_command",
        Some(&format!("'echo reload >> {}'", log.display())),
    );
    let reloads = || fs::read_to_string(&log).unwrap_or_default().lines().count();
    project.run(&["create", "--count", "3"]).success();
    assert_eq!(reloads(), 1);
    project.run(&["reconcile", "--apply"]).success();
    project.run(&["print", "--refresh"]).success();
    assert_eq!(reloads(), 1, "nothing changed, so nothing may reload");
    project.run(&["delete", "0", "1"]).success();
    assert_eq!(reloads(), 2);
    project.run(&["reload"]).success();
    assert_eq!(reloads(), 3, "an explicit reload always reloads");
}

#[test]
fn the_pool_is_never_emptied_by_accident() {
    let project = Project::new("empty");
    project.run(&["create"]).success();
    let (inventory, live) = (project.inventory(), project.live_config());
    fs::write(project.path("inventory"), "").unwrap();
    project.run(&["reload"]).fails(1, "--allow-empty");
    assert_eq!(project.live_config(), live);
    fs::write(project.path("inventory"), &inventory).unwrap();
    project.run(&["delete", "0"]).fails(1, "--allow-empty");
    assert_eq!(project.sim.droplets().len(), 1);
    project.run(&["delete", "0", "--allow-empty"]).success();
    assert!(project.sim.droplets().is_empty());
    assert!(!project.live_config().contains("server www-"));
}

#[test]
fn print_health_shows_what_haproxy_sees() {
    let mut project = Project::new("health");
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "2"]).success();
    wait_until("HAProxy to serve", Duration::from_secs(10), || {
        http_get(haproxy.frontend, "/").is_ok()
    });
    let plain = project.run(&["print"]).success().stdout;
    assert!(
        !plain.contains("haproxy:"),
        "the default line stays the original's: {plain}"
    );
    // Until its first check, a new server shows as "UP 1/2".
    wait_until(
        "HAProxy to check both servers",
        Duration::from_secs(10),
        || {
            let health = project.run(&["print", "--health"]).success().stdout;
            health.matches(", haproxy: UP)").count() == 2
        },
    );

    let down = project.sim.droplets()[1].id;
    project.sim.set_serving(down, false);
    wait_until(
        "HAProxy to mark the server DOWN",
        Duration::from_secs(15),
        || {
            let json = project.run(&["print", "-o", "json"]).success().json();
            json[1]["id"] == down
                && json[1]["haproxy_state"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("DOWN"))
        },
    );
}
