"""Threshold shares with detectable real shares: recovery at and above t, nothing below it,
synthetic shares indistinguishable from fewer than t real ones, the s <= D bound, decoding
errors, known answers and the innocent-crossing probability."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.crypto.identity import RandomSource
from tidings.crypto.threshold import (
    FIELD_ELEMENT_LEN,
    FIELD_PRIME,
    MAX_TAG_DIMENSION,
    MAX_THRESHOLD,
    ShareEnvelope,
    WindowDealer,
    draw_share_x,
    find_real_shares,
    innocent_crossing_probability,
    recover_window_key,
    synthetic_share,
)
from tidings.crypto.threshold import _dependent_rows as dependent_rows
from tidings.errors import (
    DecodeError,
    InvalidKeyError,
    InvalidShareError,
    ShareRecoveryError,
    ThresholdParameterError,
    TruncatedError,
)

KAT = json.loads((Path(__file__).parents[1] / "vectors" / "threshold_kat.json").read_text())
P = FIELD_PRIME


def rng_of(seed: object) -> RandomSource:
    """A deterministic `RandomSource` (tests only)."""
    return random.Random(str(seed)).randbytes


def dealer(seed: object, t: int, d: int) -> WindowDealer:
    return WindowDealer(rng_of(("dealer", seed))(32), t, d)


def real_shares(window: WindowDealer, n: int, rng: RandomSource) -> list[ShareEnvelope]:
    return [window.share(draw_share_x(rng)) for _ in range(n)]


def mixed(
    seed: object, t: int, d: int, real: int, synthetic: int
) -> tuple[WindowDealer, list[ShareEnvelope], list[int]]:
    """A shuffled window of ``real`` real and ``synthetic`` synthetic shares, and the indices of
    the real ones."""
    rng = rng_of(seed)
    window = dealer(seed, t, d)
    shares = [(True, s) for s in real_shares(window, real, rng)]
    shares += [(False, synthetic_share(rng, d)) for _ in range(synthetic)]
    random.Random(str(seed)).shuffle(shares)
    return window, [s for _, s in shares], [i for i, (is_real, _) in enumerate(shares) if is_real]


# --- recovery ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "d"), [(2, 1), (3, 4), (10, 32)])
def test_exactly_t_real_shares_recover_the_window_key(t: int, d: int) -> None:
    window = dealer("exact", t, d)
    shares = real_shares(window, t, rng_of("exact"))
    assert find_real_shares(shares, t, d) == list(range(t))
    assert recover_window_key(shares, t) == window.window_key()


def test_more_than_t_real_shares_recover_and_are_cross_checked() -> None:
    window = dealer("more", 5, 4)
    shares = real_shares(window, 9, rng_of("more"))
    assert find_real_shares(shares, 5, 4) == list(range(9))
    assert recover_window_key(shares, 5) == window.window_key()
    assert recover_window_key(shares[4:], 5) == window.window_key()


@pytest.mark.parametrize(("t", "d", "real"), [(3, 5, 3), (10, 32, 10), (10, 32, 30), (4, 8, 20)])
def test_real_shares_are_found_among_up_to_d_synthetic_ones(t: int, d: int, real: int) -> None:
    window, shares, expected = mixed(("noise", t, d, real), t, d, real, d)
    found = find_real_shares(shares, t, d)
    assert found == expected
    assert recover_window_key([shares[i] for i in found], t) == window.window_key()


@pytest.mark.parametrize(("t", "d"), [(2, 1), (3, 5), (10, 32)])
def test_t_minus_1_real_shares_and_d_synthetic_ones_give_nothing(t: int, d: int) -> None:
    _, shares, _ = mixed(("below", t, d), t, d, t - 1, d)
    assert find_real_shares(shares, t, d) == []


def test_only_synthetic_shares_give_nothing() -> None:
    rng = rng_of("only synthetic")
    assert find_real_shares([synthetic_share(rng, 6) for _ in range(6)], 3, 6) == []


def test_more_than_d_synthetic_shares_blind_detection_but_never_mislead() -> None:
    """Beyond the s <= D bound every row is dependent; the y check refuses the mix."""
    for trial in range(5):
        _, shares, _ = mixed(("beyond", trial), 4, 3, 6, 8)
        assert find_real_shares(shares, 4, 3) == []


def test_a_replayed_share_is_counted_once() -> None:
    window = dealer("replay", 4, 3)
    shares = real_shares(window, 3, rng_of("replay"))
    rng = rng_of("replay synthetic")
    synthetic = synthetic_share(rng, 3)
    # t-1 real shares, one of them twice, and a synthetic one twice: no detection.
    assert find_real_shares([*shares, shares[0], synthetic, synthetic], 4, 3) == []
    # With a t-th real share, each real share is reported once (its first occurrence).
    fourth = window.share(draw_share_x(rng))
    assert find_real_shares([shares[0], *shares, fourth, synthetic], 4, 3) == [0, 2, 3, 4]


def test_recovery_refuses_too_few_repeated_or_inconsistent_shares() -> None:
    window = dealer("refuse", 4, 2)
    shares = real_shares(window, 5, rng_of("refuse"))
    with pytest.raises(ShareRecoveryError):
        recover_window_key(shares[:3], 4)
    with pytest.raises(ShareRecoveryError):
        recover_window_key([*shares[:4], shares[0]], 4)
    with pytest.raises(ShareRecoveryError):
        recover_window_key([*shares[:4], synthetic_share(rng_of("x"), 2)], 4)
    tampered = ShareEnvelope(shares[4].x, (shares[4].y + 1) % P, shares[4].tag)
    with pytest.raises(ShareRecoveryError):
        recover_window_key([*shares[:4], tampered], 4)
    # Exactly t shares always interpolate: a wrong one gives a different key, not an error.
    assert recover_window_key([*shares[:3], tampered], 4) != window.window_key()


def test_a_tampered_tag_is_not_reported_as_real() -> None:
    window = dealer("tag", 3, 4)
    shares = real_shares(window, 4, rng_of("tag"))
    bad = ShareEnvelope(shares[0].x, shares[0].y, (shares[0].tag[0] ^ 1, *shares[0].tag[1:]))
    assert find_real_shares([bad, *shares[1:]], 3, 4) == [1, 2, 3]


def test_the_dealer_is_deterministic_and_domain_separated() -> None:
    seed = rng_of("seed")(32)
    a, b = WindowDealer(seed, 5, 3), WindowDealer(seed, 5, 3)
    assert a.window_key() == b.window_key()
    assert a.share(12345) == b.share(12345)
    assert WindowDealer(seed, 6, 3).window_key() != a.window_key()
    assert WindowDealer(seed, 5, 4).share(12345).tag[:3] != a.share(12345).tag
    assert WindowDealer(rng_of("other")(32), 5, 3).window_key() != a.window_key()
    assert len(a.window_key()) == 32


# --- below threshold, real shares look synthetic -----------------------------------------------

_BUCKETS = 16
_CHI2_15_DOF_P001 = 37.70  # chi-square quantile 0.999 with 15 degrees of freedom


def _chi_square(values: list[int]) -> float:
    counts = [0] * _BUCKETS
    for v in values:
        counts[v % _BUCKETS] += 1
    expected = len(values) / _BUCKETS
    return sum((c - expected) ** 2 / expected for c in counts)


def _residual(shares: list[ShareEnvelope], degree: int, coordinate: int) -> int:
    """Fit a polynomial of ``degree`` through the first degree+1 shares' tag ``coordinate``
    and return how far the next share's value is from it: uniform for shares whose tag values
    are uniform, always 0 when the tags come from one polynomial of that degree."""
    xs = [s.x for s in shares[: degree + 1]]
    ys = [s.tag[coordinate] for s in shares[: degree + 1]]
    at = shares[degree + 1].x
    predicted = 0
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        term = yi
        for j, xj in enumerate(xs):
            if j != i:
                term = term * (at - xj) * pow(xi - xj, P - 2, P) % P
        predicted = (predicted + term) % P
    return (shares[degree + 1].tag[coordinate] - predicted) % P


def test_t_minus_1_real_shares_are_uniform_like_synthetic_ones() -> None:
    """Chi-square (deterministic seed) over many windows of t-1 = 3 real shares, against the
    same statistics of synthetic shares: x, y and tag values, and the residual that exposes a
    degree-(t-2) relation among the tags. The control (t real shares) shows the residual test
    can fail."""
    t, d, windows = 4, 2, 1600
    rng = rng_of("uniformity")
    real_stats: dict[str, list[int]] = {"x": [], "y": [], "tag": [], "residual": []}
    synthetic_stats: dict[str, list[int]] = {"x": [], "y": [], "tag": [], "residual": []}
    control: list[int] = []
    for w in range(windows):
        window = dealer(("uniformity", w), t, d)
        real = real_shares(window, t, rng)
        synthetic = [synthetic_share(rng, d) for _ in range(t - 1)]
        for stats, shares in ((real_stats, real[: t - 1]), (synthetic_stats, synthetic)):
            stats["x"] += [s.x for s in shares]
            stats["y"] += [s.y for s in shares]
            stats["tag"] += [v for s in shares for v in s.tag]
            stats["residual"].append(_residual(shares, t - 3, w % d))
        control.append(_residual(real, t - 2, w % d))
    for stats in (real_stats, synthetic_stats):
        for name, values in stats.items():
            assert _chi_square(values) < _CHI2_15_DOF_P001, name
    assert _chi_square(control) > 10 * _CHI2_15_DOF_P001
    assert set(control) == {0}


# --- encoding --------------------------------------------------------------------------------


def test_known_answers() -> None:
    for case in KAT["cases"]:
        t, d = case["threshold"], case["dimension"]
        window = WindowDealer(bytes.fromhex(case["seed"]), t, d)
        assert window.window_key().hex() == case["window_key"], case["label"]
        for encoded in case["shares"]:
            share = ShareEnvelope.from_bytes(bytes.fromhex(encoded), d)
            assert window.share(share.x).to_bytes().hex() == encoded, case["label"]


def test_share_encoding_round_trips_at_its_fixed_size() -> None:
    share = synthetic_share(rng_of("encode"), 32)
    encoded = share.to_bytes()
    assert len(encoded) == ShareEnvelope.encoded_len(32) == 16 * (2 + 32)
    assert ShareEnvelope.from_bytes(encoded, 32) == share
    assert "values hidden" in repr(share)
    assert str(share.y) not in repr(share)


def test_share_decoding_errors_are_typed() -> None:
    good = synthetic_share(rng_of("decode"), 3).to_bytes()
    with pytest.raises(TruncatedError):
        ShareEnvelope.from_bytes(good[:-1], 3)
    with pytest.raises(TruncatedError):
        ShareEnvelope.from_bytes(b"", 3)
    with pytest.raises(DecodeError):
        ShareEnvelope.from_bytes(good + b"\x00", 3)
    with pytest.raises(DecodeError):
        ShareEnvelope.from_bytes("text", 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidShareError):
        ShareEnvelope.from_bytes(bytes(FIELD_ELEMENT_LEN) + good[FIELD_ELEMENT_LEN:], 3)
    p_bytes = P.to_bytes(FIELD_ELEMENT_LEN, "big")
    for position in range(5):
        start = position * FIELD_ELEMENT_LEN
        with pytest.raises(InvalidShareError):
            ShareEnvelope.from_bytes(good[:start] + p_bytes + good[start + 16 :], 3)
    with pytest.raises(ThresholdParameterError):
        ShareEnvelope.from_bytes(good, 0)
    with pytest.raises(ThresholdParameterError):
        ShareEnvelope.from_bytes(good, MAX_TAG_DIMENSION + 1)


def test_a_share_holds_only_field_elements() -> None:
    for x, y, tag in [
        (0, 1, (1,)),
        (P, 1, (1,)),
        (1, P, (1,)),
        (1, -1, (1,)),
        (1, 1, (P,)),
        (1, 1, ()),
        (1, 1, [1]),
        (True, 1, (1,)),
    ]:
        with pytest.raises(InvalidShareError):
            ShareEnvelope(x, y, tag)  # type: ignore[arg-type]
    assert ShareEnvelope(P - 1, P - 1, (0, P - 1)).to_bytes()[:16] == (P - 1).to_bytes(16, "big")


def test_share_x_is_drawn_from_the_nonzero_elements() -> None:
    assert draw_share_x(lambda n: bytes(n)) == 1
    assert 0 < draw_share_x(lambda n: b"\xff" * n) < P
    assert draw_share_x(lambda n: (P - 2).to_bytes(n, "big")) == P - 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.integers(min_value=1, max_value=6))
def test_decoding_arbitrary_bytes_gives_a_share_or_a_typed_error(data: bytes, d: int) -> None:
    try:
        share = ShareEnvelope.from_bytes(data, d)
    except (DecodeError, ThresholdParameterError):
        return
    assert share.to_bytes() == data
    assert 0 < share.x < P and share.y < P and all(v < P for v in share.tag)


def test_parameters_and_inputs_are_checked() -> None:
    seed = bytes(32)
    with pytest.raises(InvalidKeyError):
        WindowDealer(seed[:31], 3, 2)
    for t, d in [(1, 2), (MAX_THRESHOLD + 1, 2), (3, 0), (3, MAX_TAG_DIMENSION + 1), (True, 2)]:
        with pytest.raises(ThresholdParameterError):
            WindowDealer(seed, t, d)
    window = WindowDealer(seed, 3, 2)
    assert "seed hidden" in repr(window)
    for x in (0, P, -1, True):
        with pytest.raises(InvalidShareError):
            window.share(x)
    with pytest.raises(ThresholdParameterError):
        find_real_shares([window.share(1), window.share(2), window.share(3)], 3, 3)
    with pytest.raises(ThresholdParameterError):
        recover_window_key([window.share(1)], 1)


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(),
    t=st.integers(min_value=2, max_value=7),
    d=st.integers(min_value=1, max_value=8),
    real=st.integers(min_value=0, max_value=12),
    synthetic_fraction=st.floats(min_value=0, max_value=1),
)
def test_detection_finds_exactly_the_real_shares_iff_at_least_t(
    seed: int, t: int, d: int, real: int, synthetic_fraction: float
) -> None:
    synthetic = round(synthetic_fraction * d)  # s <= D
    window, shares, expected = mixed(("property", seed), t, d, real, synthetic)
    found = find_real_shares(shares, t, d)
    assert found == (expected if real >= t else [])
    if found:
        assert recover_window_key([shares[i] for i in found], t) == window.window_key()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(), t=st.integers(min_value=2, max_value=8), data=st.data())
def test_any_t_real_shares_recover_the_same_key(seed: int, t: int, data: st.DataObject) -> None:
    window = dealer(("any", seed), t, 2)
    shares = real_shares(window, t + 4, rng_of(("any", seed)))
    subset = data.draw(st.permutations(shares)).copy()[: data.draw(st.integers(t, t + 4))]
    assert recover_window_key(subset, t) == window.window_key()


def _rank(rows: list[list[int]]) -> int:
    """Rank mod p by plain Gaussian elimination (a reference, written independently)."""
    work = [list(r) for r in rows]
    rank = 0
    for col in range(len(work[0]) if work else 0):
        pivot = next((i for i in range(rank, len(work)) if work[i][col] % P), None)
        if pivot is None:
            continue
        work[rank], work[pivot] = work[pivot], work[rank]
        inverse = pow(work[rank][col], P - 2, P)
        for i in range(len(work)):
            if i != rank and work[i][col] % P:
                f = work[i][col] * inverse % P
                work[i] = [(a - f * b) % P for a, b in zip(work[i], work[rank], strict=True)]
        rank += 1
    return rank


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=9),
    m=st.integers(min_value=1, max_value=7),
    small=st.booleans(),
    data=st.data(),
)
def test_dependent_rows_are_the_rows_in_the_span_of_the_others(
    n: int, m: int, small: bool, data: st.DataObject
) -> None:
    """Against the definition: row i is flagged iff removing it does not lower the rank."""
    top = 3 if small else P - 1
    rows: list[list[int]] = []
    for _ in range(n):
        combine = bool(rows) and data.draw(st.booleans())
        if combine:  # a combination of earlier rows, or a copy of one
            picks = data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=3))
            weights = [data.draw(st.integers(0, top)) for _ in picks]
            rows.append(
                [
                    sum(w * rows[k][c] for k, w in zip(picks, weights, strict=True)) % P
                    for c in range(m)
                ]
            )
        else:
            rows.append([data.draw(st.integers(0, top)) for _ in range(m)])
    full = _rank(rows)
    expected = {i for i in range(n) if _rank(rows[:i] + rows[i + 1 :]) == full}
    assert dependent_rows(rows) == expected


# --- the innocent-crossing probability -------------------------------------------------------


def _direct_tail(rate: Fraction, n: int, t: int) -> Fraction:
    """The exact tail in rational arithmetic (1 minus the t lower terms: exact, so no
    cancellation)."""
    lower = sum(
        (Fraction(math.comb(n, k)) * rate**k * (1 - rate) ** (n - k) for k in range(t)),
        Fraction(0),
    )
    return 1 - lower


@pytest.mark.parametrize(
    ("rate", "n", "t"),
    [
        ("1/10000", 1000, 1),
        ("1/10000", 1000, 3),
        ("1/10000", 2000, 10),
        ("1/1000", 500, 2),
        ("1/3", 60, 5),
        ("1/3", 60, 20),
        ("1/3", 60, 40),
        ("1/2", 101, 51),
        ("9/10", 50, 48),
    ],
)
def test_crossing_probability_matches_the_direct_sum(rate: str, n: int, t: int) -> None:
    exact = float(_direct_tail(Fraction(rate), n, t))
    computed = innocent_crossing_probability(float(Fraction(rate)), n, t)
    assert computed == pytest.approx(exact, rel=1e-9)


def test_crossing_probability_edges_and_tiny_values() -> None:
    assert innocent_crossing_probability(0.0, 10_000, 1) == 0.0
    assert innocent_crossing_probability(1.0, 10_000, 10_000) == 1.0
    assert innocent_crossing_probability(0.5, 9, 10) == 0.0
    # Far below 1e-16, where 1 - CDF would be 0: against the first term's closed form.
    tiny = innocent_crossing_probability(1e-6, 10_000, 30)
    first = math.comb(10_000, 30) * 1e-6**30 * (1 - 1e-6) ** (10_000 - 30)
    assert tiny == pytest.approx(first, rel=1e-3)
    assert 0.0 < tiny < 1e-90
    for args in [(-0.1, 10, 1), (1.1, 10, 1), (0.1, -1, 1), (0.1, 10, 0), (0.1, 10.0, 1)]:
        with pytest.raises(ThresholdParameterError):
            innocent_crossing_probability(*args)  # type: ignore[arg-type]
