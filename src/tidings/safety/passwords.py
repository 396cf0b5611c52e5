"""Staff password hashing: the one place that touches argon2-cffi.

Staff passwords are chosen by people, so unlike device secrets (random; a SHA-256 of them is
enough, `tidings.server.auth`) they get a slow, salted hash: Argon2id through argon2-cffi's
`PasswordHasher`, whose defaults are RFC 9106's second recommended (low-memory) profile, in
the PHC string format (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``) so the parameters
travel with each hash and a change of defaults is picked up by `needs_rehash` at the next
sign-in. argon2-cffi is a vetted binding of the reference implementation; this module only
gives it a narrow, exception-free surface (`verify` answers a bool), so callers cannot forget
one of its three failure exceptions. The hazmat boundary (tests/test_layers.py) allows argon2
here and in `tidings.crypto.primitives` only.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["StaffPasswordHasher"]


class StaffPasswordHasher:
    """Hashes and checks staff passwords (Argon2id, PHC strings). Stateless apart from the
    cost parameters; safe to share between threads."""

    __slots__ = ("_hasher",)

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        """argon2-cffi's defaults unless another configured ``hasher`` is given."""
        self._hasher = hasher or PasswordHasher()

    @classmethod
    def cheap_for_tests(cls) -> StaffPasswordHasher:
        """One pass over 8 KiB, one lane: for tests only, never for real accounts."""
        return cls(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))

    def hash(self, password: str) -> str:
        """A fresh salted Argon2id hash of ``password`` as a PHC string."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str, password: str) -> bool:
        """Whether ``password`` matches ``password_hash``. A malformed or empty hash (e.g. an
        account that has not enrolled yet) is simply no match; this never raises for either."""
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):  # VerifyMismatchError is a subclass
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether ``password_hash`` (one that just verified) was made with other parameters
        than this hasher's, so it should be replaced by `hash` of the same password."""
        return self._hasher.check_needs_rehash(password_hash)

    def __repr__(self) -> str:
        h = self._hasher
        return f"StaffPasswordHasher(t={h.time_cost}, m={h.memory_cost} KiB, p={h.parallelism})"
