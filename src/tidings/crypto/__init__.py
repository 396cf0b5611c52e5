"""Pure, synchronous protocol code: bytes in, bytes out, time passed in; no I/O, no globals."""
