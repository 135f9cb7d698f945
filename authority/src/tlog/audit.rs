//! Tamper at rest: before an authority serves or signs anything, the stored log must still be
//! the tree it signed. A revocation row deleted or changed behind its back (in the SQLite file,
//! or in the shared database) no longer matches the leaf hash stored with it when it was
//! committed; leaves deleted or changed as well no longer give the root of the last signed
//! checkpoint. Either way the start is refused with the `seq` that no longer matches.
//!
//! The check reads every stored leaf and every revocation row once: O(size) work. Every start
//! makes it, and a running authority makes it again every `--log-audit-interval` ([`watch`]):
//! on PostgreSQL the database is shared, so a row changed through any replica, or behind all
//! of them, is found by every replica's next audit, and each stops.

use std::time::Duration;

use revocast_shared::Seq;
use revocast_shared::tlog::{Frontier, event_leaf_hash, verify_checkpoint_note};

use super::keys::LogKeys;
use crate::error::{Error, StoreError};
use crate::store::Store;

/// Leaves and rows compared per read.
const PAGE: u32 = 16_384;

fn tampered(what: String) -> Error {
    Error::LogTampered(what)
}

/// Audit the stored log every `interval` while the authority runs, until it finds the log
/// tampered with: returns that error (the caller stops serving). A failure to read the store
/// is logged and the audit tried again next interval: an outage is not tampering.
pub async fn watch(store: &dyn Store, origin: &str, keys: &LogKeys, interval: Duration) -> Error {
    loop {
        tokio::time::sleep(interval).await;
        match check(store, origin, keys).await {
            Ok(()) => tracing::debug!("the stored transparency log still extends its checkpoint"),
            Err(e @ Error::LogTampered(_)) => return e,
            Err(e) => tracing::warn!(
                error = &e as &dyn std::error::Error,
                "could not audit the stored transparency log; trying again next interval"
            ),
        }
    }
}

/// Check the stored log against its leaves, and the leaves against the last signed
/// checkpoint (verified with the stored log keys).
pub async fn check(store: &dyn Store, origin: &str, keys: &LogKeys) -> Result<(), Error> {
    // The checkpoint first, then the keys, then the head: on a shared database another
    // replica may sign meanwhile, but never a key or a size this order would miss.
    let note = store.latest_checkpoint().await?;
    keys.refresh(store).await?;
    let state = store.tree_head().await?;
    let head = state.head.get();
    if state.tree.size() != head {
        return Err(tampered(format!(
            "the stored tree has {} leaves but the log's head is seq {head}",
            state.tree.size()
        )));
    }
    let checkpoint = match note {
        Some(note) => Some(
            verify_checkpoint_note(note.as_bytes(), origin, &keys.all()).map_err(|e| {
                tampered(format!("the last signed checkpoint does not verify: {e}"))
            })?,
        ),
        None => None,
    };
    if let Some(checkpoint) = &checkpoint
        && checkpoint.size > head
    {
        return Err(tampered(format!(
            "the log's head is seq {head} but a checkpoint of size {} was signed: the events \
             after seq {head} are gone",
            checkpoint.size
        )));
    }
    let mut floor = state.floor.get();
    let mut tree = Frontier::new();
    let mut checkpoint_root = None;
    while tree.size() < head {
        let after = tree.size();
        let mut leaves = store.leaf_hashes(after, PAGE).await.map_err(|e| match e {
            StoreError::Corrupt(what) => tampered(what),
            e => e.into(),
        })?;
        // Another replica may have committed since the head was read.
        leaves.truncate(usize::try_from(head - after).unwrap_or(usize::MAX));
        if leaves.is_empty() {
            return Err(tampered(format!(
                "the leaf of seq {} is missing from the stored tree",
                after + 1
            )));
        }
        let last = after + leaves.len() as u64;
        // The rows of the same seqs that are still present (pruning deletes expired rows at
        // or below the floor; nothing else deletes any).
        let rows = store.log_rows(Seq::new(after), PAGE).await?;
        // Rows above the floor are never deleted: the first one not found is named — once the
        // floor, read again, confirms it (a running authority prunes meanwhile).
        let mut expected = after + 1;
        for row in rows.iter().take_while(|r| r.seq.get() <= last) {
            let seq = row.seq.get();
            if expected.max(floor + 1) < seq {
                floor = store.tree_head().await?.floor.get();
                if expected.max(floor + 1) < seq {
                    return Err(tampered(format!(
                        "the revocation of seq {} was deleted from the log",
                        expected.max(floor + 1)
                    )));
                }
            }
            let index = usize::try_from(seq - after - 1).unwrap_or(usize::MAX);
            if leaves.get(index) != Some(&event_leaf_hash(row)) {
                return Err(tampered(format!(
                    "the revocation of seq {seq} was changed: it no longer matches its leaf"
                )));
            }
            expected = seq + 1;
        }
        if expected.max(floor + 1) <= last {
            floor = store.tree_head().await?.floor.get();
            if expected.max(floor + 1) <= last {
                return Err(tampered(format!(
                    "the revocation of seq {} was deleted from the log",
                    expected.max(floor + 1)
                )));
            }
        }
        for leaf in leaves {
            tree.push(leaf);
            if checkpoint.as_ref().is_some_and(|c| c.size == tree.size()) {
                checkpoint_root = Some(tree.root());
            }
        }
    }
    if tree.size() > head || tree.root() != state.tree.root() {
        return Err(tampered(
            "the stored leaves do not give the stored frontier".to_owned(),
        ));
    }
    if let Some(checkpoint) = &checkpoint {
        let root = if checkpoint.size == 0 {
            Some(Frontier::new().root())
        } else {
            checkpoint_root
        };
        if root != Some(checkpoint.root) {
            return Err(tampered(format!(
                "the stored leaves up to seq {} no longer give the root of the checkpoint \
                 signed at that size",
                checkpoint.size
            )));
        }
    }
    Ok(())
}
