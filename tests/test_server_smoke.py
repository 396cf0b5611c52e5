"""The server node starts and answers health checks; configuration errors are typed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tidings.app import create_app
from tidings.cli import cli
from tidings.server.config import ConfigError, ServerConfig


def test_healthz_reports_versions(tmp_path: Path) -> None:
    client = TestClient(create_app(ServerConfig(data_dir=tmp_path / "data")))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "0.1.0", "protocol_version": 1}
    assert (tmp_path / "data").is_dir()


def test_config_file_and_environment_override_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n')
    config = ServerConfig.load(path, env={"TIDINGS_PORT": "9100"})
    assert (config.host, config.port) == ("0.0.0.0", 9100)


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("port = [", {}, "cannot read config file"),
        ("colour = 'red'", {}, "unknown setting 'colour'"),
        ("", {"TIDINGS_PORT": "eighty"}, "must be a number"),
    ],
)
def test_bad_configuration_is_a_typed_error(
    tmp_path: Path, text: str, env: dict[str, str], match: str
) -> None:
    path = tmp_path / "tidings.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        ServerConfig.load(path, env=env)


def test_cli_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["server", "--config", str(tmp_path / "missing.toml"), "--json"]
    )
    assert result.exit_code == 1
    assert '"code": "invalid_config"' in result.output


def test_cli_version_json() -> None:
    result = CliRunner().invoke(cli, ["version", "--json"])
    assert result.exit_code == 0
    assert '"protocol_version": 1' in result.output
