#!/usr/bin/env python3
"""Verify a revocast token with an independent ML-DSA-65 implementation (dilithium-py).

Reads {"jwks": {...}, "token": "..."} on stdin. Checks, without any revocast code:
  - the JWK's kid is its RFC 7638 thumbprint over {"alg","kty","pub"} (RFC 9964 section 6);
  - the JWS header names ML-DSA-65, at+jwt and that kid;
  - the signature verifies (pure ML-DSA-65, empty context) over BASE64URL(header) "." BASE64URL(payload);
  - a token with one payload byte changed does not verify.
Prints "ok" and exits 0 on success; exits 1 with a reason otherwise.
"""

import hashlib
import json
import sys

from dilithium_py.ml_dsa import ML_DSA_65

from jose import b64d, b64e, fail


def main() -> None:
    data = json.load(sys.stdin)
    token = data["token"]
    header_b64, payload_b64, sig_b64 = token.split(".")
    header = json.loads(b64d(header_b64))
    if header.get("alg") != "ML-DSA-65" or header.get("typ") != "at+jwt":
        fail(f"unexpected header {header}")
    keys = {k["kid"]: k for k in data["jwks"]["keys"]}
    jwk = keys.get(header["kid"])
    if jwk is None:
        fail("kid not in JWKS")
    canonical = json.dumps(
        {"alg": jwk["alg"], "kty": jwk["kty"], "pub": jwk["pub"]}, separators=(",", ":"), sort_keys=True
    )
    if b64e(hashlib.sha256(canonical.encode()).digest()) != jwk["kid"]:
        fail("kid is not the RFC 7638 thumbprint")
    if jwk["kty"] != "AKP" or jwk["alg"] != "ML-DSA-65":
        fail(f"unexpected JWK {jwk['kty']} {jwk['alg']}")
    pk = b64d(jwk["pub"])
    sig = b64d(sig_b64)
    if len(pk) != 1952 or len(sig) != 3309:
        fail(f"sizes pub={len(pk)} sig={len(sig)}")
    signing_input = f"{header_b64}.{payload_b64}".encode()
    if not ML_DSA_65.verify(pk, signing_input, sig, ctx=b""):
        fail("signature does not verify")
    tampered = bytearray(signing_input)
    tampered[-1] ^= 1
    if ML_DSA_65.verify(pk, bytes(tampered), sig, ctx=b""):
        fail("a tampered message verified")
    claims = json.loads(b64d(payload_b64))
    print(f"ok: sub={claims['sub']} kid={jwk['kid']}")


if __name__ == "__main__":
    main()
