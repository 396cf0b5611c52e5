"""The case page of a detection case: the matched images through the evidence vault (blurred
by default, every opening audited under the reviewer), with each image's bank, entry,
distance and sources; closed to staff without the child-safety clearance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.console.conftest import T_NOW, Seeded, login, make_client, png, seed
from tests.console.test_console_http import actions
from tidings.safety.audit import AuditAction
from tidings.safety.detection import DETECTION_IMAGE_KIND
from tidings.safety.detection_model import DetectionMatch, InMemoryDetectionRepository, MatchedEntry


@pytest.fixture
def detected() -> Iterator[tuple[Seeded, str]]:
    s = seed(T_NOW)
    world = s.world
    repo = InMemoryDetectionRepository(world.evidence_repo)
    case_id = world.cases.attach_detection("mule", now_ms=T_NOW)
    for i in range(2):
        evidence = world.vault.seal(
            evidence_id=f"ev_det{i}",
            report_id=f"dm_{i}",
            kind=DETECTION_IMAGE_KIND,
            plaintext=png(rgb=(10 * i, 40, 90)),
            child_safety=True,
            now_ms=T_NOW,
        )
        match = DetectionMatch(
            match_id=f"dm_{i}",
            case_id=case_id,
            opened_id=f"opn_{i}",
            account="mule",
            device_id=1,
            evidence_id=evidence.evidence_id,
            attachment_id="A" * 43,
            content_type="image/png",
            message_id=bytes(16),
            device_pdq=bytes(32),
            server_pdq=bytes(32),
            distance=7 + i,
            entries=(
                MatchedEntry("cse-hotline", f"be_{i}", 7 + i, (("NCMEC", "US"), ("IWF", "GB"))),
            ),
            matched_ms=T_NOW,
        )
        repo.store_match(match, evidence)
    s.context = replace(s.context, detection_matches=repo.matches_for_case)
    yield s, case_id


def test_a_detection_case_shows_its_images_blurred_with_their_sources(
    detected: tuple[Seeded, str],
) -> None:
    s, case_id = detected
    with make_client(s) as client:
        login(client, s, "cleo")
        r = client.get(f"/console/cases/{case_id}")
    assert r.status_code == 200, r.text
    assert "On-device detection: 2 matched images" in r.text
    assert "cse-hotline" in r.text and "NCMEC (US), IWF (GB)" in r.text
    assert "<code>be_0</code>" in r.text and "distance 8" in r.text
    assert r.text.count('class="media blur grey"') == 2
    assert r.text.count("data:image/png;base64,") == 2
    views = actions(s, AuditAction.EVIDENCE_VIEW, s.staff["cleo"].staff_id)
    assert sorted(e.target for e in views) == ["evidence:ev_det0", "evidence:ev_det1"]  # type: ignore[attr-defined]


def test_staff_without_the_clearance_never_see_a_detection_case(
    detected: tuple[Seeded, str],
) -> None:
    s, case_id = detected
    with make_client(s) as client:
        login(client, s, "rita")
        r = client.get(f"/console/cases/{case_id}")
    assert r.status_code == 403
    assert not actions(s, AuditAction.EVIDENCE_VIEW, s.staff["rita"].staff_id)
