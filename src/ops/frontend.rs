//! Where HAProxy's frontend listens when `frontend_bind` does not say: this
//! droplet's public IPv4 from the metadata service, and with a `reserved_ip`
//! also its anchor IPv4, where DigitalOcean delivers the reserved IP's
//! traffic (a frontend on the public address alone never sees it). Each
//! address is remembered beside the staged config, so a metadata service
//! that fails for a moment leaves the frontend where it was.

use std::fs;
use std::net::Ipv4Addr;

use crate::atomic_file::{self, sibling};
use crate::config::Config;
use crate::digitalocean::metadata::{self, Address};

/// The frontend's bind: frontend_bind, else the addresses above on port 80;
/// only a proxy that never got an answer binds every address, and says so.
/// Looked up once per process (see `Context::frontend_bind`).
pub async fn resolve(config: &Config) -> String {
    if let Some(bind) = &config.frontend_bind {
        return bind.clone();
    }
    let Some(public) = remembered(config, Address::Public).await else {
        tracing::warn!(
            "no public IPv4 from the metadata service at {}; binding HAProxy to every address (set frontend_bind to choose)",
            config.metadata_url
        );
        return "*:80".to_string();
    };
    let mut binds = vec![public];
    if let Some(reserved_ip) = config.failover.reserved_ip {
        match remembered(config, Address::Anchor).await {
            Some(anchor) => binds.push(anchor),
            None => tracing::warn!(
                "no anchor IPv4 from the metadata service at {}, so traffic for reserved_ip {reserved_ip} cannot reach HAProxy; check metadata_url or set frontend_bind",
                config.metadata_url
            ),
        }
    }
    bind_list(&binds)
}

/// `a:80,b:80`, each address once: HAProxy's `bind` takes a list.
fn bind_list(addresses: &[Ipv4Addr]) -> String {
    let mut unique: Vec<Ipv4Addr> = Vec::new();
    for address in addresses {
        if !unique.contains(address) {
            unique.push(*address);
        }
    }
    let binds: Vec<String> = unique.iter().map(|ip| format!("{ip}:80")).collect();
    binds.join(",")
}

/// `address` from the metadata service, remembered in
/// `<haproxy_cfg_file>.<public-ip|anchor-ip>`; the remembered one when the
/// service does not answer.
async fn remembered(config: &Config, address: Address) -> Option<Ipv4Addr> {
    let file = sibling(&config.haproxy.cfg_file, address.file_suffix());
    if let Some(ip) = metadata::ipv4(&config.metadata_url, address).await {
        if fs::read_to_string(&file).ok().as_deref() != Some(&ip.to_string())
            && let Err(err) = atomic_file::write(&file, ip.to_string().as_bytes())
        {
            tracing::warn!("cannot remember this proxy's {address}: {err:#}");
        }
        return Some(ip);
    }
    let cached: Ipv4Addr = fs::read_to_string(&file).ok()?.trim().parse().ok()?;
    tracing::warn!(
        "no {address} from the metadata service at {}; keeping the frontend on {cached}, the address it gave before",
        config.metadata_url
    );
    Some(cached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_list_each_address_once_on_port_80() {
        let public = Ipv4Addr::new(203, 0, 113, 7);
        let anchor = Ipv4Addr::new(10, 17, 0, 5);
        assert_eq!(bind_list(&[public]), "203.0.113.7:80");
        assert_eq!(bind_list(&[public, anchor]), "203.0.113.7:80,10.17.0.5:80");
        assert_eq!(bind_list(&[public, public]), "203.0.113.7:80");
    }
}
