//! Runs of messages shared by every connection that sends them — one commit, one heartbeat,
//! one backlog page — already cut into frames.
//!
//! Fan-out costs per (connection, message) what every connection repeats. So a [`Part`] is
//! split into frames of at most [`FRAME_BYTES`] once, when it is made, and each frame's
//! WebSocket text and SSE bytes are built by the first connection that sends it and shared by
//! the rest: per connection, sending a commit is one reference count and the kernel's copy
//! into the socket, however many events it holds.

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use revocast_shared::event::RevocationEvent;

use super::encoded::Encoded;
use crate::websocket;

/// Frames stop growing past this many bytes of JSON: a commit or backlog page larger than
/// this goes out as several WebSocket messages (or SSE writes) rather than one unbounded one.
pub const FRAME_BYTES: usize = 16 * 1024;

/// What one broadcast slot carries, and what a connection queues: shared, never copied.
pub type Published = Arc<Part>;

pub struct Part {
    messages: Box<[Encoded]>,
    frames: Box<[FrameInfo]>,
    /// On a heartbeat: the same heartbeat carrying the latest checkpoint, for the
    /// connections that should get it (see [`CheckpointBeat`]).
    checkpoint: Option<CheckpointBeat>,
}

/// A heartbeat's alternative with the latest signed checkpoint, encoded once per heartbeat
/// and shared. A connection sends it instead of the plain one when it has not sent this
/// checkpoint yet and the checkpoint does not end before its resume position.
pub struct CheckpointBeat {
    /// Which checkpoint (the hub numbers them as they arrive, from 1).
    pub serial: u64,
    /// Its tree size.
    pub size: u64,
    pub beat: Published,
}

struct FrameInfo {
    /// `messages[start..end]`.
    start: usize,
    end: usize,
    /// JSON bytes of those messages.
    bytes: usize,
    /// How many of them are revocation events (the rest are control messages).
    events: u64,
    ws: OnceLock<Bytes>,
    sse: OnceLock<Bytes>,
}

impl Part {
    pub fn new(messages: impl Into<Box<[Encoded]>>) -> Published {
        Self::with_frame_bytes(messages, FRAME_BYTES)
    }

    /// Revocation events (a commit, a backlog page), each encoded once.
    pub fn of_events(events: &[RevocationEvent]) -> Published {
        Self::new(encode(events))
    }

    /// Cut `messages` into frames of at most `max_bytes` of JSON (a larger message goes alone).
    pub fn with_frame_bytes(messages: impl Into<Box<[Encoded]>>, max_bytes: usize) -> Published {
        let messages = messages.into();
        let mut frames = Vec::new();
        let mut start = 0;
        while start < messages.len() {
            let (mut end, mut bytes, mut events) = (start, 0, 0);
            while let Some(m) = messages.get(end) {
                if end > start && bytes + m.json.len() > max_bytes {
                    break;
                }
                bytes += m.json.len();
                events += u64::from(m.seq.is_some());
                end += 1;
            }
            frames.push(FrameInfo {
                start,
                end,
                bytes,
                events,
                ws: OnceLock::new(),
                sse: OnceLock::new(),
            });
            start = end;
        }
        Arc::new(Self {
            messages,
            frames: frames.into(),
            checkpoint: None,
        })
    }

    /// A heartbeat, with its alternative carrying the latest checkpoint (if there is one).
    pub fn heartbeat(plain: Encoded, checkpoint: Option<CheckpointBeat>) -> Published {
        let mut part = Self::new([plain]);
        if let Some(part) = Arc::get_mut(&mut part) {
            part.checkpoint = checkpoint;
        }
        part
    }

    pub fn checkpoint(&self) -> Option<&CheckpointBeat> {
        self.checkpoint.as_ref()
    }

    pub fn messages(&self) -> &[Encoded] {
        &self.messages
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn frames(&self) -> usize {
        self.frames.len()
    }
}

fn encode(events: &[RevocationEvent]) -> Vec<Encoded> {
    events.iter().map(Encoded::event).collect()
}

/// One frame of a [`Part`], as a connection sends it.
#[derive(Clone)]
pub struct Frame {
    part: Published,
    index: usize,
}

impl Frame {
    /// Frame `index` of `part`; `None` past the last.
    pub fn of(part: &Published, index: usize) -> Option<Self> {
        (index < part.frames.len()).then(|| Self {
            part: Arc::clone(part),
            index,
        })
    }

    fn info(&self) -> &FrameInfo {
        &self.part.frames[self.index]
    }

    pub fn messages(&self) -> &[Encoded] {
        let info = self.info();
        &self.part.messages[info.start..info.end]
    }

    /// JSON bytes in this frame.
    pub fn bytes(&self) -> usize {
        self.info().bytes
    }

    /// Revocation events in this frame.
    pub fn events(&self) -> u64 {
        self.info().events
    }

    /// The whole WebSocket text frame, header included: the message's own JSON object when
    /// it is alone, else a JSON array of them.
    pub fn ws(&self) -> Bytes {
        self.info()
            .ws
            .get_or_init(|| ws_frame(self.messages()))
            .clone()
    }

    /// The SSE bytes: each message's `id`/`event`/`data` block, one after another.
    pub fn sse(&self) -> Bytes {
        self.info()
            .sse
            .get_or_init(|| joined(self.messages().iter().map(|m| m.sse.clone())))
            .clone()
    }
}

/// The SSE bytes of a batch of frames, as one write: a lone frame's shared bytes, else the
/// frames' bytes copied once into one buffer.
pub fn sse_of(batch: &[Frame]) -> Bytes {
    joined(batch.iter().map(Frame::sse))
}

/// `pieces` as one buffer: a lone piece shared as-is, several copied once into a buffer of
/// their total size.
fn joined<I>(pieces: I) -> Bytes
where
    I: Iterator<Item = Bytes> + Clone,
{
    let mut first_two = pieces.clone();
    if let (Some(one), None) = (first_two.next(), first_two.next()) {
        return one;
    }
    let mut out = BytesMut::with_capacity(pieces.clone().map(|p| p.len()).sum());
    for piece in pieces {
        out.put_slice(&piece);
    }
    out.freeze()
}

/// The WebSocket text frame of `batch`: its one message's JSON object, or one JSON array of
/// them.
fn ws_frame(batch: &[Encoded]) -> Bytes {
    let many = match batch {
        [one] => return websocket::text_frame(one.json.as_bytes()),
        many => many,
    };
    let text = many.iter().map(|m| m.json.len() + 1).sum::<usize>() + 1;
    let (header, used) = websocket::frame_header(websocket::OP_TEXT, text);
    let mut out = BytesMut::with_capacity(used + text);
    out.put_slice(&header[..used]);
    out.put_u8(b'[');
    for (i, m) in many.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(m.json.as_bytes());
    }
    out.put_u8(b']');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use revocast_shared::Seq;
    use revocast_shared::event::RevocationEvent;

    use super::*;
    use crate::stream::testing::session;

    /// The text of a whole server frame.
    fn text(frame: &Bytes) -> &str {
        let at = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        std::str::from_utf8(&frame[at..]).unwrap()
    }

    fn part(seqs: std::ops::RangeInclusive<u64>, frame_bytes: usize) -> Published {
        let events: Vec<RevocationEvent> = seqs.map(session).collect();
        Part::with_frame_bytes(encode(&events), frame_bytes)
    }

    #[test]
    fn single_messages_are_shared_and_several_are_arrays() {
        let one = part(1..=1, FRAME_BYTES);
        let frame = Frame::of(&one, 0).unwrap();
        assert_eq!(frame.ws()[0], 0x81, "a final text frame");
        assert_eq!(text(&frame.ws()), one.messages()[0].json.as_str());
        assert_eq!(
            frame.sse().as_ptr(),
            one.messages()[0].sse.as_ptr(),
            "no copy"
        );
        assert!(Frame::of(&one, 1).is_none());

        let two = part(1..=2, FRAME_BYTES);
        let frame = Frame::of(&two, 0).unwrap();
        let parsed: Vec<RevocationEvent> = serde_json::from_str(text(&frame.ws())).unwrap();
        assert_eq!(parsed, vec![session(1), session(2)]);
        let m = two.messages();
        assert_eq!(frame.sse().len(), m[0].sse.len() + m[1].sse.len());
        assert_eq!(
            (frame.events(), frame.bytes()),
            (2, m[0].json.len() + m[1].json.len())
        );
        // Built once, then shared by every connection that sends it.
        assert_eq!(
            frame.ws().as_ptr(),
            Frame::of(&two, 0).unwrap().ws().as_ptr()
        );
    }

    #[test]
    fn frames_respect_the_byte_bound_and_cover_every_message_once() {
        let one = part(1..=1, FRAME_BYTES).messages()[0].json.len();
        let p = part(1..=95, 10 * one);
        assert!(p.frames() >= 10);
        let mut seen = Vec::new();
        for i in 0..p.frames() {
            let frame = Frame::of(&p, i).unwrap();
            assert!(frame.bytes() <= 10 * one);
            seen.extend(frame.messages().iter().filter_map(|m| m.seq.map(Seq::get)));
        }
        assert_eq!(seen, (1..=95).collect::<Vec<_>>());
        // A message larger than the bound still goes, alone.
        assert_eq!(part(1..=3, 1).frames(), 3);
        assert_eq!(Part::new(Vec::new()).frames(), 0);
    }
}
