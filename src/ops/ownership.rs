//! Which droplets DigitalOcean shows as the pool's (see `Pool::disowns`).
//! Whoever can write the inventory can list any droplet of the account in
//! it, so this, not the inventory, decides what may be destroyed or tagged.

use std::collections::HashSet;

use anyhow::Result;

use crate::digitalocean::Droplet;
use crate::model::Entry;
use crate::text::Printable;

use super::Context;

/// Of `droplets` (as DigitalOcean shows them), those the inventory
/// `entries` lists.
pub fn listed_in(entries: &[Entry], droplets: impl IntoIterator<Item = Droplet>) -> Vec<Droplet> {
    let listed: HashSet<u64> = entries.iter().map(|e| e.id).collect();
    droplets
        .into_iter()
        .filter(|d| listed.contains(&d.id))
        .collect()
}

impl Context {
    /// The droplets of `droplets` (as DigitalOcean shows them now) that are
    /// not the pool's (see `Pool::disowns`), each with one sentence: which
    /// droplet, where the inventory lists it, and why it is not the pool's.
    /// Whoever can write the inventory can list any droplet of the account
    /// in it, so this, not the inventory, decides what may be destroyed or
    /// tagged.
    pub async fn not_the_pools(&self, droplets: &[Droplet]) -> Vec<(u64, String)> {
        let pool = &self.config.pool;
        let mut refused = Vec::new();
        for droplet in droplets {
            let Some(why) = pool.disowns(&droplet.name, &droplet.tags) else {
                continue;
            };
            let listed = match self.store.locate(droplet.id).await {
                Ok(Some(place)) => format!("listed at {place}"),
                Ok(None) => "not in the inventory".to_string(),
                Err(err) => format!("listed in {} ({err:#})", self.store.describe()),
            };
            refused.push((
                droplet.id,
                format!(
                    "droplet {} ({}), {listed}, is not pool {}'s: DigitalOcean shows it {why}",
                    droplet.id,
                    Printable::new(&droplet.name),
                    pool.tag
                ),
            ));
        }
        refused
    }

    /// What a person does about an entry `not_the_pools` names.
    pub fn settle_not_the_pools(&self) -> String {
        format!(
            "doproxy never tags nor destroys it: remove it from the inventory, or tag it with {}",
            self.config.pool_tag()
        )
    }

    /// Fails, naming each, when any of `droplets` (as DigitalOcean shows
    /// them now) is not the pool's: such a droplet is never destroyed nor
    /// tagged, whatever the inventory says.
    pub async fn refuse_foreign(&self, droplets: &[Droplet]) -> Result<()> {
        let refused = self.not_the_pools(droplets).await;
        if refused.is_empty() {
            return Ok(());
        }
        let them = if refused.len() == 1 { "it" } else { "them" };
        let sentences: Vec<String> = refused.into_iter().map(|(_, sentence)| sentence).collect();
        anyhow::bail!(
            "{}, so doproxy neither destroys nor tags {them}; remove from the inventory what is not the pool's, or tag what is with {}",
            sentences.join("; "),
            self.config.pool_tag()
        )
    }
}
