//! The stored leaf hashes, cached in memory with every complete interior node, for proofs.
//!
//! Loaded from the store on the first proof request and extended from it as the tree grows,
//! never re-read: a leaf never changes once committed. Each level holds the roots of the
//! aligned perfect subtrees of its height, so the root of any subtree a proof asks for is a
//! lookup, or O(log n) of them along the right edge: a proof costs O(log² n) hashes at most,
//! however large the tree. The price is memory: 64 bytes per leaf.

use revocast_shared::tlog::proof::MissingLeaves;
use revocast_shared::tlog::{LeafHashSource, TreeHash, node_hash};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::StoreError;
use crate::store::Store;

/// Leaves read from the store per query while catching up.
const PAGE: u32 = 16_384;

#[derive(Default)]
pub struct Levels {
    /// `levels[0]` the leaf hashes; `levels[j][k]` the root of leaves `k·2^j .. (k+1)·2^j`.
    levels: Vec<Vec<TreeHash>>,
}

impl Levels {
    /// Leaves held.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn push(&mut self, leaf: TreeHash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut j = 0;
        while self.levels[j].len() % 2 == 0 {
            let n = self.levels[j].len();
            let parent = node_hash(&self.levels[j][n - 2], &self.levels[j][n - 1]);
            if self.levels.len() == j + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[j + 1].push(parent);
            j += 1;
        }
    }
}

impl LeafHashSource for Levels {
    type Error = MissingLeaves;

    fn range_root(&self, start: u64, end: u64) -> Result<TreeHash, MissingLeaves> {
        if start >= end || end > self.size() {
            return Err(MissingLeaves { start, end });
        }
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let j = n.trailing_zeros() as usize;
            return self
                .levels
                .get(j)
                .and_then(|level| level.get((start >> j) as usize))
                .copied()
                .ok_or(MissingLeaves { start, end });
        }
        // RFC 9162's split: the largest power of two below n.
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        Ok(node_hash(
            &self.range_root(start, start + k)?,
            &self.range_root(start + k, end)?,
        ))
    }
}

#[derive(Default)]
pub struct LeafCache {
    levels: Mutex<Levels>,
}

impl LeafCache {
    /// The cache holding at least the first `size` leaves, read from the store as needed.
    /// Holding the guard keeps other requests from reading the same leaves twice.
    pub async fn upto(
        &self,
        store: &dyn Store,
        size: u64,
    ) -> Result<MutexGuard<'_, Levels>, StoreError> {
        let mut levels = self.levels.lock().await;
        while levels.size() < size {
            let page = store.leaf_hashes(levels.size(), PAGE).await?;
            if page.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "the transparency log's leaf of seq {} is missing",
                    levels.size() + 1
                )));
            }
            for leaf in page {
                levels.push(leaf);
            }
        }
        Ok(levels)
    }
}

#[cfg(test)]
mod tests {
    use revocast_shared::tlog::{MemoryLeaves, consistency_proof, inclusion_proof, leaf_hash};

    use super::*;

    /// Every proof over the cached levels equals the one over plain leaves.
    #[test]
    fn proofs_from_levels_match_proofs_from_leaves() {
        let leaves: Vec<TreeHash> = (0..70u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut levels = Levels::default();
        for (n, leaf) in leaves.iter().enumerate() {
            levels.push(*leaf);
            let size = n as u64 + 1;
            let memory = MemoryLeaves(leaves[..=n].to_vec());
            for i in 0..size {
                assert_eq!(
                    inclusion_proof(&levels, i, size).unwrap(),
                    inclusion_proof(&memory, i, size).unwrap()
                );
            }
            for from in 0..=size {
                assert_eq!(
                    consistency_proof(&levels, from, size).unwrap(),
                    consistency_proof(&memory, from, size).unwrap()
                );
            }
        }
        assert!(levels.range_root(3, 71).is_err());
    }
}
