//! How the etcd inventory lays its droplets out in keys, so that a save of
//! any size takes effect whole or not at all. etcd takes at most 128
//! operations in one transaction (`--max-txn-ops`), fewer than a big pool
//! has droplets; so a big save first writes a whole new generation of keys,
//! which no reader looks at, then makes it the inventory in one transaction
//! that also deletes the old one. Pure: the keys read go in, the writes to
//! make come out.
//!
//! ```text
//! <prefix>droplets/current               N: the generation readers read
//! <prefix>droplets/g<N>/<ID, 20 digits>  one droplet of generation N, as JSON
//! <prefix>droplets/<ID, 20 digits>       one droplet, as doproxy wrote them before generations
//! ```
//!
//! Readers read every key under `<prefix>droplets/` in one range, so at one
//! revision: they see the generation `current` names, whole. A save that
//! fits in one transaction changes the current generation in place, so a
//! watcher is told about those droplets alone. Keys of the layout before
//! generations are read as long as no `current` exists; the first save
//! replaces them. A save cut short leaves a generation nobody reads, and
//! the next save deletes it.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::etcd::{Change, Compare, KeyValue, Op, Put};

/// Writes per transaction, below etcd's default limit of 128.
pub const MAX_OPS: usize = 100;
const CURRENT: &str = "current";

/// What a key under `<prefix>droplets/` is.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Current,
    /// A droplet of a generation: (generation, droplet ID).
    Generation(u64, u64),
    /// A droplet in the layout before generations.
    Legacy(u64),
}

/// The droplet keys as one range read them.
#[derive(Debug)]
pub struct Layout {
    /// `<prefix>droplets/`
    prefix: String,
    current: Option<u64>,
    /// Droplet ID to JSON, per generation.
    generations: BTreeMap<u64, BTreeMap<u64, Vec<u8>>>,
    legacy: BTreeMap<u64, Vec<u8>>,
}

/// The writes a save makes: `staged` ones no reader looks at, in as many
/// transactions as they need, then `commit` in one transaction that applies
/// only if `compares` hold (and the writer still holds the lock), making
/// the whole save visible at once.
#[derive(Debug)]
pub struct SavePlan {
    pub compares: Vec<Compare>,
    pub staged: Vec<Op>,
    pub commit: Vec<Op>,
}

impl Layout {
    /// Sorts the keys under `prefix` (`<prefix>droplets/`); a key doproxy
    /// does not write there, or a `current` that names no generation, is an
    /// error naming it.
    pub fn read(prefix: &str, kvs: Vec<KeyValue>) -> Result<Layout> {
        let mut layout = Layout {
            prefix: prefix.to_string(),
            current: None,
            generations: BTreeMap::new(),
            legacy: BTreeMap::new(),
        };
        for kv in kvs {
            match kv.key.strip_prefix(prefix).and_then(classify) {
                Some(Key::Current) => layout.current = Some(generation(&kv.key, &kv.value)?),
                Some(Key::Generation(generation, id)) => {
                    layout
                        .generations
                        .entry(generation)
                        .or_default()
                        .insert(id, kv.value);
                }
                Some(Key::Legacy(id)) => {
                    layout.legacy.insert(id, kv.value);
                }
                None => bail!(
                    "etcd key {} is not one doproxy writes under {prefix}; delete it (etcdctl del {}) and retry",
                    kv.key,
                    kv.key
                ),
            }
        }
        Ok(layout)
    }

    /// No key at all: nothing was ever saved here.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.generations.is_empty() && self.legacy.is_empty()
    }

    /// The droplets readers see, as (key, JSON) in ID order.
    pub fn visible(&self) -> Vec<(String, &[u8])> {
        match self.current {
            Some(generation) => self
                .generations
                .get(&generation)
                .into_iter()
                .flatten()
                .map(|(&id, value)| (self.key(generation, id), value.as_slice()))
                .collect(),
            None => self
                .legacy
                .iter()
                .map(|(&id, value)| (format!("{}{id:020}", self.prefix), value.as_slice()))
                .collect(),
        }
    }

    /// The writes that make `wanted` (droplet ID to JSON) the inventory: in
    /// place when they fit in one transaction, else through a new
    /// generation. `fresh` always stages a new generation and commits only
    /// the flip to it, a few writes, so commits of several inventories fit
    /// in one transaction together.
    pub fn plan(&self, wanted: &BTreeMap<u64, Vec<u8>>, fresh: bool) -> SavePlan {
        let current_key = format!("{}{CURRENT}", self.prefix);
        let compares = vec![match self.current {
            Some(generation) => Compare::ValueIs(current_key.clone(), generation_value(generation)),
            None => Compare::KeyMissing(current_key.clone()),
        }];
        if let (Some(generation), false) = (self.current, fresh) {
            let empty = BTreeMap::new();
            let stored = self.generations.get(&generation).unwrap_or(&empty);
            let mut ops: Vec<Op> = wanted
                .iter()
                .filter(|&(id, value)| stored.get(id) != Some(value))
                .map(|(&id, value)| self.put(generation, id, value))
                .chain(
                    stored
                        .keys()
                        .filter(|id| !wanted.contains_key(id))
                        .map(|&id| Op::Delete(self.key(generation, id))),
                )
                .collect();
            ops.extend(self.leftovers(Some(generation)));
            if ops.len() <= MAX_OPS {
                return SavePlan {
                    compares,
                    staged: Vec::new(),
                    commit: ops,
                };
            }
        }
        let newest = self.generations.keys().last().copied();
        let next = self.current.max(newest).unwrap_or(0) + 1;
        let mut staged: Vec<Op> = wanted
            .iter()
            .map(|(&id, value)| self.put(next, id, value))
            .collect();
        let mut commit = vec![Op::Put(Put {
            key: current_key,
            value: generation_value(next),
            lease: None,
        })];
        commit.extend(self.leftovers(None));
        if !fresh && staged.len() + commit.len() <= MAX_OPS {
            staged.append(&mut commit);
            commit = staged;
            staged = Vec::new();
        }
        SavePlan {
            compares,
            staged,
            commit,
        }
    }

    /// Deletes of what no reader looks at once `keep` is the generation:
    /// every other generation, and the keys of the layout before them.
    fn leftovers(&self, keep: Option<u64>) -> Vec<Op> {
        let mut ops: Vec<Op> = self
            .generations
            .keys()
            .filter(|&&generation| Some(generation) != keep)
            .map(|generation| Op::DeletePrefix(format!("{}g{generation}/", self.prefix)))
            .collect();
        if !self.legacy.is_empty() {
            // Every key starting with a digit, and only those.
            ops.push(Op::DeleteRange(
                format!("{}0", self.prefix),
                format!("{}:", self.prefix),
            ));
        }
        ops
    }

    fn key(&self, generation: u64, id: u64) -> String {
        format!("{}g{generation}/{id:020}", self.prefix)
    }

    fn put(&self, generation: u64, id: u64, value: &[u8]) -> Op {
        Op::Put(Put {
            key: self.key(generation, id),
            value: value.to_vec(),
            lease: None,
        })
    }
}

/// The generation `current` names at some revision, as its key (or None)
/// read then: where a watch from that revision starts.
pub fn generation_at(kv: Option<&KeyValue>) -> Result<Option<u64>> {
    kv.map(|kv| generation(&kv.key, &kv.value)).transpose()
}

/// Whether one transaction's `changes` under `prefix` (`<prefix>droplets/`)
/// change what readers see, with `generation` the one they read before it
/// (updated when the transaction names another). Writes to a generation
/// being staged, and deletes of old ones, change nothing readers see.
pub fn changes_visible(prefix: &str, changes: &[Change], generation: &mut Option<u64>) -> bool {
    let mut visible = false;
    for change in changes {
        visible |= match change.key.strip_prefix(prefix).and_then(classify) {
            Some(Key::Current) => {
                *generation = change
                    .value
                    .as_ref()
                    .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok());
                true
            }
            Some(Key::Generation(of, _)) => Some(of) == *generation,
            Some(Key::Legacy(_)) => generation.is_none(),
            None => true,
        };
    }
    visible
}

/// What `rest`, a key without `<prefix>droplets/`, is.
fn classify(rest: &str) -> Option<Key> {
    let number = |text: &str| {
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    if rest == CURRENT {
        return Some(Key::Current);
    }
    if let Some((generation, id)) = rest.strip_prefix('g').and_then(|g| g.split_once('/')) {
        return Some(Key::Generation(number(generation)?, number(id)?));
    }
    number(rest).map(Key::Legacy)
}

fn generation(key: &str, value: &[u8]) -> Result<u64> {
    match std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
        Some(generation) => Ok(generation),
        None => bail!(
            "etcd key {key} holds {:?}, not a generation number; restore the inventory with doproxy inventory import --replace",
            String::from_utf8_lossy(value)
        ),
    }
}

fn generation_value(generation: u64) -> Vec<u8> {
    generation.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "/p/droplets/";

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: format!("{PREFIX}{key}"),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            lease: 0,
        }
    }

    fn wanted(ids: impl IntoIterator<Item = u64>) -> BTreeMap<u64, Vec<u8>> {
        ids.into_iter()
            .map(|id| (id, format!("{{\"id\":{id}}}").into_bytes()))
            .collect()
    }

    /// The key each op writes or deletes, `put`/`del`/`del*` (a range).
    fn keys(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Op::Put(put) => format!("put {}", put.key.trim_start_matches(PREFIX)),
                Op::Delete(key) => format!("del {}", key.trim_start_matches(PREFIX)),
                Op::DeletePrefix(prefix) => format!("del* {}", prefix.trim_start_matches(PREFIX)),
                Op::DeleteRange(from, to) => format!(
                    "del {}..{}",
                    from.trim_start_matches(PREFIX),
                    to.trim_start_matches(PREFIX)
                ),
            })
            .collect()
    }

    #[test]
    fn readers_see_the_current_generation_whole_and_nothing_else() {
        let layout = Layout::read(
            PREFIX,
            vec![
                kv("00000000000000000007", "old"),
                kv("current", "2"),
                kv("g1/00000000000000000001", "gone"),
                kv("g2/00000000000000000002", "two"),
                kv("g2/00000000000000000003", "three"),
                kv("g3/00000000000000000004", "staged"),
            ],
        )
        .unwrap();
        let visible: Vec<(String, &[u8])> = layout.visible();
        assert_eq!(
            visible,
            [
                (format!("{PREFIX}g2/00000000000000000002"), &b"two"[..]),
                (format!("{PREFIX}g2/00000000000000000003"), &b"three"[..]),
            ]
        );
    }

    #[test]
    fn the_layout_before_generations_is_read_until_a_generation_exists() {
        let layout = Layout::read(
            PREFIX,
            vec![
                kv("00000000000000000007", "seven"),
                kv("g1/00000000000000000004", "staged"),
            ],
        )
        .unwrap();
        assert_eq!(
            layout.visible(),
            [(format!("{PREFIX}00000000000000000007"), &b"seven"[..])]
        );
        assert!(!layout.is_empty());
        assert!(Layout::read(PREFIX, vec![]).unwrap().is_empty());
    }

    #[test]
    fn foreign_keys_and_a_bad_generation_are_named() {
        let err = Layout::read(PREFIX, vec![kv("notes", "x")]).unwrap_err();
        assert!(err.to_string().contains("/p/droplets/notes"), "{err}");
        let err = Layout::read(PREFIX, vec![kv("current", "two")]).unwrap_err();
        assert!(err.to_string().contains("not a generation number"), "{err}");
        assert!(Layout::read(PREFIX, vec![kv("g/1", "x")]).is_err());
    }

    #[test]
    fn a_small_save_changes_the_current_generation_in_place() {
        let layout = Layout::read(
            PREFIX,
            vec![
                kv("current", "4"),
                kv("g4/00000000000000000001", "{\"id\":1}"),
                kv("g4/00000000000000000002", "{\"id\":2}"),
                kv("g5/00000000000000000009", "cut short"),
            ],
        )
        .unwrap();
        let plan = layout.plan(&wanted([2, 3]), false);
        assert!(plan.staged.is_empty());
        assert_eq!(
            keys(&plan.commit),
            [
                "put g4/00000000000000000003",
                "del g4/00000000000000000001",
                "del* g5/"
            ]
        );
        assert!(matches!(&plan.compares[..],
            [Compare::ValueIs(key, value)] if key == "/p/droplets/current" && value == b"4"));
    }

    #[test]
    fn a_big_save_stages_a_new_generation_and_flips_to_it_in_one_transaction() {
        let layout = Layout::read(
            PREFIX,
            vec![
                kv("current", "4"),
                kv("g4/00000000000000000001", "{\"id\":1}"),
            ],
        )
        .unwrap();
        let plan = layout.plan(&wanted(1..=150), false);
        assert_eq!(plan.staged.len(), 150);
        assert!(keys(&plan.staged).iter().all(|k| k.starts_with("put g5/")));
        assert_eq!(keys(&plan.commit), ["put current", "del* g4/"]);
    }

    #[test]
    fn the_first_save_over_the_old_layout_moves_it_into_a_generation() {
        let layout = Layout::read(PREFIX, vec![kv("00000000000000000007", "{\"id\":7}")]).unwrap();
        let plan = layout.plan(&wanted([7, 8]), false);
        assert!(plan.staged.is_empty(), "small enough for one transaction");
        assert_eq!(
            keys(&plan.commit),
            [
                "put g1/00000000000000000007",
                "put g1/00000000000000000008",
                "put current",
                "del 0..:"
            ]
        );
        assert!(matches!(&plan.compares[..],
            [Compare::KeyMissing(key)] if key == "/p/droplets/current"));
        // Forced fresh, a small save goes through a new generation too.
        let layout = Layout::read(
            PREFIX,
            vec![
                kv("current", "1"),
                kv("g1/00000000000000000007", "{\"id\":7}"),
            ],
        )
        .unwrap();
        let plan = layout.plan(&wanted([7]), true);
        assert_eq!(keys(&plan.staged), ["put g2/00000000000000000007"]);
        assert_eq!(keys(&plan.commit), ["put current", "del* g1/"]);
    }

    #[test]
    fn a_watcher_sees_the_flip_and_current_changes_but_not_staging_or_cleanup() {
        let change = |key: &str, value: Option<&str>| Change {
            key: format!("{PREFIX}{key}"),
            value: value.map(|v| v.as_bytes().to_vec()),
        };
        let mut generation = Some(4);
        let staging = [change("g5/00000000000000000001", Some("{}"))];
        assert!(!changes_visible(PREFIX, &staging, &mut generation));
        let in_place = [change("g4/00000000000000000001", None)];
        assert!(changes_visible(PREFIX, &in_place, &mut generation));
        let flip = [
            change("current", Some("5")),
            change("g4/00000000000000000002", None),
        ];
        assert!(changes_visible(PREFIX, &flip, &mut generation));
        assert_eq!(generation, Some(5));
        let cleanup = [change("g4/00000000000000000003", None)];
        assert!(!changes_visible(PREFIX, &cleanup, &mut generation));
        // The old layout, written by an older doproxy, is visible while no
        // generation exists.
        let mut none = None;
        let legacy = [change("00000000000000000001", Some("{}"))];
        assert!(changes_visible(PREFIX, &legacy, &mut none));
    }
}
