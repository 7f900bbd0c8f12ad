//! Linear at every size: the commands that read the whole inventory take
//! about ten times as long for ten times the entries, never a hundred
//! times. Compared as a ratio of runs on the same machine, never against an
//! absolute time: the start-up (an empty inventory) is taken off each run,
//! each size keeps its fastest of a few runs, and the bound is generous
//! enough that only work growing faster than the inventory crosses it.
//! (The speed itself is measured by scripts/bench.)

use std::fs;
use std::time::{Duration, Instant};

use crate::support::Project;

/// Runs of each size; the fastest counts, as the others only add noise.
const RUNS: usize = 5;
/// Ten times the entries may cost at most this many times the time. Linear
/// work gives 9 to 12 here (debug build); the inventory's old duplicate
/// check, each entry against all earlier ones, gave 24 to 25, as its
/// quadratic part only begins to dominate at 10,000.
const BOUND: f64 = 18.0;

/// An inventory of `count` active droplets.
fn inventory(count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "{} web-{i} 10.{}.{}.{} - active 2026-11-28T20:41:06Z\n",
                100_000_000 + i,
                i / 65536,
                i / 256 % 256,
                i % 256
            )
        })
        .collect()
}

/// The fastest of RUNS runs of `args` with no, 1,000 and 10,000 entries.
/// The sizes take turns, so a busy moment of the machine slows all three
/// alike instead of one.
fn fastest(project: &Project, args: &[&str]) -> [Duration; 3] {
    let inventories = [0, 1_000, 10_000].map(inventory);
    let mut fastest = [Duration::MAX; 3];
    for _ in 0..RUNS {
        for (text, best) in inventories.iter().zip(&mut fastest) {
            fs::write(project.path("inventory"), text).unwrap();
            let started = Instant::now();
            project.run(args).success();
            *best = (*best).min(started.elapsed());
        }
    }
    fastest
}

#[test]
fn ten_times_the_entries_cost_about_ten_times_the_time() {
    let project = Project::new("linear");
    for args in [&["generate"][..], &["print"], &["print", "-o", "json"]] {
        let [start_up, thousand, ten_thousand] = fastest(&project, args);
        let (thousand, ten_thousand) = (
            thousand.saturating_sub(start_up),
            ten_thousand.saturating_sub(start_up),
        );
        let ratio = ten_thousand.as_secs_f64() / thousand.as_secs_f64().max(1e-4);
        assert!(
            ratio <= BOUND,
            "doproxy {}: 10,000 entries took {ratio:.1} times as long as 1,000 ({ten_thousand:?} against {thousand:?}, start-up {start_up:?} taken off); something grows faster than the inventory",
            args.join(" ")
        );
    }
}
