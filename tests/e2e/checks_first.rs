//! Check before paying, before draining and before asking: nothing is
//! created that HAProxy could not serve, nothing drained that could not be
//! destroyed, many droplets at once only when someone said yes, no question
//! asked while the pool's lock is held; and `reconcile` tells scripts
//! whether it found drift and joins droplets still booting in one run.
//! The real binary, the simulator, real HAProxy.

use crate::support::{Project, Run, wait_until};

/// What a token DigitalOcean no longer accepts looks like to doproxy.
const REVOKED: &str = "dop_v1_revoked";

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
