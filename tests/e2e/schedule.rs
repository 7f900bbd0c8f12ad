//! Scheduled capacity: the `autoscale.schedule` window open now sets the
//! pool's min (a window computed around the real clock; the boundaries
//! themselves are unit-tested with an injected clock in scaling/schedule.rs).

use std::time::SystemTime;

use crate::support::Project;

/// A cron line matching the minute `offset` from now, in UTC.
fn cron_at(offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute_of_day = (now + offset).rem_euclid(86400) / 60;
    format!("{} {} * * *", minute_of_day % 60, minute_of_day / 60)
}

#[test]
fn the_open_schedule_window_sets_min_and_dry_runs_say_which() {
    let mut project = Project::new("schedule");
    let ended = cron_at(-3 * 3600);
    let open = cron_at(-60);
    project.set(
        "autoscale",
        Some(&format!(
            "{{min: 1, max: 4, cpu_percent: 50, cooldown: 1h, schedule: [{{name: night, cron: \"{ended}\", duration: 1h, min: 4, max: 4}}, {{name: busy, cron: \"{open}\", time_zone: UTC, duration: 2h, min: 3, max: 6}}]}}"
        )),
    );
    project.run(&["create"]).success();
    let id = project.sim.droplets()[0].id;
    project.sim.set_cpu(id, 5.0);

    let plan = project
        .run(&["autoscale", "--once", "--dry-run", "-o", "json"])
        .success()
        .json();
    assert_eq!(plan["decision"]["action"], "scale_out", "{plan}");
    assert_eq!(plan["decision"]["target"], 3, "the window's min");
    let window = plan["decision"]["window"].as_str().unwrap();
    assert!(
        window.starts_with(&format!(
            "schedule window busy ({open} UTC, for 2h): min 3, max 6"
        )),
        "{window}"
    );
    let shown = project.run(&["autoscale", "--once", "--dry-run"]).success();
    assert!(
        shown.stdout.contains("[schedule window busy"),
        "{}",
        shown.stdout
    );
    assert_eq!(project.sim.droplets().len(), 1, "a dry run changes nothing");

    let run = project.run(&["autoscale", "--once"]).success();
    assert!(run.stdout.contains("scale_out 1 -> 3"), "{}", run.stdout);
    assert_eq!(project.sim.droplets().len(), 3);

    // Without an open window the policy's own min applies again.
    project.set(
        "autoscale",
        Some(&format!(
            "{{min: 1, max: 4, cpu_percent: 50, cooldown: 0s, schedule: [{{name: night, cron: \"{ended}\", duration: 1h, min: 4, max: 4}}]}}"
        )),
    );
    for droplet in project.sim.droplets() {
        project.sim.set_cpu(droplet.id, 5.0);
    }
    let quiet = project
        .run(&["autoscale", "--once", "--dry-run", "-o", "json"])
        .success()
        .json();
    assert_eq!(quiet["decision"]["action"], "scale_in", "{quiet}");
    assert!(quiet["decision"].get("window").is_none(), "{quiet}");
}
