//! Entry points for the cargo-fuzz targets in `tests/fuzz/`, which reach private parsers
//! through here and nowhere else. Not part of the crate's API.

/// The WebSocket client-frame parser's property: `pieces`, arriving one after another, parse
/// exactly as their concatenation does at once, and nothing panics but a failed check.
pub fn websocket_client_frames(pieces: &[&[u8]]) {
    crate::websocket::codec::check_pieces(pieces);
}
