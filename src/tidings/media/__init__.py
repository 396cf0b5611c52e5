"""Fingerprints of media plaintext for known-image detection (issue 10, clear-text matching).

`tidings.media.pdq` computes PDQ perceptual hashes of image bytes (Meta's PDQ through the
`pdqhash` binding, decoding through Pillow); `tidings.media.digests` computes the exact MD5 and
SHA-256 digests that hash banks list beside them. A bottom layer: it imports only the package
root and `tidings.errors`, so the client (hashing on the device) and the provider side
(`tidings.safety`, hashing reported attachments) share one implementation.
"""
