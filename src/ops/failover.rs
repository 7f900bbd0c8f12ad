//! Failover: two (or more) proxies behind one reserved IP, the one that
//! leads holding it. The proxies elect a leader through an etcd key on the
//! leader's lease (see `etcd::Election`); the leader assigns the
//! reserved IP to its own droplet (ID from the metadata service) and reads
//! it back every failover_recheck_interval, taking it back if it moved.
//!
//! Every failover_check_interval each proxy checks its own HAProxy and the
//! leader key, and `scaling::failover::decide` says what to do: claim a vacant
//! leadership (only with a HAProxy that answers), lead, resign (its HAProxy
//! stopped answering), stop acting (its lease is gone) or hold still (etcd
//! cannot confirm its leadership). Only a leader etcd has just confirmed
//! touches the reserved IP, so a proxy cut off from etcd never acts beside
//! the one that took over. On SIGTERM a leader resigns, so another proxy
//! takes over at once, and doproxy exits 0.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use tokio::time::{Instant, MissedTickBehavior};

use super::{Context, backoff};
use crate::config::Config;
use crate::digitalocean::{ApiSettings, Client, RetryPolicy, metadata, reserved_ip};
use crate::etcd::{Election, LeaderKey, Leadership, Unconfirmed};
use crate::haproxy;
use crate::inventory::{EtcdInventory, NotMoved, Store};
use crate::model::{Change, Kind, Severity};
use crate::scaling::failover::{self, Assignment, Health, Identity, Role, Seen, Step};
use crate::shutdown::Interrupted;

/// How long a TCP check of the frontend may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause before another try at an assign that keeps failing.
const MAX_ASSIGN_BACKOFF: Duration = Duration::from_secs(30);

/// This proxy's etcd inventory, where the election is held.
fn etcd_store(ctx: &Context) -> Result<&EtcdInventory> {
    let Store::Etcd(etcd) = &ctx.store else {
        bail!(
            "failover elects a leader through etcd; set inventory_backend: etcd and etcd_endpoints in {}",
            ctx.config.path.display()
        );
    };
    Ok(etcd)
}

/// Takes part in the election for the reserved IP, and while this proxy
/// leads keeps the IP on its droplet, until a signal asks to stop (then a
/// leader resigns); returns that signal.
pub async fn take_part(ctx: &Context) -> Result<Interrupted> {
    let etcd = etcd_store(ctx)?;
    let election = etcd.election();
    // Refused while the pool's droplets wait to be moved out of the prefix
    // pools shared (inventory migrate), so its proxies never elect apart;
    // an etcd that does not answer yet is left to the rounds below.
    if let Err(err) = etcd.load().await
        && err.is::<NotMoved>()
    {
        return Err(err);
    }
    let settings = &ctx.config.failover;
    let reserved_ip = settings.reserved_ip.with_context(|| {
        format!(
            "failover moves a reserved IP, but none is set; add reserved_ip: <address> to {}",
            ctx.config.path.display()
        )
    })?;
    let check = HaproxyCheck::of(&ctx.config)?;
    let (droplet_id, name) = metadata::droplet_identity(&ctx.config.metadata_url).await?;
    let name = if name.is_empty() {
        format!("droplet {droplet_id}")
    } else {
        name
    };
    // Reads retried for long would hold up the rounds: they end well within
    // the lease. (Assigns are never retried unseen: `keep_ip_here`.)
    let api_settings = ApiSettings {
        retry: RetryPolicy {
            budget: ctx.config.api.retry.budget.min(settings.lease_ttl / 2),
        },
        ..ctx.config.api.clone()
    };
    let api = super::api::client(&api_settings, ctx.config.token()?.clone())?;
    tracing::info!(
        "{name} (droplet {droplet_id}) takes part in the election for reserved IP {reserved_ip} through {}",
        etcd.describe()
    );
    let mut proxy = Proxy {
        ctx,
        election,
        api,
        check,
        reserved_ip,
        droplet_id,
        name,
        stepped_down: None,
        health: Health::default(),
        leadership: None,
        verify_at: None,
        assign_failures: 0,
        haproxy_down: None,
        holding: false,
    };
    // The HTTPS certificate is kept alongside (renewed when due, installed
    // when another proxy renewed it).
    let stopped = ctx.keeping_certificate(proxy.run()).await;
    match proxy.leadership.take() {
        Some(leadership) => {
            leadership.resign().await;
            tracing::info!("{stopped}; resigned leadership, so another proxy takes over at once");
        }
        None => tracing::info!("{stopped}"),
    }
    Ok(stopped)
}

/// The line `print --health` shows about the leader, when failover is set
/// up (etcd inventory and reserved_ip).
pub async fn leader_line(ctx: &Context) -> Option<String> {
    let (Store::Etcd(etcd), Some(ip)) = (&ctx.store, ctx.config.failover.reserved_ip) else {
        return None;
    };
    Some(match etcd.election().leader().await {
        Ok(LeaderKey::Held(value)) => format!("leader: {}", Identity::describe(&value)),
        Ok(LeaderKey::Vacant) => format!("leader: none, no proxy claims reserved IP {ip}"),
        Err(err) => format!("leader: unknown ({err:#})"),
    })
}

/// The recorded reserved IP assignments, oldest first (`failover --history`).
pub async fn history(ctx: &Context) -> Result<Vec<Assignment>> {
    let recorded = etcd_store(ctx)?.election().history().await?;
    Ok(failover::parse_history(recorded.as_deref()))
}

/// How this proxy tells that its own HAProxy answers.
enum HaproxyCheck {
    /// `show info` on haproxy_socket.
    Socket,
    /// A TCP connection to the frontend.
    Frontend(SocketAddr),
}

impl HaproxyCheck {
    fn of(config: &Config) -> Result<HaproxyCheck> {
        if config.haproxy.socket.is_some() {
            return Ok(HaproxyCheck::Socket);
        }
        match config.frontend_bind.as_deref().map(str::parse) {
            Some(Ok(addr)) => Ok(HaproxyCheck::Frontend(addr)),
            _ => bail!(
                "failover claims the reserved IP only while this proxy's HAProxy answers, and cannot tell without haproxy_socket; set haproxy_socket (or frontend_bind to an address:port) in {}",
                config.path.display()
            ),
        }
    }

    /// Ok if HAProxy answers, else why not.
    async fn probe(&self, config: &Config) -> Result<()> {
        match self {
            HaproxyCheck::Socket => match haproxy::worker_pid(&config.haproxy).await {
                Some(answer) => answer.map(drop),
                None => unreachable!("HaproxyCheck::of chose the socket because it is set"),
            },
            HaproxyCheck::Frontend(addr) => {
                match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(err)) => bail!("HAProxy's frontend {addr} refuses connections ({err})"),
                    Err(_) => bail!(
                        "HAProxy's frontend {addr} did not accept a connection within {}",
                        humantime::format_duration(CONNECT_TIMEOUT)
                    ),
                }
            }
        }
    }
}

/// One proxy taking part in the election.
struct Proxy<'a> {
    ctx: &'a Context,
    election: Election,
    /// With retries bounded by half the lease.
    api: Client,
    check: HaproxyCheck,
    reserved_ip: Ipv4Addr,
    droplet_id: u64,
    name: String,
    /// When this proxy last gave leadership up, if it ever did.
    stepped_down: Option<Instant>,
    health: Health,
    /// Held while this proxy leads.
    leadership: Option<Leadership>,
    /// When the leader next reads the reserved IP back; None: at once.
    verify_at: Option<Instant>,
    assign_failures: u32,
    /// Why HAProxy last failed its check, while it fails.
    haproxy_down: Option<String>,
    /// A leader is holding still because etcd cannot confirm it.
    holding: bool,
}

impl Proxy<'_> {
    /// Rounds every failover_check_interval until a signal asks to stop.
    async fn run(&mut self) -> Interrupted {
        let mut rounds = tokio::time::interval(self.ctx.config.failover.check_interval);
        rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                stopped = self.ctx.shutdown.signalled() => return stopped,
                _ = rounds.tick() => {}
            }
            if let Err(stopped) = self.round().await {
                return stopped;
            }
        }
    }

    /// Checks HAProxy and the leader key, and does what `decide` says.
    async fn round(&mut self) -> Result<(), Interrupted> {
        self.check_haproxy().await;
        let (seen, why) = self.observe().await;
        let now = Instant::now();
        let min_hold = self.ctx.config.failover.min_hold;
        let step = failover::decide(self.role(), self.health, seen, now, min_hold);
        let holding = step == Step::Hold;
        if holding && !self.holding {
            tracing::warn!(
                "{}; not touching reserved IP {} until etcd answers",
                why.as_deref().unwrap_or_default(),
                self.reserved_ip
            );
        }
        self.holding = holding;
        match step {
            Step::Wait | Step::Hold => {}
            Step::Campaign => self.campaign().await,
            Step::Lead => self.lead().await?,
            Step::Resign => {
                if let Some(leadership) = self.leadership.take() {
                    leadership.resign().await;
                }
                self.stepped_down = Some(now);
                tracing::warn!(
                    "resigned leadership because this proxy's HAProxy stopped answering ({}); another proxy takes over reserved IP {}",
                    self.haproxy_down.as_deref().unwrap_or("no answer"),
                    self.reserved_ip
                );
            }
            Step::StandDown => {
                self.leadership = None;
                self.stepped_down = Some(now);
                tracing::error!(
                    "{}; no longer acting on reserved IP {}",
                    why.unwrap_or_else(|| "lost leadership".to_string()),
                    self.reserved_ip
                );
            }
        }
        Ok(())
    }

    /// Leader exactly while it holds leadership.
    fn role(&self) -> Role {
        match self.leadership {
            Some(_) => Role::Leader,
            None => Role::Follower {
                stepped_down: self.stepped_down,
            },
        }
    }

    async fn check_haproxy(&mut self) {
        let probe = self.check.probe(&self.ctx.config).await;
        self.health.record(probe.is_ok());
        match (probe, self.haproxy_down.is_some()) {
            (Ok(()), true) => {
                tracing::info!("this proxy's HAProxy answers again");
                self.haproxy_down = None;
            }
            (Err(err), false) => {
                tracing::warn!("this proxy's HAProxy does not answer: {err:#}");
                self.haproxy_down = Some(format!("{err:#}"));
            }
            _ => {}
        }
    }

    /// What etcd says about leadership, and why when it is not good news.
    async fn observe(&self) -> (Seen, Option<String>) {
        match &self.leadership {
            Some(leadership) => match leadership.confirm().await {
                Ok(()) => (Seen::Ours, None),
                Err(err @ Unconfirmed::Lost(_)) => (Seen::Lost, Some(err.to_string())),
                Err(err @ Unconfirmed::Unreachable(_)) => (Seen::Unknown, Some(err.to_string())),
            },
            None => match self.election.leader().await {
                Ok(LeaderKey::Vacant) => (Seen::Vacant, None),
                Ok(LeaderKey::Held(_)) => (Seen::Other, None),
                Err(err) => {
                    tracing::debug!("cannot read the leader key: {err:#}");
                    (Seen::Unknown, Some(format!("{err:#}")))
                }
            },
        }
    }

    async fn campaign(&mut self) {
        let identity = Identity {
            droplet_id: self.droplet_id,
            name: self.name.as_str().into(),
            pid: std::process::id(),
            since: now_rfc3339().into(),
        };
        let value = serde_json::to_string(&identity).expect("an identity encodes as JSON");
        let ttl = self.ctx.config.failover.lease_ttl;
        match self.election.campaign(&value, ttl).await {
            Ok(Some(leadership)) => {
                tracing::info!(
                    "{} (droplet {}) leads: its HAProxy answers and nobody else claimed reserved IP {}",
                    self.name,
                    self.droplet_id,
                    self.reserved_ip
                );
                self.leadership = Some(leadership);
                self.verify_at = None;
                self.assign_failures = 0;
                let elected = format!(
                    "{} leads and holds reserved IP {}",
                    self.name, self.reserved_ip
                );
                self.ctx
                    .record([Change::done(
                        Kind::FailoverElected,
                        vec![self.droplet_id],
                        elected,
                    )])
                    .await;
            }
            Ok(None) => tracing::debug!("another proxy claimed leadership first"),
            Err(err) => tracing::warn!("cannot claim leadership: {err:#}"),
        }
    }

    /// Keeps the reserved IP on this droplet: reads it when due and assigns
    /// it here if it is elsewhere. A signal during the assign ends it.
    async fn lead(&mut self) -> Result<(), Interrupted> {
        let now = Instant::now();
        if self.verify_at.is_some_and(|at| now < at) {
            return Ok(());
        }
        let outcome = tokio::select! {
            stopped = self.ctx.shutdown.signalled() => return Err(stopped),
            outcome = self.keep_ip_here() => outcome,
        };
        let recheck = self.ctx.config.failover.recheck_interval;
        match outcome {
            Ok(()) => {
                self.assign_failures = 0;
                self.verify_at = Some(Instant::now() + recheck);
            }
            Err(err) => {
                self.assign_failures += 1;
                if self.assign_failures == 1 {
                    // Once, when keeping the IP starts failing; the
                    // retries are logged.
                    let failed = Change::done(
                        Kind::ReservedIpMoved,
                        vec![self.droplet_id],
                        format!("{err:#}"),
                    )
                    .with_severity(Severity::Error);
                    self.ctx.record([failed]).await;
                }
                let pause = backoff(self.assign_failures, MAX_ASSIGN_BACKOFF).min(recheck);
                tracing::error!(
                    "{err:#}; trying again in {}",
                    humantime::format_duration(pause)
                );
                self.verify_at = Some(Instant::now() + pause);
            }
        }
        Ok(())
    }

    /// Reads the reserved IP and, if another droplet (or none) holds it,
    /// assigns it to this one, confirming leadership right before every
    /// assign request: cut off from etcd, it sends none once half its lease
    /// has passed without a renewal, before another proxy may lead.
    async fn keep_ip_here(&self) -> Result<()> {
        let ip = self.reserved_ip;
        let current = reserved_ip::get(&self.api, ip)
            .await
            .with_context(|| format!("cannot read reserved IP {ip}"))?;
        let previous = current.droplet.map(|holder| holder.id);
        if previous == Some(self.droplet_id) {
            return Ok(());
        }
        let leadership = self
            .leadership
            .as_ref()
            .expect("only a leader keeps the IP");
        let confirmed = async || {
            leadership.confirm().await.with_context(|| {
                format!("did not assign reserved IP {ip}, as leadership could not be confirmed")
            })
        };
        let patience = self.ctx.config.failover.lease_ttl;
        reserved_ip::assign(&self.api, ip, self.droplet_id, patience, confirmed).await?;
        let assignment = Assignment {
            at: now_rfc3339().into(),
            reserved_ip: ip.to_string().into(),
            droplet_id: self.droplet_id,
            name: self.name.as_str().into(),
            previous,
        };
        tracing::info!("assigned {}", assignment.line());
        let droplets = previous.into_iter().chain([self.droplet_id]).collect();
        self.ctx
            .record([Change::done(
                Kind::ReservedIpMoved,
                droplets,
                format!(
                    "reserved IP {ip} moved to {} (droplet {})",
                    self.name, self.droplet_id
                ),
            )])
            .await;
        let recorded = match self.election.history().await {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::warn!("cannot read the assignment history, starting it afresh: {err:#}");
                None
            }
        };
        let history = failover::append_history(recorded.as_deref(), assignment);
        if let Err(err) = leadership.record(&history).await {
            tracing::warn!("cannot record the assignment in etcd: {err:#}");
        }
        Ok(())
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assign_backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1, MAX_ASSIGN_BACKOFF), Duration::from_millis(500));
        assert_eq!(backoff(3, MAX_ASSIGN_BACKOFF), Duration::from_secs(2));
        assert_eq!(backoff(40, MAX_ASSIGN_BACKOFF), MAX_ASSIGN_BACKOFF);
    }
}
