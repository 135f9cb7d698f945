#!/usr/bin/env python3
"""Check a revocast crypto backend's keys and context signatures with an independent ML-DSA-65
implementation (dilithium-py), and sign for it to verify in turn.

Reads on stdin {"seed": hex, "public_key": b64url, "context": str, "message": b64url,
"signatures": [b64url, ...]} where each signature was made by the backend under "context".
Checks, without any revocast code:
  - the public key is the one FIPS 204 derives from the 32-byte seed (ML-DSA.KeyGen_internal);
  - each signature verifies over the message under the context (pure ML-DSA-65, FIPS 204 ctx),
    and under neither the empty context nor another one, nor over another message.
Prints one JSON object {"in_context": b64url, "empty_context": b64url}: dilithium-py's hedged
signatures of the message by the same key, under the context and under the empty one, for the
backend to verify. Exits 1 with a reason otherwise.
"""

import json
import sys

from dilithium_py.ml_dsa import ML_DSA_65

from jose import b64d, b64e, fail


def main() -> None:
    data = json.load(sys.stdin)
    seed = bytes.fromhex(data["seed"])
    context = data["context"].encode()
    message = b64d(data["message"])
    pk, sk = ML_DSA_65.key_derive(seed)
    if pk != b64d(data["public_key"]):
        fail("the public key is not the one FIPS 204 derives from the seed")
    if not data["signatures"]:
        fail("no signatures to check")
    for i, signature in enumerate(data["signatures"]):
        sig = b64d(signature)
        if len(sig) != 3309:
            fail(f"signature {i} is {len(sig)} bytes")
        if not ML_DSA_65.verify(pk, message, sig, ctx=context):
            fail(f"signature {i} does not verify under its context")
        if ML_DSA_65.verify(pk, message, sig, ctx=b""):
            fail(f"signature {i} verified under the empty context")
        if ML_DSA_65.verify(pk, message, sig, ctx=context + b"x"):
            fail(f"signature {i} verified under another context")
        if ML_DSA_65.verify(pk, message + b"x", sig, ctx=context):
            fail(f"signature {i} verified over another message")
    print(
        json.dumps(
            {
                "in_context": b64e(ML_DSA_65.sign(sk, message, ctx=context)),
                "empty_context": b64e(ML_DSA_65.sign(sk, message, ctx=b"")),
            }
        )
    )


if __name__ == "__main__":
    main()
