"""Helpers shared by several test packages: device kits and registration
(`tests.support.devices`), a real server on a free port (`tests.support.live`), and the
external services' addresses and skip-or-fail rule (`tests.support.services`).

Only helpers used from more than one test package live here; a package's own fixtures stay
in its conftest."""
