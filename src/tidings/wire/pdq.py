"""PDQ perceptual-hash constants, in the one place every layer can import them from (the
client hashes images, the safety side keeps the hash banks and matches; both sit above
`tidings.wire`).

The values are Meta's published PDQ parameters (facebook/ThreatExchange ``pdq/README.md``;
the `threatexchange` library's ``PdqSignal``): a 256-bit hash written as 64 lowercase hex
digits, a match within Hamming distance 31, and a quality score (0-100) below 50 meaning the
image has too little structure for the hash to be trusted.
"""

from __future__ import annotations

__all__ = ["PDQ_BITS", "PDQ_HEX_CHARS", "PDQ_MATCH_DISTANCE", "PDQ_MAX_QUALITY", "PDQ_MIN_QUALITY"]

PDQ_BITS = 256
PDQ_HEX_CHARS = PDQ_BITS // 4
PDQ_MATCH_DISTANCE = 31
"""Two PDQ hashes match when their Hamming distance is at most this."""
PDQ_MIN_QUALITY = 50
"""A hash whose quality is below this is refused (too unreliable to match on)."""
PDQ_MAX_QUALITY = 100
