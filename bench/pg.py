"""Benchmark database backups (issue 6): capture, restore and verify of a 1 GB database.

Run it from the repository root::

    python bench/pg.py            # about 1 GB of table data
    python bench/pg.py --quick    # about 100 MB: a smoke run

It starts a fresh dokuend with its managed PostgreSQL in a temporary directory, makes an
app's database with ``pg:create``, fills one table (an integer key, two md5 texts and a
timestamp per row, with its primary key index) until the database is the asked size, then
times, each through dokuenctl:

1. ``backups:capture`` (pg_dump -Fc in an exported snapshot, the row counts of that
   snapshot, the SHA-256, the copy into a file:// target), beside a bare ``pg_dump -Fc`` of
   the same database as the yardstick;
2. ``backups:restore`` of that backup into the same database (one transaction, the index
   rebuilt);
3. ``backups:verify`` (checksum, pg_restore --list, a restore into a scratch database,
   row counts, drop), and its overhead: verify time / capture time.

Results go to ``bench/results/pg.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from harness import ROOT, BenchError, Dokuend

from dokuen.data.postgres import find_bindir

RESULTS = ROOT / "bench" / "results" / "pg.json"
BATCH_ROWS = 250_000  # about 35 MB


def fill(url: str, target: int) -> tuple[int, int]:
    """Rows until the database holds ``target`` bytes; returns (rows, bytes)."""
    rows = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, a text, b text, at timestamptz)")
        size = 0
        while size < target:
            conn.execute(
                "INSERT INTO events SELECT g, md5(g::text), md5((g * 7)::text), "
                "now() - g * interval '1 second' FROM generate_series(%s::bigint, %s) g",
                [rows + 1, rows + BATCH_ROWS],
            )
            rows += BATCH_ROWS
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            size = int(row[0]) if row else 0
            print(f"  {rows:>10,} rows, {size / 1e6:,.0f} MB", flush=True)
        conn.execute("VACUUM ANALYZE events")
    return rows, size


def bare_pg_dump(top: Path, url: str) -> float:
    """A plain ``pg_dump -Fc`` to a file: the floor a capture stands on."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    found = find_bindir(None)  # the programs dokuend uses
    if found is None:
        raise BenchError("no pg_dump")
    env = {
        "PATH": os.defpath,
        "PGHOST": str(info["host"]),
        "PGPORT": str(info["port"]),
        "PGUSER": str(info["user"]),
        "PGPASSWORD": str(info["password"]),
        "PGDATABASE": str(info["dbname"]),
    }
    target = top / "bare.dump"
    began = time.monotonic()
    subprocess.run(
        [str(found / "pg_dump"), "--format=custom", f"--file={target}"], env=env, check=True
    )
    seconds = time.monotonic() - began
    target.unlink()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="about 100 MB instead of 1 GB")
    args = parser.parse_args()
    target = 100_000_000 if args.quick else 1_000_000_000
    top = Path(tempfile.mkdtemp(prefix="dokuen-pg-bench-"))
    top.chmod(0o755)  # the managed cluster runs as the postgres user when we are root
    (top / "backups").mkdir()
    settings = {
        "DOKUEN_PORT_RANGE": "21200-21299",
        "DOKUEN_NGINX": "off",
        "DOKUEN_POSTGRES": "managed",
        "DOKUEN_POSTGRES_PORT": "25499",
        "DOKUEN_BACKUP_URL": f"file://{top / 'backups'}",
    }
    daemon = Dokuend(top / "home", settings)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "cores": os.cpu_count(),
    }
    try:
        daemon.start()
        daemon.ctl("apps:create", "bench")
        daemon.ctl("pg:create", "bench")
        url = daemon.ctl("config:get", "bench", "DATABASE_URL").stdout.strip()
        print(f"filling app bench's database to {target / 1e6:,.0f} MB")
        rows, size = fill(url, target)
        results.update(rows=rows, database_bytes=size)
        results["bare_pg_dump"] = round(bare_pg_dump(top, url), 2)
        results["capture"] = round(daemon.timed("backups:capture", "bench"), 2)
        (backup,) = json.loads(daemon.ctl("backups", "bench", "--json").stdout)
        results["dump_bytes"] = backup["size"]
        results["restore"] = round(
            daemon.timed("backups:restore", "bench", "--confirm", "bench"), 2
        )
        results["verify"] = round(daemon.timed("backups:verify", "bench"), 2)
        results["verify_over_capture"] = round(results["verify"] / results["capture"], 2)
        results["capture_over_bare_pg_dump"] = round(
            results["capture"] / results["bare_pg_dump"], 2
        )
    finally:
        daemon.stop()
        shutil.rmtree(top, ignore_errors=True)
    mb = results["database_bytes"] / 1e6
    print(
        f"database: {results['rows']:,} rows, {mb:,.0f} MB; "
        f"dump: {results['dump_bytes'] / 1e6:,.0f} MB"
    )
    print(f"  bare pg_dump -Fc          {results['bare_pg_dump']:7.2f} s")
    print(
        f"  backups:capture           {results['capture']:7.2f} s "
        f"({results['capture_over_bare_pg_dump']:.2f}x the bare pg_dump, "
        f"{mb / results['capture']:,.0f} MB/s)"
    )
    print(f"  backups:restore           {results['restore']:7.2f} s")
    print(
        f"  backups:verify            {results['verify']:7.2f} s "
        f"(verify overhead: {results['verify_over_capture']:.2f}x the capture)"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
