//! Checks of values that would otherwise go wrong far from the config
//! file: secrets crossing the network in clear, a listener without
//! authentication open to other machines.

use std::net::{IpAddr, SocketAddr};

/// Whether a request to `url` would cross the network unencrypted: plain
/// http:// to a host other than this machine's loopback.
pub(super) fn in_clear(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = url.host_str().unwrap_or_default();
    let local = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(ip) => IpAddr::is_loopback(&ip),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    url.scheme() == "http" && !local
}

/// Whether every address of a HAProxy `bind` (`127.0.0.1:8404`, a list
/// `a:1,b:2`, `ipv4@...`, a UNIX socket) is on this machine only; `*:8404`,
/// `:8404` and other machines' addresses are not.
pub(super) fn binds_loopback_only(bind: &str) -> bool {
    let addresses = bind.split_whitespace().next().unwrap_or_default();
    addresses.split(',').all(|address| {
        let address = address
            .strip_prefix("ipv4@")
            .or_else(|| address.strip_prefix("ipv6@"))
            .unwrap_or(address);
        if address.starts_with('/') || address.starts_with("unix@") || address.starts_with("abns@")
        {
            return true;
        }
        match address.parse::<SocketAddr>() {
            Ok(socket) => socket.ip().is_loopback(),
            Err(_) => address
                .rsplit_once(':')
                .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
        }
    })
}
