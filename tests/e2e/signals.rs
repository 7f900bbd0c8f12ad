//! SIGTERM and SIGINT: long-running commands stop cleanly between steps and
//! say so; nothing is cut in the middle of a step.

use std::fs;
use std::time::Duration;

use crate::etcd_server::Etcd;
use crate::support::{Project, Run, terminate, wait_until};

#[test]
fn watch_and_autoscale_stop_cleanly_on_sigterm() {
    let etcd = Etcd::start();
    let mut project = Project::new("sigterm-services");
    project.use_etcd(&etcd.url());
    project.set(
        "autoscale",
        Some("{min: 0, max: 2, cpu_percent: 50, interval: 1h}"),
    );
    let started: [(&[&str], &dyn Fn() -> bool); 2] = [
        (&["watch"], &|| project.path("haproxy.cfg").exists()),
        (&["autoscale"], &|| {
            !project.run(&["autoscale", "--history"]).stdout.is_empty()
        }),
    ];
    for (args, running) in started {
        let mut child = project.spawn(args);
        // Running: the first update or decision has been made.
        wait_until("the service to start", Duration::from_secs(10), running);
        assert!(child.try_wait().unwrap().is_none(), "{args:?} ended early");
        terminate(&child);
        let run = Run::wait(child);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("stopped by SIGTERM"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_signal_ends_a_wait_for_the_etcd_lock_and_the_next_run_need_not_wait() {
    let etcd = Etcd::start();
    let mut project = Project::new("sigterm-etcd-lock");
    project.use_etcd(&etcd.url());
    project.run(&["create", "--count", "2"]).success();

    // A delete holds the pool's lock while its slow check runs.
    project.set("haproxy_check_command", Some("'sleep 15; true'"));
    let mut delete = project.spawn(&["delete", "0"]);
    wait_until(
        "the delete to hold the lock",
        Duration::from_secs(10),
        || {
            project
                .run(&["print"])
                .stdout
                .contains("status: destroying")
        },
    );
    let log = project.path("create.log");
    let create = project
        .command(&["create"])
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        "create to wait for the lock",
        Duration::from_secs(10),
        || {
            fs::read_to_string(&log)
                .unwrap()
                .contains("waiting for another doproxy run")
        },
    );
    terminate(&create);
    let create = Run::wait(create);
    assert!(
        delete.try_wait().unwrap().is_none(),
        "the stopped create waited for the lock to be released"
    );
    assert_eq!(create.code, 1);
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .contains("stopped by SIGTERM before any droplet was created; nothing changed"),
        "{}",
        fs::read_to_string(&log).unwrap()
    );
    Run::wait(delete).success();

    // The stopped run left the queue: the next one does not wait for it.
    project.set("haproxy_check_command", None);
    let next = project.run(&["create"]).success();
    assert!(
        !next.stderr.contains("waiting for another doproxy run"),
        "{}",
        next.stderr
    );
}
