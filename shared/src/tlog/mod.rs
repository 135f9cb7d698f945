//! The revocation transparency log: every committed event is a leaf of an RFC 9162 Merkle
//! tree (one tree per epoch, leaf `seq - 1`, size = the last `seq`), whose heads the
//! authority signs as C2SP checkpoints and agents check against the tree they build from the
//! events they apply. PROTOCOL.md ("Transparency log") is the specification.
//!
//! - [`hash`]: RFC 6962 leaf and node hashing.
//! - [`frontier`]: the compact right edge of a tree: append, root, storage and JSON forms.
//! - [`proof`]: inclusion and consistency proofs, generated over a [`proof::LeafHashSource`]
//!   and verified with RFC 9162's algorithms.
//! - [`note`]: the C2SP signed-note format.
//! - [`checkpoint`]: the C2SP tlog-checkpoint text, our origin and time extension, signing.
//! - [`verifier`]: checking checkpoints against the known log keys and one's own tree.
//! - [`snapshot`]: the signed digest sealing an NDJSON snapshot.

pub mod checkpoint;
pub mod frontier;
pub mod hash;
pub mod note;
pub mod proof;
pub mod snapshot;
pub mod verifier;

pub use checkpoint::{CHECKPOINT_CONTEXT, Checkpoint, CheckpointError, origin};
pub use frontier::{Frontier, FrontierError};
pub use hash::{TreeHash, empty_root, leaf_hash, node_hash};
pub use proof::{
    LeafHashSource, MemoryLeaves, ProofError, consistency_proof, inclusion_proof,
    verify_consistency, verify_inclusion,
};
pub use snapshot::{SNAPSHOT_CONTEXT, SnapshotDigest, SnapshotSeal};
pub use verifier::{CheckpointVerifier, Mismatch, verify_checkpoint_note};

use crate::event::RevocationEvent;

/// An event's leaf: its JSON object exactly as the authority sends it on the stream (the
/// serialization of [`RevocationEvent`]). Subscribers hash the bytes they receive; this is
/// how the authority makes them.
pub fn event_leaf(event: &RevocationEvent) -> Vec<u8> {
    match serde_json::to_vec(event) {
        Ok(bytes) => bytes,
        Err(e) => unreachable!("events always serialize: {e}"),
    }
}

/// The leaf hash of an event: [`leaf_hash`] of [`event_leaf`].
pub fn event_leaf_hash(event: &RevocationEvent) -> TreeHash {
    leaf_hash(&event_leaf(event))
}

#[cfg(test)]
mod example;
