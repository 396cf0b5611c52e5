"""The data inventory covers the whole database: every table is in a category or named as not
producible (with its reason), every field a category names exists, retention follows the
node's configuration, and the CLI prints it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tidings.cli import cli
from tidings.safety.inventory import (
    NEVER_HELD,
    NOT_PRODUCIBLE,
    LegalProcess,
    RetentionSettings,
    inventory,
)
from tidings.server.config import ServerConfig
from tidings.storage.schema import metadata

DEFAULTS = RetentionSettings.from_config(ServerConfig())


def test_every_table_is_in_a_category_or_named_not_producible() -> None:
    categorised = {t for c in inventory(DEFAULTS) for t in c.tables}
    tables = set(metadata.tables)
    assert categorised | set(NOT_PRODUCIBLE) == tables
    assert not categorised & set(NOT_PRODUCIBLE)
    assert all(why for why in NOT_PRODUCIBLE.values())


def test_every_field_named_exists_and_credentials_are_never_produced() -> None:
    for category in inventory(DEFAULTS):
        derived = {f for f, _ in category.derived}
        assert derived <= set(category.fields), category.key
        for name in category.fields + tuple(f for f, _ in category.excluded):
            table, column = name.split(".")
            assert table in category.tables, name
            assert column == "*" or column in metadata.tables[table].columns or (
                name in derived and column not in metadata.tables[table].columns
            ), name
        assert not set(category.fields) & {f for f, _ in category.excluded}, category.key
        assert not any("credential" in f or "password" in f or "secret" in f
                       for f in category.fields), category.key
    keys = [c.key for c in inventory(DEFAULTS)]
    assert len(keys) == len(set(keys))


def test_content_and_keys_are_listed_as_never_held() -> None:
    never = " ".join(n.what.lower() for n in NEVER_HELD)
    for what in ("message content", "keys", "group memberships", "ip addresses"):
        assert what in never
    processes = {c.key: c.process for c in inventory(DEFAULTS)}
    assert processes["subscriber"] is LegalProcess.SUBPOENA
    assert processes["reports"] is LegalProcess.SEARCH_WARRANT


def test_retention_follows_the_configuration() -> None:
    short = RetentionSettings.from_config(
        ServerConfig(message_ttl_s=7 * 86_400, attachment_ttl_s=86_400)
    )
    by_key = {c.key: c for c in inventory(short)}
    assert "7 days" in by_key["queued_envelopes"].retention
    assert by_key["attachments"].retention.startswith("1 day")


def test_the_cli_prints_the_inventory() -> None:
    result = CliRunner().invoke(
        cli, ["admin", "inventory", "--json"], env={"TIDINGS_MESSAGE_TTL_S": "172800"}
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [c["key"] for c in data["categories"]] == [c.key for c in inventory(DEFAULTS)]
    assert any("2 days" in c["retention"] for c in data["categories"])
    assert {n["what"] for n in data["never_held"]} == {n.what for n in NEVER_HELD}
    text = CliRunner().invoke(cli, ["admin", "inventory"]).stdout
    assert "Subscriber records" in text and "never held" in text.lower()


def test_the_operations_guide_lists_every_category_and_what_is_never_held() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text[text.index("## Data inventory"):]
    for c in inventory(DEFAULTS):
        assert f"| {c.title} (`{c.key}`) | {c.description} |" in section, c.key
    for n in NEVER_HELD:
        assert f"**{n.what}.** {n.why}" in section, n.what
