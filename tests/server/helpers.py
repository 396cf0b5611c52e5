"""Kept for tests/safety/test_http_api.py, which still imports from here; the helpers live
in `tests.support.devices`. Import from there."""

from tests.support.devices import NOW_MS, DeviceKit, basic_auth, outgoing, ratchet_body

__all__ = ["NOW_MS", "DeviceKit", "basic_auth", "outgoing", "ratchet_body"]
