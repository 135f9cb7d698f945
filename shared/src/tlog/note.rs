//! The C2SP signed-note format (<https://c2sp.org/signed-note>): a UTF-8 text ending in a
//! newline, a blank line, then signature lines `— <key name> <base64(key ID || signature)>`.
//! Parsed strictly, as untrusted input: size-capped, and never panicking.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::hash::STD_B64;

/// Largest note accepted, checked before anything else. signed-note requires accepting at
/// least 16 signatures, and an ML-DSA-65 signature line is about 4.5 kB.
pub const MAX_NOTE_LEN: usize = 128 * 1024;
/// Most signature lines accepted (the minimum signed-note allows a verifier to impose).
pub const MAX_SIGNATURES: usize = 16;

/// The em dash (U+2014) and space that open every signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why bytes are not a signed note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is larger than {MAX_NOTE_LEN} bytes")]
    TooLarge,
    #[error("the note is not UTF-8")]
    NotUtf8,
    #[error("the note holds a control character other than newline")]
    ControlCharacter,
    #[error("the note does not end in a newline")]
    NoFinalNewline,
    #[error("the note has no blank line before its signatures")]
    NoSignatures,
    #[error("the note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    #[error("a signature line is malformed")]
    BadSignatureLine,
    #[error("a key name is empty or holds a space or a plus")]
    BadKeyName,
}

/// One signature line, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub key_name: String,
    /// The first four bytes of the decoded signature, big-endian.
    pub key_id: u32,
    /// The rest: the signature proper.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// `— <key name> <base64(key ID || signature)>` and its newline.
    pub fn to_line(&self) -> String {
        let mut blob = Vec::with_capacity(4 + self.signature.len());
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(&self.signature);
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.key_name,
            STD_B64.encode(blob)
        )
    }
}

/// A signed note, its signatures not yet verified: read nothing in [`SignedNote::text`] before
/// one of them has been.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// A note from its text (which must end in a newline) and signatures, for signing.
    pub(crate) fn new(text: String, signatures: Vec<NoteSignature>) -> Self {
        Self { text, signatures }
    }

    /// Parse untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge);
        }
        let all = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        if all.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(NoteError::ControlCharacter);
        }
        if !all.ends_with('\n') {
            return Err(NoteError::NoFinalNewline);
        }
        // The text ends at the last blank line; everything after it is signature lines.
        let split = all.rfind("\n\n").ok_or(NoteError::NoSignatures)?;
        let (text, signature_block) = (&all[..=split], &all[split + 2..]);
        if signature_block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        let mut signatures = Vec::new();
        for line in signature_block.split_terminator('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(parse_signature_line(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, final newline included, blank line excluded: what signatures cover.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// The note as it goes on the wire: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + 4500 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }
}

fn parse_signature_line(line: &str) -> Result<NoteSignature, NoteError> {
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(NoteError::BadSignatureLine)?;
    let (name, blob) = rest.split_once(' ').ok_or(NoteError::BadSignatureLine)?;
    check_key_name(name)?;
    let decoded = STD_B64
        .decode(blob)
        .map_err(|_| NoteError::BadSignatureLine)?;
    // A key ID and at least one byte of signature.
    let Some((id, signature)) = decoded.split_first_chunk::<4>() else {
        return Err(NoteError::BadSignatureLine);
    };
    if signature.is_empty() {
        return Err(NoteError::BadSignatureLine);
    }
    Ok(NoteSignature {
        key_name: name.to_owned(),
        key_id: u32::from_be_bytes(*id),
        signature: signature.to_vec(),
    })
}

/// signed-note key names: non-empty, no Unicode space, no `+`. (Control characters are refused
/// for the whole note.)
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::BadKeyName);
    }
    Ok(())
}

/// The signed-note key ID: the first four bytes, big-endian, of
/// SHA-256(key name || 0x0A || signature type || public key), where `signature_type` is the
/// type's identifier byte and whatever follows it (for `0xff`, the longer identifier).
pub fn key_id(key_name: &str, signature_type: &[u8], public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(key_name.as_bytes());
    h.update([0x0a]);
    h.update(signature_type);
    h.update(public_key);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The Ed25519 example of the signed-note specification: its vkey
    /// `example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k` gives type byte
    /// 0x01 and a 32-byte key whose ID is 0x530d903a, and the note parses to that ID.
    #[test]
    fn the_specifications_example_parses_and_its_key_id_matches() {
        let vkey = STD_B64
            .decode("AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
            .unwrap();
        let (kind, public) = vkey.split_first().unwrap();
        assert_eq!(key_id("example.com/foo", &[*kind], public), 0x530d903a);
        let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        let parsed = SignedNote::parse(note.as_bytes()).unwrap();
        assert_eq!(parsed.text(), "This is an example message.\n");
        assert_eq!(parsed.signatures().len(), 1);
        let s = &parsed.signatures()[0];
        assert_eq!(
            (s.key_name.as_str(), s.key_id),
            ("example.com/foo", 0x530d903a)
        );
        assert_eq!(s.signature.len(), 64);
        assert_eq!(parsed.to_text(), note);
    }

    #[test]
    fn the_last_blank_line_separates_text_from_signatures() {
        let sig = NoteSignature {
            key_name: "k".into(),
            key_id: 7,
            signature: vec![1, 2, 3],
        };
        let note = SignedNote::new("a\n\nb\n".into(), vec![sig.clone(), sig.clone()]);
        let text = note.to_text();
        let back = SignedNote::parse(text.as_bytes()).unwrap();
        assert_eq!(back, note);
        assert_eq!(back.text(), "a\n\nb\n");
    }

    #[test]
    fn malformed_notes_are_refused_with_their_reason() {
        let good_line = NoteSignature {
            key_name: "k".into(),
            key_id: 7,
            signature: vec![1],
        }
        .to_line();
        let cases: Vec<(String, NoteError)> = vec![
            ("text\n".into(), NoteError::NoSignatures),
            ("text\n\n".into(), NoteError::NoSignatures),
            (
                format!("text\n\n{}", good_line.trim_end()),
                NoteError::NoFinalNewline,
            ),
            (
                format!("te\rxt\n\n{good_line}"),
                NoteError::ControlCharacter,
            ),
            (format!("text\n\n{good_line}\n"), NoteError::NoSignatures),
            ("text\n\n- k AAAAAAE=\n".into(), NoteError::BadSignatureLine),
            (
                "text\n\n\u{2014} k  AAAAAAE=\n".into(),
                NoteError::BadSignatureLine,
            ),
            (
                "text\n\n\u{2014} k AAAAAA==\n".into(),
                NoteError::BadSignatureLine,
            ),
            (
                "text\n\n\u{2014} k AAAAAAE\n".into(),
                NoteError::BadSignatureLine,
            ),
            (
                "text\n\n\u{2014} k AAAAAAE= x\n".into(),
                NoteError::BadSignatureLine,
            ),
            (
                "text\n\n\u{2014} a+b AAAAAAE=\n".into(),
                NoteError::BadKeyName,
            ),
            (
                "text\n\n\u{2014} a\u{3000}b AAAAAAE=\n".into(),
                NoteError::BadKeyName,
            ),
            ("text\n\n\u{2014}  AAAAAAE=\n".into(), NoteError::BadKeyName),
            (
                format!("text\n\n{}", good_line.repeat(MAX_SIGNATURES + 1)),
                NoteError::TooManySignatures,
            ),
            ("x".repeat(MAX_NOTE_LEN + 1), NoteError::TooLarge),
        ];
        for (note, want) in cases {
            assert_eq!(SignedNote::parse(note.as_bytes()), Err(want), "{note:?}");
        }
        assert_eq!(SignedNote::parse(b"\xff\n\n"), Err(NoteError::NotUtf8));
        let sixteen = format!("text\n\n{}", good_line.repeat(MAX_SIGNATURES));
        assert_eq!(
            SignedNote::parse(sixteen.as_bytes())
                .unwrap()
                .signatures()
                .len(),
            MAX_SIGNATURES
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedNote::parse(&bytes);
        }

        #[test]
        fn note_shaped_text_never_panics_and_round_trips(
            text in "[a-z0-9/ \n]{0,40}",
            name in "[^ +\n]{0,12}",
            blob in "[A-Za-z0-9+/=]{0,24}",
        ) {
            let note = format!("{text}\n\n\u{2014} {name} {blob}\n");
            if let Ok(parsed) = SignedNote::parse(note.as_bytes()) {
                prop_assert_eq!(parsed.to_text(), note);
            }
        }
    }
}
