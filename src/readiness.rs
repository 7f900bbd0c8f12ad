//! Readiness: a droplet joins HAProxy only once its application answers the
//! health check, not merely when DigitalOcean calls it active (the original
//! told users to wait "a couple minutes" and hope).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::model::HealthCheck;

/// How long one check may take, and the pause between failed checks.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Checks every droplet `(id, private address)` in parallel until it answers
/// `GET <path>` on the check port with the expected status, or `timeout`
/// passes. Returns the IDs of the droplets that became ready.
pub async fn wait_until_ready(
    check: &HealthCheck,
    droplets: &[(u64, Ipv4Addr)],
    timeout: Duration,
) -> Result<Vec<u64>> {
    wait_until_ready_unless_gone(check, droplets, timeout, &Gone::default()).await
}

/// Droplets found destroyed while their health checks run: no reason to
/// wait on them any longer.
pub type Gone = Arc<Mutex<HashSet<u64>>>;

/// `wait_until_ready`, giving up on a droplet as soon as it is in `gone`.
pub async fn wait_until_ready_unless_gone(
    check: &HealthCheck,
    droplets: &[(u64, Ipv4Addr)],
    timeout: Duration,
    gone: &Gone,
) -> Result<Vec<u64>> {
    let client = crate::http::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .build()
        .context("cannot set up the HTTP client for readiness checks")?;
    let deadline = Instant::now() + timeout;
    let mut checks = JoinSet::new();
    for &(id, address) in droplets {
        let client = client.clone();
        let url = format!("http://{address}:{}{}", check.port, check.path);
        let expected = check.status;
        let gone = gone.clone();
        tracing::info!("waiting for droplet {id} to answer GET {url} with {expected}");
        checks.spawn(async move {
            loop {
                let answered = client.get(&url).send().await.map(|r| r.status().as_u16());
                if answered.as_ref().is_ok_and(|&status| status == expected) {
                    tracing::info!("droplet {id} is ready");
                    return (id, true);
                }
                if gone.lock().unwrap_or_else(|e| e.into_inner()).contains(&id) {
                    return (id, false);
                }
                if Instant::now() + RETRY_PAUSE >= deadline {
                    let last = match answered {
                        Ok(status) => format!("status {status}"),
                        Err(err) => format!("{err}"),
                    };
                    tracing::warn!("droplet {id} is not ready (last answer: {last})");
                    return (id, false);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        });
    }
    let mut ready = Vec::new();
    let mut status = crate::progress::Status::new();
    let mut checked = 0;
    status.show(&format!(
        "health checks: 0 of {} droplet(s) done",
        droplets.len()
    ));
    while let Some(joined) = checks.join_next().await {
        checked += 1;
        status.show(&format!(
            "health checks: {checked} of {} droplet(s) done",
            droplets.len()
        ));
        let (id, is_ready) = joined.context("a readiness check failed")?;
        if is_ready {
            ready.push(id);
        }
    }
    Ok(ready)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// A droplet's application behind `listener`: it answers each request
    /// with the status `answer` gives for its path and the number of
    /// requests before it.
    fn application(listener: TcpListener, answer: impl Fn(&str, usize) -> u16 + Send + 'static) {
        let served = AtomicUsize::new(0);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 1024];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&request[..n]);
                let path = text.split(' ').nth(1).unwrap_or("").to_string();
                let status = answer(&path, served.fetch_add(1, Ordering::SeqCst));
                let reply = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
    }

    /// Listeners on 127.0.0.2, 127.0.0.3, ... all on one port.
    async fn listeners(count: u8) -> (Vec<(Ipv4Addr, TcpListener)>, u16) {
        let first = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), 0))
            .await
            .unwrap();
        let port = first.local_addr().unwrap().port();
        let mut all = vec![(Ipv4Addr::new(127, 0, 0, 2), first)];
        for host in 3..2 + count {
            let ip = Ipv4Addr::new(127, 0, 0, host);
            all.push((ip, TcpListener::bind((ip, port)).await.unwrap()));
        }
        (all, port)
    }

    fn check(path: &str, port: u16, status: u16) -> HealthCheck {
        HealthCheck {
            path: path.to_string(),
            port,
            status,
            ready_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn only_the_expected_status_on_the_health_path_and_port_is_ready() {
        block_on(async {
            let (listeners, port) = listeners(3).await;
            // 1 passes; 2 answers its pages but not the health path; 3
            // answers the path with another success status.
            let answers: [fn(&str, usize) -> u16; 3] = [
                |path, _| if path == "/healthz" { 200 } else { 404 },
                |path, _| if path == "/healthz" { 503 } else { 200 },
                |_, _| 204,
            ];
            let mut droplets = Vec::new();
            for (id, ((ip, listener), answer)) in (1..).zip(listeners.into_iter().zip(answers)) {
                application(listener, answer);
                droplets.push((id, ip));
            }
            // 4 would pass, but on another port than the check's.
            let elsewhere = Ipv4Addr::new(127, 0, 0, 5);
            application(TcpListener::bind((elsewhere, 0)).await.unwrap(), |_, _| 200);
            droplets.push((4, elsewhere));
            let check = check("/healthz", port, 200);
            let ready = wait_until_ready(&check, &droplets, Duration::from_secs(1))
                .await
                .unwrap();
            assert_eq!(ready, [1]);
        });
    }

    #[test]
    fn a_droplet_is_checked_again_until_it_passes() {
        block_on(async {
            let (mut listeners, port) = listeners(1).await;
            let (ip, listener) = listeners.remove(0);
            // Starting: three failed answers, then healthy.
            application(listener, |_, before| if before < 3 { 503 } else { 200 });
            let ready =
                wait_until_ready(&check("/", port, 200), &[(7, ip)], Duration::from_secs(10))
                    .await
                    .unwrap();
            assert_eq!(ready, [7]);
        });
    }

    #[test]
    fn a_droplet_found_gone_is_given_up_at_once() {
        block_on(async {
            let (mut listeners, port) = listeners(1).await;
            let (ip, listener) = listeners.remove(0);
            application(listener, |_, _| 503);
            let gone = Gone::default();
            gone.lock().unwrap().insert(9);
            let started = Instant::now();
            let ready = wait_until_ready_unless_gone(
                &check("/", port, 200),
                &[(9, ip)],
                Duration::from_secs(60),
                &gone,
            )
            .await
            .unwrap();
            assert!(ready.is_empty());
            assert!(started.elapsed() < Duration::from_secs(10));
        });
    }
}
