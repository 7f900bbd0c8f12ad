//! Readiness: a droplet joins HAProxy only once it answers the health check
//! as configured (health_check_path, health_check_port,
//! health_check_status), whatever its other pages answer; HAProxy's own
//! checks use the same settings. Real HAProxy, the simulator's droplets
//! told what to answer.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{Haproxy, Project, Spawned, http_get, wait_until};

/// Generous: the machine is shared by several builds.
const WAIT: Duration = Duration::from_secs(60);

/// A project set up by `configure`, with a short ready_timeout, behind a
/// real HAProxy.
fn behind_haproxy(label: &str, configure: impl FnOnce(&mut Project)) -> (Project, Haproxy) {
    let mut project = Project::new(label);
    configure(&mut project);
    project.set("ready_timeout", Some("1s"));
    let haproxy = project.start_haproxy();
    (project, haproxy)
}

/// Starts `create`; once its droplet exists, `prepare` sets up what it
/// answers before its application starts. The run and the droplet's ID.
fn create_with(project: &Project, prepare: impl Fn(u64)) -> (Spawned, u64) {
    project.sim.set_http_delay(Duration::from_secs(3600));
    let create = project.spawn(&["create"]);
    wait_until("the droplet to be created", WAIT, || {
        !project.sim.droplets().is_empty()
    });
    let id = project.sim.droplets()[0].id;
    prepare(id);
    assert!(project.sim.set_serving(id, true));
    (create, id)
}

/// Droplet `id`'s address on `port`.
fn droplet_at(project: &Project, id: u64, port: u16) -> SocketAddr {
    let droplet = project.sim.droplets().into_iter().find(|d| d.id == id);
    SocketAddr::from((droplet.unwrap().private_ip, port))
}

/// Asserts that the create was refused and its droplet kept out of the
/// config, and that reconcile keeps it out while its check fails.
#[track_caller]
fn assert_kept_out(project: &Project, create: Spawned, id: u64) {
    create.wait().fails(1, "kept out of HAProxy as unready");
    project.run(&["reconcile", "--apply"]).success();
    assert!(
        !project.live_config().contains(&format!("www-{id}")),
        "{}",
        project.live_config()
    );
    assert!(project.inventory().contains(" unready "));
}

/// Asserts that reconcile adds the droplet now and that HAProxy's own
/// checks find it UP.
#[track_caller]
fn assert_joins(project: &Project, id: u64) {
    let fixed = project.run(&["reconcile", "--apply"]).success().stdout;
    assert!(fixed.contains("added 1 ready"), "{fixed}");
    assert!(
        project.live_config().contains(&format!("server www-{id} ")),
        "{}",
        project.live_config()
    );
    wait_until("HAProxy to find the server UP", WAIT, || {
        haproxy_state(project).is_some_and(|s| s == "UP")
    });
}

/// The state HAProxy gives the pool's one server, as `print -o json`
/// reports it.
fn haproxy_state(project: &Project) -> Option<String> {
    let json = project.run(&["print", "-o", "json"]).success().json();
    json[0]["haproxy_state"].as_str().map(str::to_string)
}

#[test]
fn a_droplet_whose_health_path_fails_never_joins_though_its_pages_answer() {
    let (project, _haproxy) = behind_haproxy("health-path", |project| {
        project.set("health_check_path", Some("/healthz"));
    });
    let (create, id) = create_with(&project, |id| {
        assert!(project.sim.set_answer(id, "/healthz", 503, "starting\n"));
    });
    let droplet = droplet_at(&project, id, project.sim.droplet_port());
    wait_until("the droplet to serve", WAIT, || {
        http_get(droplet, "/").is_ok()
    });
    assert!(http_get(droplet, "/healthz").is_err_and(|e| e.starts_with("status 503")));
    assert_kept_out(&project, create, id);

    project.sim.set_answer(id, "/healthz", 200, "ok\n");
    assert_joins(&project, id);
    // HAProxy checks that path too: failing again, the server goes DOWN.
    project.sim.set_answer(id, "/healthz", 503, "stopping\n");
    wait_until("HAProxy to find the server DOWN", WAIT, || {
        haproxy_state(&project).is_some_and(|s| s.starts_with("DOWN"))
    });
}

#[test]
fn a_droplet_answering_another_status_than_health_check_status_never_joins() {
    let (project, _haproxy) = behind_haproxy("health-status", |project| {
        project.set("health_check_path", Some("/healthz"));
        project.set("health_check_status", Some("204"));
    });
    // 200 is a fine answer, but not the one asked for.
    let (create, id) = create_with(&project, |id| {
        assert!(project.sim.set_answer(id, "/healthz", 200, "ok\n"));
    });
    assert_kept_out(&project, create, id);

    project.sim.set_answer(id, "/healthz", 204, "");
    assert_joins(&project, id);
}

#[test]
fn a_droplet_not_answering_on_health_check_port_never_joins() {
    let (project, _haproxy) = behind_haproxy("health-port", |project| {
        let port = project.sim.second_port().to_string();
        project.set("health_check_port", Some(&port));
    });
    // It serves on the backend port only.
    let (create, id) = create_with(&project, |_| {});
    let droplet = droplet_at(&project, id, project.sim.droplet_port());
    wait_until("the droplet to serve", WAIT, || {
        http_get(droplet, "/").is_ok()
    });
    assert_kept_out(&project, create, id);

    assert!(project.sim.set_on_second_port(id, true));
    assert_joins(&project, id);
}
