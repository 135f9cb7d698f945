//! The revocast agent (skeleton). It will keep a local copy of the authority's revocation set,
//! fed by the event stream, and verify tokens locally with `revocast_shared`'s typestate API
//! and [`RevocationSet`]. Until the stream exists, this crate only fixes the package layout.

#![forbid(unsafe_code)]

pub use revocast_shared::revset::RevocationSet;
