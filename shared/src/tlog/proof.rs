//! Inclusion and consistency proofs, RFC 9162 §2.1.3 and §2.1.4: generation over any
//! [`LeafHashSource`], and the RFC's verification algorithms.

use super::frontier::Frontier;
use super::hash::{TreeHash, empty_root, node_hash};

/// Proofs longer than this are refused unread: a tree of fewer than 2^63 leaves never needs
/// more than 63 (inclusion) or 2 × 63 (consistency) hashes.
pub const MAX_PROOF_LEN: usize = 128;

/// Where proof generation gets subtree roots: the authority backs it with its stored leaves
/// (and may cache interior nodes), tests with [`MemoryLeaves`].
pub trait LeafHashSource {
    type Error;

    /// MTH(D\[start:end\]), the root of the tree made of leaves `start..end` alone
    /// (`start < end`). Proof generation asks only for O(log n) such ranges; a source that
    /// folds leaf hashes ([`root_of_leaves`]) reads each leaf of the tree at most about twice.
    fn range_root(&self, start: u64, end: u64) -> Result<TreeHash, Self::Error>;
}

/// The root of a tree of exactly these leaf hashes (SHA-256("") for none).
pub fn root_of_leaves(leaves: &[TreeHash]) -> TreeHash {
    Frontier::from_leaf_hashes(leaves.iter().copied()).root()
}

/// Leaf hashes held in memory, in order: leaf `i` is `self.0[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryLeaves(pub Vec<TreeHash>);

/// A range outside the leaves a [`MemoryLeaves`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("leaves {start}..{end} are not all held")]
pub struct MissingLeaves {
    pub start: u64,
    pub end: u64,
}

impl LeafHashSource for MemoryLeaves {
    type Error = MissingLeaves;

    fn range_root(&self, start: u64, end: u64) -> Result<TreeHash, MissingLeaves> {
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .filter(|(s, e)| s < e)
            .and_then(|(s, e)| self.0.get(s..e))
            .ok_or(MissingLeaves { start, end })?;
        Ok(root_of_leaves(range))
    }
}

/// Why a proof could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    /// `index >= size` for inclusion, `from > to` for consistency.
    #[error("no such proof: {0}")]
    OutOfRange(&'static str),
    #[error("the leaf source failed")]
    Source(#[source] E),
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves: RFC 9162 §2.1.3.1
/// PATH(index, D\[0:size\]), from the leaf's sibling upwards.
pub fn inclusion_proof<S: LeafHashSource>(
    source: &S,
    index: u64,
    size: u64,
) -> Result<Vec<TreeHash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::OutOfRange(
            "the leaf index is not below the tree size",
        ));
    }
    let mut proof = Vec::with_capacity(64);
    path(source, index, 0, size, &mut proof)?;
    Ok(proof)
}

/// PATH(m, D\[start:start+n\]); the recursion appends the deepest sibling first.
fn path<S: LeafHashSource>(
    source: &S,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<TreeHash>,
) -> Result<(), ProofError<S::Error>> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    let (sibling_start, sibling_end) = if m < k {
        path(source, m, start, k, out)?;
        (start + k, start + n)
    } else {
        path(source, m - k, start + k, n - k, out)?;
        (start, start + k)
    };
    out.push(
        source
            .range_root(sibling_start, sibling_end)
            .map_err(ProofError::Source)?,
    );
    Ok(())
}

/// The consistency proof from the tree of `from` leaves to the tree of `to` leaves: RFC 9162
/// §2.1.4.1 PROOF(from, D\[0:to\]). Empty when `from == 0` or `from == to` (nothing to prove).
pub fn consistency_proof<S: LeafHashSource>(
    source: &S,
    from: u64,
    to: u64,
) -> Result<Vec<TreeHash>, ProofError<S::Error>> {
    if from > to {
        return Err(ProofError::OutOfRange("the old size is above the new size"));
    }
    let mut proof = Vec::with_capacity(64);
    if from > 0 && from < to {
        subproof(source, from, 0, to, true, &mut proof)?;
    }
    Ok(proof)
}

/// SUBPROOF(m, D\[start:start+n\], b).
fn subproof<S: LeafHashSource>(
    source: &S,
    m: u64,
    start: u64,
    n: u64,
    whole: bool,
    out: &mut Vec<TreeHash>,
) -> Result<(), ProofError<S::Error>> {
    if m == n {
        if !whole {
            out.push(
                source
                    .range_root(start, start + n)
                    .map_err(ProofError::Source)?,
            );
        }
        return Ok(());
    }
    let k = split(n);
    let (other_start, other_end) = if m <= k {
        subproof(source, m, start, k, whole, out)?;
        (start + k, start + n)
    } else {
        subproof(source, m - k, start + k, n - k, false, out)?;
        (start, start + k)
    };
    out.push(
        source
            .range_root(other_start, other_end)
            .map_err(ProofError::Source)?,
    );
    Ok(())
}

/// RFC 9162 §2.1.3.2: does `proof` show that `leaf` (a leaf hash) is leaf `index` of the tree
/// of `size` leaves whose root is `root`?
pub fn verify_inclusion(
    leaf: &TreeHash,
    index: u64,
    size: u64,
    proof: &[TreeHash],
    root: &TreeHash,
) -> bool {
    if index >= size || proof.len() > MAX_PROOF_LEN {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `from` leaves with root `from_root`
/// is a prefix of the tree of `to` leaves with root `to_root`? With `from == to` the proof must
/// be empty and the roots equal; with `from == 0` it must be empty and `from_root` the empty
/// tree's root.
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &TreeHash,
    to_root: &TreeHash,
    proof: &[TreeHash],
) -> bool {
    if from > to || proof.len() > MAX_PROOF_LEN {
        return false;
    }
    if from == 0 {
        return proof.is_empty() && *from_root == empty_root();
    }
    if from == to {
        return proof.is_empty() && from_root == to_root;
    }
    // Step 1: a non-trivial proof is never empty.
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    // Step 2: when `from` is a power of two its root is itself the first node of the path.
    let (seed, path) = if from.is_power_of_two() {
        (from_root, proof)
    } else {
        (first, rest)
    };
    // Steps 3 and 4.
    let (mut f_n, mut s_n) = (from - 1, to - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 5.
    let (mut f_r, mut s_r) = (*seed, *seed);
    // Step 6.
    for c in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // Step 7.
    f_r == *from_root && s_r == *to_root && s_n == 0
}

/// RFC 9162's definitions written out over slices, with no shared code: what the tests
/// compare the frontier and the proofs against.
#[cfg(test)]
pub(crate) fn reference_root(leaves: &[TreeHash]) -> TreeHash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tlog::hash::leaf_hash;

    fn largest_power_below(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn reference_path(m: usize, d: &[TreeHash]) -> Vec<TreeHash> {
        let n = d.len();
        if n <= 1 {
            return vec![];
        }
        let k = largest_power_below(n);
        if m < k {
            let mut p = reference_path(m, &d[..k]);
            p.push(reference_root(&d[k..]));
            p
        } else {
            let mut p = reference_path(m - k, &d[k..]);
            p.push(reference_root(&d[..k]));
            p
        }
    }

    fn reference_subproof(m: usize, d: &[TreeHash], b: bool) -> Vec<TreeHash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![reference_root(d)] };
        }
        let k = largest_power_below(n);
        if m <= k {
            let mut p = reference_subproof(m, &d[..k], b);
            p.push(reference_root(&d[k..]));
            p
        } else {
            let mut p = reference_subproof(m - k, &d[k..], false);
            p.push(reference_root(&d[..k]));
            p
        }
    }

    fn leaves(n: usize) -> Vec<TreeHash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    const MAX_N: usize = 70;

    #[test]
    fn inclusion_proofs_match_the_reference_and_verify_for_every_size_up_to_70() {
        let all = leaves(MAX_N);
        for n in 1..=MAX_N {
            let source = MemoryLeaves(all[..n].to_vec());
            let root = reference_root(&all[..n]);
            for m in 0..n {
                let proof = inclusion_proof(&source, m as u64, n as u64).unwrap();
                assert_eq!(proof, reference_path(m, &all[..n]), "PATH({m}, {n})");
                assert!(verify_inclusion(&all[m], m as u64, n as u64, &proof, &root));
                // Another leaf, another index, another root: all refused. (Another size with
                // the same root may pass: the root, signed with its size, is what binds it.)
                assert!(
                    !verify_inclusion(&all[(m + 1) % n], m as u64, n as u64, &proof, &root)
                        || n == 1
                );
                if m + 1 < n {
                    assert!(!verify_inclusion(
                        &all[m],
                        m as u64 + 1,
                        n as u64,
                        &proof,
                        &root
                    ));
                }
                assert!(!verify_inclusion(
                    &all[m],
                    m as u64,
                    n as u64,
                    &proof,
                    &leaf_hash(b"x")
                ));
            }
            assert!(matches!(
                inclusion_proof(&source, n as u64, n as u64),
                Err(ProofError::OutOfRange(_))
            ));
        }
        assert!(matches!(
            inclusion_proof(&MemoryLeaves::default(), 0, 0),
            Err(ProofError::OutOfRange(_))
        ));
    }

    #[test]
    fn consistency_proofs_match_the_reference_and_verify_for_every_pair_up_to_70() {
        let all = leaves(MAX_N);
        let roots: Vec<TreeHash> = (0..=MAX_N).map(|n| reference_root(&all[..n])).collect();
        for to in 0..=MAX_N {
            let source = MemoryLeaves(all[..to].to_vec());
            for from in 0..=to {
                let proof = consistency_proof(&source, from as u64, to as u64).unwrap();
                let want = if from == 0 || from == to {
                    vec![]
                } else {
                    reference_subproof(from, &all[..to], true)
                };
                assert_eq!(proof, want, "PROOF({from}, {to})");
                let (f, t) = (from as u64, to as u64);
                assert!(
                    verify_consistency(f, t, &roots[from], &roots[to], &proof),
                    "{from}->{to}"
                );
                // Any other old root or new root is refused (sizes are bound by their signed roots).
                if from > 0 {
                    assert!(!verify_consistency(
                        f,
                        t,
                        &roots[from - 1],
                        &roots[to],
                        &proof
                    ));
                }
                if from > 0 && to != from {
                    assert!(!verify_consistency(
                        f,
                        t,
                        &roots[from],
                        &roots[to - 1],
                        &proof
                    ));
                }
                if from >= 1 && from < to {
                    assert!(!verify_consistency(
                        f - 1,
                        t,
                        &roots[from],
                        &roots[to],
                        &proof
                    ));
                }
            }
            if to < MAX_N {
                assert!(matches!(
                    consistency_proof(&source, to as u64 + 1, to as u64),
                    Err(ProofError::OutOfRange(_))
                ));
            }
        }
        // The tree of size 0 is consistent with anything, through an empty proof only.
        assert!(verify_consistency(0, 5, &empty_root(), &roots[5], &[]));
        assert!(!verify_consistency(
            0,
            5,
            &empty_root(),
            &roots[5],
            &[roots[1]]
        ));
        assert!(!verify_consistency(0, 5, &roots[1], &roots[5], &[]));
        assert!(!verify_consistency(3, 2, &roots[3], &roots[2], &[]));
    }

    #[test]
    fn sources_report_missing_leaves() {
        let source = MemoryLeaves(leaves(4));
        assert_eq!(
            inclusion_proof(&source, 1, 9),
            Err(ProofError::Source(MissingLeaves { start: 4, end: 8 }))
        );
        assert!(matches!(
            consistency_proof(&source, 3, 9),
            Err(ProofError::Source(_))
        ));
    }

    proptest! {
        /// Changing, dropping, adding or reordering any proof element breaks it.
        #[test]
        fn tampered_proofs_fail(
            n in 2usize..=MAX_N,
            m_seed in any::<usize>(),
            pos_seed in any::<usize>(),
            edit in 0u8..4,
        ) {
            let all = leaves(n);
            let source = MemoryLeaves(all.clone());
            let root = reference_root(&all);
            let m = m_seed % n;
            let mut proof = inclusion_proof(&source, m as u64, n as u64).unwrap();
            let pos = pos_seed % proof.len().max(1);
            match edit {
                0 if !proof.is_empty() => proof[pos].0[0] ^= 1,
                1 if !proof.is_empty() => { proof.remove(pos); }
                2 => proof.insert(pos.min(proof.len()), leaf_hash(b"extra")),
                _ if proof.len() >= 2 && proof[pos] != proof[(pos + 1) % proof.len()] => {
                    let other = (pos + 1) % proof.len();
                    proof.swap(pos, other);
                }
                _ => return Ok(()),
            }
            prop_assert!(!verify_inclusion(&all[m], m as u64, n as u64, &proof, &root));

            let from = 1 + m_seed % (n - 1);
            let old_root = reference_root(&all[..from]);
            let mut proof = consistency_proof(&source, from as u64, n as u64).unwrap();
            let pos = pos_seed % proof.len();
            match edit {
                0 => proof[pos].0[31] ^= 0x80,
                1 => { proof.remove(pos); }
                2 => proof.insert(pos, leaf_hash(b"extra")),
                _ if proof.len() >= 2 && proof[pos] != proof[(pos + 1) % proof.len()] => {
                    let other = (pos + 1) % proof.len();
                    proof.swap(pos, other);
                }
                _ => return Ok(()),
            }
            prop_assert!(!verify_consistency(from as u64, n as u64, &old_root, &root, &proof));
        }

        /// Verification of arbitrary input never panics, whatever the sizes.
        #[test]
        fn verifying_garbage_never_panics(
            index in any::<u64>(),
            size in any::<u64>(),
            hashes in proptest::collection::vec(any::<[u8; 32]>(), 0..140),
        ) {
            let proof: Vec<TreeHash> = hashes.into_iter().map(TreeHash).collect();
            let h = leaf_hash(b"l");
            let _ = verify_inclusion(&h, index, size, &proof, &h);
            let _ = verify_consistency(index, size, &h, &h, &proof);
            let _ = verify_consistency(index.min(size), size, &h, &h, &proof);
        }
    }
}
