//! The authority's WebSocket client-frame parser on arbitrary bytes, arriving in arbitrary
//! pieces: never a panic, and the same answers as when the bytes arrive at once.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The codec is pure (it needs only `bytes`), so the target compiles that one file rather than
// the whole authority (sqlx, rustls, axum) under the sanitizer. cargo-fuzz sets `cfg(fuzzing)`,
// which brings in the codec's `check_pieces`.
#[path = "../../../authority/src/websocket/codec.rs"]
#[allow(dead_code)] // the frame builders the server uses; the target reads only
mod codec;

fuzz_target!(|data: &[u8]| {
    // The first byte says how many of the next bytes are piece lengths (up to 7, each 1 to
    // 256, used in turn); the rest is what the client sent.
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let (lengths, mut bytes) = rest.split_at(usize::from(count % 8).min(rest.len()));
    let mut pieces = Vec::new();
    for length in lengths.iter().cycle() {
        if bytes.is_empty() {
            break;
        }
        let (piece, left) = bytes.split_at((usize::from(*length) + 1).min(bytes.len()));
        pieces.push(piece);
        bytes = left;
    }
    if lengths.is_empty() && !bytes.is_empty() {
        pieces.push(bytes);
    }
    codec::check_pieces(&pieces);
});
