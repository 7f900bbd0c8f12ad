//! `print`: the inventory, one line per droplet, exactly as DOProxy printed it.
//! A droplet built from other options than droplet_options has now gets a
//! trailing `[stale: image, size]` (the fields that differ), so the lines
//! of droplets that match stay the original's byte for byte.

use anyhow::{Result, bail};

use super::{Context, Report};
use crate::cli::PrintArgs;
use crate::model::{Build, Entry};
use crate::ops::create::current_build;
use crate::ops::{failover, inventory};

const EMPTY: &str = "The inventory file is empty. Use the create command.";

pub async fn run(ctx: &Context, args: &PrintArgs, json_output: bool) -> Result<Report> {
    // Before a refresh takes the lock and asks the API.
    if args.health && ctx.config.haproxy.socket.is_none() {
        bail!(
            "print --health reads HAProxy's admin socket; set haproxy_socket in {}",
            ctx.config.path.display()
        );
    }
    let entries = if args.refresh {
        inventory::refresh(ctx).await?
    } else {
        ctx.entries(None).await?
    };
    // What HAProxy thinks of each server, when its admin socket is set:
    // always in JSON, in the text lines only with --health. A socket that
    // does not answer costs only the states: the inventory is still printed.
    let states = match &ctx.config.haproxy.socket {
        Some(_) if args.health || json_output => match ctx.server_states().await {
            Ok(states) => Some(states),
            Err(err) => {
                tracing::warn!("{err:#}; printing the inventory without HAProxy's view");
                None
            }
        },
        _ => None,
    };
    let state = |entry: &Entry| states.as_ref().and_then(|s| s.get(&entry.id));
    // Options that cannot be read (print needs none) leave staleness unknown.
    let current = match current_build(&ctx.config) {
        Ok((build, _)) => Some(build),
        Err(err) => {
            tracing::debug!("cannot tell stale droplets: {err:#}");
            None
        }
    };
    let stale = |entry: &Entry| staleness(entry, current.as_ref());
    let mut text = if entries.is_empty() {
        vec![EMPTY.to_string()]
    } else {
        entries
            .iter()
            .enumerate()
            .map(|(line, entry)| {
                let health = args.health.then(|| match (&states, state(entry)) {
                    (None, _) => "unknown".to_string(),
                    (Some(_), None) => "not in HAProxy".to_string(),
                    (Some(_), Some(server)) => server.health(),
                });
                let line = format_line(line, entry, health.as_deref());
                match stale(entry) {
                    Some(fields) if !fields.is_empty() => {
                        format!("{line} [stale: {}]", fields.join(", "))
                    }
                    _ => line,
                }
            })
            .collect()
    };
    if args.health {
        text.extend(failover::leader_line(ctx).await);
    }
    // Only what is printed is built: at 10,000 entries the JSON of all of
    // them costs as much again as the lines.
    if !json_output {
        return Report::new(text, serde_json::Value::Null);
    }
    let mut json = serde_json::to_value(&entries)?;
    for (value, entry) in json
        .as_array_mut()
        .expect("entries are a list")
        .iter_mut()
        .zip(&entries)
    {
        value["stale"] = serde_json::to_value(stale(entry))?;
        if states.is_some() {
            value["haproxy_state"] = state(entry).map(|s| s.status.as_str()).into();
        }
    }
    Ok(Report::from_json(text, json))
}

/// The fields in which `entry`'s build differs from `current`, the build
/// the options give now; None when either is unknown.
fn staleness(entry: &Entry, current: Option<&Build>) -> Option<Vec<&'static str>> {
    Some(entry.build.as_ref()?.differences(current?))
}

/// `0) auto-nginx-0  (pvt ip: 192.0.2.175, status: active, id: 4202645)`,
/// two spaces after the name, byte for byte the original's; with
/// `haproxy_state`, `, haproxy: UP` before the closing parenthesis.
fn format_line(line: usize, entry: &Entry, haproxy_state: Option<&str>) -> String {
    let private_ip = entry
        .private_ip
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let health = haproxy_state
        .map(|state| format!(", haproxy: {state}"))
        .unwrap_or_default();
    format!(
        "{line}) {}  (pvt ip: {private_ip}, status: {}, id: {}{health})",
        entry.name, entry.status, entry.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_matches_the_original() {
        let entry = Entry {
            private_ip: Some("192.0.2.175".parse().unwrap()),
            ..Entry::named(4202645, "auto-nginx-0")
        };
        assert_eq!(
            format_line(0, &entry, None),
            "0) auto-nginx-0  (pvt ip: 192.0.2.175, status: active, id: 4202645)"
        );
        assert_eq!(
            format_line(0, &entry, Some("DRAIN")),
            "0) auto-nginx-0  (pvt ip: 192.0.2.175, status: active, id: 4202645, haproxy: DRAIN)"
        );
    }

    #[test]
    fn staleness_is_unknown_without_a_build_on_either_side() {
        let build = Build {
            image: "ubuntu-24-04-x64".into(),
            size: "s-1vcpu-1gb".into(),
            region: "nyc3".into(),
            user_data: None,
            tags: vec!["doproxy".into()],
            vpc: None,
        };
        let mut entry = Entry::named(1, "web-0");
        assert_eq!(staleness(&entry, Some(&build)), None);
        entry.build = Some(build.clone());
        assert_eq!(staleness(&entry, None), None);
        assert_eq!(staleness(&entry, Some(&build)), Some(vec![]));
        let bigger = Build {
            size: "s-2vcpu-2gb".into(),
            ..build
        };
        assert_eq!(staleness(&entry, Some(&bigger)), Some(vec!["size"]));
    }
}
