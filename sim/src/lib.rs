//! A stateful simulator of the DigitalOcean API v2 subset doproxy uses, so that
//! doproxy's tests and demos run against something faithful to the official
//! OpenAPI spec without any network: droplets boot, get loopback addresses and
//! serve HTTP on them, requests can be faulted, CPU metrics follow what a test
//! sets; droplets can stop serving or be powered off, answer given paths with
//! given statuses (a failing health check) and serve on a second port,
//! snapshots stand for new versions of an image, projects take droplets, and
//! requests can be held at the API while a test acts. Everything listens on
//! loopback only.
//!
//! In-process use (synchronous tests):
//!
//! ```no_run
//! let sim = doproxy_sim::Simulator::spawn(doproxy_sim::SimConfig::default());
//! let api_base = sim.url(); // point the client here, with token "sim-token"
//! # drop(api_base);
//! // dropping `sim` stops the API server and every droplet server
//! ```

mod admin;
mod api;
mod catalog;
mod create;
mod droplet_http;
mod error;
mod faults;
mod forwarder;
mod listen;
mod metadata;
mod metrics;
mod reserved_ip_state;
mod reserved_ips;
mod server;
mod state;
mod time;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub use faults::Faults;
pub use reserved_ip_state::{SimAssignment, SimIpRequest};
pub use reserved_ips::{SimProxy, SimReservedIp};
pub use state::{DropletStatus, RequestRecord, SimDroplet};

use state::{NewDroplets, State, Subnet};

/// How a simulator starts. Every field can also be changed later through the
/// `set_*` methods except the token, the droplet port and the proxy's address.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The one bearer token the API accepts.
    pub token: String,
    /// A droplet's status goes from `new` to `active` after this.
    pub boot_delay: Duration,
    /// Once active, a droplet's HTTP server starts after this extra delay.
    pub http_delay: Duration,
    /// Added before answering every /v2 request.
    pub latency: Duration,
    /// A new droplet is missing from GET /v2/droplets lists for this long
    /// after its create (GET /v2/droplets/{id} finds it at once).
    pub list_lag: Duration,
    /// The port every droplet's HTTP server listens on; 0 picks a free one.
    pub droplet_port: u16,
    /// What the metadata service reports as "this droplet's" public IPv4.
    pub proxy_public_ip: Ipv4Addr,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token: "sim-token".to_owned(),
            boot_delay: Duration::from_secs(1),
            http_delay: Duration::ZERO,
            latency: Duration::ZERO,
            list_lag: Duration::ZERO,
            droplet_port: 0,
            proxy_public_ip: Ipv4Addr::LOCALHOST,
        }
    }
}

/// A handle on one simulator; clones share the same state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    /// The proxy droplet's ID in the metadata service; not a listed droplet.
    proxy_id: u64,
    proxy_public_ip: Ipv4Addr,
    subnet: Subnet,
    droplet_port: u16,
    /// Where droplets told to (`set_on_second_port`) serve too.
    second_port: u16,
    state: Mutex<State>,
    running: OnceLock<Running>,
}

/// Where the simulator serves; known once `serve` (or `spawn`) has started.
struct Running {
    base_url: String,
    runtime: Handle,
}

impl Simulator {
    /// A simulator with its own private loopback subnet, not serving yet.
    pub fn new(config: SimConfig) -> Simulator {
        let (subnet, droplet_port) = Subnet::reserve(config.droplet_port);
        let second_port = subnet.free_port();
        let state = State::new(state::Settings {
            boot_delay: config.boot_delay,
            http_delay: config.http_delay,
            latency: config.latency,
            list_lag: config.list_lag,
        });
        Simulator {
            inner: Arc::new(Inner {
                token: config.token,
                proxy_id: fastrand::u64(10_000_000..100_000_000),
                proxy_public_ip: config.proxy_public_ip,
                subnet,
                droplet_port,
                second_port,
                state: Mutex::new(state),
                running: OnceLock::new(),
            }),
        }
    }

    /// Runs in the background on its own tokio runtime thread, on 127.0.0.1
    /// and a free port; dropping the returned guard stops everything (the API
    /// server and all droplet servers). Panics if the runtime or the listener
    /// cannot be set up.
    pub fn spawn(config: SimConfig) -> SimGuard {
        let sim = Simulator::new(config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("doproxy-sim")
            .enable_all()
            .build()
            .expect("doproxy-sim: cannot build a tokio runtime");
        let listener = runtime
            .block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("doproxy-sim: cannot listen on 127.0.0.1");
        // Known before `spawn` returns, so url() and seed_droplets() work at once.
        sim.attach(&listener, runtime.handle().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = sim.clone();
        let thread = std::thread::Builder::new()
            .name("doproxy-sim".to_owned())
            .spawn(move || {
                runtime.block_on(server.serve(listener, async {
                    let _ = stopped.await;
                }))
            })
            .expect("doproxy-sim: cannot start its thread");
        SimGuard {
            sim,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Serves the API, metadata and admin routes on `listener`, and runs the
    /// droplets' HTTP servers, until `shutdown` resolves; then stops them all.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.attach(&listener, Handle::current());
        server::run(&self, listener, shutdown).await;
        let mut state = self.lock();
        state.stopped = true;
        for droplet in state.droplets.values_mut() {
            droplet.stop_server();
        }
    }

    /// The API base URL, `http://127.0.0.1:PORT`; /v2/..., /metadata/v1/...
    /// and /_sim/... all live under it. Panics before `serve` has started.
    pub fn url(&self) -> String {
        self.running().base_url.clone()
    }

    /// The port every droplet's HTTP server listens on.
    pub fn droplet_port(&self) -> u16 {
        self.inner.droplet_port
    }

    /// A second port droplets serve on once told to (`set_on_second_port`),
    /// such as an application's health check port.
    pub fn second_port(&self) -> u16 {
        self.inner.second_port
    }

    /// Every droplet, ordered by ID.
    pub fn droplets(&self) -> Vec<SimDroplet> {
        let now = SystemTime::now();
        self.lock()
            .droplets
            .values()
            .map(|d| d.summary(now))
            .collect()
    }

    /// Every request to /v2 and /metadata so far, in the order they arrived.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Replaces the faults applied to the next /v2 requests.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Sets a droplet's CPU utilization (0 to 100) as its metrics will report
    /// it from now on. Returns false if there is no such droplet.
    pub fn set_cpu(&self, droplet_id: u64, utilization_percent: f64) -> bool {
        let now = SystemTime::now();
        match self.lock().droplets.get_mut(&droplet_id) {
            Some(droplet) => {
                droplet.cpu.set(utilization_percent, now);
                true
            }
            None => false,
        }
    }

    /// false: that droplet's HTTP server stops (or never starts); true: it
    /// (re)starts now, or once the droplet is active, skipping what is left of
    /// its http delay.
    /// Returns false if there is no such droplet.
    pub fn set_serving(&self, droplet_id: u64, serving: bool) -> bool {
        let mut state = self.lock();
        let Some(droplet) = state.droplets.get_mut(&droplet_id) else {
            return false;
        };
        droplet.serve_http = serving;
        if serving {
            // Fixed now: no more waiting for the http delay set at creation;
            // a server task still waiting for the old time starts over.
            let http_at = droplet
                .http_at
                .min(SystemTime::now())
                .max(droplet.active_at);
            if http_at != droplet.http_at {
                droplet.http_at = http_at;
                droplet.stop_server();
            }
        }
        drop(state);
        self.sync_servers(&[droplet_id]);
        true
    }

    /// From now on droplet `droplet_id` answers requests for `path` (any
    /// method, on every port it serves, the query aside) with `status` and
    /// `body` instead of its page: an application's health check that fails
    /// while its pages work, say. Returns false if there is no such droplet.
    pub fn set_answer(&self, droplet_id: u64, path: &str, status: u16, body: &str) -> bool {
        let state = self.lock();
        let Some(droplet) = state.droplets.get(&droplet_id) else {
            return false;
        };
        droplet
            .answers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(path.to_owned(), (status, body.to_owned()));
        true
    }

    /// true: droplet `droplet_id` serves on `second_port` too (once it
    /// serves at all); false: on the droplet port only. Returns false if
    /// there is no such droplet.
    pub fn set_on_second_port(&self, droplet_id: u64, on: bool) -> bool {
        let mut state = self.lock();
        let Some(droplet) = state.droplets.get_mut(&droplet_id) else {
            return false;
        };
        if droplet.on_second_port != on {
            droplet.on_second_port = on;
            droplet.stop_server();
        }
        drop(state);
        self.sync_servers(&[droplet_id]);
        true
    }

    /// From now on /v2 requests of `method` for `path` (the query aside)
    /// wait, before anything else happens to them, until
    /// `release_requests`: a test acts between a client's request and its
    /// next step. Replaces an earlier hold (whose requests stay held until
    /// released).
    pub fn hold_requests(&self, method: &str, path: &str) {
        let mut state = self.lock();
        if let Some(earlier) = state.hold.take() {
            earlier.released.send_replace(true);
        }
        state.hold = Some(state::Hold::new(method, path));
    }

    /// How many requests the current hold has held so far.
    pub fn held_requests(&self) -> usize {
        self.lock().hold.as_ref().map_or(0, |hold| hold.held)
    }

    /// Lets the held requests go on, and holds no more.
    pub fn release_requests(&self) {
        if let Some(hold) = self.lock().hold.take() {
            hold.released.send_replace(true);
        }
    }

    /// false powers a droplet off as its owner or a fault would: status
    /// `off`, its HTTP server stopped; true powers it on again (serving at
    /// once if it serves). Returns false if there is no such droplet.
    pub fn set_power(&self, droplet_id: u64, on: bool) -> bool {
        let mut state = self.lock();
        let Some(droplet) = state.droplets.get_mut(&droplet_id) else {
            return false;
        };
        droplet.powered_off = !on;
        if on {
            droplet.http_at = droplet.http_at.min(SystemTime::now());
        }
        drop(state);
        self.sync_servers(&[droplet_id]);
        true
    }

    /// Adds a snapshot to the account, as taking one of a droplet running a
    /// new release does; returns its image ID, which creates accept as
    /// `image`.
    pub fn add_snapshot(&self, name: &str) -> u64 {
        let mut state = self.lock();
        let id = 200_000_000 + state.snapshots.len() as u64;
        let created_at = time::rfc3339(SystemTime::now());
        state
            .snapshots
            .push(catalog::Image::snapshot(id, name, created_at));
        id
    }

    /// Adds a project to the account; returns its ID (a UUID), which
    /// POST /v2/projects/{id}/resources then accepts.
    pub fn add_project(&self, name: &str) -> String {
        let hex = |digits: usize| {
            (0..digits)
                .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("below 16"))
                .collect::<String>()
        };
        let id = format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12));
        self.lock().projects.insert(id.clone(), name.to_owned());
        id
    }

    /// Applies to droplets created from now on.
    pub fn set_boot_delay(&self, delay: Duration) {
        self.lock().settings.boot_delay = delay;
    }

    /// Applies to droplets created from now on.
    pub fn set_http_delay(&self, delay: Duration) {
        self.lock().settings.http_delay = delay;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.lock().settings.latency = latency;
    }

    /// Applies to every list from now on.
    pub fn set_list_lag(&self, lag: Duration) {
        self.lock().settings.list_lag = lag;
    }

    /// Destroys a droplet as someone else would (another client, the control
    /// panel). Returns false if there is no such droplet.
    pub fn destroy_droplet(&self, droplet_id: u64) -> bool {
        self.lock().droplets.remove(&droplet_id).is_some()
    }

    /// Creates `count` droplets that are active at once, named
    /// `<name_prefix>-<n>` (n from 0), in nyc3 with size s-1vcpu-1gb, image
    /// ubuntu-24-04-x64 and monitoring; for benchmarks.
    pub fn seed_droplets(
        &self,
        count: usize,
        name_prefix: &str,
        tags: &[String],
        serve_http: bool,
    ) -> Vec<SimDroplet> {
        let new = NewDroplets {
            names: (0..count).map(|n| format!("{name_prefix}-{n}")).collect(),
            tags: tags.to_vec(),
            serve_http,
            ..NewDroplets::seeded()
        };
        let now = SystemTime::now();
        let ids = self.lock().create(&self.inner.subnet, &new, now);
        self.sync_servers(&ids);
        let state = self.lock();
        ids.iter()
            .filter_map(|id| state.droplets.get(id))
            .map(|d| d.summary(now))
            .collect()
    }

    /// Called by a droplet's server task once it listens.
    fn droplet_listening(&self, droplet_id: u64, generation: u64) {
        if let Some(droplet) = self.lock().droplets.get_mut(&droplet_id) {
            droplet.mark_listening(generation);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent enough
        // for a simulator; keep serving rather than cascade.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn running(&self) -> &Running {
        self.inner
            .running
            .get()
            .expect("doproxy-sim: the simulator is not serving yet")
    }

    /// Records where the simulator serves and the runtime its droplet servers
    /// run on, then starts the servers of droplets created before that.
    fn attach(&self, listener: &TcpListener, runtime: Handle) {
        let addr: SocketAddr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let _ = self.inner.running.set(Running {
            base_url: format!("http://{addr}"),
            runtime,
        });
        let ids: Vec<u64> = self.lock().droplets.keys().copied().collect();
        self.sync_servers(&ids);
    }

    /// Starts or stops each droplet's HTTP server task to match whether it
    /// should serve; the task itself waits until the droplet's HTTP start time.
    fn sync_servers(&self, ids: &[u64]) {
        let Some(running) = self.inner.running.get() else {
            return;
        };
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        for id in ids {
            let Some(droplet) = state.droplets.get_mut(id) else {
                continue;
            };
            if !droplet.serve_http || droplet.powered_off {
                droplet.stop_server();
            } else if !droplet.has_server() {
                let generation = droplet.next_server_generation();
                let second = droplet
                    .on_second_port
                    .then(|| SocketAddr::from((droplet.private_ip, self.inner.second_port)));
                let (task, listening) = droplet_http::spawn(
                    self.clone(),
                    &running.runtime,
                    droplet_http::Server {
                        droplet_id: *id,
                        generation,
                        addrs: std::iter::once(SocketAddr::from((
                            droplet.private_ip,
                            self.inner.droplet_port,
                        )))
                        .chain(second)
                        .collect(),
                        start_at: droplet.http_at,
                        page: droplet.page(),
                        answers: droplet.answers.clone(),
                    },
                );
                droplet.set_server(task, generation, listening);
            }
        }
    }
}

/// Keeps a spawned simulator running; dropping it stops the simulator and
/// waits for its thread.
pub struct SimGuard {
    sim: Simulator,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Deref for SimGuard {
    type Target = Simulator;

    fn deref(&self) -> &Simulator {
        &self.sim
    }
}

impl Drop for SimGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
