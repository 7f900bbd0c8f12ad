//! What a new user meets first, and small defects that mislead: long lists
//! in log lines cut to a few names and a count.

use crate::support::Project;

#[test]
fn a_log_line_names_a_few_servers_and_counts_the_rest() {
    let mut project = Project::new("few-names");
    let _haproxy = project.start_haproxy();
    // The first update reloads (nothing records what HAProxy loaded yet);
    // the next ones go through the runtime API, all servers in one line.
    project.run(&["create"]).success();
    let grown = project.run(&["create", "--count", "8"]).success();
    let shrunk = project.run(&["scale", "--to", "1"]).success();
    for (run, summary) in [
        (&grown, "added 8 server(s): www-"),
        (&shrunk, "removed 8 server(s): www-"),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("without a reload"))
            .unwrap_or_else(|| panic!("no runtime update logged:\n{}", run.stderr));
        assert!(
            line.contains(summary) && line.ends_with(" and 5 more"),
            "{line}"
        );
        for line in run.stderr.lines() {
            assert!(line.matches("www-").count() <= 4, "{line}");
        }
    }
}
