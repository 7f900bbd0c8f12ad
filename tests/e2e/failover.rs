//! Two proxies behind one reserved IP: each with a real HAProxy, `watch` and
//! `failover`, sharing a real etcd and the simulator, whose forwarder sends
//! the reserved IP's traffic to whichever proxy holds it. The leader's
//! HAProxy, its doproxy or its etcd connection fails; the reserved IP must
//! move within a bounded time (measured and printed: `failover time`), never
//! to a proxy whose HAProxy is down, and requests through it must resume.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use doproxy_sim::{SimConfig, SimGuard, SimIpRequest, SimProxy, SimReservedIp, Simulator};

use crate::etcd_server::Etcd;
use crate::support::{Background, Haproxy, Project, Traffic, http_get, terminate, wait_until};

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
    failover: Option<Failover>,
}

/// A running `doproxy failover`, its stderr kept in a file; killed when
/// dropped.
struct Failover {
    child: Child,
    log: PathBuf,
}

impl Failover {
    fn start(project: &Project) -> Failover {
        let log = project.path("failover.log");
        let child = project
            .command(&["failover"])
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Failover { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two proxies, A leading (it started first and holds the reserved IP)
/// and B following, in front of two droplets.
struct Pair {
    sim: Arc<SimGuard>,
    reserved: SimReservedIp,
    a: Proxy,
    b: Proxy,
    _etcd: Etcd,
}

impl Pair {
    /// `etcd_for` gives each proxy's etcd endpoint (direct, or through a
    /// link a test can cut); `settings` go into both doproxy.yml files.
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
            let droplet = sim.add_proxy(&format!("proxy-{name}"), project.frontend);
            project.use_etcd(&etcd_for(name));
            project.set("metadata_url", Some(&droplet.metadata_url));
            project.set("reserved_ip", Some(&reserved.ip.to_string()));
            // A leader that wrongly still acted would take the IP back
            // within this.
            project.set("failover_recheck_interval", Some("2s"));
            for (key, value) in settings {
                project.set(key, Some(value));
            }
            (project, droplet)
        };
        let ((mut a, a_droplet), (mut b, b_droplet)) = (proxy("a"), proxy("b"));
        a.run(&["create", "--count", "2"]).success();
        let (haproxy_a, haproxy_b) = (a.start_haproxy(), b.start_haproxy());
        let (watch_a, watch_b) = (a.watch(), b.watch());
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
            _etcd: etcd,
        };
        pair.a.failover = Some(Failover::start(&pair.a.project));
        wait_until("A to take the reserved IP", FAILOVER_BOUND, || {
            pair.holder() == Some(pair.a.droplet.id)
        });
        pair.b.failover = Some(Failover::start(&pair.b.project));
        wait_until(
            "print --health to name A the leader",
            FAILOVER_BOUND,
            || {
                pair.b.project.path("failover.log").exists()
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
    /// answered; prints and returns the time since `started`.
    fn measure_failover(&self, what: &str, started: Instant) -> Duration {
        let mut moved = None;
        let mut resumed = None;
        while moved.is_none() || resumed.is_none() {
            assert!(
                started.elapsed() < FAILOVER_BOUND,
                "{what}: no failover within {FAILOVER_BOUND:?} (moved after {moved:?}):\nA: {}\nB: {}",
                self.a
                    .failover
                    .as_ref()
                    .map(Failover::log)
                    .unwrap_or_default(),
                self.b
                    .failover
                    .as_ref()
                    .map(Failover::log)
                    .unwrap_or_default(),
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
        resumed
    }
}

#[test]
fn the_reserved_ip_moves_when_the_leaders_haproxy_dies() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start("haproxy-dies", etcd, |_| url.clone(), &[]);
    let traffic = Traffic::start(pair.reserved.forwarder, 2, "/");
    wait_until("traffic through the reserved IP", FAILOVER_BOUND, || {
        http_get(pair.reserved.forwarder, "/").is_ok()
    });

    let killed_at = SystemTime::now();
    let started = Instant::now();
    pair.a.haproxy.kill();
    pair.measure_failover("leader's HAProxy killed", started);
    let (ok, _) = traffic.finish();
    assert!(ok > 0, "no request got through the reserved IP");

    // Never assigned to A, whose HAProxy is down, after the kill.
    let assigned = pair.assigned_since(killed_at);
    assert_eq!(assigned, [pair.b.droplet.id], "assignments after the kill");
    let a_log = pair.a.failover.as_ref().unwrap().log();
    assert!(a_log.contains("resigned leadership"), "{a_log}");

    // Requests keep being answered through the reserved IP, by B.
    for _ in 0..20 {
        http_get(pair.reserved.forwarder, "/").unwrap();
    }
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
    let traffic = Traffic::start(pair.reserved.forwarder, 2, "/");
    let killed_at = SystemTime::now();
    let started = Instant::now();
    drop(pair.a.failover.take());
    let took = pair.measure_failover("leader's doproxy killed with SIGKILL", started);
    let (ok, _) = traffic.finish();
    assert!(ok > 0, "no request got through the reserved IP");
    // B waited for A's lease to run out: it did not take over early.
    assert!(
        took >= LEASE_TTL / 2,
        "B took over after {took:?}, before A's lease could have run out"
    );
    assert_eq!(pair.assigned_since(killed_at), [pair.b.droplet.id]);
}

#[test]
fn a_leader_stopped_by_sigterm_resigns_so_the_other_takes_over_at_once() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start("sigterm", etcd, |_| url.clone(), &[]);
    let started = Instant::now();
    let failover = pair.a.failover.as_mut().unwrap();
    terminate(&failover.child);
    let status = failover.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", failover.log());
    let log = failover.log();
    assert!(log.contains("resigned leadership"), "{log}");
    let took = pair.measure_failover("leader stopped with SIGTERM", started);
    assert!(
        took < LEASE_TTL,
        "B took {took:?}: it waited for the lease instead of taking over at once"
    );
}

#[test]
fn a_proxy_whose_haproxy_is_down_never_takes_the_reserved_ip() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start("follower-down", etcd, |_| url.clone(), &[]);
    pair.b.haproxy.kill();
    let since = SystemTime::now();
    drop(pair.a.failover.take());
    // A's lease runs out: nobody leads, and B, whose HAProxy is down, does
    // not claim it through the rounds that follow.
    // (print --health on A, whose HAProxy still answers.)
    wait_until("A's leadership to run out", FAILOVER_BOUND, || {
        pair.print_health(&pair.a).contains("leader: none")
    });
    thread::sleep(Duration::from_secs(5));
    assert!(pair.print_health(&pair.a).contains("leader: none"));
    let b_log = pair.b.failover.as_ref().unwrap().log();
    assert!(
        !b_log.contains(" leads: "),
        "B claimed leadership:\n{b_log}"
    );
    assert_eq!(pair.assigned_since(since), Vec::<u64>::new());
    assert_eq!(pair.holder(), Some(pair.a.droplet.id));

    // Once B's HAProxy answers again, B takes over.
    let started = Instant::now();
    pair.b.haproxy = pair.b.project.start_haproxy();
    pair.measure_failover("follower's HAProxy back after the leader died", started);
    assert_eq!(pair.assigned_since(since), [pair.b.droplet.id]);
}

#[test]
fn a_leader_cut_off_from_etcd_stops_acting_and_no_second_leader_acts_beside_it() {
    let etcd = Etcd::start();
    let links = [Link::start(etcd.addr()), Link::start(etcd.addr())];
    let urls = [links[0].url(), links[1].url()];
    let pair = Pair::start(
        "partition",
        etcd,
        |name| urls[usize::from(name == "b")].clone(),
        &[],
    );
    let [link_a, link_b] = links;

    // The follower cut off: nothing moves, A keeps leading.
    let since = SystemTime::now();
    link_b.cut();
    thread::sleep(LEASE_TTL + Duration::from_secs(2));
    assert_eq!(pair.holder(), Some(pair.a.droplet.id));
    assert_eq!(pair.assigned_since(since), Vec::<u64>::new());
    link_b.heal();

    // The leader cut off: B takes over once A's lease runs out, and A,
    // unable to confirm its leadership, stops acting and never takes the
    // reserved IP back.
    let traffic = Traffic::start(pair.reserved.forwarder, 2, "/");
    let cut_at = SystemTime::now();
    let started = Instant::now();
    link_a.cut();
    pair.measure_failover("leader cut off from etcd", started);
    let (ok, _) = traffic.finish();
    assert!(ok > 0, "no request got through the reserved IP");
    // A reads the IP every failover_recheck_interval (2 s): it would have
    // taken it back by now if it still acted.
    thread::sleep(Duration::from_secs(5));
    assert_eq!(pair.assigned_since(cut_at), [pair.b.droplet.id]);
    assert_eq!(pair.holder(), Some(pair.b.droplet.id));
    let a_log = || pair.a.failover.as_ref().unwrap().log();
    assert!(
        a_log().contains("no longer acting on reserved IP")
            || a_log().contains("not touching reserved IP"),
        "{}",
        a_log()
    );

    // Back in touch, A follows: it finds its leadership gone and B leading.
    let forwarded = link_a.forwarded();
    link_a.heal();
    wait_until("A to talk to etcd again", FAILOVER_BOUND, || {
        link_a.forwarded() > forwarded + 3
    });
    wait_until("A to step down", FAILOVER_BOUND, || {
        a_log().contains("no longer acting on reserved IP")
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
    let links = [Link::start(etcd.addr()), Link::start(etcd.addr())];
    let urls = [links[0].url(), links[1].url()];
    let pair = Pair::start(
        "locked-ip",
        etcd,
        |name| urls[usize::from(name == "b")].clone(),
        &[],
    );
    let [link_a, _link_b] = links;
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
    let a_log = || pair.a.failover.as_ref().unwrap().log();

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
    link_a.cut();
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

/// A TCP link between a proxy and etcd that a test can cut as a partition
/// does: open connections go silent, new ones are accepted but get nowhere.
struct Link {
    addr: SocketAddr,
    state: Arc<Mutex<LinkState>>,
    forwarded: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct LinkState {
    /// Connections from before the last cut are silent.
    generation: usize,
    cut: bool,
    /// Connections accepted while cut, held open and never answered.
    held: Vec<TcpStream>,
}

impl Link {
    fn start(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(LinkState::default()));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, count, stopped) = (state.clone(), forwarded.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let born = {
                    let mut state = shared.lock().unwrap();
                    if state.cut {
                        state.held.push(client);
                        continue;
                    }
                    state.generation
                };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let pairs = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ];
                for (from, to) in pairs {
                    let shared = shared.clone();
                    thread::spawn(move || pump(from, to, born, &shared));
                }
            }
        });
        Link {
            addr,
            state,
            forwarded,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.generation += 1;
        state.cut = true;
    }

    fn heal(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = false;
        state.held.clear();
    }

    /// Connections forwarded so far.
    fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either closes; a connection from before the
/// last cut stays open but carries nothing more.
fn pump(mut from: TcpStream, mut to: TcpStream, born: usize, state: &Mutex<LinkState>) {
    let mut buffer = [0u8; 16 * 1024];
    let live = || state.lock().unwrap().generation == born;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if live() && to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    if live() {
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
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
    const MIN_HOLD: Duration = Duration::from_secs(15);
    let etcd = Etcd::start();
    let url = etcd.url();
    let mut pair = Pair::start(
        "min-hold",
        etcd,
        |_| url.clone(),
        &[("failover_min_hold", "15s")],
    );
    let started = Instant::now();
    pair.a.haproxy.kill();
    pair.measure_failover("leader's HAProxy killed", started);

    // A's HAProxy is back, then B's fails: A resigned moments ago, so it
    // waits out its minimum hold before it takes the reserved IP back.
    pair.a.haproxy = pair.a.project.start_haproxy();
    pair.b.haproxy.kill();
    wait_until("A to take the reserved IP back", FAILOVER_BOUND * 2, || {
        pair.holder() == Some(pair.a.droplet.id)
    });
    let took = started.elapsed();
    eprintln!(
        "minimum hold: A took the reserved IP back {:.1} s after it first failed",
        took.as_secs_f64()
    );
    assert!(
        took >= MIN_HOLD,
        "A took the IP back after {took:?}, within its minimum hold"
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
