//! The account's reserved IPs as the simulator keeps them: which droplet
//! holds each, the actions under way and when they complete, where each
//! proxy droplet serves, and what was asked for and done, for tests to
//! read. State only; the API's routes and the test-facing methods are in
//! `reserved_ips`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::catalog::Region;
use crate::time;

/// How long an assign or unassign takes unless a test sets otherwise.
const DEFAULT_DELAY: Duration = Duration::from_millis(200);

/// The account's reserved IPs, their actions, and where each proxy droplet
/// serves.
pub(crate) struct ReservedIps {
    pub(crate) ips: BTreeMap<Ipv4Addr, ReservedIp>,
    pub(crate) actions: BTreeMap<u64, IpAction>,
    pub(crate) next_action_id: u64,
    pub(crate) delay: Duration,
    /// Proxy droplets and their HAProxy frontends.
    pub(crate) frontends: BTreeMap<u64, SocketAddr>,
    /// Every completed assign, oldest first.
    pub(crate) assignments: Vec<SimAssignment>,
    /// Every action asked for, oldest first.
    pub(crate) requests: Vec<SimIpRequest>,
}

pub(crate) struct ReservedIp {
    pub(crate) region: &'static Region,
    pub(crate) droplet: Option<u64>,
    /// The action under way, if any: the IP is locked until it completes.
    pub(crate) pending: Option<u64>,
    /// Locked until then by an action of someone else's (`lock_reserved_ip`).
    pub(crate) locked_until: Option<SystemTime>,
}

impl ReservedIp {
    pub(crate) fn locked(&self, now: SystemTime) -> bool {
        self.pending.is_some() || self.locked_until.is_some_and(|until| now < until)
    }
}

pub(crate) struct IpAction {
    pub(crate) id: u64,
    pub(crate) ip: Ipv4Addr,
    /// The droplet to assign to; None unassigns.
    pub(crate) target: Option<u64>,
    pub(crate) started_at: SystemTime,
    pub(crate) completed_at: SystemTime,
    /// Settled: Some(true) completed, Some(false) errored (the droplet went
    /// away meanwhile).
    pub(crate) outcome: Option<bool>,
}

/// One action asked for on a reserved IP, accepted or refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimIpRequest {
    pub ip: Ipv4Addr,
    /// The droplet to assign to; None unassigns.
    pub droplet_id: Option<u64>,
    #[serde(serialize_with = "time::serialize")]
    pub at: SystemTime,
    /// False: refused with 422 (the IP was locked).
    pub accepted: bool,
}

/// One completed assign: the reserved IP moved to `droplet_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimAssignment {
    pub ip: Ipv4Addr,
    pub droplet_id: u64,
    /// When the assign was requested, and when it took effect.
    #[serde(serialize_with = "time::serialize")]
    pub requested_at: SystemTime,
    #[serde(serialize_with = "time::serialize")]
    pub completed_at: SystemTime,
}

impl Default for ReservedIps {
    fn default() -> Self {
        ReservedIps {
            ips: BTreeMap::new(),
            actions: BTreeMap::new(),
            next_action_id: fastrand::u64(3_000_000_000..4_000_000_000),
            delay: DEFAULT_DELAY,
            frontends: BTreeMap::new(),
            assignments: Vec::new(),
            requests: Vec::new(),
        }
    }
}

impl ReservedIps {
    /// Applies the actions whose time has come; an assign to a droplet that
    /// no longer exists errors and changes nothing.
    pub(crate) fn settle(&mut self, now: SystemTime, exists: impl Fn(u64) -> bool) {
        for action in self.actions.values_mut() {
            if action.outcome.is_some() || action.completed_at > now {
                continue;
            }
            let ip = self
                .ips
                .get_mut(&action.ip)
                .expect("actions name known IPs");
            ip.pending = None;
            let target_exists = action.target.is_none_or(&exists);
            action.outcome = Some(target_exists);
            if target_exists {
                ip.droplet = action.target;
                if let Some(droplet_id) = action.target {
                    self.assignments.push(SimAssignment {
                        ip: action.ip,
                        droplet_id,
                        requested_at: action.started_at,
                        completed_at: action.completed_at,
                    });
                }
            }
        }
        // A destroyed droplet holds nothing.
        for ip in self.ips.values_mut() {
            if ip.droplet.is_some_and(|id| !exists(id)) {
                ip.droplet = None;
            }
        }
    }

    /// The frontend of the proxy holding `ip`, if one does.
    pub(crate) fn route(&self, ip: Ipv4Addr) -> Option<SocketAddr> {
        let holder = self.ips.get(&ip)?.droplet?;
        self.frontends.get(&holder).copied()
    }
}
