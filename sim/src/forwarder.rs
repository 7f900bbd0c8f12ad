//! The network behind a reserved IP: a TCP listener on the reserved IP's own
//! loopback address that sends each new connection to the frontend of the
//! proxy droplet holding the IP at that moment. Once an assign completes,
//! new connections go to the new holder; while no droplet holds the IP (or
//! the holder's frontend refuses) connections are closed at once, as
//! traffic to an unassigned reserved IP goes nowhere.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};

use crate::Simulator;
use crate::listen::accept_loop;

/// Listens on `ip` (a free port) and forwards on the simulator's runtime
/// until the simulator stops; returns the listening address.
pub(crate) fn start(sim: Simulator, ip: Ipv4Addr) -> SocketAddr {
    let listener = std::net::TcpListener::bind((ip, 0))
        .unwrap_or_else(|err| panic!("doproxy-sim: cannot listen on reserved IP {ip}: {err}"));
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    listener
        .set_nonblocking(true)
        .expect("doproxy-sim: cannot make a listener non-blocking");
    let runtime = sim.running().runtime.clone();
    runtime.spawn(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(err) => return eprintln!("doproxy-sim: reserved IP {ip}: {err}"),
        };
        accept_loop(listener, std::future::pending(), move |client| {
            let target = sim.reserved_ip_route(ip);
            forward(client, target)
        })
        .await;
    });
    addr
}

async fn forward(mut client: TcpStream, target: Option<SocketAddr>) {
    let Some(target) = target else {
        return;
    };
    if let Ok(mut server) = TcpStream::connect(target).await {
        let _ = copy_bidirectional(&mut client, &mut server).await;
    }
}
