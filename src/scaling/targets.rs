//! Which inventory entries a `delete` means. Every target is checked before
//! anything is deleted, so a typo in the third argument deletes nothing.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};

use super::plan::{Pick, Plan, plan};
use crate::model::Entry;

/// How the user named the droplets to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Line numbers as `print` shows them (0-based).
    Lines(Vec<usize>),
    Ids(Vec<u64>),
    Names(Vec<String>),
    /// Whatever the pool has beyond `keep` droplets, chosen as `scale`
    /// chooses; worked out from the entries read under the lock, so two
    /// runs shrinking at once never both remove the same surplus.
    Surplus {
        keep: usize,
        pick: Pick,
    },
}

/// Positions in `entries` of the selected droplets, in the order given,
/// without repeats; an error names the first target that matches nothing.
pub fn select(entries: &[Entry], selector: &Selector) -> Result<Vec<usize>> {
    // Positions by ID, so choosing 1,000 of 1,000 droplets stays linear.
    let position_of: HashMap<u64, usize> = entries
        .iter()
        .enumerate()
        .map(|(position, e)| (e.id, position))
        .collect();
    let positions: Vec<usize> = match selector {
        Selector::Lines(lines) => lines
            .iter()
            .map(|&line| {
                if line < entries.len() {
                    Ok(line)
                } else if entries.is_empty() {
                    bail!("there is no line {line}: the inventory is empty")
                } else {
                    bail!(
                        "there is no line {line}: the inventory has lines 0 to {}; run doproxy print to see them",
                        entries.len() - 1
                    )
                }
            })
            .collect::<Result<_>>()?,
        Selector::Ids(ids) => ids
            .iter()
            .map(|&id| match position_of.get(&id).copied() {
                Some(position) => Ok(position),
                None => bail!("no droplet with ID {id} is in the inventory; run doproxy print to see them"),
            })
            .collect::<Result<_>>()?,
        Selector::Names(names) => names
            .iter()
            .map(|name| {
                let named: Vec<usize> = (0..entries.len())
                    .filter(|&i| &entries[i].name == name)
                    .collect();
                match named[..] {
                    [position] => Ok(position),
                    [] => bail!("no droplet named {name:?} is in the inventory; run doproxy print to see them"),
                    _ => {
                        let ids: Vec<String> =
                            named.iter().map(|&i| entries[i].id.to_string()).collect();
                        bail!(
                            "{} droplets are named {name:?} (IDs {}); say which with doproxy delete --id",
                            named.len(),
                            ids.join(", ")
                        )
                    }
                }
            })
            .collect::<Result<_>>()?,
        Selector::Surplus { keep, pick } => match plan(entries, *keep, *pick) {
            Plan::Remove { ids } => ids
                .iter()
                .filter_map(|id| position_of.get(id).copied())
                .collect(),
            Plan::Stay { .. } | Plan::Add { .. } => Vec::new(),
        },
    };
    let mut seen = HashSet::with_capacity(positions.len());
    Ok(positions
        .into_iter()
        .filter(|position| seen.insert(*position))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        (0..3)
            .map(|i| Entry::named(100 + i, &format!("web-{i}")))
            .collect()
    }

    #[test]
    fn lines_ids_and_names_select_the_same_droplets() {
        let entries = entries();
        assert_eq!(
            select(&entries, &Selector::Lines(vec![2, 0, 2])).unwrap(),
            vec![2, 0]
        );
        assert_eq!(
            select(&entries, &Selector::Ids(vec![101])).unwrap(),
            vec![1]
        );
        assert_eq!(
            select(&entries, &Selector::Names(vec!["web-2".into()])).unwrap(),
            vec![2]
        );
    }

    #[test]
    fn an_ambiguous_name_is_refused_with_the_ids() {
        let mut entries = entries();
        entries[2].name = "web-0".into();
        let err = select(&entries, &Selector::Names(vec!["web-0".into()]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("2 droplets are named \"web-0\" (IDs 100, 102)")
                && err.contains("--id"),
            "{err}"
        );
        assert_eq!(
            select(&entries, &Selector::Names(vec!["web-1".into()])).unwrap(),
            vec![1]
        );
    }

    #[test]
    fn the_surplus_is_what_scale_would_remove() {
        let entries = entries();
        let surplus = |keep| {
            select(
                &entries,
                &Selector::Surplus {
                    keep,
                    pick: Pick::Oldest,
                },
            )
        };
        // No created_at: the lowest IDs count as the oldest.
        assert_eq!(surplus(1).unwrap(), vec![0, 1]);
        assert_eq!(surplus(3).unwrap(), Vec::<usize>::new());
        assert_eq!(surplus(5).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn one_bad_target_fails_the_whole_selection() {
        let entries = entries();
        let err = select(&entries, &Selector::Lines(vec![0, 3]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no line 3") && err.contains("0 to 2"), "{err}");
        let err = select(&entries, &Selector::Ids(vec![100, 7]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ID 7"), "{err}");
        let err = select(&entries, &Selector::Names(vec!["nope".into()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\""), "{err}");
        let err = select(&[], &Selector::Lines(vec![0]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
    }
}
