//! Events for the stream's unit tests.

use revocast_shared::event::{Revocation, RevocationEvent};
use revocast_shared::{Seq, UnixMillis};

/// A session revocation with `seq`, sid `s{seq}`, in force until 100, committed at 5 s.
pub fn session(seq: u64) -> RevocationEvent {
    RevocationEvent {
        seq: Seq::new(seq),
        revocation: Revocation::Session {
            sid: format!("s{seq}"),
            until: 100,
        },
        at: UnixMillis::new(5_000),
    }
}
