//! The simulated account behind one lock: droplets and their create actions,
//! the request log, faults and timings, and the loopback subnet that gives
//! droplets addresses no other simulator in the process uses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::catalog::{self, Image, Region, Size};
use crate::faults::Faults;
use crate::metrics::Cpu;
use crate::reserved_ip_state::ReservedIps;
use crate::time;

/// Timings that can change while the simulator runs.
pub(crate) struct Settings {
    pub(crate) boot_delay: Duration,
    pub(crate) http_delay: Duration,
    pub(crate) latency: Duration,
    /// How long a new droplet stays out of GET /v2/droplets lists (the
    /// eventual consistency a real listing shows right after a create).
    pub(crate) list_lag: Duration,
}

pub(crate) struct State {
    pub(crate) settings: Settings,
    pub(crate) faults: Faults,
    pub(crate) droplets: BTreeMap<u64, Droplet>,
    pub(crate) actions: BTreeMap<u64, Action>,
    /// Tags created with POST /v2/tags (droplets' own tags exist too).
    pub(crate) tags: std::collections::BTreeSet<String>,
    /// The account's projects by ID (made with `Simulator::add_project`).
    pub(crate) projects: BTreeMap<String, String>,
    /// The account's snapshots (made with `Simulator::add_snapshot`).
    pub(crate) snapshots: Vec<&'static Image>,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) rate_limit: RateLimit,
    /// Reserved IPs, their actions and the proxy droplets' frontends.
    pub(crate) reserved_ips: ReservedIps,
    /// Requests that wait until a test lets them go on.
    pub(crate) hold: Option<Hold>,
    /// Set once `serve` has returned: no droplet server starts again.
    pub(crate) stopped: bool,
    next_droplet_id: u64,
    next_action_id: u64,
    /// Droplets ever created; the next one's host number in the subnet.
    hosts: u32,
}

/// What a create request (or a seed) asks for.
pub(crate) struct NewDroplets {
    pub(crate) names: Vec<String>,
    pub(crate) region: &'static Region,
    pub(crate) size: &'static Size,
    pub(crate) image: &'static Image,
    pub(crate) tags: Vec<String>,
    pub(crate) features: Vec<&'static str>,
    pub(crate) vpc_uuid: Option<String>,
    pub(crate) serve_http: bool,
    /// Active and serving at once instead of after the current boot and http delays.
    pub(crate) instant: bool,
}

impl NewDroplets {
    /// The defaults seeded droplets get.
    pub(crate) fn seeded() -> NewDroplets {
        NewDroplets {
            names: Vec::new(),
            region: catalog::region("nyc3").expect("nyc3 is in the catalog"),
            size: catalog::size("s-1vcpu-1gb").expect("s-1vcpu-1gb is in the catalog"),
            image: catalog::image_by_slug_or_id("ubuntu-24-04-x64")
                .expect("ubuntu-24-04-x64 is in the catalog"),
            tags: Vec::new(),
            features: vec!["monitoring", "private_networking"],
            vpc_uuid: None,
            serve_http: true,
            instant: true,
        }
    }
}

pub(crate) struct Droplet {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) region: &'static Region,
    pub(crate) size: &'static Size,
    pub(crate) image: &'static Image,
    pub(crate) tags: Vec<String>,
    pub(crate) features: Vec<&'static str>,
    pub(crate) vpc_uuid: String,
    pub(crate) private_ip: Ipv4Addr,
    pub(crate) public_ip: Ipv4Addr,
    pub(crate) created_at: SystemTime,
    pub(crate) active_at: SystemTime,
    /// When its HTTP server may start listening.
    pub(crate) http_at: SystemTime,
    pub(crate) serve_http: bool,
    /// Powered off (`Simulator::set_power`): status `off`, no HTTP server.
    pub(crate) powered_off: bool,
    /// What its HTTP server answers on some paths instead of its page.
    pub(crate) answers: Answers,
    /// Its HTTP server also listens on the simulator's second port.
    pub(crate) on_second_port: bool,
    /// The project it was assigned to with POST /v2/projects/{id}/resources.
    pub(crate) project_id: Option<String>,
    pub(crate) cpu: Cpu,
    /// Its create action.
    pub(crate) action_id: u64,
    server: Option<ServerTask>,
    /// Server tasks started so far, to tell a stale task from the current one.
    servers_started: u64,
}

/// A running droplet HTTP server task; dropping it stops the server.
struct ServerTask {
    task: AbortHandle,
    generation: u64,
    listening: bool,
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DropletStatus {
    New,
    Active,
    Off,
}

impl DropletStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DropletStatus::New => "new",
            DropletStatus::Active => "active",
            DropletStatus::Off => "off",
        }
    }
}

/// A droplet as a test sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimDroplet {
    pub id: u64,
    pub name: String,
    pub status: DropletStatus,
    pub private_ip: Ipv4Addr,
    pub public_ip: Ipv4Addr,
    pub tags: Vec<String>,
    #[serde(serialize_with = "time::serialize")]
    pub created_at: SystemTime,
    /// Its HTTP server is listening right now.
    pub serving_http: bool,
    /// The slug of its image (the ID for an image without one).
    pub image: String,
    pub size: String,
    pub region: String,
    pub vpc_uuid: String,
    /// backups, ipv6, monitoring, private_networking as created.
    pub features: Vec<String>,
    pub project_id: Option<String>,
}

/// One request to /v2 or /metadata.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    pub path_and_query: String,
    /// 0 if the connection was dropped without a response.
    pub status: u16,
    /// When the request arrived.
    #[serde(serialize_with = "time::serialize")]
    pub at: SystemTime,
    /// The injected fault, if any: "drop", "rate_limit", "server_error",
    /// "drop_create_response" or "fail_delete".
    pub fault: Option<String>,
}

/// A droplet's answers by path (status and body), shared with its HTTP
/// server so they change while it runs.
pub(crate) type Answers = Arc<Mutex<HashMap<String, (u16, String)>>>;

/// /v2 requests of one method and path that wait until released.
pub(crate) struct Hold {
    method: String,
    path: String,
    /// How many requests were held so far.
    pub(crate) held: usize,
    pub(crate) released: watch::Sender<bool>,
}

impl Hold {
    pub(crate) fn new(method: &str, path: &str) -> Hold {
        Hold {
            method: method.to_owned(),
            path: path.to_owned(),
            held: 0,
            released: watch::channel(false).0,
        }
    }

    /// If a request of `method` for `path` is to wait: counts it and
    /// returns what tells it to go on.
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<watch::Receiver<bool>> {
        (self.method == method && self.path == path).then(|| {
            self.held += 1;
            self.released.subscribe()
        })
    }
}

/// A droplet's create action; its status follows the droplet's boot.
pub(crate) struct Action {
    pub(crate) id: u64,
    pub(crate) droplet_id: u64,
    pub(crate) region: &'static Region,
    pub(crate) started_at: SystemTime,
    pub(crate) completed_at: SystemTime,
}

/// The hourly request quota the rate limit headers report (never enforced).
pub(crate) struct RateLimit {
    used: u32,
    reset_at: u64,
}

pub(crate) const RATE_LIMIT: u32 = 5000;

impl RateLimit {
    /// Counts one request; returns (remaining, reset epoch seconds).
    pub(crate) fn tick(&mut self, now: SystemTime) -> (u32, u64) {
        let now = time::epoch_secs(now);
        if now >= self.reset_at {
            self.used = 0;
            self.reset_at = now + 3600;
        }
        self.used += 1;
        (RATE_LIMIT.saturating_sub(self.used), self.reset_at)
    }
}

impl State {
    pub(crate) fn new(settings: Settings) -> State {
        State {
            settings,
            faults: Faults::default(),
            droplets: BTreeMap::new(),
            actions: BTreeMap::new(),
            tags: std::collections::BTreeSet::new(),
            projects: BTreeMap::new(),
            snapshots: Vec::new(),
            requests: Vec::new(),
            rate_limit: RateLimit {
                used: 0,
                reset_at: 0,
            },
            reserved_ips: Default::default(),
            hold: None,
            stopped: false,
            next_droplet_id: fastrand::u64(100_000_000..500_000_000),
            next_action_id: fastrand::u64(1_000_000_000..2_000_000_000),
            hosts: 0,
        }
    }

    /// Creates one droplet per name with its create action; returns their IDs.
    pub(crate) fn create(
        &mut self,
        subnet: &Subnet,
        new: &NewDroplets,
        now: SystemTime,
    ) -> Vec<u64> {
        let (boot_delay, http_delay) = if new.instant {
            (Duration::ZERO, Duration::ZERO)
        } else {
            (self.settings.boot_delay, self.settings.http_delay)
        };
        let active_at = now + boot_delay;
        let mut ids = Vec::with_capacity(new.names.len());
        for name in &new.names {
            let id = self.next_droplet_id;
            self.next_droplet_id += 1;
            let action_id = self.next_action_id;
            self.next_action_id += 1;
            let host = self.hosts;
            self.hosts += 1;
            // A stuck boot: active only in a hundred years.
            let active_at = if !new.instant && self.faults.stuck_creates > 0 {
                self.faults.stuck_creates -= 1;
                now + Duration::from_secs(100 * 365 * 24 * 3600)
            } else {
                active_at
            };
            self.droplets.insert(
                id,
                Droplet {
                    id,
                    name: name.clone(),
                    region: new.region,
                    size: new.size,
                    image: new.image,
                    tags: new.tags.clone(),
                    features: new.features.clone(),
                    vpc_uuid: new
                        .vpc_uuid
                        .clone()
                        .unwrap_or_else(|| new.region.default_vpc_uuid.to_owned()),
                    private_ip: subnet.private_ip(host),
                    public_ip: subnet.public_ip(host),
                    created_at: now,
                    active_at,
                    http_at: active_at + http_delay,
                    serve_http: new.serve_http,
                    powered_off: false,
                    answers: Answers::default(),
                    on_second_port: false,
                    project_id: None,
                    cpu: Cpu::new(new.size.vcpus, now),
                    action_id,
                    server: None,
                    servers_started: 0,
                },
            );
            self.actions.insert(
                action_id,
                Action {
                    id: action_id,
                    droplet_id: id,
                    region: new.region,
                    started_at: now,
                    completed_at: active_at,
                },
            );
            ids.push(id);
        }
        ids
    }

    /// Inserts in arrival order (requests finish out of order).
    pub(crate) fn record(&mut self, record: RequestRecord) {
        let at = self.requests.partition_point(|r| r.at <= record.at);
        self.requests.insert(at, record);
    }
}

impl Droplet {
    pub(crate) fn status(&self, now: SystemTime) -> DropletStatus {
        if self.powered_off {
            DropletStatus::Off
        } else if now >= self.active_at {
            DropletStatus::Active
        } else {
            DropletStatus::New
        }
    }

    pub(crate) fn has_feature(&self, feature: &str) -> bool {
        self.features.contains(&feature)
    }

    pub(crate) fn summary(&self, now: SystemTime) -> SimDroplet {
        SimDroplet {
            id: self.id,
            name: self.name.clone(),
            status: self.status(now),
            private_ip: self.private_ip,
            public_ip: self.public_ip,
            tags: self.tags.clone(),
            created_at: self.created_at,
            serving_http: self.server.as_ref().is_some_and(|s| s.listening),
            image: if self.image.is_snapshot() {
                self.image.id.to_string()
            } else {
                self.image.slug.to_owned()
            },
            size: self.size.slug.to_owned(),
            region: self.region.slug.to_owned(),
            vpc_uuid: self.vpc_uuid.clone(),
            features: self.features.iter().map(|f| f.to_string()).collect(),
            project_id: self.project_id.clone(),
        }
    }

    /// The tutorial's user-data page.
    pub(crate) fn page(&self) -> String {
        format!(
            "Droplet: {}, ID: {}, IP Address: {}\n",
            self.name, self.id, self.private_ip
        )
    }

    pub(crate) fn has_server(&self) -> bool {
        self.server.is_some()
    }

    pub(crate) fn stop_server(&mut self) {
        self.server = None;
    }

    /// A number that tells this droplet's next server task from earlier ones.
    pub(crate) fn next_server_generation(&mut self) -> u64 {
        self.servers_started += 1;
        self.servers_started
    }

    pub(crate) fn set_server(&mut self, task: AbortHandle, generation: u64, listening: bool) {
        self.server = Some(ServerTask {
            task,
            generation,
            listening,
        });
    }

    /// Called by the server task once bound; ignored if that task was replaced.
    pub(crate) fn mark_listening(&mut self, generation: u64) {
        if let Some(server) = self.server.as_mut().filter(|s| s.generation == generation) {
            server.listening = true;
        }
    }
}

/// This simulator's share of loopback: 127.A.0.0/16, A unique in the process.
/// Private IPs are 127.A.(n/250).(n%250+2) (127.A.0.1 is the proxy's own),
/// public ones 127.A.(200+n/250).(n%250+2).
pub(crate) struct Subnet {
    a: u8,
}

/// Subnets taken by live simulators in this process.
static TAKEN: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());

impl Subnet {
    /// Picks a free subnet where `port` (0: any free one) can be bound, and
    /// returns it with that port.
    pub(crate) fn reserve(port: u16) -> (Subnet, u16) {
        let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..1000 {
            let a = fastrand::u8(16..=250);
            if taken.contains(&a) {
                continue;
            }
            let subnet = Subnet { a };
            let Ok(probe) = TcpListener::bind((subnet.private_ip(0), port)) else {
                continue;
            };
            let port = probe.local_addr().map_or(port, |addr| addr.port());
            taken.insert(a);
            return (subnet, port);
        }
        panic!("doproxy-sim: no free loopback subnet 127.A.0.0/16 for droplet port {port}");
    }

    /// A port free on the subnet's first droplet address (and so, the
    /// subnet being this simulator's alone, on all of them).
    pub(crate) fn free_port(&self) -> u16 {
        TcpListener::bind((self.private_ip(0), 0))
            .and_then(|probe| probe.local_addr())
            .map(|addr| addr.port())
            .expect("doproxy-sim: no free port on its loopback subnet")
    }

    pub(crate) fn proxy_private_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, self.a, 0, 1)
    }

    /// The proxy droplet's anchor IPv4, where traffic for a reserved IP
    /// assigned to it arrives.
    pub(crate) fn proxy_anchor_ip(&self) -> Ipv4Addr {
        Subnet::anchor_ip(self.proxy_private_ip())
    }

    pub(crate) fn private_ip(&self, host: u32) -> Ipv4Addr {
        self.ip(0, host)
    }

    pub(crate) fn public_ip(&self, host: u32) -> Ipv4Addr {
        self.ip(200, host)
    }

    /// The anchor IPv4 of the droplet at private address `private`.
    pub(crate) fn anchor_ip(private: Ipv4Addr) -> Ipv4Addr {
        let [_, a, third, last] = private.octets();
        Ipv4Addr::new(127, a, third + 100, last)
    }

    pub(crate) fn public_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, self.a, 200, 1)
    }

    fn ip(&self, first_third_octet: u32, host: u32) -> Ipv4Addr {
        let third = u8::try_from(first_third_octet + host / 250)
            .expect("doproxy-sim: more droplets than its loopback subnet holds");
        Ipv4Addr::new(127, self.a, third, (host % 250 + 2) as u8)
    }
}

impl Drop for Subnet {
    fn drop(&mut self) {
        TAKEN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.a);
    }
}
