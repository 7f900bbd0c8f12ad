//! Check before paying, before draining and before asking: nothing is
//! created that HAProxy could not serve, nothing drained that could not be
//! destroyed, many droplets at once only when someone said yes, no question
//! asked while the pool's lock is held; and `reconcile` tells scripts
//! whether it found drift and joins droplets still booting in one run.
//! The real binary, the simulator, real HAProxy.

use crate::support::Project;

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
