//! RFC 6455 frames on bytes alone: the headers of the frames the server sends, and the
//! [`Reader`] that parses what a client sends (no I/O, so it is tested, property-tested and
//! fuzzed on bytes).

use bytes::{Buf, Bytes, BytesMut};

/// Largest message (all its fragments together) a subscriber may send: it says little more
/// than pings, acknowledgments and close.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// Close codes (RFC 6455 §7.4.1, and 1013 from the IANA registry).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const ERROR: u16 = 1011;
    pub const AGAIN: u16 = 1013;
}

const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The header of an unmasked server frame carrying `len` payload bytes, `opcode` and FIN.
pub fn frame_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x80 | opcode;
    let used = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, used)
}

/// A whole server frame: FIN, `opcode`, unmasked `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (header, used) = frame_header(opcode, payload.len());
    let mut out = BytesMut::with_capacity(used + payload.len());
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A text frame holding `text`.
pub fn text_frame(text: &[u8]) -> Bytes {
    frame(OP_TEXT, text)
}

/// The answer to a ping with `payload`.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(OP_PONG, payload)
}

/// A close frame with `code` and `reason`, the reason cut to the 123 bytes a control frame
/// leaves for it, on a character boundary.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, &payload)
}

/// What a subscriber said that needs an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Answer with [`Socket::pong`](super::Socket::pong) and this payload.
    Ping(Bytes),
    /// The client is closing (with this code, if it gave one): answer with
    /// [`Socket::close`](super::Socket::close).
    Close(Option<u16>),
    /// A whole text message (valid UTF-8, at most [`MAX_CLIENT_MESSAGE`] bytes): an
    /// acknowledgment, or something to ignore.
    Text(Bytes),
}

/// Why reading from a subscriber ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// It broke the protocol or our limits: close with this code and reason.
    Refused(u16, &'static str),
    /// The connection is gone (closed without a close frame, or failed).
    Gone,
}

/// A message (or one frame of it) over [`MAX_CLIENT_MESSAGE`].
const TOO_BIG_MESSAGE: ReadEnd = ReadEnd::Refused(
    close_code::TOO_BIG,
    "messages to the stream are at most 4096 bytes",
);

/// What a client sent, parsed: no I/O, so it is tested on bytes alone.
#[derive(Default)]
pub struct Reader {
    /// Bytes read and not yet parsed. Small: subscribers send next to nothing.
    inbound: BytesMut,
    /// The data message being received: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
}

/// One parsed client frame header.
#[derive(Debug, PartialEq, Eq)]
struct ClientFrame {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Header bytes before the payload.
    header: usize,
    payload: usize,
}

/// Parse the client frame header at the front of `buf`: `Ok(None)` until it is complete.
fn parse_client_frame(buf: &[u8]) -> Result<Option<ClientFrame>, ReadEnd> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    let (fin, opcode) = (first & 0x80 != 0, first & 0x0f);
    if first & 0x70 != 0 {
        return Err(ReadEnd::Refused(
            close_code::PROTOCOL,
            "no extension was negotiated",
        ));
    }
    if second & 0x80 == 0 {
        return Err(ReadEnd::Refused(
            close_code::PROTOCOL,
            "client frames must be masked",
        ));
    }
    let control = opcode & 0x8 != 0;
    if !matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    ) {
        return Err(ReadEnd::Refused(close_code::PROTOCOL, "unknown opcode"));
    }
    let (at, payload) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (10, u64::from_be_bytes(b.try_into().unwrap_or_default())),
            None => return Ok(None),
        },
        len => (2, u64::from(len)),
    };
    if control && (!fin || payload > 125) {
        return Err(ReadEnd::Refused(
            close_code::PROTOCOL,
            "control frames must be whole and at most 125 bytes",
        ));
    }
    if payload > MAX_CLIENT_MESSAGE as u64 {
        return Err(TOO_BIG_MESSAGE);
    }
    let Some(mask) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(ClientFrame {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        header: at + 4,
        payload: payload as usize,
    }))
}

impl Reader {
    /// Where bytes read from the client go, to be parsed by [`Reader::parse`].
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.inbound
    }

    /// Consume whole frames from the buffer until one needs an answer or more bytes are needed.
    pub fn parse(&mut self) -> Result<Option<Inbound>, ReadEnd> {
        while let Some(frame) = parse_client_frame(&self.inbound)? {
            if self.inbound.len() < frame.header + frame.payload {
                return Ok(None);
            }
            self.inbound.advance(frame.header);
            let mut payload = self.inbound.split_to(frame.payload);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= frame.mask[i % 4];
            }
            match frame.opcode {
                OP_PING => return Ok(Some(Inbound::Ping(payload.freeze()))),
                OP_PONG => {}
                OP_CLOSE => return close_of(&payload).map(Some),
                opcode => {
                    if let Some(text) = self.data(opcode, frame.fin, &payload)? {
                        return Ok(Some(Inbound::Text(text)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Take a data frame: check it continues the message correctly and stays within limits.
    /// Returns a text message once it is whole; binary messages are read and dropped.
    fn data(&mut self, opcode: u8, fin: bool, payload: &[u8]) -> Result<Option<Bytes>, ReadEnd> {
        let (kind, mut body) = match (opcode, self.message.take()) {
            (OP_CONTINUATION, Some(message)) => message,
            (OP_CONTINUATION, None) => {
                return Err(ReadEnd::Refused(
                    close_code::PROTOCOL,
                    "continuation without a message",
                ));
            }
            (_, Some(_)) => {
                return Err(ReadEnd::Refused(
                    close_code::PROTOCOL,
                    "new message before the last one ended",
                ));
            }
            (opcode, None) => (opcode, Vec::new()),
        };
        if body.len() + payload.len() > MAX_CLIENT_MESSAGE {
            return Err(TOO_BIG_MESSAGE);
        }
        body.extend_from_slice(payload);
        if !fin {
            self.message = Some((kind, body));
            return Ok(None);
        }
        if kind != OP_TEXT {
            return Ok(None);
        }
        if std::str::from_utf8(&body).is_err() {
            return Err(ReadEnd::Refused(
                close_code::INVALID_DATA,
                "text must be UTF-8",
            ));
        }
        Ok(Some(Bytes::from(body)))
    }
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason.
fn close_of(payload: &[u8]) -> Result<Inbound, ReadEnd> {
    match payload {
        [] => Ok(Inbound::Close(None)),
        [_] => Err(ReadEnd::Refused(
            close_code::PROTOCOL,
            "a close code is two bytes",
        )),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(ReadEnd::Refused(close_code::PROTOCOL, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(ReadEnd::Refused(
                    close_code::INVALID_DATA,
                    "the close reason must be UTF-8",
                ));
            }
            Ok(Inbound::Close(Some(code)))
        }
    }
}

/// What a [`Reader`] makes of a client's bytes: its answers in order, and how reading ended
/// (`None`: it waits for more bytes).
#[cfg(any(test, fuzzing))]
pub type Transcript = (Vec<Inbound>, Option<ReadEnd>);

/// What a reader answers to `bytes` arriving all at once.
#[cfg(any(test, fuzzing))]
pub fn feed(bytes: &[u8]) -> Transcript {
    let mut reader = Reader {
        inbound: BytesMut::from(bytes),
        message: None,
    };
    let mut answers = Vec::new();
    loop {
        match reader.parse() {
            Ok(Some(inbound)) => answers.push(inbound),
            Ok(None) => return (answers, None),
            Err(end) => return (answers, Some(end)),
        }
    }
}

/// The reader's property, checked by its property test and its fuzz target: whatever a client
/// sends, in whatever `pieces` it arrives, the parser never panics, answers the same as when
/// it all arrives at once, and holds at most one frame's worth of bytes once it has parsed
/// what it has. Panics if any of that fails. The fuzz target compiles this file on its own
/// (`tests/fuzz/fuzz_targets/websocket_frames.rs`), so it must keep needing only `bytes`.
#[cfg(any(test, fuzzing))]
pub fn check_pieces(pieces: &[&[u8]]) {
    let whole = feed(&pieces.concat());
    let mut reader = Reader::default();
    let mut answers = Vec::new();
    let mut end = None;
    'pieces: for piece in pieces {
        reader.inbound.extend_from_slice(piece);
        loop {
            match reader.parse() {
                Ok(Some(inbound)) => answers.push(inbound),
                Ok(None) => break,
                Err(e) => {
                    end = Some(e);
                    break 'pieces;
                }
            }
        }
        assert!(reader.inbound.len() <= 14 + MAX_CLIENT_MESSAGE + piece.len());
    }
    assert_eq!((answers, end), whole);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(&frame(OP_TEXT, b"hi")[..], b"\x81\x02hi");
        let medium = frame(OP_TEXT, &[b'a'; 200]);
        assert_eq!(&medium[..4], b"\x81\x7e\x00\xc8");
        assert_eq!(medium.len(), 204);
        let large = frame(OP_TEXT, &vec![b'a'; 70_000]);
        assert_eq!(&large[..10], b"\x81\x7f\0\0\0\0\0\x01\x11\x70");
        assert_eq!(&frame(OP_CLOSE, &[0x03, 0xe8])[..], b"\x88\x02\x03\xe8");
    }

    #[test]
    fn close_reasons_are_cut_to_fit_on_a_character_boundary() {
        let frame = close_frame(close_code::NORMAL, &"é".repeat(100));
        // Two bytes of code, then the whole characters that fit in 123 bytes.
        assert_eq!(&frame[..4], b"\x88\x7c\x03\xe8");
        assert_eq!(frame.len(), 4 + 122);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn client_frames_are_checked_against_the_protocol_and_our_limits() {
        let refused = |code| Err(ReadEnd::Refused(code, ""));
        let cases: Vec<(&str, Vec<u8>, Result<(), ReadEnd>)> = vec![
            (
                "unmasked",
                b"\x81\x01a".to_vec(),
                refused(close_code::PROTOCOL),
            ),
            (
                "extension bit",
                client(0xc1, b"a"),
                refused(close_code::PROTOCOL),
            ),
            (
                "unknown opcode",
                client(0x83, b"a"),
                refused(close_code::PROTOCOL),
            ),
            (
                "fragmented ping",
                client(0x09, b"a"),
                refused(close_code::PROTOCOL),
            ),
            (
                "long ping",
                client(0x89, &[0; 126]),
                refused(close_code::PROTOCOL),
            ),
            (
                "huge frame",
                client(0x82, &[0; 5000]),
                refused(close_code::TOO_BIG),
            ),
            (
                "8-byte length",
                {
                    let mut f = vec![0x82, 0xff];
                    f.extend_from_slice(&u64::MAX.to_be_bytes());
                    f.extend_from_slice(&[0; 4]);
                    f
                },
                refused(close_code::TOO_BIG),
            ),
            ("truncated header", b"\x81\xfe\x00".to_vec(), Ok(())),
            ("no mask yet", b"\x81\x85\x00\x00".to_vec(), Ok(())),
        ];
        for (name, bytes, want) in cases {
            let got = parse_client_frame(&bytes).map(|_| ());
            match (got, want) {
                (Err(ReadEnd::Refused(got, _)), Err(ReadEnd::Refused(want, _))) => {
                    assert_eq!(got, want, "{name}");
                }
                (got, want) => assert_eq!(got, want, "{name}"),
            }
        }
    }

    #[test]
    fn pings_are_answered_text_is_returned_binary_dropped_and_close_ends() {
        let mut bytes = client(0x81, b"hello");
        bytes.extend(client(0x89, b"p1"));
        bytes.extend(client(0x02, b"frag")); // binary, continued
        bytes.extend(client(0x8a, b"")); // a pong between fragments is fine
        bytes.extend(client(0x80, b"ment"));
        bytes.extend(client(0x88, &[0x03, 0xe8, b'o', b'k']));
        let (answers, end) = feed(&bytes);
        assert_eq!(
            answers,
            vec![
                Inbound::Text(Bytes::from_static(b"hello")),
                Inbound::Ping(Bytes::from_static(b"p1")),
                Inbound::Close(Some(1000))
            ]
        );
        assert_eq!(end, None);
    }

    #[test]
    fn broken_messages_are_refused_with_their_close_code() {
        let code = |bytes: Vec<u8>| match feed(&bytes).1 {
            Some(ReadEnd::Refused(code, _)) => Some(code),
            _ => None,
        };
        assert_eq!(code(client(0x80, b"x")), Some(close_code::PROTOCOL));
        let mut twice = client(0x01, b"a");
        twice.extend(client(0x01, b"b"));
        assert_eq!(code(twice), Some(close_code::PROTOCOL));
        assert_eq!(
            code(client(0x81, &[0xff, 0xfe])),
            Some(close_code::INVALID_DATA)
        );
        // Five fragments of 1000 bytes: one message over the limit.
        let mut long = client(0x02, &[0; 1000]);
        for _ in 0..4 {
            long.extend(client(0x00, &[0; 1000]));
        }
        assert_eq!(code(long), Some(close_code::TOO_BIG));
        assert_eq!(code(client(0x88, &[0x03])), Some(close_code::PROTOCOL));
        assert_eq!(
            code(client(0x88, &[0x03, 0xed])),
            Some(close_code::PROTOCOL)
        );
        assert_eq!(
            code(client(0x88, &[0x03, 0xe8, 0xff])),
            Some(close_code::INVALID_DATA)
        );
        // A partial frame waits for more bytes.
        let whole = client(0x89, b"abc");
        assert_eq!(feed(&whole[..whole.len() - 1]), (vec![], None));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Whatever a client sends, in whatever pieces it arrives: see [`check_pieces`].
        #[test]
        fn any_bytes_in_any_pieces_parse_the_same_and_never_panic(
            frames in proptest::collection::vec(
                (0u8..=255, proptest::collection::vec(0u8..=255, 0..300)),
                0..8,
            ),
            noise in proptest::collection::vec(0u8..=255, 0..64),
            cut in 1usize..64,
        ) {
            // Mostly well-formed masked frames with arbitrary first bytes, then noise.
            let mut bytes: Vec<u8> = frames.iter().flat_map(|(first, p)| client(*first, p)).collect();
            bytes.extend(&noise);
            check_pieces(&bytes.chunks(cut).collect::<Vec<_>>());
        }
    }
}
