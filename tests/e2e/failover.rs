//! Two proxies behind one reserved IP: each with a real HAProxy, `watch` and
//! `failover`, sharing a real etcd and the simulator, whose forwarder sends
//! the reserved IP's traffic to whichever proxy holds it. The leader's
//! HAProxy, its doproxy or its etcd connection fails; the reserved IP must
//! move within a bounded time (measured and printed: `failover time`), never
//! to a proxy whose HAProxy is down, and requests through it must resume.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use doproxy_sim::{SimConfig, SimGuard, SimIpRequest, SimProxy, SimReservedIp, Simulator};

use crate::etcd_server::Etcd;
use crate::support::{
    Background, Haproxy, Project, Relay, Spawned, Traffic, http_get, terminate, wait_until,
};

/// What the tests allow a failover on a loaded 2-core machine; the target
/// is 15 s, and every test prints what it measured.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);
/// The default failover_lease_ttl.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// One proxy: its folder, droplet, HAProxy, watch and failover.
struct Proxy {
    project: Project,
    droplet: SimProxy,
    haproxy: Haproxy,
    _watch: Background,
    failover: Option<Spawned>,
}

impl Proxy {
    /// What its `doproxy failover` logged so far.
    fn log(&self) -> String {
        self.failover
            .as_ref()
            .map(Spawned::stderr_so_far)
            .unwrap_or_default()
    }

    /// When its failover logged a line holding `needle` (the line's
    /// timestamp), if it did.
    fn logged_at(&self, needle: &str) -> Option<SystemTime> {
        let log = self.log();
        let line = log.lines().find(|line| line.contains(needle))?;
        let stamp = line.split_whitespace().next()?;
        humantime::parse_rfc3339_weak(stamp).ok()
    }
}

/// Two proxies, A leading (it started first and holds the reserved IP)
/// and B following, in front of two droplets.
struct Pair {
    sim: Arc<SimGuard>,
    reserved: SimReservedIp,
    a: Proxy,
    b: Proxy,
    etcd: Etcd,
}

/// How a move of the reserved IP went.
struct Moved {
    /// When the assign to B took effect at the API.
    at: SystemTime,
    /// From the event to requests answered again through the reserved IP.
    took: Duration,
}

impl Pair {
    /// `etcd_for` gives each proxy's etcd endpoint (direct, or through a
    /// relay a test can cut); `settings` go into both doproxy.yml files.
    fn start(
        label: &str,
        etcd: Etcd,
        etcd_for: impl Fn(&str) -> String,
        settings: &[(&str, &str)],
    ) -> Pair {
        let sim = Arc::new(Simulator::spawn(SimConfig {
            boot_delay: Duration::from_millis(300),
            ..SimConfig::default()
        }));
        let reserved = sim.create_reserved_ip();
        let proxy = |name: &str| {
            let mut project = Project::with_sim(&format!("{label}-{name}"), sim.clone());
            project.use_etcd(&etcd_for(name));
            project.set("reserved_ip", Some(&reserved.ip.to_string()));
            // A leader that wrongly still acted would take the IP back
            // within this.
            project.set("failover_recheck_interval", Some("2s"));
            for (key, value) in settings {
                project.set(key, Some(value));
            }
            // HAProxy first: the forwarder sends to the port it got.
            let haproxy = project.start_haproxy();
            let droplet = sim.add_proxy(&format!("proxy-{name}"), haproxy.frontend);
            project.set("metadata_url", Some(&droplet.metadata_url));
            (project, droplet, haproxy)
        };
        let ((a, a_droplet, haproxy_a), (b, b_droplet, haproxy_b)) = (proxy("a"), proxy("b"));
        a.run(&["create", "--count", "2"]).success();
        let (watch_a, watch_b) = (a.watch(), b.watch());
        for haproxy in [&haproxy_a, &haproxy_b] {
            wait_until("both HAProxies to serve", FAILOVER_BOUND, || {
                http_get(haproxy.frontend, "/").is_ok()
            });
        }
        let mut pair = Pair {
            sim,
            reserved,
            a: Proxy {
                project: a,
                droplet: a_droplet,
                haproxy: haproxy_a,
                _watch: watch_a,
                failover: None,
            },
            b: Proxy {
                project: b,
                droplet: b_droplet,
                haproxy: haproxy_b,
                _watch: watch_b,
                failover: None,
            },
            etcd,
        };
        pair.a.failover = Some(pair.a.project.spawn(&["failover"]));
        wait_until("A to take the reserved IP", FAILOVER_BOUND, || {
            pair.holder() == Some(pair.a.droplet.id)
        });
        pair.b.failover = Some(pair.b.project.spawn(&["failover"]));
        wait_until(
            "B to start and print --health to name A the leader",
            FAILOVER_BOUND,
            || {
                pair.b.log().contains("takes part in the election")
                    && pair.print_health(&pair.b).contains("leader: proxy-a")
            },
        );
        assert!(
            http_get(pair.reserved.forwarder, "/").is_ok(),
            "no answer through the reserved IP"
        );
        pair
    }

    fn holder(&self) -> Option<u64> {
        self.sim.reserved_ip_holder(self.reserved.ip)
    }

    /// The droplets the reserved IP was assigned to after `since`.
    fn assigned_since(&self, since: SystemTime) -> Vec<u64> {
        self.sim
            .reserved_ip_assignments()
            .into_iter()
            .filter(|a| a.requested_at >= since)
            .map(|a| a.droplet_id)
            .collect()
    }

    fn print_health(&self, proxy: &Proxy) -> String {
        proxy.project.run(&["print", "--health"]).success().stdout
    }

    /// Waits until B holds the reserved IP and a request through it is
    /// answered; prints the times since `started`.
    fn measure_failover(&self, what: &str, started: Instant) -> Moved {
        let mut moved = None;
        let mut resumed = None;
        while moved.is_none() || resumed.is_none() {
            assert!(
                started.elapsed() < FAILOVER_BOUND,
                "{what}: no failover within {FAILOVER_BOUND:?} (moved after {moved:?}):\nA: {}\nB: {}",
                self.a.log(),
                self.b.log(),
            );
            if moved.is_none() && self.holder() == Some(self.b.droplet.id) {
                moved = Some(started.elapsed());
            }
            if moved.is_some() && http_get(self.reserved.forwarder, "/").is_ok() {
                resumed = Some(started.elapsed());
            }
            thread::sleep(Duration::from_millis(25));
        }
        let (moved, resumed) = (moved.unwrap(), resumed.unwrap());
        eprintln!(
            "failover time, {what}: reserved IP moved after {:.1} s, requests answered again after {:.1} s",
            moved.as_secs_f64(),
            resumed.as_secs_f64()
        );
        let at = self
            .sim
            .reserved_ip_assignments()
            .iter()
            .rev()
            .find(|a| a.droplet_id == self.b.droplet.id)
            .expect("B holds the IP through an assign")
            .completed_at;
        Moved { at, took: resumed }
    }
}

/// Lets `traffic` through the reserved IP run until 20 more requests were
/// answered after the move, stops it, and asserts that no request sent
/// after the move failed; and none at all if the old leader's HAProxy
/// served on throughout (a move between two working HAProxies).
#[track_caller]
fn finish_after_the_move(traffic: Traffic, moved: &Moved, old_haproxy_served: bool) {
    let answered = traffic.record().ok;
    wait_until("requests answered after the move", FAILOVER_BOUND, || {
        traffic.record().ok >= answered + 20
    });
    let record = traffic.finish();
    if old_haproxy_served {
        record.assert_no_failure();
    }
    if let Some(last) = record.last_failure {
        assert!(
            last <= moved.at,
            "a request sent {:?} after the move failed; failures: {:?}",
            last.duration_since(moved.at).unwrap_or_default(),
            record.failures
        );
    }
}

#[test]
fn the_reserved_ip_moves_when_the_leaders_haproxy_dies() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start("haproxy-dies", etcd, |_| url.clone(), &[]);
    let traffic = Traffic::start(pair.reserved.forwarder, 2, "/");

    let killed_at = SystemTime::now();
    let started = Instant::now();
    pair.a.haproxy.kill();
    let moved = pair.measure_failover("leader's HAProxy killed", started);
    // Requests fail only until the IP moved.
    finish_after_the_move(traffic, &moved, false);

    // Never assigned to A, whose HAProxy is down, after the kill.
    let assigned = pair.assigned_since(killed_at);
    assert_eq!(assigned, [pair.b.droplet.id], "assignments after the kill");
    let a_log = pair.a.log();
    assert!(a_log.contains("resigned leadership"), "{a_log}");

    assert!(
        pair.print_health(&pair.b)
            .contains("leader: proxy-b (droplet")
    );
    let history = pair
        .b
        .project
        .run(&["failover", "--history"])
        .success()
        .stdout;
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(lines[0].contains(&format!("-> proxy-a (droplet {})", pair.a.droplet.id)));
    assert!(lines[1].contains(&format!(
        "-> proxy-b (droplet {}), from droplet {}",
        pair.b.droplet.id, pair.a.droplet.id
    )));

    // doctor says who holds it.
    let doctor = pair.b.project.run(&["doctor"]).stdout;
    let expected = format!(
        "✓ reserved ip: {} is held by proxy-b (droplet {})",
        pair.reserved.ip, pair.b.droplet.id
    );
    assert!(doctor.contains(&expected), "{doctor}");
}

#[test]
fn the_reserved_ip_moves_when_the_leaders_doproxy_is_killed() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start("doproxy-dies", etcd, |_| url.clone(), &[]);
    // A's HAProxy serves on: the move from one working HAProxy to the
    // other fails no request.
    let traffic = Traffic::start(pair.reserved.forwarder, 2, "/");
    let killed_at = SystemTime::now();
    let started = Instant::now();
    drop(pair.a.failover.take());
    let moved = pair.measure_failover("leader's doproxy killed with SIGKILL", started);
    finish_after_the_move(traffic, &moved, true);
    // B waited for A's lease to run out: it did not take over early.
    assert!(
        moved.took >= LEASE_TTL / 2,
        "B took over after {:?}, before A's lease could have run out",
        moved.took
    );
    assert_eq!(pair.assigned_since(killed_at), [pair.b.droplet.id]);
}

#[test]
fn a_leader_stopped_by_sigterm_resigns_so_the_other_takes_over_at_once() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start("sigterm", etcd, |_| url.clone(), &[]);
    let traffic = Traffic::start(pair.reserved.forwarder, 2, "/");
    let started = Instant::now();
    let failover = pair.a.failover.take().unwrap();
    terminate(&failover);
    let run = failover.wait();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("resigned leadership"), "{}", run.stderr);
    let moved = pair.measure_failover("leader stopped with SIGTERM", started);
    finish_after_the_move(traffic, &moved, true);
    assert!(
        moved.took < LEASE_TTL,
        "B took {:?}: it waited for the lease instead of taking over at once",
        moved.took
    );
}

/// A unix socket standing in for a dead HAProxy's admin socket: it counts
/// connections (each of failover's checks of its HAProxy makes one) and
/// closes them unanswered, so every check fails. Its thread ends when
/// dropped.
struct CheckCounter {
    checks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    path: std::path::PathBuf,
    thread: Option<thread::JoinHandle<()>>,
}

impl CheckCounter {
    fn start(path: &Path) -> CheckCounter {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let (checks, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (counted, stopped) = (checks.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(mut stream) = stream {
                    // Read the command, then close without an answer.
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = stream.read(&mut [0u8; 256]);
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        CheckCounter {
            checks,
            stop,
            path: path.to_path_buf(),
            thread: Some(thread),
        }
    }

    fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }
}

impl Drop for CheckCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_proxy_whose_haproxy_is_down_never_takes_the_reserved_ip() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start("follower-down", etcd, |_| url.clone(), &[]);
    pair.b.haproxy.kill();
    let checks = CheckCounter::start(&pair.b.haproxy.socket);
    let since = SystemTime::now();
    drop(pair.a.failover.take());
    // A's lease runs out: nobody leads, and B, whose HAProxy is down, does
    // not claim it through the rounds that follow (each checks B's HAProxy).
    // (print --health on A, whose HAProxy still answers.)
    wait_until("A's leadership to run out", FAILOVER_BOUND, || {
        pair.print_health(&pair.a).contains("leader: none")
    });
    let seen = checks.checks();
    wait_until(
        "B to check its HAProxy in three more rounds",
        FAILOVER_BOUND,
        || checks.checks() >= seen + 3,
    );
    assert!(pair.print_health(&pair.a).contains("leader: none"));
    let b_log = pair.b.log();
    assert!(
        !b_log.contains(" leads: "),
        "B claimed leadership:\n{b_log}"
    );
    assert_eq!(pair.assigned_since(since), Vec::<u64>::new());
    assert_eq!(pair.holder(), Some(pair.a.droplet.id));

    // Once B's HAProxy answers again, B takes over.
    drop(checks);
    let started = Instant::now();
    pair.b.haproxy = pair.b.project.start_haproxy();
    pair.measure_failover("follower's HAProxy back after the leader died", started);
    assert_eq!(pair.assigned_since(since), [pair.b.droplet.id]);
}

#[test]
fn a_leader_cut_off_from_etcd_stops_acting_and_no_second_leader_acts_beside_it() {
    let etcd = Etcd::start();
    let relays = [Relay::start(etcd.addr()), Relay::start(etcd.addr())];
    let urls = [relays[0].url(), relays[1].url()];
    let pair = Pair::start(
        "partition",
        etcd,
        |name| urls[usize::from(name == "b")].clone(),
        &[],
    );
    let [relay_a, relay_b] = relays;

    // The follower cut off: its reads of etcd go nowhere, and nothing
    // moves; A keeps leading.
    let since = SystemTime::now();
    let swallowed = relay_b.swallowed();
    relay_b.cut();
    wait_until(
        "B's next read of etcd to go nowhere",
        FAILOVER_BOUND,
        || relay_b.swallowed() > swallowed,
    );
    assert_eq!(pair.holder(), Some(pair.a.droplet.id));
    assert_eq!(pair.assigned_since(since), Vec::<u64>::new());
    // Back in touch; its stalled read times out well before A's lease, cut
    // next, runs out.
    relay_b.heal();

    // The leader cut off: B takes over once A's lease runs out, and A,
    // unable to confirm its leadership, stops acting and never takes the
    // reserved IP back. A's HAProxy serves on, so no request fails.
    let traffic = Traffic::start(pair.reserved.forwarder, 2, "/");
    let cut_at = SystemTime::now();
    let started = Instant::now();
    relay_a.cut();
    let moved = pair.measure_failover("leader cut off from etcd", started);
    finish_after_the_move(traffic, &moved, true);
    wait_until("A to stop acting", FAILOVER_BOUND, || {
        let log = pair.a.log();
        log.contains("no longer acting on reserved IP") || log.contains("not touching reserved IP")
    });
    assert_eq!(pair.assigned_since(cut_at), [pair.b.droplet.id]);
    assert_eq!(pair.holder(), Some(pair.b.droplet.id));

    // Back in touch, A follows: it finds its leadership gone and B leading.
    let forwarded = relay_a.forwarded();
    relay_a.heal();
    wait_until("A to talk to etcd again", FAILOVER_BOUND, || {
        relay_a.forwarded() > forwarded
    });
    wait_until("A to step down", FAILOVER_BOUND, || {
        pair.a.log().contains("no longer acting on reserved IP")
    });
    assert_eq!(pair.assigned_since(cut_at), [pair.b.droplet.id]);
    assert!(pair.print_health(&pair.a).contains("leader: proxy-b"));
    for _ in 0..10 {
        http_get(pair.reserved.forwarder, "/").unwrap();
    }
}

#[test]
fn a_leader_refused_for_a_locked_ip_backs_off_and_stops_within_half_a_lease_of_losing_etcd() {
    let etcd = Etcd::start();
    let relays = [Relay::start(etcd.addr()), Relay::start(etcd.addr())];
    let urls = [relays[0].url(), relays[1].url()];
    let pair = Pair::start(
        "locked-ip",
        etcd,
        |name| urls[usize::from(name == "b")].clone(),
        &[],
    );
    let [relay_a, _relay_b] = relays;
    let ip = pair.reserved.ip;
    let (a, b) = (pair.a.droplet.id, pair.b.droplet.id);
    // The assigns `droplet` asked for since `since`, accepted or refused.
    let asked = |droplet: u64, since: SystemTime| -> Vec<SimIpRequest> {
        pair.sim
            .reserved_ip_requests()
            .into_iter()
            .filter(|r| r.ip == ip && r.droplet_id == Some(droplet) && r.at >= since)
            .collect()
    };
    let a_log = || pair.a.log();

    // Someone else's action takes the IP away and keeps it locked: A,
    // leading, asks for it back with growing pauses, and gets it once free.
    const LOCKED: Duration = Duration::from_secs(8);
    let locked_at = SystemTime::now();
    pair.sim.lock_reserved_ip(ip, None, LOCKED);
    wait_until(
        "A to take the reserved IP back once it is free",
        FAILOVER_BOUND,
        || pair.holder() == Some(a),
    );
    let refused = asked(a, locked_at).iter().filter(|r| !r.accepted).count();
    eprintln!("assigns refused while the reserved IP was locked for {LOCKED:?}: {refused}");
    assert!(refused >= 1, "A never met the lock:\n{}", a_log());
    assert!(
        refused <= 6,
        "A asked {refused} times in {LOCKED:?} for a locked IP:\n{}",
        a_log()
    );

    // Locked again, and A cut off from etcd the moment it is refused: it
    // asks no more once half its lease is over, long before B takes over.
    let relocked_at = SystemTime::now();
    pair.sim
        .lock_reserved_ip(ip, None, Duration::from_secs(120));
    wait_until("A to be refused", FAILOVER_BOUND, || {
        !asked(a, relocked_at).is_empty()
    });
    let cut_at = SystemTime::now();
    relay_a.cut();
    wait_until("B to lead and ask for the IP", FAILOVER_BOUND, || {
        !asked(b, cut_at).is_empty()
    });
    let after_cut = |requests: Vec<SimIpRequest>| -> Vec<String> {
        let at = |r: &SimIpRequest| r.at.duration_since(cut_at).unwrap().as_secs_f64();
        requests.iter().map(|r| format!("{:.1} s", at(r))).collect()
    };
    let (by_a, by_b) = (after_cut(asked(a, cut_at)), after_cut(asked(b, cut_at)));
    eprintln!(
        "assigns after the cut: A's at {by_a:?}, B's from {}",
        by_b[0]
    );
    assert_eq!(
        after_cut(asked(a, cut_at + LEASE_TTL / 2)),
        Vec::<String>::new(),
        "A still assigned more than half a lease after it lost etcd (B from {}):\n{}",
        by_b[0],
        a_log()
    );
}

#[test]
fn a_leader_that_loses_leadership_between_its_decision_and_its_assign_does_not_assign() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let pair = Pair::start("lost-before-assign", etcd, |_| url.clone(), &[]);
    let ip = pair.reserved.ip;

    // Someone moves the reserved IP to B's droplet; A, reading it back
    // (every failover_recheck_interval), finds it elsewhere and decides to
    // take it back. Its read is held at the API ...
    pair.sim
        .hold_requests("GET", &format!("/v2/reserved_ips/{ip}"));
    assert!(pair.sim.assign_reserved_ip(ip, pair.b.droplet.id));
    wait_until("A to read the reserved IP", FAILOVER_BOUND, || {
        pair.sim.held_requests() >= 1
    });
    // ... while its leadership goes (its lease revoked), then answered.
    assert!(
        pair.etcd.revoke_leases() >= 1,
        "A's leadership holds a lease"
    );
    let lost_at = SystemTime::now();
    pair.sim.release_requests();

    wait_until("A to stop acting", FAILOVER_BOUND, || {
        pair.a.log().contains("no longer acting on reserved IP")
    });
    let log = pair.a.log();
    assert!(
        !pair.assigned_since(lost_at).contains(&pair.a.droplet.id),
        "A assigned the reserved IP after it lost leadership:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "did not assign reserved IP {ip}, as leadership could not be confirmed"
        )),
        "{log}"
    );
    // B leads now, and holds it.
    wait_until("B to lead", FAILOVER_BOUND, || {
        pair.print_health(&pair.b).contains("leader: proxy-b")
    });
    assert_eq!(pair.holder(), Some(pair.b.droplet.id));
}

#[test]
fn failover_says_what_it_needs_and_doctor_checks_the_reserved_ip() {
    let mut project = Project::new("failover-setup");
    project.run(&["failover"]).fails(
        1,
        "failover elects a leader through etcd; set inventory_backend: etcd",
    );
    let etcd = Etcd::start();
    project.use_etcd(&etcd.url());
    project
        .run(&["failover"])
        .fails(1, "none is set; add reserved_ip: <address> to");
    project.set("reserved_ip", Some("127.0.0.9"));
    project.set("frontend_bind", Some("'*:80'"));
    project.run(&["failover"]).fails(
        1,
        "set haproxy_socket (or frontend_bind to an address:port)",
    );
    project.set("frontend_bind", None);
    let history = project.run(&["failover", "--history"]).success();
    assert_eq!(history.stdout, "No reserved IP assignment recorded yet.\n");

    let doctor = project.run(&["doctor"]).stdout;
    assert!(
        doctor.contains("✗ reserved ip: 127.0.0.9 is not a reserved IP of this account"),
        "{doctor}"
    );
    let reserved = project.sim.create_reserved_ip();
    project.set("reserved_ip", Some(&reserved.ip.to_string()));
    let doctor = project.run(&["doctor"]).stdout;
    assert!(
        doctor.contains(&format!(
            "✓ reserved ip: {} exists and no droplet holds it",
            reserved.ip
        )),
        "{doctor}"
    );
}

#[test]
fn a_proxy_that_gave_leadership_up_waits_out_the_minimum_hold() {
    const MIN_HOLD: Duration = Duration::from_secs(12);
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start(
        "min-hold",
        etcd,
        |_| url.clone(),
        &[("failover_min_hold", "12s")],
    );
    let started = Instant::now();
    pair.a.haproxy.kill();
    pair.measure_failover("leader's HAProxy killed", started);
    let a_resigned = pair
        .a
        .logged_at("resigned leadership")
        .expect("A logged its resignation");

    // A's HAProxy is back, then B's fails: A resigned moments ago, so it
    // waits out its minimum hold before it takes the reserved IP back.
    pair.a.haproxy = pair.a.project.start_haproxy();
    pair.b.haproxy.kill();
    wait_until("A to take the reserved IP back", FAILOVER_BOUND * 2, || {
        pair.holder() == Some(pair.a.droplet.id)
    });
    let taken_back = pair
        .sim
        .reserved_ip_assignments()
        .last()
        .unwrap()
        .requested_at;
    let held = taken_back.duration_since(a_resigned).unwrap_or_default();
    // B gave leadership up well within A's hold: the hold, nothing else,
    // kept A back.
    let b_resigned = pair
        .b
        .logged_at("resigned leadership")
        .expect("B logged its resignation");
    let vacant = b_resigned.duration_since(a_resigned).unwrap_or_default();
    eprintln!(
        "minimum hold: A took the reserved IP back {:.1} s after it resigned; B resigned {:.1} s after A",
        held.as_secs_f64(),
        vacant.as_secs_f64()
    );
    assert!(
        held >= MIN_HOLD,
        "A took the IP back {held:?} after it resigned, within its minimum hold"
    );
    assert!(
        vacant + Duration::from_secs(2) < MIN_HOLD,
        "B resigned only {vacant:?} after A: too late to show the hold"
    );
    let holders: Vec<u64> = pair
        .sim
        .reserved_ip_assignments()
        .iter()
        .map(|a| a.droplet_id)
        .collect();
    assert_eq!(
        holders,
        [pair.a.droplet.id, pair.b.droplet.id, pair.a.droplet.id]
    );
}
