"""Store-write cost of the embedded SQLite store, this checkout against another revision's.

    python bench/bench_store_write.py --against cd0b905 [--events 60000]

Writes the same synthetic events (Linux_2k.log messages, 2,000 per batch, as the runner does)
into a fresh store of each version, alternating twice, and prints CPU µs per event and the
files' size. Both run in this process at the same moment, so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _events(lines: list[str], n: int, off: int) -> list[dict]:
    return [{"id": f"e{off + i}", "ts": 1.7e9 + (off + i) * 0.01, "timestamp": "x",
             "received": 1.8e9 + (off + i) * 0.003, "source": "bench", "host": "h",
             "component": "sshd", "pid": "1", "level": None,
             "message": lines[(off + i) % len(lines)].split(": ", 1)[-1] + f" {off + i}",
             "raw": None, "template_id": f"T{i % 50}", "template": f"t {i % 50}", "params": [],
             "score": 0.1, "anomaly": i % 97 == 0, "reason": None, "warming_up": False,
             "parse_ok": True, "format": "syslog", "truncated": False, "fields": {}}
            for i in range(n)]


def main() -> None:
    from smartlogs.cli.datasets import default_loghub_dir
    from smartlogs.store.sqlite import SqliteStore

    ap = argparse.ArgumentParser()
    ap.add_argument("--against", required=True, help="git revision to compare with")
    ap.add_argument("--events", type=int, default=60_000)
    args = ap.parse_args()
    src = subprocess.run(["git", "show", f"{args.against}:smartlogs/store/sqlite.py"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    tmp = pathlib.Path(tempfile.mkdtemp())
    (tmp / "other_sqlite.py").write_text(src)
    spec = importlib.util.spec_from_file_location("other_sqlite", tmp / "other_sqlite.py")
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    lines = (default_loghub_dir() / "Linux" / "Linux_2k.log").read_text(errors="replace").splitlines()
    batches = [_events(lines, 2000, k) for k in range(0, args.events, 2000)]
    for name, cls in [(args.against, other.SqliteStore), ("this checkout", SqliteStore)] * 2:
        d = pathlib.Path(tempfile.mkdtemp())
        store = cls(d / "s.db")
        t0 = time.process_time()
        for b in batches:
            store.write([dict(e) for e in b], window_seconds=60)
        cpu = time.process_time() - t0
        size = sum(f.stat().st_size for f in d.iterdir())
        store.close()
        print(f"{name:>14}: {cpu / args.events * 1e6:5.1f} µs CPU/event, files {size / 1e6:.1f} MB "
              f"({args.events:,} events)")


if __name__ == "__main__":
    main()
