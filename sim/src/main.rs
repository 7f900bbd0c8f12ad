//! `doproxy-sim`: runs the simulator as a process for shell scripts and the
//! local demo. It prints where it listens on stdout, logs to stderr, and stops
//! on SIGINT or SIGTERM.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use doproxy_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// A stateful simulator of the DigitalOcean API v2 subset doproxy uses, on
/// loopback only. Once listening it prints `DOPROXY_SIM_URL=http://...` and
/// `DOPROXY_SIM_DROPLET_PORT=...` on stdout, one per line.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to serve the API, metadata and /_sim admin routes on; must be a
    /// loopback address. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The bearer token the API accepts.
    #[arg(long, default_value = "sim-token")]
    token: String,
    /// Time a new droplet takes to become active, e.g. "1s", "500ms".
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    boot_delay: Duration,
    /// Extra time after a droplet is active before its HTTP server starts.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    http_delay: Duration,
    /// Delay added before answering every /v2 request.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// How long a new droplet is missing from droplet lists after its create.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    list_lag: Duration,
    /// Port every droplet's HTTP server listens on (on its private IP,
    /// 127.A.x.y); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    droplet_port: u16,
    /// Public IPv4 the metadata service reports for the proxy droplet; must be
    /// a loopback address.
    #[arg(long, default_value = "127.0.0.1")]
    proxy_public_ip: Ipv4Addr,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    raise_open_files();
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "doproxy-sim: --listen {} is not a loopback address; use 127.0.0.1 or [::1]",
            args.listen
        );
        return ExitCode::from(2);
    }
    if !args.proxy_public_ip.is_loopback() {
        eprintln!(
            "doproxy-sim: --proxy-public-ip {} is not a loopback address",
            args.proxy_public_ip
        );
        return ExitCode::from(2);
    }
    // Before announcing, so that a signal sent right after is handled.
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(err) => {
            eprintln!("doproxy-sim: cannot handle signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("doproxy-sim: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let sim = Simulator::new(SimConfig {
        token: args.token,
        boot_delay: args.boot_delay,
        http_delay: args.http_delay,
        latency: args.latency,
        list_lag: args.list_lag,
        droplet_port: args.droplet_port,
        proxy_public_ip: args.proxy_public_ip,
    });
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let mut stdout = std::io::stdout().lock();
    let announced = writeln!(stdout, "DOPROXY_SIM_URL=http://{addr}")
        .and_then(|()| writeln!(stdout, "DOPROXY_SIM_DROPLET_PORT={}", sim.droplet_port()))
        .and_then(|()| stdout.flush());
    drop(stdout);
    if let Err(err) = announced {
        eprintln!("doproxy-sim: cannot write to stdout: {err}");
        return ExitCode::FAILURE;
    }
    eprintln!(
        "doproxy-sim: listening on http://{addr}; droplets serve on port {}",
        sim.droplet_port()
    );
    sim.serve(listener, shutdown).await;
    eprintln!("doproxy-sim: stopped");
    ExitCode::SUCCESS
}

/// Raises the soft limit on open files to the hard one (at most 2^20):
/// each droplet's server listens on its own socket, and HAProxy and doproxy
/// connect to all of them at once, so 1,000 droplets need more than the
/// 1,024 many systems start processes with. A refusal leaves the limit as
/// it was, and says so.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, setrlimit only
    // reads it.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_cur.max(limit.rlim_max.min(1 << 20));
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if !raised {
        eprintln!(
            "doproxy-sim: cannot raise the open-file limit ({}); large pools may run out of file descriptors",
            std::io::Error::last_os_error()
        );
    }
}

/// Registers for SIGINT and SIGTERM now; the future resolves on either.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
