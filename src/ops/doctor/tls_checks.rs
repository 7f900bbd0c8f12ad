//! The checks of HTTPS (with a `tls` section): a certificate is there and
//! not about to expire, HAProxy answers the ACME challenge on the HTTP
//! frontend, and the domains resolve (a warning only: doctor must work
//! offline, and DNS may rightly point elsewhere while moving a site).

use std::time::Duration;

use super::{Check, failed, ok, skipped, warning};
use crate::haproxy::Runtime;
use crate::ops::Context;

/// Fewer days left than this: renewal (due at a third left) keeps failing.
const FEW_DAYS: i64 = 14;
/// How long one domain's resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Top-level names reserved for tests and examples (RFC 2606, 6761): never
/// looked up, so doctor asks no DNS server about them.
const RESERVED: [&str; 4] = ["test", "example", "invalid", "localhost"];

pub(super) async fn tls_checks(ctx: &Context) -> Vec<Check> {
    let Some(tls) = &ctx.config.tls else {
        return Vec::new();
    };
    let mut checks = vec![certificate_check(ctx).await, challenge_check(ctx).await];
    for domain in &tls.domains {
        checks.push(resolve_check(domain.to_string()).await);
    }
    checks
}

async fn certificate_check(ctx: &Context) -> Check {
    const CHECK: &str = "certificate";
    let status = match ctx.certificate_status().await {
        Ok(status) => status,
        Err(err) => return failed(CHECK, format!("{err:#}")),
    };
    let Some(certificate) = &status.certificate else {
        return failed(
            CHECK,
            "none issued yet (HAProxy serves a self-signed stand-in); run doproxy cert renew",
        );
    };
    let served = match &status.served_serial {
        Some(serial) if *serial == certificate.serial => ", served by HAProxy",
        Some(_) => ", but HAProxy serves another; run doproxy cert renew to install it",
        None => "",
    };
    let detail = format!(
        "serial {} from {}, {} day(s) left{served}",
        certificate.serial, certificate.issuer, certificate.days_left
    );
    if certificate.days_left < FEW_DAYS {
        let why = status
            .last_failure
            .map(|failure| format!("; the last renewal failed: {failure}"))
            .unwrap_or_default();
        return failed(CHECK, format!("{detail}{why}"));
    }
    ok(CHECK, detail)
}

/// Puts a probe answer in HAProxy's challenge map, fetches it from the HTTP
/// frontend as the CA would, and takes it out again.
async fn challenge_check(ctx: &Context) -> Check {
    const CHECK: &str = "acme challenge";
    let (Some(runtime), Some(files)) = (Runtime::of(&ctx.config.haproxy), &ctx.config.haproxy.tls)
    else {
        return failed(
            CHECK,
            "haproxy_socket is not set, so HAProxy cannot be given the CA's challenge answers; set it",
        );
    };
    let bind = ctx.frontend_bind().await;
    let first = bind.split(',').next().unwrap_or_default().trim();
    let Some((address, port)) = first.rsplit_once(':') else {
        return skipped(
            CHECK,
            format!("cannot tell an address in frontend bind {bind:?}"),
        );
    };
    let address = match address {
        "" | "*" | "0.0.0.0" => "127.0.0.1",
        "::" | "[::]" => "[::1]",
        address => address,
    };
    let token = format!("doproxy-doctor-{}", std::process::id());
    if let Err(err) = runtime
        .add_map_entry(&files.challenge_map, &token, "doctor")
        .await
    {
        return failed(CHECK, format!("{err:#}"));
    }
    let url = format!("http://{address}:{port}/.well-known/acme-challenge/{token}");
    let fetched = async {
        let client = crate::http::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let response = client.get(&url).send().await?;
        anyhow::Ok((response.status(), response.text().await?))
    }
    .await;
    let _ = runtime.remove_map_entry(&files.challenge_map, &token).await;
    match fetched {
        Ok((status, body)) if status.is_success() && body == "doctor" => ok(
            CHECK,
            format!(
                "HAProxy answers it on {address}:{port}; port 80 must reach there from the internet"
            ),
        ),
        Ok((status, _)) => failed(
            CHECK,
            format!(
                "{url} answered {status}, not the challenge's answer; reload HAProxy (doproxy reload) so it runs the config with the tls section"
            ),
        ),
        Err(err) => failed(CHECK, format!("cannot fetch {url}: {err:#}")),
    }
}

/// Whether `domain` resolves; a warning when it does not (or cannot be
/// told offline), never a failure.
async fn resolve_check(domain: String) -> Check {
    const CHECK: &str = "dns";
    let tld = domain.rsplit('.').next().unwrap_or_default();
    if RESERVED.contains(&tld) {
        return skipped(
            CHECK,
            format!("{domain} is a reserved test name; not looked up"),
        );
    }
    let lookup = tokio::net::lookup_host(format!("{domain}:80"));
    match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addresses)) => {
            let addresses: Vec<String> = addresses.map(|a| a.ip().to_string()).collect();
            ok(
                CHECK,
                format!(
                    "{domain} resolves to {}; it must be this proxy (or the reserved IP)",
                    addresses.join(", ")
                ),
            )
        }
        Ok(Err(err)) => warning(
            CHECK,
            format!(
                "{domain} does not resolve ({err}); point its A record at the proxy before the CA is asked"
            ),
        ),
        Err(_) => warning(
            CHECK,
            format!(
                "{domain} did not resolve within 2s (offline?); the CA needs it to point at the proxy"
            ),
        ),
    }
}
