#!/usr/bin/env python3
"""An outside auditor of a revocast transparency log, written from PROTOCOL.md alone
("Transparency log"): no revocast code, Python's hashlib for the RFC 9162 tree and dilithium-py
for ML-DSA-65.

Reads on stdin
  {"base": URL, "key": subscribe API key, "issuer": the tokens' iss,
   "until_size": N, "previous": null or {"origin": O, "size": S, "root": base64},
   "timeout": seconds}
and, over HTTP:
  1. takes the log keys from GET /.well-known/jwks.json alone ("use":"revocast-log", kid =
     RFC 7638 thumbprint of pub; a pub also published as a token key is trusted for neither);
  2. follows GET /v1/events?since=0 (Server-Sent Events), hashing every event's data line as
     received into its own list of leaves, in seq order with no gap;
  3. verifies every checkpoint a heartbeat carries: the note's exact form, the origin, a
     signature by a trusted log key under the context revocast/checkpoint/v1, and the root
     against the tree it built — until it has verified one of size >= N;
  4. verifies GET /v1/checkpoint the same way;
  5. checks an inclusion proof (GET /v1/log/proof/inclusion) for every leaf it holds, against
     the latest verified root;
  6. with "previous" (a checkpoint verified earlier: before a restart, or on another replica),
     checks that the log only grew: same origin, size not smaller, and the RFC 9162
     consistency proof (GET /v1/log/proof/consistency) from its root to the latest.
Prints {"ok": true, "origin", "size", "root", "checkpoints_verified", "inclusion_checked",
"consistency_checked"}; exits 1 with "FAIL: reason" otherwise.
"""

import base64
import hashlib
import json
import sys
import time
import urllib.error
import urllib.request

from dilithium_py.ml_dsa import ML_DSA_65

from jose import b64d, b64e, fail

CONTEXT = b"revocast/checkpoint/v1"
SIGNATURE_TYPE = b"\xff" + CONTEXT
EM_DASH = "\u2014"


# --- RFC 9162 §2.1 -------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves: list) -> bytes:
    """The Merkle Tree Hash of a list of leaf hashes (§2.1.1), by its definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(index: int, size: int, leaf: bytes, path: list, root: bytes) -> bool:
    """§2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes,
                       path: list) -> bool:
    """§2.1.4.2, with the trivial cases: any tree extends the empty one, and a tree is
    consistent with itself exactly when the roots are equal (both with an empty path)."""
    if first > second:
        return False
    if first == 0:
        return path == []
    if first == second:
        return path == [] and first_hash == second_hash
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash] + path
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


# --- C2SP signed note and tlog-checkpoint ---------------------------------------------------


def std_b64d(s: str) -> bytes:
    """Standard base64 with padding, canonical only."""
    raw = base64.b64decode(s, validate=True)
    if base64.b64encode(raw).decode() != s:
        raise ValueError("non-canonical base64")
    return raw


def decimal(s: str) -> int:
    if not s.isdigit() or not s.isascii() or (len(s) > 1 and s[0] == "0"):
        raise ValueError(f"not a canonical decimal: {s!r}")
    return int(s)


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + SIGNATURE_TYPE + public_key).digest()[:4]


def verify_note(note: str, origin: str, log_keys: dict) -> dict:
    """Check a signed checkpoint note; returns {"size", "root", "time"} or fails."""
    if len(note.encode()) > 128 * 1024:
        fail("a checkpoint note is over 128 KiB")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in note):
        fail("a checkpoint note holds a control character")
    text, sep, signatures = note.partition("\n\n")
    if not sep:
        fail(f"a checkpoint note has no blank line: {note!r}")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) != 4:
        fail(f"a checkpoint has {len(lines)} lines, not 4: {text!r}")
    try:
        size = decimal(lines[1])
        root = std_b64d(lines[2])
        keyword, _, millis = lines[3].partition(" ")
        if keyword != "revocast-time":
            raise ValueError(f"extension line {lines[3]!r}")
        signed_at = decimal(millis)
    except ValueError as e:
        fail(f"a malformed checkpoint: {e}")
    if len(root) != 32:
        fail("a checkpoint root is not 32 bytes")
    if lines[0] != origin:
        fail(f"checkpoint origin {lines[0]!r}, expected {origin!r}")
    if not signatures.endswith("\n"):
        fail("the signature lines do not end in a newline")
    sig_lines = signatures[:-1].split("\n")
    if len(sig_lines) > 16:
        fail("more than 16 signature lines")
    verified = 0
    for line in sig_lines:
        dash, _, rest = line.partition(" ")
        name, _, blob = rest.partition(" ")
        if dash != EM_DASH or not name or not blob:
            fail(f"a malformed signature line: {line[:80]!r}")
        try:
            raw = std_b64d(blob)
        except ValueError:
            fail("a signature line's base64 is not canonical")
        if name != origin or len(raw) < 5:
            continue
        for public_key in log_keys.values():
            if raw[:4] != key_id(name, public_key):
                continue
            if not ML_DSA_65.verify(public_key, text.encode(), raw[4:], ctx=CONTEXT):
                fail("a signature by a trusted log key does not verify")
            verified += 1
    if verified == 0:
        fail("no signature by a log key published in the JWKS")
    return {"size": size, "root": root, "time": signed_at}


# --- HTTP -----------------------------------------------------------------------------------


class Auditor:
    def __init__(self, base: str, key: str, timeout: float):
        self.base = base.rstrip("/")
        self.key = key
        self.deadline = time.monotonic() + timeout

    def request(self, path: str, auth: bool = True):
        req = urllib.request.Request(self.base + path)
        if auth:
            req.add_header("Authorization", f"Bearer {self.key}")
        left = max(1.0, self.deadline - time.monotonic())
        try:
            return urllib.request.urlopen(req, timeout=left)
        except urllib.error.HTTPError as e:
            fail(f"GET {path} answered {e.code}: {e.read()[:300]!r}")
        except OSError as e:
            fail(f"GET {path}: {e}")

    def get_json(self, path: str, auth: bool = True):
        with self.request(path, auth) as resp:
            return json.load(resp)

    def log_keys(self) -> dict:
        """kid → public key of every log key, from the JWKS alone."""
        jwks = self.get_json("/.well-known/jwks.json", auth=False)
        logs, tokens = {}, set()
        for jwk in jwks.get("keys", []):
            if jwk.get("kty") != "AKP" or jwk.get("alg") != "ML-DSA-65":
                continue
            public_key = b64d(jwk["pub"])
            canonical = json.dumps(
                {"alg": jwk["alg"], "kty": jwk["kty"], "pub": jwk["pub"]},
                separators=(",", ":"), sort_keys=True)
            if b64e(hashlib.sha256(canonical.encode()).digest()) != jwk.get("kid"):
                fail(f"a JWK's kid is not its thumbprint: {jwk.get('kid')}")
            if jwk.get("use") == "revocast-log":
                logs[jwk["kid"]] = public_key
            else:
                tokens.add(public_key)
        logs = {kid: pk for kid, pk in logs.items() if pk not in tokens}
        if not logs:
            fail("the JWKS publishes no log key")
        return logs

    def follow(self, origin_of, log_keys: dict, until_size: int):
        """Follow the SSE stream from the start until a verified checkpoint covers
        `until_size`; returns (origin, leaves, newest verified checkpoint, count)."""
        leaves, verified, latest, origin = [], 0, None, None
        event = None
        with self.request("/v1/events?since=0") as resp:
            while True:
                if time.monotonic() > self.deadline:
                    fail(f"no verified checkpoint of size >= {until_size} in time "
                         f"(leaves {len(leaves)}, checkpoints verified {verified})")
                raw = resp.readline()
                if not raw:
                    fail("the stream ended")
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: "):]
                    continue
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                message = json.loads(data)
                if event == "hello":
                    origin = origin_of(message["epoch"])
                elif event == "reset":
                    fail(f"the stream reset: {data}")
                elif event == "heartbeat":
                    if "checkpoint" not in message:
                        continue
                    checkpoint = verify_note(message["checkpoint"], origin, log_keys)
                    size = checkpoint["size"]
                    if size > message["seq"] or size > len(leaves):
                        fail(f"checkpoint size {size} beyond the events received "
                             f"({len(leaves)}; heartbeat seq {message['seq']})")
                    if latest and size < latest["size"]:
                        fail(f"checkpoint size {size} below one verified ({latest['size']})")
                    if mth(leaves[:size]) != checkpoint["root"]:
                        fail(f"the root of checkpoint {size} is not the tree of the events")
                    verified += 1
                    latest = checkpoint
                    if size >= until_size:
                        return origin, leaves, latest, verified
                else:
                    if message.get("seq") != len(leaves) + 1:
                        fail(f"event seq {message.get('seq')} after {len(leaves)}")
                    leaves.append(leaf_hash(data.encode()))


def main() -> None:
    data = json.load(sys.stdin)
    auditor = Auditor(data["base"], data["key"], float(data.get("timeout", 60)))
    issuer = data["issuer"]
    for scheme in ("https://", "http://"):
        if issuer.startswith(scheme):
            issuer = issuer[len(scheme):]
    issuer = issuer.rstrip("/")

    log_keys = auditor.log_keys()
    origin, leaves, latest, verified = auditor.follow(
        lambda epoch: f"{issuer}/{epoch}", log_keys, int(data["until_size"]))

    # The latest checkpoint as served, checked the same way; the newest of the two counts.
    with auditor.request("/v1/checkpoint") as resp:
        served = verify_note(resp.read().decode(), origin, log_keys)
    verified += 1
    if served["size"] < latest["size"]:
        fail(f"GET /v1/checkpoint serves size {served['size']}, below {latest['size']}")
    if served["size"] <= len(leaves) and mth(leaves[:served["size"]]) != served["root"]:
        fail("the served checkpoint's root is not the tree of the events")

    size, root = latest["size"], latest["root"]
    inclusion = 0
    for index in range(size):
        proof = auditor.get_json(f"/v1/log/proof/inclusion?seq={index + 1}&size={size}")
        if proof.get("leaf_index") != index or proof.get("tree_size") != size:
            fail(f"an inclusion proof for seq {index + 1} names another position: {proof}")
        if std_b64d(proof["leaf_hash"]) != leaves[index]:
            fail(f"the log's leaf hash of seq {index + 1} is not the event's")
        path = [std_b64d(h) for h in proof["inclusion_path"]]
        if not verify_inclusion(index, size, leaves[index], path, root):
            fail(f"the inclusion proof of seq {index + 1} in size {size} does not verify")
        inclusion += 1

    consistency = False
    previous = data.get("previous")
    if previous:
        if previous["origin"] != origin:
            fail(f"the origin changed: {previous['origin']!r} → {origin!r}")
        old_size, old_root = previous["size"], std_b64d(previous["root"])
        if old_size > size:
            fail(f"the log shrank: {old_size} → {size}")
        proof = auditor.get_json(f"/v1/log/proof/consistency?from={old_size}&to={size}")
        path = [std_b64d(h) for h in proof["consistency_path"]]
        if not verify_consistency(old_size, size, old_root, root, path):
            fail(f"the log of size {size} does not extend the one of size {old_size}")
        consistency = True

    print(json.dumps({
        "ok": True,
        "origin": origin,
        "size": size,
        "root": base64.b64encode(root).decode(),
        "checkpoints_verified": verified,
        "inclusion_checked": inclusion,
        "consistency_checked": consistency,
    }))


if __name__ == "__main__":
    main()
