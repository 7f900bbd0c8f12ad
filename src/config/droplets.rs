//! droplet_options and the pool: what new droplets are made from and
//! tagged with, checked once (a typo in a UUID would otherwise fail every
//! create, after the other droplets of a batch were paid for).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::file::DropletOptions;
use crate::digitalocean::{Image, SshKey};
use crate::model::SHARED_TAG;

/// A pool's own tag is `doproxy:<pool>`.
const POOL_TAG_PREFIX: &str = "doproxy:";
/// The API's limit on a tag's length.
const MAX_TAG_LEN: usize = 255;

/// What `create` makes droplets from: droplet_options, ssh_key_ids and
/// userdata_file. The four original options may be missing (commands that
/// create nothing need none); `Config::droplet_spec` says which is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropletSettings {
    pub hostname_prefix: Option<String>,
    pub region: Option<String>,
    pub size: Option<String>,
    pub image: Option<Image>,
    pub ssh_keys: Vec<SshKey>,
    pub userdata_file: Option<PathBuf>,
    /// The tags new droplets get, the pool's own tag first.
    pub tags: Vec<String>,
    pub features: DropletFeatures,
}

/// What new droplets get beyond the original four options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropletFeatures {
    /// None: the region's default VPC.
    pub vpc_uuid: Option<String>,
    pub ipv6: bool,
    pub backups: bool,
    /// The DigitalOcean agent for Monitoring (CPU for autoscale); on by default.
    pub monitoring: bool,
    /// None: DigitalOcean's default (installed where the image supports it).
    pub with_droplet_agent: Option<bool>,
    /// The project new droplets are assigned to; None: the default project.
    pub project_id: Option<String>,
}

/// The values the droplet create request needs; present only when the config
/// names them all.
#[derive(Debug)]
pub struct DropletSpec<'a> {
    pub hostname_prefix: &'a str,
    pub region: &'a str,
    pub size: &'a str,
    pub image: &'a Image,
}

impl DropletSettings {
    /// The settings `options` and the keys beside them give (`pool` names
    /// the pool, else the hostname prefix does); errors name `path`.
    pub(super) fn new(
        options: DropletOptions,
        ssh_keys: Vec<SshKey>,
        userdata_file: Option<PathBuf>,
        pool: Option<&str>,
        path: &Path,
    ) -> Result<DropletSettings> {
        let features = droplet_features(&options, path)?;
        let tags = droplet_tags(options.tags, pool, options.hostname_prefix.as_deref(), path)?;
        Ok(DropletSettings {
            hostname_prefix: options.hostname_prefix,
            region: options.region,
            size: options.size,
            image: options.image,
            ssh_keys,
            userdata_file,
            tags,
            features,
        })
    }
}

/// The new droplet options, with vpc_uuid and project_id checked to be UUIDs
/// (a typo would otherwise fail every create).
fn droplet_features(options: &DropletOptions, path: &Path) -> Result<DropletFeatures> {
    for (key, value, example, source) in [
        (
            "vpc_uuid",
            &options.vpc_uuid,
            "760e09ef-dc84-11e8-981e-3cfdfeaae000",
            "doctl vpcs list",
        ),
        (
            "project_id",
            &options.project_id,
            "4e1bfbc3-dc3e-41f2-a18f-1b4d7ba71679",
            "doctl projects list",
        ),
    ] {
        if let Some(value) = value
            && !is_uuid(value)
        {
            bail!(
                "droplet_options.{key} {value:?} in {} is not a UUID such as {example}; copy it from {source}",
                path.display()
            );
        }
    }
    Ok(DropletFeatures {
        vpc_uuid: options.vpc_uuid.clone(),
        ipv6: options.ipv6.unwrap_or(false),
        backups: options.backups.unwrap_or(false),
        monitoring: options.monitoring.unwrap_or(true),
        with_droplet_agent: options.with_droplet_agent,
        project_id: options.project_id.clone(),
    })
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The tags new droplets get, the pool's own tag first. An explicit
/// droplet_options.tags is taken as written. Otherwise the pool is named by
/// `pool`, else by hostname_prefix, and its droplets carry `doproxy:<pool>`
/// and `doproxy`; with neither, just `doproxy` (shared by every such pool).
fn droplet_tags(
    explicit: Option<Vec<String>>,
    pool: Option<&str>,
    hostname_prefix: Option<&str>,
    path: &Path,
) -> Result<Vec<String>> {
    let file = path.display();
    let is_tag = |tag: &str| {
        (1..=MAX_TAG_LEN).contains(&tag.len())
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
    };
    match (explicit, pool) {
        (Some(_), Some(_)) => bail!(
            "pool and droplet_options.tags in {file} both set the pool's tag (with tags, the first one is the pool's tag); keep one of them"
        ),
        (Some(tags), None) => {
            if tags.is_empty() {
                bail!(
                    "droplet_options.tags in {file} is empty; doproxy finds its droplets by their first tag, so give at least one, or remove the key to use doproxy:<pool>"
                );
            }
            match tags.iter().find(|t| !is_tag(t)) {
                Some(bad) => bail!(
                    "droplet_options.tags in {file} has {bad:?}, which is no DigitalOcean tag; use letters, digits, -, _ and : (at most {MAX_TAG_LEN})"
                ),
                None => Ok(tags),
            }
        }
        (None, Some(pool)) => {
            let tag = format!("{POOL_TAG_PREFIX}{pool}");
            if !is_tag(&tag) {
                bail!(
                    "pool {pool:?} in {file} is no valid pool name; use letters, digits, -, _ and : (at most {} of them)",
                    MAX_TAG_LEN - POOL_TAG_PREFIX.len()
                );
            }
            Ok(vec![tag, SHARED_TAG.to_string()])
        }
        (None, None) => match hostname_prefix {
            Some(prefix) => {
                // Hostnames may hold dots, tags may not.
                let pool: String = prefix
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let tag = format!("{POOL_TAG_PREFIX}{pool}");
                if !is_tag(&tag) {
                    bail!(
                        "droplet_options.hostname_prefix in {file} is too long to name the pool's tag; set pool to a shorter name"
                    );
                }
                Ok(vec![tag, SHARED_TAG.to_string()])
            }
            None => Ok(vec![SHARED_TAG.to_string()]),
        },
    }
}
