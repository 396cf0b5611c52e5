"""Helpers shared by several test packages: device kits and registration
(`tests.support.devices`), a real server on a free port (`tests.support.live`), the app
in-process with the test's users and a node configuration (`tests.support.app`), active staff
(`tests.support.staff`), and the external services' addresses, the skip-or-fail rule and a
one-statement PostgreSQL runner (`tests.support.services`).

Only helpers used from more than one test package live here; a package's own fixtures stay
in its conftest."""
