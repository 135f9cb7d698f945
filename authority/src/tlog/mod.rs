//! The authority's side of the transparency log (PROTOCOL.md "Transparency log"); the formats
//! live in `revocast_shared::tlog`, the leaves and the frontier are written by the commit
//! algorithm (`store::commit`).
//!
//! - [`keys`]: the log's own signing keys, stored durably, rotated with a lead time, and
//!   published in the JWKS with `"use":"revocast-log"`.
//! - [`checkpointer`]: signs checkpoints of the stored tree, periodically and on demand (for
//!   snapshots), keeps the latest durably and hands it to the hub.
//! - [`leaves`]: the stored leaf hashes cached in memory with their interior nodes, for
//!   inclusion and consistency proofs.
//! - [`audit`]: the check at start that the stored log still gives the last signed root.

pub mod audit;
pub mod checkpointer;
pub mod keys;
pub mod leaves;

pub use checkpointer::{Checkpointer, SignedCheckpoint};
pub use keys::LogKeys;
pub use leaves::LeafCache;
