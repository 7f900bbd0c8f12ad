//! SIGTERM and SIGINT: long-running commands stop cleanly between steps and
//! say so; nothing is cut in the middle of a step.

use std::time::Duration;

use crate::etcd_server::Etcd;
use crate::support::{Project, Run, terminate, wait_until};

#[test]
fn watch_and_autoscale_stop_cleanly_on_sigterm() {
    let etcd = Etcd::start();
    let mut project = Project::new("sigterm-services");
    project.set("inventory_backend", Some("etcd"));
    project.set("etcd_endpoints", Some(&format!("[{}]", etcd.url())));
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
