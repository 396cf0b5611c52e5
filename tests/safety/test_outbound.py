"""The loopback rule of the safety side's plain-text outbound schemes (CyberTipline over
``http``, SMTP over ``smtp+insecure``)."""

from __future__ import annotations

import pytest

from tidings.safety.outbound import is_loopback_host


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["", "example.org", "localhost.example.org", "10.0.0.1", "::2", "0.0.0.0", "LOCALHOST"]
)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)
