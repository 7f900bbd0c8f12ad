//! Scaling without reloads: with haproxy_socket, servers come and go through
//! HAProxy's runtime API while the config file keeps the same state, so a
//! later reload changes nothing; what the runtime API cannot do falls back
//! to a reload and says so; a run stopped between the file and the runtime
//! change is caught up by the next one. Real HAProxy, real etcd, the
//! simulator.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::etcd_server::Etcd;
use crate::support::{
    self, Haproxy, InFlight, Project, ServerStat, Traffic, http_get, show_stat, two_proxies,
    wait_until,
};

/// One command on HAProxy's admin socket; its answer.
#[track_caller]
fn admin(socket: &Path, command: &str) -> String {
    support::admin(socket, command)
        .unwrap_or_else(|err| panic!("HAProxy did not answer {command:?}: {err}"))
}

/// The servers HAProxy runs in its backend: (name, address:port).
#[track_caller]
fn running(socket: &Path) -> BTreeSet<(String, String)> {
    servers(socket)
        .into_iter()
        .map(|s| (s.name, s.addr))
        .collect()
}

/// `show stat`'s servers of HAProxy's backend.
#[track_caller]
fn servers(socket: &Path) -> Vec<ServerStat> {
    show_stat(socket).expect("HAProxy's admin socket answers")
}

/// The servers a config file names in its backend: (name, address:port).
fn configured(config: &str) -> BTreeSet<(String, String)> {
    config
        .lines()
        .filter_map(|line| {
            let mut words = line
                .trim_start()
                .strip_prefix("server ")?
                .split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// The PID of the HAProxy worker answering on the socket: it changes with
/// every reload.
fn worker(socket: &Path) -> String {
    admin(socket, "show info")
        .lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .unwrap()
        .to_string()
}

/// Each server's idle-connection settings (purge delay, idle limit), as
/// `show servers conn` gives them: HAProxy sets them for the servers of its
/// config, not for servers added at run time unless told.
fn connection_pools(socket: &Path) -> BTreeSet<(String, String, String)> {
    admin(socket, "show servers conn www-backend")
        .lines()
        .filter(|l| l.starts_with("www-backend/"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[5].to_string(), f[11].to_string())
        })
        .collect()
}

/// Makes haproxy_reload_command also count its runs; returns the counter.
fn count_reloads(project: &mut Project) -> impl Fn() -> usize + use<> {
    let text = fs::read_to_string(project.path("doproxy.yml")).unwrap();
    let reload = text
        .lines()
        .find_map(|l| l.strip_prefix("haproxy_reload_command: "))
        .unwrap()
        .to_string();
    let log: PathBuf = project.path("reloads.log");
    project.set(
        "haproxy_reload_command",
        Some(&format!("'echo reload >> {}; {reload}'", log.display())),
    );
    move || fs::read_to_string(&log).unwrap_or_default().lines().count()
}

/// A project behind a real HAProxy whose reloads are counted.
fn behind_haproxy(label: &str) -> (Project, Haproxy, impl Fn() -> usize) {
    let mut project = Project::new(label);
    let haproxy = project.start_haproxy();
    let reloads = count_reloads(&mut project);
    (project, haproxy, reloads)
}

/// The live config, what HAProxy runs and the record of what it loaded all
/// name the same servers.
#[track_caller]
fn assert_in_step(project: &Project, socket: &Path) {
    let live = project.live_config();
    assert_eq!(configured(&live), running(socket), "{live}");
    assert_eq!(
        fs::read_to_string(project.path("live/haproxy.cfg.loaded")).unwrap(),
        live,
        "the record of what HAProxy runs"
    );
}

#[test]
fn scaling_ten_times_under_load_reloads_nothing_and_fails_no_request() {
    let (project, haproxy, reloads) = behind_haproxy("runtime-load");
    let socket = haproxy.socket.clone();
    let first_worker = worker(&socket);
    project.run(&["create"]).success();
    wait_until("HAProxy to serve", Duration::from_secs(10), || {
        http_get(haproxy.frontend, "/").is_ok()
    });

    // Slow requests: a droplet that left without draining fails some.
    let load = Traffic::start(haproxy.frontend, 4, "/slow?ms=100");
    for size in [2, 3, 2, 3, 4, 3, 2, 3, 2, 1] {
        let before = project.ids();
        let json = project
            .run(&["scale", "--to", &size.to_string(), "-o", "json"])
            .success()
            .json();
        assert_eq!(json["haproxy"]["runtime_updated"], true, "{json}");
        assert_eq!(json["haproxy"]["reloaded"], false, "{json}");
        assert_eq!(running(&socket).len(), size);
        assert_in_step(&project, &socket);
        // Each droplet added serves the load before the next step.
        for id in project.ids().difference(&before) {
            let page = project.page(*id);
            wait_until(
                "the load to reach a new droplet",
                Duration::from_secs(15),
                || load.record().answered_by(&page) >= 3,
            );
        }
    }
    load.finish_without_failures();
    assert_eq!(reloads(), 0, "a scale event reloaded HAProxy");
    assert_eq!(worker(&socket), first_worker, "a new worker took over");
    assert_eq!(project.sim.droplets().len(), 1);

    // The file holds the runtime state: a reload changes no server, and
    // nothing reports a difference.
    let before = running(&socket);
    let pools = connection_pools(&socket);
    assert_eq!(pools.len(), 1);
    let json = project.run(&["reload", "-o", "json"]).success().json();
    assert_eq!(
        (json["changed"].clone(), json["reloaded"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(reloads(), 1);
    assert_ne!(worker(&socket), first_worker);
    assert_eq!(running(&socket), before);
    assert_eq!(
        connection_pools(&socket),
        pools,
        "a server added at run time reuses connections like one of the config"
    );
    assert_in_step(&project, &socket);
    project.assert_haproxy_in_step();
}

#[test]
fn a_delete_drains_before_removing_the_server_at_run_time() {
    let (project, haproxy, reloads) = behind_haproxy("runtime-drain");
    let socket = haproxy.socket.clone();
    project.run(&["create", "--count", "2"]).success();
    let ids: Vec<u64> = project.ids().into_iter().collect();
    wait_until("both servers to serve", Duration::from_secs(15), || {
        let pages: BTreeSet<String> = haproxy.get_many(6).into_iter().flatten().collect();
        pages.len() == 2
    });
    // Slow requests on both servers: the delete waits until they end, and
    // every one of them is answered.
    let frontend = haproxy.frontend;
    let slow = InFlight::start(frontend, 4, "/slow?ms=3000", Duration::from_secs(60));
    wait_until(
        "slow requests on both servers",
        Duration::from_secs(10),
        || servers(&socket).iter().all(|s| s.sessions > 0),
    );
    project
        .run(&["delete", "--id", &ids[0].to_string()])
        .success();
    assert_eq!(slow.failures(), Vec::<String>::new());
    let left: BTreeSet<String> = running(&socket).into_iter().map(|(n, _)| n).collect();
    assert_eq!(left, [format!("www-{}", ids[1])].into());
    assert_in_step(&project, &socket);

    // Sessions that outlast --drain-timeout keep HAProxy from deleting the
    // server: the delete reloads instead, and says so.
    project.run(&["create"]).success();
    let slow = InFlight::start(frontend, 1, "/slow?ms=20000", Duration::from_secs(60));
    let busy = wait_for_session(&socket);
    let run = project
        .run(&["delete", "--id", &busy, "--drain-timeout", "1s"])
        .success();
    assert!(
        run.stderr
            .contains("could not update HAProxy through its runtime API")
            && run.stderr.contains("reloading it instead"),
        "{}",
        run.stderr
    );
    assert_eq!(reloads(), 1);
    assert_eq!(running(&socket).len(), 1);
    assert_in_step(&project, &socket);
    // Its droplet is gone, so how the request ends does not matter here.
    drop(slow);

    // The empty-backend guard holds; a deliberate empty pool goes at run time too.
    project.run(&["delete", "0"]).fails(1, "--allow-empty");
    project.run(&["delete", "0", "--allow-empty"]).success();
    assert!(running(&socket).is_empty());
    assert_in_step(&project, &socket);
    assert_eq!(reloads(), 1);
}

/// Waits until a server has a session; the ID of its droplet.
fn wait_for_session(socket: &Path) -> String {
    let mut busy = None;
    wait_until("a session on a server", Duration::from_secs(10), || {
        busy = servers(socket)
            .into_iter()
            .find(|s| s.sessions > 0)
            .map(|s| s.name.trim_start_matches("www-").to_string());
        busy.is_some()
    });
    busy.unwrap()
}

#[test]
fn what_the_runtime_api_cannot_do_is_reloaded_and_said() {
    let (mut project, haproxy, reloads) = behind_haproxy("runtime-fallback");
    let socket = haproxy.socket.clone();
    let template =
        fs::read_to_string(crate::support::repo_file("templates/haproxy.cfg.tera")).unwrap();

    // HAProxy refuses `add server` with a cookie: the create reloads instead.
    fs::write(
        project.path("cookie.tera"),
        template
            .replace(
                "balance roundrobin",
                "balance roundrobin\n    cookie SRV insert indirect nocache",
            )
            .replace(" check # id:", " check cookie {{ server.name }} # id:"),
    )
    .unwrap();
    project.set("haproxy_template_file", Some("cookie.tera"));
    project.run(&["reload"]).success();
    let run = project.run(&["create"]).success();
    assert!(
        run.stderr
            .contains("could not update HAProxy through its runtime API")
            && run
                .stderr
                .contains("'cookie' option is not accepted for dynamic server")
            && run.stderr.contains("reloading it instead"),
        "{}",
        run.stderr
    );
    assert_eq!(reloads(), 2);
    assert_eq!(running(&socket).len(), 1);
    assert_in_step(&project, &socket);

    // A backend that cannot take servers at run time is not even tried.
    fs::write(
        project.path("static.tera"),
        template.replace("balance roundrobin", "balance static-rr"),
    )
    .unwrap();
    project.set("haproxy_template_file", Some("static.tera"));
    project.run(&["reload"]).success();
    let run = project.run(&["create"]).success();
    assert!(
        run.stderr
            .contains("backend www-backend uses balance static-rr, which cannot take servers at run time, so HAProxy is reloaded"),
        "{}",
        run.stderr
    );
    assert_eq!(reloads(), 4);
    assert_in_step(&project, &socket);

    // A change beyond the servers (here the template) reloads; servers alone
    // again go at run time.
    project.set("haproxy_template_file", None);
    let run = project.run(&["create"]).success();
    assert!(
        run.stderr
            .contains("the config changed beyond its server lines, so HAProxy is reloaded"),
        "{}",
        run.stderr
    );
    assert_eq!(reloads(), 5);
    project.run(&["delete", "0"]).success();
    assert_eq!(reloads(), 5);
    assert_eq!(running(&socket).len(), 2);
    assert_in_step(&project, &socket);

    // haproxy_runtime_updates: false reloads for every change.
    project.set("haproxy_runtime_updates", Some("false"));
    project.run(&["delete", "0"]).success();
    assert_eq!(reloads(), 6);
    assert_in_step(&project, &socket);
}

/// Rewrites the status of droplet `id` in the inventory file.
fn set_status(project: &Project, id: u64, status: &str) {
    let rewritten: String = project
        .inventory()
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(' ').collect();
            if fields[0] == id.to_string() {
                fields[4] = status;
            }
            fields.join(" ") + "\n"
        })
        .collect();
    fs::write(project.path("inventory"), rewritten).unwrap();
}

#[test]
fn a_run_stopped_between_the_file_and_the_runtime_change_is_caught_up() {
    let (project, haproxy, reloads) = behind_haproxy("runtime-stopped");
    let socket = haproxy.socket.clone();
    project.run(&["create", "--count", "2"]).success();
    let ids: Vec<u64> = project.ids().into_iter().collect();
    let loaded = project.path("live/haproxy.cfg.loaded");

    // Stopped after the runtime update, before recording it: the record is
    // behind, but HAProxy runs the live file, and nothing needs a reload.
    let record = fs::read(&loaded).unwrap();
    project.run(&["create"]).success();
    fs::write(&loaded, &record).unwrap();
    project.assert_haproxy_in_step();
    project.run(&["create"]).success();
    assert_eq!(running(&socket).len(), 4);
    assert_eq!(reloads(), 0);
    assert_in_step(&project, &socket);

    // Stopped after installing the file, before the runtime update (a delete
    // marks its droplet destroying, installs the config without it, dies):
    // HAProxy still runs the server the file no longer has.
    set_status(&project, ids[0], "destroying");
    project.run(&["generate"]).success();
    fs::copy(
        project.path("haproxy.cfg"),
        project.path("live/haproxy.cfg"),
    )
    .unwrap();
    let gone = format!("www-{}", ids[0]);
    let doctor = project.run(&["doctor"]);
    assert_eq!(doctor.code, 1, "{}", doctor.stdout);
    assert!(
        doctor
            .stdout
            .contains("✗ live config: HAProxy has not loaded")
            && doctor.stdout.contains(&format!("it still runs {gone}")),
        "{}",
        doctor.stdout
    );
    let drift = project.run(&["reconcile"]).success().stdout;
    assert!(drift.contains("haproxy: HAProxy has not loaded"), "{drift}");
    project.run(&["reconcile", "--apply"]).success();
    assert!(!running(&socket).iter().any(|(name, _)| *name == gone));
    assert_eq!(running(&socket).len(), 3);
    assert_eq!(reloads(), 1, "catching up takes one reload");
    assert_in_step(&project, &socket);
    assert_eq!(
        project.run(&["reconcile"]).success().stdout,
        "No drift: the inventory matches DigitalOcean.\n"
    );

    // A server someone removed by hand is noticed too, and put back.
    let kept = running(&socket).into_iter().next().unwrap().0;
    admin(
        &socket,
        &format!("set server www-backend/{kept} state maint"),
    );
    assert_eq!(
        admin(&socket, &format!("del server www-backend/{kept}")).trim(),
        "Server deleted."
    );
    let drift = project.run(&["reconcile"]).success().stdout;
    assert!(
        drift.contains(&format!(
            "haproxy: HAProxy does not run the servers of {}",
            project.path("live/haproxy.cfg").display()
        )) && drift.contains(&format!("it lacks {kept}")),
        "{drift}"
    );
    project.run(&["reconcile", "--apply"]).success();
    assert_eq!(running(&socket).len(), 3);
    assert_eq!(reloads(), 2);
}

#[test]
fn watch_follows_another_proxy_without_reloading() {
    let etcd = Etcd::start();
    let (a, mut b) = two_proxies("runtime-watch", &etcd);
    let haproxy_b = b.start_haproxy();
    let reloads = count_reloads(&mut b);
    let _watch = b.watch();
    let created = a.run(&["create", "--count", "2"]).success();
    assert_eq!(created.stdout.lines().count(), 2);
    let ids: Vec<u64> = a.ids().into_iter().collect();
    wait_until(
        "B to route to both droplets",
        Duration::from_secs(15),
        || {
            let pages: BTreeSet<String> = haproxy_b.get_many(6).into_iter().flatten().collect();
            pages.contains(&a.page(ids[0])) && pages.contains(&a.page(ids[1]))
        },
    );
    a.run(&["delete", "--id", &ids[0].to_string()]).success();
    wait_until(
        "B to drop the deleted droplet",
        Duration::from_secs(15),
        || running(&haproxy_b.socket).len() == 1,
    );
    wait_until("B's live config to follow", Duration::from_secs(15), || {
        configured(&b.live_config()) == running(&haproxy_b.socket)
    });
    assert_eq!(reloads(), 0, "watch reloaded HAProxy");
}

#[test]
fn reconcile_says_when_it_brought_haproxy_in_step_through_the_runtime_api() {
    let etcd = Etcd::start();
    let (a, mut b) = two_proxies("runtime-reconcile", &etcd);
    let haproxy_b = b.start_haproxy();
    let reloads = count_reloads(&mut b);
    // B runs no watch, so the droplets A creates reach its HAProxy only
    // through a reconcile there.
    a.run(&["create", "--count", "2"]).success();
    let drift = b.run(&["reconcile"]).success().stdout;
    assert!(
        drift.contains("haproxy: the live config") && drift.contains("(0 server(s) instead of 2)"),
        "{drift}"
    );
    let fixed = b.run(&["reconcile", "--apply"]).success().stdout;
    assert_eq!(running(&haproxy_b.socket).len(), 2);
    assert_eq!(reloads(), 0, "only servers changed");
    assert!(
        fixed.contains(
            "Fixed: HAProxy runs the inventory's servers, changed through its runtime API."
        ),
        "{fixed}"
    );
    assert_in_step(&b, &haproxy_b.socket);
}
