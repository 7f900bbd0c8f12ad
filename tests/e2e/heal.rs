//! Self-healing: a droplet whose application stops answering is replaced
//! once HAProxy has reported it DOWN for the grace period, one that
//! DigitalOcean reports off or gone at once; the hourly limit holds back
//! the rest (passes running at once included), most of the pool DOWN at
//! once is reported as an outage with nothing replaced, and the autoscale
//! loop heals too.

use std::time::{Duration, SystemTime};

use crate::scaling_faults::{WAITING_FOR_LOCK, hold_inventory_lock};
use crate::support::{Project, http_get, server_stat, terminate, wait_until};

/// Generous: the machine is shared by several builds.
const WAIT: Duration = Duration::from_secs(120);

/// POST /v2/droplets requests so far, with when each arrived.
fn creates(project: &Project) -> Vec<SystemTime> {
    project
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path_and_query == "/v2/droplets")
        .map(|r| r.at)
        .collect()
}

#[test]
fn a_droplet_whose_http_server_stops_is_replaced_within_grace_and_one_interval() {
    let mut project = Project::new("heal-down");
    let grace = Duration::from_secs(3);
    let interval = Duration::from_secs(1);
    project.set("heal", Some("{grace: 3s, interval: 1s}"));
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "3"]).success();
    wait_until("HAProxy to serve", WAIT, || {
        http_get(haproxy.frontend, "/").is_ok()
    });
    let healing = project.spawn(&["heal"]);
    let sick = project.sim.droplets()[1].id;
    let stopped_at = SystemTime::now();
    project.sim.set_serving(sick, false);
    let mut down_at = None;
    wait_until("HAProxy to mark the server DOWN", WAIT, || {
        let down = server_stat(&haproxy.socket, sick).is_some_and(|s| s.status.starts_with("DOWN"));
        down_at = down.then(SystemTime::now);
        down
    });
    let down_at = down_at.unwrap();
    let before = creates(&project).len();
    wait_until("the droplet to be replaced", WAIT, || {
        let droplets = project.sim.droplets();
        droplets.len() == 3
            && droplets.iter().all(|d| d.id != sick && d.serving_http)
            && project.inventory().matches(" active ").count() == 3
            && !project.inventory().contains("replaces=")
    });
    let created = creates(&project)[before..].to_vec();
    assert_eq!(created.len(), 1, "one replacement");
    // HAProxy's verdict comes after the server stopped, and this test may
    // see it later than heal did on a loaded machine: the grace period is
    // measured from the stop, the bound on waiting from the verdict seen.
    let since_stop = created[0].duration_since(stopped_at).unwrap_or_default();
    assert!(
        since_stop >= grace,
        "replaced {since_stop:?} after the server stopped, before the grace period ended"
    );
    let waited = created[0].duration_since(down_at).unwrap_or_default();
    assert!(
        waited <= grace + interval + Duration::from_secs(10),
        "replaced only after {waited:?}"
    );
    let new = project
        .sim
        .droplets()
        .into_iter()
        .find(|d| d.name != "auto-nginx-0" && d.name != "auto-nginx-2")
        .unwrap();
    assert!(
        project
            .live_config()
            .contains(&format!("server www-{} ", new.id)),
        "{}",
        project.live_config()
    );
    assert!(!project.live_config().contains(&format!("www-{sick} ")));
    // The service stops between passes on SIGTERM, exit 0.
    terminate(&healing);
    healing.wait().success();
}

#[test]
fn with_most_of_the_pool_down_nothing_is_replaced_and_the_reason_is_reported() {
    let mut project = Project::new("heal-outage");
    project.set("heal", Some("{grace: 0s}"));
    project.set(
        "autoscale",
        Some("{min: 5, max: 5, sessions_per_server: 100, cooldown: 1h}"),
    );
    let haproxy = project.start_haproxy();
    project.run(&["create", "--count", "5"]).success();
    let droplets = project.sim.droplets();
    for d in &droplets[..4] {
        project.sim.set_serving(d.id, false);
    }
    wait_until("HAProxy to mark 4 servers DOWN", WAIT, || {
        droplets
            .iter()
            .filter(|d| {
                server_stat(&haproxy.socket, d.id).is_some_and(|s| s.status.starts_with("DOWN"))
            })
            .count()
            == 4
    });
    project.sim.clear_requests();
    let run = project
        .run(&["heal", "--once"])
        .fails(1, "4 of 5 droplet(s) are DOWN in HAProxy at once");
    assert!(run.stderr.contains("application outage"), "{}", run.stderr);
    assert_eq!(
        run.stdout.matches("DOWN during an outage").count(),
        4,
        "{}",
        run.stdout
    );
    // The autoscale loop's heal pass says the same and replaces nothing.
    let run = project
        .run(&["autoscale", "--once"])
        .fails(1, "application outage");
    assert!(run.stdout.contains("heal: Waiting on"), "{}", run.stdout);
    assert_eq!(project.sim.droplets().len(), 5);
    assert_eq!(project.changing_requests(), Vec::<String>::new());
}

#[test]
fn droplets_off_or_gone_are_replaced_at_once_within_the_hourly_limit() {
    let project = Project::new("heal-off");
    project.run(&["create", "--count", "5"]).success();
    let droplets = project.sim.droplets();
    let (off, gone) = (droplets[0].id, droplets[1].id);
    project.sim.set_power(off, false);
    project.sim.destroy_droplet(gone);

    let plan = project
        .run(&["heal", "--dry-run", "-o", "json"])
        .success()
        .json();
    assert_eq!(
        plan["decision"]["replace"][0]["why"],
        "DigitalOcean reports it off"
    );
    assert_eq!(project.sim.droplets().len(), 4, "a dry run changes nothing");

    // 20% of 5 droplets per hour: one now, the other held back.
    let run = project.run(&["heal", "--once", "-o", "json"]).success();
    let report = run.json();
    assert_eq!(report["replaced"][0]["old"]["id"], off, "{report}");
    let held = &report["decision"]["waiting"][0];
    assert_eq!(held["id"], gone);
    assert!(
        held["why"]
            .as_str()
            .unwrap()
            .contains("allows 1 replacement(s) per hour"),
        "{held}"
    );
    let again = project.run(&["heal", "--once"]).success();
    assert!(again.stdout.contains("held back"), "{}", again.stdout);
    let ids = project.ids();
    assert_eq!(ids.len(), 5, "the gone one is still listed, held back");
    assert!(!ids.contains(&off));
    assert!(!project.sim.droplets().iter().any(|d| d.id == off));
    assert!(
        project
            .inventory()
            .lines()
            .filter(|l| l.contains(" active "))
            .count()
            == 5
    );
}

#[test]
fn passes_running_at_once_count_each_others_replacements_toward_the_hourly_limit() {
    let project = Project::new("heal-concurrent");
    project.run(&["create", "--count", "5"]).success();
    let off = project.sim.droplets()[0].id;
    project.sim.set_power(off, false);
    project.sim.clear_requests();
    let lock = hold_inventory_lock(&project);
    // This pass decides to replace the droplet that is off, then waits
    // for the lock to note it ...
    let pass = project.spawn(&["heal", "--once"]);
    pass.wait_for_stderr(WAITING_FOR_LOCK, 1);
    // ... while another pass (cron, the autoscale loop, another proxy)
    // notes the one replacement per hour a pool of 5 allows.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let other = format!(r#"{{"down_since":{{}},"replacements":[{{"at":{now},"id":1}}]}}"#);
    std::fs::write(project.path("inventory.heal"), other).unwrap();
    drop(lock);
    let run = pass.wait_within(WAIT).success();
    assert!(run.stdout.contains("held back"), "{}", run.stdout);
    assert!(
        creates(&project).is_empty(),
        "a second replacement this hour"
    );
    let record = std::fs::read_to_string(project.path("inventory.heal")).unwrap();
    assert!(record.contains(r#""id":1}"#), "{record}");
}

#[test]
fn the_autoscale_loop_heals_a_droplet_someone_destroyed() {
    let mut project = Project::new("heal-autoscale");
    project.set("heal", Some("{}"));
    project.set(
        "autoscale",
        Some("{min: 2, max: 2, cpu_percent: 50, cooldown: 1h, interval: 300ms}"),
    );
    project.run(&["create", "--count", "2"]).success();
    let gone = project.sim.droplets()[0].id;
    project.sim.destroy_droplet(gone);
    let _autoscale = project.background(&["autoscale"]);
    wait_until("the destroyed droplet to be replaced", WAIT, || {
        let ids = project.ids();
        ids.len() == 2
            && !ids.contains(&gone)
            && project.sim.droplets().len() == 2
            && !project.inventory().contains("replaces=")
    });
}
