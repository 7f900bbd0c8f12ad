//! The checks that need the API: the token, SSH keys, region, size,
//! image, the reserved IP and the inventory's droplets, as this account
//! sees them.

use super::{Check, failed, ok, skipped};
use crate::config::Config;
use crate::digitalocean::{ApiError, Client, Image, SshKey, reserved_ip};
use crate::listing::abbreviated;
use crate::model::Entry;
use crate::ops::Context;
use crate::ops::ownership::listed_in;

/// The reserved IP `failover` moves: that it exists, and who holds it.
pub(super) async fn reserved_ip_check(ip: std::net::Ipv4Addr, api: &Client) -> Check {
    const CHECK: &str = "reserved ip";
    match reserved_ip::get(api, ip).await {
        Ok(reserved) => ok(
            CHECK,
            match reserved.droplet {
                Some(holder) => format!("{ip} is held by {} (droplet {})", holder.name, holder.id),
                None => format!(
                    "{ip} exists and no droplet holds it; doproxy failover assigns it to the leading proxy"
                ),
            },
        ),
        Err(ApiError::NotFound) => failed(
            CHECK,
            format!(
                "{ip} is not a reserved IP of this account; create one in the proxies' region and set reserved_ip to it"
            ),
        ),
        Err(err) => failed(CHECK, err.to_string()),
    }
}

/// ✗ while ssh_key_ids holds the placeholder `doproxy init` wrote.
pub(super) fn placeholder_check(config: &Config) -> Option<Check> {
    let err = config.check_ssh_keys().err()?;
    Some(failed("ssh keys", err.to_string()))
}

/// SSH keys, region, size and image, as this account sees them.
pub(super) async fn account_checks(config: &Config, api: &Client) -> Vec<Check> {
    let mut checks = vec![match placeholder_check(config) {
        Some(check) => check,
        None => ssh_keys_check(config, api).await,
    }];
    let slug_check = |check: &'static str, slug: Option<&str>, list: &str, found: Option<bool>| {
        match (slug, found) {
            (None, _) => failed(
                check,
                format!("droplet_options.{check} is missing; create needs it"),
            ),
            (Some(slug), Some(true)) => ok(check, format!("{slug} is available")),
            (Some(slug), Some(false)) => failed(
                check,
                format!(
                    "{slug} is not a {check} this account can use; pick one from `doctl compute {list} list`"
                ),
            ),
            (Some(_), None) => failed(check, "the API could not be asked; retry"),
        }
    };
    let region = config.droplets.region.as_deref();
    let size = config.droplets.size.as_deref();
    let listed = |key: &'static str, slug: Option<&str>| {
        let api = api.clone();
        let slug = slug.map(str::to_string);
        async move {
            let slug = slug?;
            let list = api
                .get_json(&format!("/v2/{key}"), &[("per_page", "200".to_string())])
                .await
                .ok()?;
            Some(
                list[key]
                    .as_array()?
                    .iter()
                    .any(|item| item["slug"] == slug.as_str() && item["available"] != false),
            )
        }
    };
    checks.push(slug_check(
        "region",
        region,
        "region",
        listed("regions", region).await,
    ));
    checks.push(slug_check(
        "size",
        size,
        "size",
        listed("sizes", size).await,
    ));
    let image = config.droplets.image.as_ref().map(Image::to_string);
    let image_found = match &image {
        Some(image) => match api.get_json(&format!("/v2/images/{image}"), &[]).await {
            Ok(_) => Some(true),
            Err(crate::digitalocean::ApiError::NotFound) => Some(false),
            Err(_) => None,
        },
        None => None,
    };
    checks.push(slug_check("image", image.as_deref(), "image", image_found));
    checks
}

/// That every key of ssh_key_ids exists in this account.
async fn ssh_keys_check(config: &Config, api: &Client) -> Check {
    let mut missing = Vec::new();
    for key in &config.droplets.ssh_keys {
        let id = match key {
            SshKey::Id(id) => id.to_string(),
            SshKey::Fingerprint(fingerprint) => fingerprint.clone(),
        };
        if api
            .get_json(&format!("/v2/account/keys/{id}"), &[])
            .await
            .is_err()
        {
            missing.push(id);
        }
    }
    match (config.droplets.ssh_keys.len(), missing.is_empty()) {
        (0, _) => skipped(
            "ssh keys",
            "ssh_key_ids is empty; new droplets get no SSH key",
        ),
        (n, true) => ok("ssh keys", format!("all {n} exist")),
        (_, false) => failed(
            "ssh keys",
            format!(
                "{} not found in this account; check ssh_key_ids against `doctl compute ssh-key list`",
                missing.join(", ")
            ),
        ),
    }
}

/// Whether DigitalOcean shows every droplet the inventory lists as the
/// pool's: one that is not is never tagged nor destroyed, and blocks the
/// delete, scale-in, heal or rollout that would touch it until a person
/// removes it from the inventory or tags it.
pub(super) async fn ownership_check(ctx: &Context, api: &Client, entries: &[Entry]) -> Check {
    const CHECK: &str = "pool's droplets";
    let known: Vec<u64> = entries.iter().map(|e| e.id).collect();
    let listed = match api.list_pool(ctx.config.pool_tag(), &known).await {
        Ok(droplets) => droplets,
        Err(err) => return failed(CHECK, err.to_string()),
    };
    let listed = listed_in(entries, listed);
    let refused: Vec<String> = ctx
        .not_the_pools(&listed)
        .await
        .into_iter()
        .map(|(_, why)| why)
        .collect();
    match refused.is_empty() {
        true => ok(
            CHECK,
            format!(
                "DigitalOcean shows the {} droplet(s) the inventory lists as the pool's",
                listed.len()
            ),
        ),
        false => failed(
            CHECK,
            format!("{}; {}", abbreviated(&refused), ctx.settle_not_the_pools()),
        ),
    }
}
