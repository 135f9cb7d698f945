"""What the interop scripts share: JOSE base64url without padding, and how they fail."""

import base64
import sys


def b64d(s: str) -> bytes:
    if "=" in s:
        raise ValueError("padding is not allowed in JOSE base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def fail(reason: str) -> None:
    print(f"FAIL: {reason}")
    sys.exit(1)
