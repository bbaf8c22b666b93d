//! A table's state at one version, by replaying log actions (pure).
//!
//! Contract: [`Snapshot::apply`] folds one commit into the state exactly as the Delta
//! protocol says: an `add` makes its path live (replacing an earlier `add` of the same
//! path and clearing its tombstone), a `remove` makes it a tombstone, the last `txn` per
//! application wins, the last `protocol`/`metaData` win. Order within a commit does not
//! matter for a valid commit (a path is added or removed, not both). No IO.

use std::collections::BTreeMap;

use crate::log::{Action, Add, Metadata, Protocol, Remove};
use crate::stats::FileStats;

/// The state of a table at [`Snapshot::version`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The version (the last commit applied).
    pub version: u64,
    /// Protocol in force.
    pub protocol: Protocol,
    /// Metadata in force (`None` only before version 0 is applied).
    pub metadata: Option<Metadata>,
    /// Live files by path.
    pub files: BTreeMap<String, Add>,
    /// Removed files by path, until vacuum deletes them and a checkpoint forgets them.
    pub tombstones: BTreeMap<String, Remove>,
    /// Application id -> version reached.
    pub txns: BTreeMap<String, i64>,
    /// Timestamp of the last commit applied (its `commitInfo`), Unix ms.
    pub timestamp_ms: i64,
}

impl Snapshot {
    /// Applies commit `version`'s actions.
    pub fn apply(&mut self, version: u64, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Protocol(p) => self.protocol = p.clone(),
                Action::Metadata(m) => self.metadata = Some(m.clone()),
                Action::Add(add) => {
                    self.tombstones.remove(&add.path);
                    self.files.insert(add.path.clone(), add.clone());
                }
                Action::Remove(r) => {
                    self.files.remove(&r.path);
                    self.tombstones.insert(r.path.clone(), r.clone());
                }
                Action::Txn(t) => {
                    self.txns.insert(t.app_id.clone(), t.version);
                }
                Action::CommitInfo(c) => self.timestamp_ms = c.timestamp,
            }
        }
        self.version = version;
    }

    /// The version `app_id` reached (`None`: never committed).
    pub fn txn(&self, app_id: &str) -> Option<i64> {
        self.txns.get(app_id).copied()
    }

    /// Rows in the live files (from their statistics).
    pub fn rows(&self) -> u64 {
        self.files
            .values()
            .filter_map(|a| FileStats::of(a).map(|s| s.num_records))
            .sum()
    }

    /// Bytes in the live files.
    pub fn bytes(&self) -> u64 {
        self.files
            .values()
            .map(|a| u64::try_from(a.size).unwrap_or(0))
            .sum()
    }

    /// The actions a checkpoint of this snapshot holds: protocol, metadata, every txn,
    /// every live file, and the tombstones removed at or after `keep_tombstones_since_ms`.
    pub fn checkpoint_actions(&self, keep_tombstones_since_ms: i64) -> Vec<Action> {
        let mut out = vec![Action::Protocol(self.protocol.clone())];
        if let Some(m) = &self.metadata {
            out.push(Action::Metadata(m.clone()));
        }
        out.extend(self.txns.iter().map(|(app, &version)| {
            Action::Txn(crate::log::Txn {
                app_id: app.clone(),
                version,
                last_updated: None,
            })
        }));
        out.extend(self.files.values().cloned().map(Action::Add));
        out.extend(
            self.tombstones
                .values()
                .filter(|r| r.deletion_timestamp.unwrap_or(0) >= keep_tombstones_since_ms)
                .cloned()
                .map(Action::Remove),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Txn;

    fn add(path: &str) -> Action {
        Action::Add(Add {
            path: path.into(),
            partition_values: Default::default(),
            size: 100,
            modification_time: 0,
            data_change: true,
            stats: Some("{\"numRecords\":10}".into()),
            tags: None,
        })
    }

    fn remove(path: &str, at: i64) -> Action {
        Action::Remove(Remove {
            path: path.into(),
            deletion_timestamp: Some(at),
            data_change: false,
            extended_file_metadata: None,
            partition_values: None,
            size: None,
        })
    }

    #[test]
    fn replay_follows_the_protocol() {
        let mut s = Snapshot::default();
        s.apply(1, &[add("a"), add("b")]);
        s.apply(
            2,
            &[
                remove("a", 50),
                remove("b", 50),
                add("ab"),
                Action::Txn(Txn {
                    app_id: "w".into(),
                    version: 9,
                    last_updated: None,
                }),
            ],
        );
        assert_eq!(s.version, 2);
        assert_eq!(s.files.keys().collect::<Vec<_>>(), ["ab"]);
        assert_eq!(s.tombstones.len(), 2);
        assert_eq!(s.txn("w"), Some(9));
        assert_eq!(s.rows(), 10);
        // Re-adding a removed path revives it.
        s.apply(3, &[add("a")]);
        assert!(s.files.contains_key("a") && !s.tombstones.contains_key("a"));
        // Old tombstones are left out of a checkpoint.
        let cp = s.checkpoint_actions(60);
        assert!(!cp.iter().any(|a| matches!(a, Action::Remove(_))));
        assert_eq!(
            s.checkpoint_actions(50)
                .iter()
                .filter(|a| matches!(a, Action::Remove(_)))
                .count(),
            1
        );
    }
}
