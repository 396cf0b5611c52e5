"""The data inventory page: legal and admin see every category, what is never held and the
tables no request is answered from; each view is audited under them; reviewers are refused."""

from __future__ import annotations

from dataclasses import replace
from html import escape

from tests.console.conftest import Seeded, login, make_client
from tests.console.test_console_http import actions
from tidings.safety.audit import AuditAction
from tidings.safety.inventory import NEVER_HELD, NOT_PRODUCIBLE, RetentionSettings, inventory


def test_legal_sees_the_inventory_with_the_nodes_retention(seeded: Seeded) -> None:
    seeded.context = replace(
        seeded.context, retention=RetentionSettings(message_ttl_s=86_400 * 7, attachment_ttl_s=1)
    )
    with make_client(seeded) as client:
        login(client, seeded, "lena")
        home = client.get("/console/preferences")
        assert 'href="/console/inventory"' in home.text
        r = client.get("/console/inventory")
    assert r.status_code == 200, r.text
    for category in inventory(seeded.context.retention):
        assert f'id="category-{category.key}"' in r.text and escape(category.title) in r.text
    assert "at most 7 days" in r.text
    assert all(escape(n.what) in r.text for n in NEVER_HELD)
    assert all(f"<code>{t}</code>" in r.text for t in NOT_PRODUCIBLE)
    assert "credential_hash" in r.text  # named as never produced
    views = actions(seeded, AuditAction.INVENTORY_VIEW, seeded.staff["lena"].staff_id)
    assert len(views) == 1


def test_without_configuration_the_page_names_the_settings(seeded: Seeded) -> None:
    with make_client(seeded) as client:
        login(client, seeded, "root")
        r = client.get("/console/inventory")
    assert r.status_code == 200 and "the node&#39;s message_ttl_s" in r.text


def test_reviewers_are_refused(seeded: Seeded) -> None:
    with make_client(seeded) as client:
        login(client, seeded, "rita")
        assert 'href="/console/inventory"' not in client.get("/console/preferences").text
        r = client.get("/console/inventory")
    assert r.status_code == 403
    assert actions(seeded, AuditAction.INVENTORY_VIEW) == []
