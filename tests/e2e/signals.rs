//! SIGTERM and SIGINT: long-running commands stop cleanly between steps and
//! say so; nothing is cut in the middle of a step.

use std::time::Duration;

use crate::etcd_server::Etcd;
use crate::support::{Gate, Project, terminate, wait_until};

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
        assert!(child.is_running(), "{args:?} ended early");
        terminate(&child);
        let run = child.wait();
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

    // A delete holds the pool's lock while its check waits for the test.
    let gate = Gate::new(project.dir.path(), "check");
    project.set(
        "haproxy_check_command",
        Some(&format!("'{}; true'", gate.shell())),
    );
    let mut delete = project.spawn(&["delete", "0"]);
    gate.wait_reached(Duration::from_secs(10));
    let create = project.spawn(&["create"]);
    create.wait_for_stderr("waiting for another doproxy run", 1);
    terminate(&create);
    let create = create.wait();
    assert!(
        delete.is_running(),
        "the stopped create waited for the lock to be released"
    );
    assert_eq!(create.code, 1);
    assert!(
        create
            .stderr
            .contains("stopped by SIGTERM before any droplet was created; nothing changed"),
        "{}",
        create.stderr
    );
    gate.open();
    delete.wait().success();

    // The stopped run left the queue: the next one does not wait for it.
    project.set("haproxy_check_command", None);
    let next = project.run(&["create"]).success();
    assert!(
        !next.stderr.contains("waiting for another doproxy run"),
        "{}",
        next.stderr
    );
}
