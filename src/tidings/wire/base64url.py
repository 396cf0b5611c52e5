"""Base64url without padding: how binary values travel inside JSON (docs/api.md)."""

from __future__ import annotations

import base64
import binascii

from tidings.errors import DecodeError

B64URL_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
"""What `b64d` accepts, unpadded, as a regular expression for schemas (a length of 4k+1 never
is base64)."""


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str, *, what: str = "value", max_len: int | None = None) -> bytes:
    """Decode base64url (padding optional).

    Raises:
        DecodeError: not base64url, or longer than ``max_len`` bytes once decoded.
    """
    if not isinstance(text, str) or (max_len is not None and len(text) > (max_len * 4 + 2) // 3):
        raise DecodeError(f"{what} is not base64url of at most {max_len} bytes")
    if "+" in text or "/" in text:
        # altchars maps "-" and "_" but still lets the standard alphabet's "+" and "/" through.
        raise DecodeError(f"{what} is not base64url")
    try:
        # validate=True: the default silently drops characters outside the alphabet, which
        # would turn garbage such as "%%%" into a valid (empty) value instead of an error.
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError(f"{what} is not base64url") from None
