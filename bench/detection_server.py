"""Detection on the server (issue 10): what one voucher costs the provider, end to end through
`tidings.safety.detection.DetectionService` on a real SQLite database (docs/performance.md,
"Detection: server processing").

    .venv/bin/python bench/detection_server.py [--threshold 10] [--vouchers 40] [--json]

Phases, each timed over the same vouchers (the sender's voucher building is not counted):
- intake: `accept_voucher` (structure check + one durable insert) per voucher;
- processing: claiming, opening (`VoucherOpener.open`) and storing per voucher, for vouchers
  of unlisted images (nothing opens: every element is tried) and of listed ones;
- the threshold: one window's evaluation when its t-th matching voucher arrives: recovery
  (`recover_inner`), then per image fetching, decrypting, hashing (8 dihedral PDQ hashes),
  checking against the device list, sealing the evidence and joining the case.

Photographs are scikit-image's bundled files. Timing never goes into the test suite.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
from PIL import Image

from tidings.crypto import attachment
from tidings.crypto.psi import DEFAULT_PSI_PARAMETERS, BlindedList, generate_list_secret
from tidings.crypto.threshold import WindowDealer
from tidings.crypto.voucher import VoucherBuilder
from tidings.media.pdq import dihedral_hashes, hash_image
from tidings.safety.categories import Category
from tidings.safety.detection import DetectionKeys, DetectionService, banks_device_list
from tidings.safety.evidence import EvidenceKeyRing
from tidings.safety.reports import FrankingKey, FrankingKeyRing
from tidings.safety.service import SafetyService
from tidings.wire.base64url import b64e
from tidings.wire.detection import DetectionInnerPayload

LISTED = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse", "moon", "coins")
UNLISTED = ("brick", "gravel", "grass", "page", "text", "clock")


class Store:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def fetch(self, key: str) -> bytes | None:
        return self.blobs.get(key)

    def read(self, key: str) -> bytes | None:
        return self.blobs.get(key)

    def write(self, key: str, data: bytes) -> None:
        self.blobs[key] = data


def _jpeg(name: str, scale: float, quality: int) -> bytes:
    pixels = np.asarray(getattr(skimage.data, name)())
    image = Image.fromarray(pixels).convert("RGB")
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1000, 2),
        "p90_ms": round(sorted(samples)[int(0.9 * (len(samples) - 1))] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=int, default=10)
    parser.add_argument("--vouchers", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    t = args.threshold
    params = replace(DEFAULT_PSI_PARAMETERS, synthetic_rate_ppm=0)
    store = Store()
    with tempfile.TemporaryDirectory() as tmp:
        safety = SafetyService.open(
            f"sqlite:///{Path(tmp) / 'tidings.db'}",
            franking_keys=FrankingKeyRing([FrankingKey("f", os.urandom(32))]),
            evidence_keys=EvidenceKeyRing({"ev1": os.urandom(32)}, "ev1"),
            fetcher=store,
        )
        safety.migrate()
        operator = safety.operator()
        safety.banks.create_bank(operator, name="cse", category=Category.CHILD_SEXUAL_EXPLOITATION)
        originals = {n: _jpeg(n, 1.0, 95) for n in LISTED}
        rows = "".join(f"pdq,{hash_image(b).hex}\n" for b in originals.values()).encode()
        for org, cc in (("NCMEC", "US"), ("IWF", "GB")):
            safety.banks.import_file(operator, "cse", rows, organisation=org, jurisdiction=cc)
        assert safety.detection_repo is not None
        detection = DetectionService(
            repository=safety.detection_repo,
            banks=banks_device_list(safety.banks),
            vault=safety.vault,
            cases=safety.cases,
            audit=safety.audit,
            blobs=store,
            fetcher=store,
            keys=DetectionKeys(generate_list_secret(), os.urandom(32)),
            threshold=t,
            params=params,
        )
        detection.build_list(actor="operator:cli")
        blinded = BlindedList.decode(detection.list_bytes()[1])

        def vouchers(names: tuple[str, ...], count: int, dealer: WindowDealer) -> list[bytes]:
            out = []
            for i in range(count):
                image = _jpeg(names[i % len(names)], 0.6 + 0.05 * (i % 5), 60 + i % 30)
                key = attachment.generate_key()
                ciphertext, digest = attachment.encrypt_bytes(key, image)
                attachment_id = b64e(os.urandom(32))
                store.blobs[attachment_id] = ciphertext
                hashes = dihedral_hashes(image)
                payload = DetectionInnerPayload(
                    attachment_id,
                    key,
                    digest,
                    len(image),
                    "image/jpeg",
                    hashes[0].bits,
                )
                builder = VoucherBuilder(blinded, dealer)
                out.append(builder.build([h.bits for h in hashes], payload.encode()))
            return out

        def accept(batch: list[bytes], account: str, window: bytes) -> list[float]:
            samples = []
            for voucher in batch:
                started = time.perf_counter()
                detection.accept_voucher(account, 1, window, voucher)
                samples.append(time.perf_counter() - started)
            return samples

        def timed(call: Any) -> tuple[Any, float]:
            started = time.perf_counter()
            result = call()
            return result, time.perf_counter() - started

        def dealer() -> WindowDealer:
            return WindowDealer(os.urandom(32), t, params.tag_dimension)

        print("building vouchers (not timed)...", file=sys.stderr)
        unlisted = vouchers(UNLISTED, args.vouchers, dealer())
        listed = vouchers(LISTED, t, dealer())

        intake = accept(unlisted, "innocent", os.urandom(16))
        done, seconds = timed(lambda: detection.process_pending(limit=len(unlisted)))
        assert done == len(unlisted) and detection.repository.opened_count() == 0
        per_unopened = seconds / done

        window = os.urandom(16)
        intake += accept(listed[: t - 1], "sender", window)
        done, seconds = timed(lambda: detection.process_pending(limit=t))
        assert done == t - 1 and detection.repository.opened_count() == t - 1
        per_opened = seconds / done
        found, below = timed(detection.evaluate_windows)
        assert found == (1, 0, 0)

        intake += accept(listed[t - 1 :], "sender", window)
        detection.process_pending()
        found, at = timed(detection.evaluate_windows)
        assert found == (1, t, 0), found
        results: dict[str, Any] = {
            "threshold": t,
            "tables": params.tables,
            "intake": _ms(intake),
            "process_unopened_ms": round(per_unopened * 1000, 2),
            "process_opened_ms": round(per_opened * 1000, 2),
            "evaluate_below_t_ms": round(below * 1000, 2),
            "evaluate_at_t_ms": round(at * 1000, 2),
            "evaluate_at_t_per_image_ms": round(at * 1000 / t, 2),
        }
        safety.close()
    if args.json:
        print(json.dumps(results))
        return
    print(f"t = {t}, K = {params.tables}, SQLite, one process")
    print(
        f"intake (accept_voucher): median {results['intake']['median_ms']} ms, "
        f"p90 {results['intake']['p90_ms']} ms"
    )
    print(f"processing, a voucher that does not open: {results['process_unopened_ms']} ms")
    print(f"processing, a voucher that opens:         {results['process_opened_ms']} ms")
    print(f"window evaluation below t:  {results['evaluate_below_t_ms']} ms")
    print(
        f"window evaluation at t:     {results['evaluate_at_t_ms']} ms "
        f"({results['evaluate_at_t_per_image_ms']} ms per matched image)"
    )


if __name__ == "__main__":
    main()
