//! `cert status` and `cert renew`: the HTTPS certificate, read and renewed
//! through `ops`, reported.

use anyhow::Result;

use super::{Context, Report};
use crate::cli::{CertCommand, RenewArgs};
use crate::ops::certificate::{CertificateView, Installed};

pub async fn run(ctx: &Context, command: &CertCommand) -> Result<Report> {
    match command {
        CertCommand::Status => status(ctx).await,
        CertCommand::Renew(args) => renew(ctx, args).await,
    }
}

async fn status(ctx: &Context) -> Result<Report> {
    let status = ctx.certificate_status().await?;
    let mut text = vec![
        format!("Domains: {}", status.domains.join(", ")),
        format!("Source: {} ({})", status.source, status.from),
    ];
    match &status.certificate {
        Some(certificate) => text.extend(describe(certificate)),
        None => text.push(
            "Certificate: none yet (HAProxy serves a self-signed stand-in); run doproxy cert renew"
                .into(),
        ),
    }
    if let Some(serial) = &status.served_serial {
        text.push(format!("Served by HAProxy: serial {serial}"));
    }
    if let Some(next) = &status.next_renewal {
        text.push(format!("Next renewal: {next}"));
    }
    if let Some(failure) = &status.last_failure {
        text.push(format!(
            "Failed attempts since the last success: {} (last: {failure})",
            status.failures
        ));
    }
    Report::new(text, &status)
}

async fn renew(ctx: &Context, args: &RenewArgs) -> Result<Report> {
    let renewed = ctx
        .renew_certificate(args.force, args.dry_run, args.lock.lock_timeout)
        .await?;
    let mut text = vec![match renewed.action {
        "issued" => format!("Certificate issued ({}).", renewed.reason),
        "would_issue" => format!("Would ask the CA for a certificate ({}).", renewed.reason),
        "would_install" => "Would install the certificate files.".to_string(),
        "installed" => "Installed the certificate files.".to_string(),
        _ => format!("Nothing to renew: {}.", renewed.reason),
    }];
    if let Some(certificate) = &renewed.certificate {
        text.extend(describe(certificate));
    }
    match &renewed.installed {
        Some(Installed::Runtime) => {
            text.push("HAProxy serves it now, without a reload.".to_string())
        }
        Some(Installed::Reload { why }) => text.push(format!(
            "HAProxy serves it now, after a reload (the admin socket could not install it: {why})."
        )),
        None => {}
    }
    Report::new(text, &renewed)
}

fn describe(certificate: &CertificateView) -> Vec<String> {
    vec![
        format!("Issuer: {}", certificate.issuer),
        format!("Serial: {}", certificate.serial),
        format!(
            "Not after: {} ({} days left)",
            certificate.not_after, certificate.days_left
        ),
    ]
}
