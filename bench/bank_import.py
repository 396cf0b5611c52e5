"""Hash-bank import and list reads on a real database: how long one file of N random PDQ
hashes takes to import (one transaction), to re-import unchanged (the incremental path: read
and compare only), to import from a second jurisdiction (every entry gains a source and
becomes device eligible), and to read the device list and the clear-text list back.

    .venv/bin/python bench/bank_import.py [--rows 100000] [--database-url URL] [--json]

Default database: a fresh SQLite file in a temporary directory. With ``--database-url`` for
PostgreSQL, a schema of its own is created and dropped. One run, wall-clock seconds; timing
never goes into the test suite.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path

from tidings.safety.audit import AuditLog
from tidings.safety.banks import BankService
from tidings.safety.sql import SafetyDatabase, SqlAuditRepository, SqlBankRepository
from tidings.safety.staff import Principal, Role, permissions_for

OPERATOR = Principal(
    "operator:bench",
    "operator",
    frozenset({Role.ADMIN}),
    permissions_for([Role.ADMIN], child_safety=False),
    frozenset(),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        schema = ""
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        if args.database_url:
            schema = f"bench_banks_{secrets.token_hex(4)}"
            admin = SafetyDatabase(url)
            with admin.write() as c:
                c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        db = SafetyDatabase(url, schema=schema)
        try:
            db.migrate()
            figures = run(db, args.rows)
        finally:
            db.dispose()
            if schema:
                with admin.write() as c:
                    c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                admin.dispose()
    figures["database"] = db.engine.dialect.name
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        print(f"{key:>28}: {value}")


def run(db: SafetyDatabase, rows: int) -> dict[str, object]:
    service = BankService(
        SqlBankRepository(db),
        AuditLog(SqlAuditRepository(db)),
        clock=lambda: time.time_ns() // 10**6,
    )
    operator = OPERATOR
    service.create_bank(operator, name="bench", category="child_sexual_exploitation")
    data = "".join(f"pdq,{secrets.token_hex(32)}\n" for _ in range(rows)).encode()

    def timed(label: str, call: object) -> tuple[str, float, object]:
        start = time.perf_counter()
        result = call()  # type: ignore[operator]
        return label, time.perf_counter() - start, result

    figures: dict[str, object] = {"rows": rows}
    steps = [
        timed(
            "import_s",
            lambda: service.import_file(
                operator, "bench", data, organisation="A", jurisdiction="US"
            ),
        ),
        timed(
            "reimport_unchanged_s",
            lambda: service.import_file(
                operator, "bench", data, organisation="A", jurisdiction="US"
            ),
        ),
        timed(
            "second_jurisdiction_s",
            lambda: service.import_file(
                operator, "bench", data, organisation="B", jurisdiction="GB"
            ),
        ),
        timed("device_list_read_s", service.device_list),
        timed("active_pdq_read_s", lambda: service.active_entries("pdq")),
    ]
    for label, seconds, _ in steps:
        figures[label] = round(seconds, 2)
    figures["import_rows_per_s"] = round(rows / steps[0][1])
    device = steps[3][2]
    figures["device_list_entries"] = len(device)  # type: ignore[arg-type]
    return figures


if __name__ == "__main__":
    main()
