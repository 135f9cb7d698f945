//! The frontier of a Merkle tree (a "compact range" over `[0, size)`): the roots of the perfect
//! subtrees along its right edge, one per set bit of `size`, largest first. It is all that is
//! needed to append leaves and to compute the root, so it is what the authority stores beside
//! the log and what an agent keeps while it applies events.

use serde::{Deserialize, Serialize};

use super::hash::{HASH_LEN, TreeHash, empty_root, node_hash};

/// Largest tree size accepted from outside (`seq` is a signed 64-bit number in storage). Keeps
/// every later append free of overflow.
pub const MAX_TREE_SIZE: u64 = i64::MAX as u64;

/// A frontier can hold at most one subtree per bit of the size.
const MAX_HASHES: usize = 64;

/// Why bytes or JSON are not a frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrontierError {
    #[error("the tree size is above {MAX_TREE_SIZE}")]
    TooLarge,
    #[error("a frontier of this size has another number of hashes")]
    WrongHashCount,
    #[error("a hash is not standard base64 of 32 bytes")]
    BadHash,
}

/// The right-edge subtree roots of a tree of `size` leaves.
#[derive(PartialEq, Eq, Debug)]
pub struct Frontier {
    size: u64,
    /// Roots of perfect subtrees, left to right: the subtree for the highest set bit of `size`
    /// first. Reserved at its maximum once, so appending never allocates.
    hashes: Vec<TreeHash>,
}

/// A clone keeps the full capacity, so appending to it never allocates either (a verifier
/// extends a copy of its frontier at every checkpoint).
impl Clone for Frontier {
    fn clone(&self) -> Self {
        let mut hashes = Vec::with_capacity(MAX_HASHES);
        hashes.extend_from_slice(&self.hashes);
        Self {
            size: self.size,
            hashes,
        }
    }
}

impl Default for Frontier {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self {
            size: 0,
            hashes: Vec::with_capacity(MAX_HASHES),
        }
    }

    /// The frontier of a tree with these leaf hashes.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = TreeHash>) -> Self {
        let mut f = Self::new();
        for leaf in leaves {
            f.push(leaf);
        }
        f
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, left to right.
    pub fn hashes(&self) -> &[TreeHash] {
        &self.hashes
    }

    /// Append one leaf hash: at most 63 node hashes (one per trailing 1 bit of the size, on
    /// average one) and no allocation.
    pub fn push(&mut self, leaf: TreeHash) {
        let mut hash = leaf;
        let mut size = self.size;
        while size & 1 == 1 {
            // One stored root per set bit: a trailing 1 bit always has its root on the stack.
            let Some(left) = self.hashes.pop() else {
                unreachable!("a frontier holds one root per set bit of its size")
            };
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The tree's root (RFC 9162 MTH): the subtree roots folded right to left; SHA-256("") when
    /// empty.
    pub fn root(&self) -> TreeHash {
        let mut from_right = self.hashes.iter().rev();
        let Some(last) = from_right.next() else {
            return empty_root();
        };
        from_right.fold(*last, |right, left| node_hash(left, &right))
    }

    /// `size` as 8 bytes big-endian, then the hashes: 8 + 32 × popcount(size) bytes. For a
    /// database column.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + HASH_LEN * self.hashes.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for h in &self.hashes {
            out.extend_from_slice(&h.0);
        }
        out
    }

    /// The inverse of [`Frontier::to_bytes`]; anything else is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FrontierError> {
        let Some((size, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(FrontierError::WrongHashCount);
        };
        let size = u64::from_be_bytes(*size);
        Self::check_size(size)?;
        if rest.len() != HASH_LEN * size.count_ones() as usize {
            return Err(FrontierError::WrongHashCount);
        }
        let mut hashes = Vec::with_capacity(MAX_HASHES);
        for chunk in rest.chunks_exact(HASH_LEN) {
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(chunk);
            hashes.push(TreeHash(h));
        }
        Ok(Self { size, hashes })
    }

    /// A frontier from its parts, checked: as many hashes as `size` has set bits.
    pub fn from_parts(size: u64, hashes: Vec<TreeHash>) -> Result<Self, FrontierError> {
        Self::check_size(size)?;
        if hashes.len() != size.count_ones() as usize {
            return Err(FrontierError::WrongHashCount);
        }
        let mut all = Vec::with_capacity(MAX_HASHES);
        all.extend(hashes);
        Ok(Self { size, hashes: all })
    }

    fn check_size(size: u64) -> Result<(), FrontierError> {
        if size > MAX_TREE_SIZE {
            return Err(FrontierError::TooLarge);
        }
        Ok(())
    }
}

/// The JSON form, `{"size":N,"hashes":["<base64>",…]}`, hashes left to right in standard
/// base64, as carried in a snapshot's first line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontierJson {
    size: u64,
    hashes: Vec<String>,
}

impl Serialize for Frontier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        FrontierJson {
            size: self.size,
            hashes: self.hashes.iter().map(TreeHash::to_base64).collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Frontier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = FrontierJson::deserialize(d)?;
        // Checked before decoding, so a huge list is refused without decoding it.
        if json.hashes.len() > MAX_HASHES {
            return Err(serde::de::Error::custom(FrontierError::WrongHashCount));
        }
        let hashes = json
            .hashes
            .iter()
            .map(|h| TreeHash::from_base64(h).ok_or(FrontierError::BadHash))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        Frontier::from_parts(json.size, hashes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tlog::hash::leaf_hash;
    use crate::tlog::proof::reference_root;

    fn leaves(n: u64) -> Vec<TreeHash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn root_matches_the_reference_for_every_size_up_to_130() {
        let all = leaves(130);
        let mut f = Frontier::new();
        assert_eq!(f.root(), empty_root());
        for n in 1..=all.len() {
            f.push(all[n - 1]);
            assert_eq!(f.size(), n as u64);
            assert_eq!(f.hashes().len(), n.count_ones() as usize);
            assert_eq!(f.root(), reference_root(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn appending_never_reallocates() {
        let mut f = Frontier::new();
        let before = f.hashes.as_ptr();
        for h in leaves(1000) {
            f.push(h);
        }
        assert_eq!(f.hashes.as_ptr(), before);
        // Nor after a round trip through storage or JSON, nor in a clone.
        let json: Frontier = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        for mut copy in [
            Frontier::from_bytes(&f.to_bytes()).unwrap(),
            json,
            f.clone(),
        ] {
            let before = copy.hashes.as_ptr();
            for h in leaves(1000) {
                copy.push(h);
            }
            assert_eq!(copy.hashes.as_ptr(), before);
        }
    }

    #[test]
    fn bytes_and_json_round_trip() {
        for n in [0, 1, 2, 3, 7, 8, 70] {
            let f = Frontier::from_leaf_hashes(leaves(n));
            let bytes = f.to_bytes();
            assert_eq!(bytes.len(), 8 + 32 * n.count_ones() as usize);
            assert_eq!(Frontier::from_bytes(&bytes).unwrap(), f);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Frontier>(&json).unwrap(), f);
        }
        let f = Frontier::from_leaf_hashes(leaves(3));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            format!(
                r#"{{"size":3,"hashes":["{}","{}"]}}"#,
                f.hashes()[0],
                f.hashes()[1]
            )
        );
    }

    #[test]
    fn malformed_frontiers_are_refused() {
        let f = Frontier::from_leaf_hashes(leaves(5));
        let bytes = f.to_bytes();
        assert!(Frontier::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Frontier::from_bytes(&[bytes.clone(), vec![0; 32]].concat()).is_err());
        assert!(Frontier::from_bytes(&bytes[..7]).is_err());
        let mut huge = bytes.clone();
        huge[0] = 0x80;
        assert_eq!(Frontier::from_bytes(&huge), Err(FrontierError::TooLarge));
        for bad in [
            r#"{"size":5,"hashes":[]}"#.to_string(),
            format!(
                r#"{{"size":4,"hashes":["{}","{}"]}}"#,
                f.hashes()[0],
                f.hashes()[1]
            ),
            r#"{"size":1,"hashes":["not base64"]}"#.to_string(),
            format!(r#"{{"size":1,"hashes":["{}"],"extra":1}}"#, f.hashes()[0]),
            r#"{"size":-1,"hashes":[]}"#.to_string(),
        ] {
            assert!(serde_json::from_str::<Frontier>(&bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(f) = Frontier::from_bytes(&bytes) {
                prop_assert_eq!(f.to_bytes(), bytes);
                let _ = f.root();
            }
        }
    }
}
