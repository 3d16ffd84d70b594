"""`smartlogs data fetch` against a local stand-in for loghub's server (real HTTP, no internet)."""

import functools
import http.server
import threading

import pytest

from smartlogs.cli.datasets import DATASETS, FetchError, fetch_dataset


@pytest.fixture
def upstream(tmp_path, loghub):
    """Serve files laid out like loghub's repository (BGL as the full 2k file's first lines + junk)."""
    root = tmp_path / "upstream"
    for name in ("Linux", "BGL"):
        (root / name).mkdir(parents=True)
    for f in DATASETS["Linux"]:
        (root / "Linux" / f.upstream).write_bytes((loghub / "Linux" / f.name).read_bytes())
    bgl = (loghub / "BGL" / "BGL_2k_first1000.log").read_bytes()
    (root / "BGL" / "BGL_2k.log").write_bytes(bgl + b"- 1 extra line beyond the first thousand\n")
    csv = (loghub / "BGL" / "BGL_2k_first1000.log_structured.csv").read_bytes()
    (root / "BGL" / "BGL_2k.log_structured.csv").write_bytes(csv + b"1001,-,extra\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_verifies_and_cuts_bgl(tmp_path, upstream):
    _, url = upstream
    paths = fetch_dataset("Linux", tmp_path / "out", base_url=url)
    assert [p.name for p in paths] == [f.name for f in DATASETS["Linux"]]
    bgl = fetch_dataset("BGL", tmp_path / "out", base_url=url)
    assert bgl[0].read_bytes().count(b"\n") == 1000


def test_fetch_refuses_a_changed_file(tmp_path, upstream):
    root, url = upstream
    (root / "Linux" / "Linux_2k.log").write_bytes(b"tampered\n")
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_dataset("Linux", tmp_path / "out", base_url=url)
    assert not (tmp_path / "out" / "Linux" / "Linux_2k.log").exists()


def test_fetch_reports_http_errors(tmp_path, upstream):
    _, url = upstream
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_dataset("HDFS", tmp_path / "out", base_url=url)


def test_missing_samples_say_what_to_set(tmp_path, monkeypatch):
    """A clone outside the project folder has no ../shared: the benchmarks said nothing but a
    FileNotFoundError traceback; now they say where they looked and what to set."""
    import subprocess
    import sys
    from pathlib import Path

    from smartlogs.cli.datasets import LoghubNotFound, require_loghub_dir

    monkeypatch.setenv("SMARTLOGS_LOGHUB_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(LoghubNotFound) as e:
        require_loghub_dir("Linux")
    assert "SMARTLOGS_LOGHUB_DIR" in str(e.value) and "smartlogs data fetch -d Linux" in str(e.value)
    assert "needs internet" in str(e.value)
    repo = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(repo / "bench" / "bench_embedded.py"), "--lines", "10"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**__import__("os").environ, "SMARTLOGS_LOGHUB_DIR": str(tmp_path / "nowhere")})
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "set SMARTLOGS_LOGHUB_DIR" in r.stderr, r.stderr


def test_the_tests_find_the_samples_where_smartlogs_data_fetch_put_them(tmp_path, monkeypatch):
    """A newcomer's fresh clone: `smartlogs data fetch` fills data/loghub, and `make test` then
    looked only in $SMARTLOGS_LOGHUB_DIR or ../shared/data/loghub ("loghub samples not found").
    The tests look where the CLI and the benchmarks look (``default_loghub_dir``)."""
    from tests.conftest import loghub_path

    fetched = tmp_path / "data" / "loghub" / "Linux"
    fetched.mkdir(parents=True)
    (fetched / "Linux_2k.log").write_text("Jun 14 15:16:01 combo sshd[1]: a line\n")
    monkeypatch.delenv("SMARTLOGS_LOGHUB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert loghub_path() == (tmp_path / "data" / "loghub").resolve()
    monkeypatch.setenv("SMARTLOGS_LOGHUB_DIR", str(tmp_path / "elsewhere"))
    assert loghub_path() == (tmp_path / "elsewhere").resolve()
