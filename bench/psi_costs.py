"""Costs of private matching with the default parameters (issue 10): client ms per voucher,
voucher bytes, server ms per voucher, device bytes for a 100k-hash list, and the time to build
and to check a blinded list.

    .venv/bin/python bench/psi_costs.py [--list-hashes 10000] [--vouchers 40] [--json]

What is timed (PDQ hashing excluded, as in the issue): `VoucherBuilder.build` from the class
hashes (real and synthetic vouchers, the client's 134-byte inner payload); `VoucherOpener.open` of a
voucher that matches nothing (every element tried: the common and the worst case) and of one
that matches; `BlindedList.build` of ``--list-hashes`` random hashes (K keys each), extrapolated
linearly to 100k hashes (its cost is one hash-to-group and one scalar multiplication per key
plus linear peeling); `BlindedList.check_points` per slot. Interleaved with the vouchers:
160 bare X25519 agreements (the server's floor per voucher), so that figures from a loaded
machine compare as ratios. Medians; one process, one core.
Timing never goes into the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

from tidings.crypto import primitives, psi, threshold, voucher
from tidings.wire.detection import INNER_PAYLOAD_LEN

PAYLOAD = INNER_PAYLOAD_LEN
"""The client's inner payload (`tidings.wire.detection.DetectionInnerPayload`, 134 bytes)."""


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def run(args: argparse.Namespace) -> dict[str, object]:
    # The defaults, with the synthetic coin fixed so that real and synthetic vouchers are timed
    # apart (the rate changes nothing else).
    params = dataclasses.replace(psi.DEFAULT_PSI_PARAMETERS, synthetic_rate_ppm=0)
    out: dict[str, object] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "tables": params.tables,
        "bits_per_key": params.bits_per_key,
        "elements_per_voucher": params.elements_per_voucher,
    }
    secret = psi.generate_list_secret()
    hashes = [os.urandom(32) for _ in range(args.list_hashes)]
    keys = [k for h in hashes for k in psi.list_keys(h, params)]
    start = time.perf_counter()
    blinded = psi.BlindedList.build(keys, secret, params, 1)
    build_s = time.perf_counter() - start
    out["list_build_s"] = {
        args.list_hashes: build_s,
        "100000_extrapolated": build_s * 100_000 / args.list_hashes,
    }
    slots_100k = psi.okvs_slot_count(100_000 * params.tables)
    out["device_bytes_100k"] = slots_100k * psi.POINT_LEN
    out["device_slots_100k"] = slots_100k
    sample = min(blinded.slot_count, 5_000)
    start = time.perf_counter()
    part = psi.BlindedList(
        params, 1, blinded.okvs_seed, blinded.public, blinded.slots[: sample * psi.POINT_LEN]
    )
    part.check_points()
    per_slot = (time.perf_counter() - start) / sample
    out["check_points_us_per_slot"] = per_slot * 1e6
    out["check_points_s_100k"] = per_slot * slots_100k
    start = time.perf_counter()
    encoded = blinded.encode()
    psi.BlindedList.decode(encoded).digest()
    out["decode_and_digest_s"] = {args.list_hashes: time.perf_counter() - start}

    opener = voucher.VoucherOpener(secret, blinded)
    dealer = threshold.WindowDealer(os.urandom(32), params.threshold, params.tag_dimension)
    real = voucher.VoucherBuilder(blinded, dealer)
    synthetic_list = psi.BlindedList(
        dataclasses.replace(params, synthetic_rate_ppm=psi.PPM),
        1,
        blinded.okvs_seed,
        blinded.public,
        blinded.slots,
    )
    synthetic = voucher.VoucherBuilder(synthetic_list, dealer)
    payload = os.urandom(PAYLOAD)
    build_real, build_synth, open_miss, open_hit, sizes = [], [], [], [], set()
    miss_vouchers, hit_vouchers, floor = [], [], []
    u_ref = primitives.ed25519_point_to_x25519(psi.hash_to_group(b"reference"))
    for i in range(args.vouchers):
        # Interleaved with every voucher: 160 bare X25519 agreements (the server's unavoidable
        # work per voucher), so that figures from a loaded machine can be compared as ratios.
        start = time.perf_counter()
        for _ in range(params.elements_per_voucher):
            primitives.x25519(secret, u_ref)
        floor.append(time.perf_counter() - start)
        image = [os.urandom(32) for _ in range(4)]
        start = time.perf_counter()
        data = real.build(image, payload)
        build_real.append(time.perf_counter() - start)
        miss_vouchers.append(data)
        sizes.add(len(data))
        start = time.perf_counter()
        synthetic.build(image, payload)
        build_synth.append(time.perf_counter() - start)
        hit_vouchers.append(real.build([hashes[i % len(hashes)], *image[1:]], payload))
    for data in miss_vouchers:
        start = time.perf_counter()
        assert opener.open(data) is None
        open_miss.append(time.perf_counter() - start)
    for data in hit_vouchers:
        start = time.perf_counter()
        assert opener.open(data) is not None
        open_hit.append(time.perf_counter() - start)
    out["x25519_floor_ms_per_voucher"] = _median_ms(floor)
    out["client_over_floor"] = _median_ms(build_real) / _median_ms(floor)
    out["server_no_match_over_floor"] = _median_ms(open_miss) / _median_ms(floor)
    out["client_ms_per_voucher"] = {
        "real": _median_ms(build_real),
        "synthetic": _median_ms(build_synth),
    }
    out["server_ms_per_voucher"] = {
        "no_match": _median_ms(open_miss),
        "match": _median_ms(open_hit),
    }
    out["voucher_bytes"] = {
        PAYLOAD: sorted(sizes),
        "per_payload_byte": 1,
        "empty_payload": sorted(sizes)[0] - PAYLOAD,
    }
    fp = 4 * params.tables * 2 * 1_000_000 * 2.0**-params.bits_per_key
    # Per window of W vouchers: the chance an innocent device's window reaches t candidates.
    crossing = threshold.innocent_crossing_probability
    out["innocent_window_crossing_t"] = {
        f"W={params.window_size}, fp {fp:.2e}, t={params.threshold}": crossing(
            fp, params.window_size, params.threshold
        )
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--list-hashes", type=int, default=10_000)
    parser.add_argument("--vouchers", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = run(args)
    json.dump(out, sys.stdout, indent=None if args.json else 1)
    print()


if __name__ == "__main__":
    main()
