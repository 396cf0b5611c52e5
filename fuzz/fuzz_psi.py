"""Fuzz targets for the private-matching decoders (issue 10): the voucher as the server opens
it (wire decode, list checks, trial decryption of every element) and the blinded list as a
device loads it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from tidings.crypto import psi, threshold, voucher

TargetSpec = tuple[str, Callable[[bytes], object], list[bytes]]


def psi_targets() -> Iterator[TargetSpec]:
    params = psi.PsiParameters(
        tables=4,
        threshold=3,
        tag_dimension=4,
        synthetic_rate_ppm=0,
        synthetic_open_counts=((2, 1),),
    )
    secret = psi.generate_list_secret()
    listed = os.urandom(32)
    blinded = psi.BlindedList.build(psi.list_keys(listed, params), secret, params, 1)
    opener = voucher.VoucherOpener(secret, blinded)
    dealer = threshold.WindowDealer(os.urandom(32), params.threshold, params.tag_dimension)
    builder = voucher.VoucherBuilder(blinded, dealer)
    matching = builder.build([listed] + [os.urandom(32) for _ in range(3)], b"inner")
    yield "crypto.voucher_open", opener.open, [matching]
    yield (
        "crypto.BlindedList",
        lambda data: psi.BlindedList.decode(data, check_points=True),
        [blinded.encode()],
    )
