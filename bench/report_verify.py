"""Report verification throughput: one reported message with 10 context messages, per second
on one core (issue: "verification of one reported message with 10 context messages, per second
per core").

    .venv/bin/python bench/report_verify.py [--rounds 7] [--json]

What one operation is: `tidings.safety.reports.verify_submission` on a report of 11 items
(a 1:1 conversation, both participants interleaved, the reported message in the middle):
for every item the commitment is recomputed and compared, the server tag is recomputed and
compared under the key covering its timestamp, the Content is parsed, and the transcript chain
is checked. Beside it, in the same process and rounds:

- "primitive floor": only the 22 HMAC-SHA256 computations (11 commitments, 11 tags) and their
  constant-time comparisons, i.e. the cryptographic work with no parsing or checking — what
  verification would cost if everything else were free;
- "Ed25519 tags (peer design)": the same 11 items checked as asymmetric franking would
  (ePrint 2019/565 style: the server signs each envelope instead of MACing it), one libsodium
  Ed25519 verification per item plus the commitments — the alternative design a platform
  might choose so that third parties can verify without the server key.

Medians over interleaved rounds; ratios of medians. Timing never goes into the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

from tidings.crypto import franking, primitives
from tidings.safety.reports import (
    FrankingKey,
    FrankingKeyRing,
    ReportSubmission,
    verify_submission,
)
from tidings.wire import pb

SERVER_KEY = os.urandom(32)
CONTEXT = 10


def build_report() -> tuple[ReportSubmission, list[franking.ReportItem]]:
    """Bob reports one of Alice's messages with 10 more of hers around it: every item must be
    one the reporter received, so the run is 11 consecutive messages from Alice, chained."""
    conversation = franking.direct_conversation_id("alice", "bob")
    previous: dict[str, bytes] = {}
    items = []
    for i in range(CONTEXT + 1):
        sender, recipient = "alice", "bob"
        content = pb.Content(
            version=1,
            sent_at_ms=1_700_000_000_000 + i,
            conversation_id=conversation,
            previous_commitment=previous.get(sender, b""),
            data=pb.DataMessage(body=f"message {i} " + "x" * 200),
        )
        franked = franking.frank(content)
        previous[sender] = franked.commitment
        tag_input = franking.FrankingTagInput(
            commitment=franked.commitment,
            sender=sender,
            sender_device=1,
            recipient=recipient,
            recipient_device=1,
            server_timestamp_ms=1_700_000_000_000 + i,
            message_id=os.urandom(16),
        )
        items.append(
            franking.ReportItem(
                content=franked.content,
                franking_key=franked.franking_key,
                commitment=franked.commitment,
                franking_tag=franking.compute_franking_tag(SERVER_KEY, tag_input),
                sender=sender,
                sender_device=1,
                recipient=recipient,
                recipient_device=1,
                server_timestamp_ms=tag_input.server_timestamp_ms,
                message_id=tag_input.message_id,
            )
        )
    submission = ReportSubmission(
        reporter="bob",
        reporter_device=1,
        category="harassment",
        items=tuple(items),
        reported_index=len(items) // 2,
    )
    return submission, items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    submission, items = build_report()
    ring = FrankingKeyRing([FrankingKey("k1", SERVER_KEY)])
    verify_submission(ring, submission)  # it really verifies

    tag_inputs = [franking.franking_tag_input_bytes(it.tag_input) for it in items]
    signing_seed, signing_public = primitives.ed25519_generate()
    signatures = [primitives.ed25519_sign(signing_seed, t) for t in tag_inputs]

    def tidings() -> None:
        verify_submission(ring, submission)

    def floor() -> None:
        for it, t in zip(items, tag_inputs, strict=True):
            primitives.constant_time_equal(
                primitives.hmac_sha256(it.franking_key, it.content), it.commitment
            )
            primitives.constant_time_equal(primitives.hmac_sha256(SERVER_KEY, t), it.franking_tag)

    def ed25519_peer() -> None:
        for it, t, s in zip(items, tag_inputs, signatures, strict=True):
            primitives.constant_time_equal(
                primitives.hmac_sha256(it.franking_key, it.content), it.commitment
            )
            primitives.ed25519_verify(signing_public, t, s)

    cases: dict[str, Callable[[], None]] = {
        "Tidings verify_submission": tidings,
        "primitive floor (22 HMACs)": floor,
        "Ed25519 tags (peer design)": ed25519_peer,
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.rounds):
        for name in list(cases)[r % 3 :] + list(cases)[: r % 3]:
            fn = cases[name]
            n = 0
            start = time.perf_counter()
            while time.perf_counter() - start < 0.5:
                for _ in range(50):
                    fn()
                n += 50
            rates[name].append(n / (time.perf_counter() - start))
    medians = {name: statistics.median(v) for name, v in rates.items()}
    base = medians["Tidings verify_submission"]
    result = {
        "items_per_report": len(items),
        "reports_per_second_per_core": medians,
        "ratios_tidings_over": {
            n: base / m for n, m in medians.items() if n != "Tidings verify_submission"
        },
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"CPython {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"one report = {len(items)} items (1 reported + {len(items) - 1} context); "
        f"{args.rounds} interleaved rounds, medians, one core"
    )
    for name, value in medians.items():
        ratio = "" if name.startswith("Tidings") else f"  Tidings/this = {base / value:.2f}x"
        print(f"  {name:30s} {value:10,.0f} reports/s  ({1e6 / value:7.1f} us/report){ratio}")
    print(result["machine"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
