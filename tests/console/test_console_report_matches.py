"""The case page of a report whose attachment matched a hash-bank entry in the clear: the
match (bank, entry, signal, distance, sources) is shown on the report, the case is in the
child-safety queue (closed to staff without the clearance) and the reported image is still
blurred by default, opened through the vault under the reviewer."""

from __future__ import annotations

from tests.console.conftest import T_NOW, login, make_client, seed
from tests.console.test_console_http import actions
from tests.safety.conftest import direct_chat, submission
from tests.safety.test_detection import edited, pdq_hex
from tidings.safety.audit import AuditAction
from tidings.safety.bank_match import BankMatcher, bank_hash_source
from tidings.safety.categories import Category, QueueId
from tidings.safety.reports import AttachmentReveal


def test_a_matched_report_shows_the_match_on_the_case_page() -> None:
    s = seed(T_NOW)
    world, banks = s.world, s.context.banks
    assert banks is not None
    operator = world.admin
    banks.create_bank(operator, name="cse-hotline", category=Category.CHILD_SEXUAL_EXPLOITATION)
    banks.import_file(
        operator,
        "cse-hotline",
        f"pdq,{pdq_hex('astronaut')}\n".encode(),
        organisation="NCMEC",
        jurisdiction="US",
    )
    world.intake.matcher = BankMatcher(bank_hash_source(banks))
    chat = direct_chat(world.server, "mule", "bob")
    pointer, key = chat.upload(edited("astronaut"), content_type="image/jpeg")
    item = chat.send(("mule", 1), [("bob", 1)], "here", attachments=(pointer,)).to("bob", 1)
    case_id = world.submit(
        submission(("bob", 1), [item], category="spam", attachments=(AttachmentReveal(0, 0, key),))
    )
    case = world.case_repo.get_case(case_id)
    assert case is not None and case.queue_id == QueueId.CHILD_SAFETY.value
    (entry,) = world.report_repo.matches_for_report(
        world.report_repo.reports_for_case(case_id)[0].report_id
    )[0].entries

    with make_client(s) as client:
        login(client, s, "cleo")
        r = client.get(f"/console/cases/{case_id}")
        assert r.status_code == 200, r.text
        assert "1 reported attachment matched hash-bank entries" in r.text
        assert f"distance {entry.distance}" in r.text
        assert "cse-hotline" in r.text and f"<code>{entry.entry_id}</code>" in r.text
        assert "<td>pdq</td>" in r.text and "NCMEC (US)" in r.text
        assert r.text.count('class="media blur') == 1  # still blurred by default
        assert "data:image/jpeg;base64," in r.text
        views = actions(s, AuditAction.EVIDENCE_VIEW, s.staff["cleo"].staff_id)
        assert views  # the image was opened through the vault, audited under cleo

        login(client, s, "rita")  # no child-safety clearance
        assert client.get(f"/console/cases/{case_id}").status_code == 403
