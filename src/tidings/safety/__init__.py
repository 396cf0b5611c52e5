"""Provider-side trust & safety domain core (sans-I/O): report verification and intake,
evidence at rest, the audit log, staff and permissions, cases, decisions and enforcement.

Modules, from the bottom up (each imports only those above it, plus `tidings.crypto`,
`tidings.wire` and `tidings.errors`):

- `categories`: report categories, severity, queues, SLAs, ordered routing with a CSE fast path;
- `audit`: append-only, hash-chained (optionally HMAC-anchored) audit log and its verifier;
- `staff`: roles, permission matrix, child-safety clearance with queue membership, Argon2id
  passwords, TOTP with replay protection, throttling, sessions;
- `evidence`: evidence encrypted at rest under a rotatable key ring; audited opening only;
- `reports`: franking verification of reports (key ring, reporter = recipient, chain,
  attachments), replay refusal, atomic intake;
- `cases`: cases, locks, SLAs, notes, decisions, second review, appeals, voiding, enforcement.

Persistence is behind `typing.Protocol` repositories (``*Repository``) with in-memory
implementations; records are flat frozen dataclasses meant to map one-to-one onto SQL rows.
"""
