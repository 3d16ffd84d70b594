"""``smartlogs data fetch``: download the loghub samples with checksum verification.

The files come from loghub's public repository (https://github.com/logpai/loghub); the
SHA-256 of each is pinned below, so a changed or corrupted download is refused. The BGL
sample used here is the first 1,000 lines of loghub's ``BGL_2k.log``: it is cut from the
download and the cut is verified.

License: loghub's datasets are freely available for research or academic work; see
https://github.com/logpai/loghub and cite Zhu et al., "Loghub", ISSRE 2023.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["DATASETS", "DEFAULT_BASE_URL", "FetchError", "LoghubNotFound", "default_loghub_dir",
           "require_loghub_dir", "fetch_dataset"]

FETCH_DIR = Path("data/loghub")  # where `smartlogs data fetch` puts the samples by default


def default_loghub_dir() -> Path:
    """Where the loghub samples are: $SMARTLOGS_LOGHUB_DIR, else ``data/loghub`` (what
    ``smartlogs data fetch`` fills; in the working directory, then in the checkout), else a
    ``../shared/data/loghub`` (from the working directory, then next to the checkout: the
    machines this was built on), else ``data/loghub``."""
    env = os.environ.get("SMARTLOGS_LOGHUB_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]  # the checkout, when run from one
    for candidate in (FETCH_DIR, repo / FETCH_DIR, Path("../shared/data/loghub"),
                      repo.parent / "shared" / "data" / "loghub"):
        if candidate.is_dir():
            return candidate
    return FETCH_DIR

class LoghubNotFound(Exception):
    """The loghub samples are not where the tools look; the message says what to do."""


def require_loghub_dir(*datasets: str) -> Path:
    """``default_loghub_dir()`` when it holds ``<name>/<name>_2k.log`` for each of ``datasets``;
    else ``LoghubNotFound`` saying where it looked and what to set (a clone outside the
    project folder has no ``../shared``)."""
    root = default_loghub_dir()
    missing = [n for n in datasets if not (root / n / f"{n}_2k.log").is_file()]
    if missing:
        looked = ("$SMARTLOGS_LOGHUB_DIR" if os.environ.get("SMARTLOGS_LOGHUB_DIR") else
                  "data/loghub, then ../shared/data/loghub")
        raise LoghubNotFound(
            f"loghub samples not found ({', '.join(missing)}; looked in {looked}, got {root}): "
            "set SMARTLOGS_LOGHUB_DIR to the folder that holds Linux/Linux_2k.log, or run "
            f"`smartlogs data fetch -d {missing[0]}` (downloads them from GitHub: needs internet)")
    return root



def loghub_dir_or_exit(*datasets: str) -> Path:
    """``require_loghub_dir`` for a script: its message and exit status 1 when the samples
    are missing (the benchmarks)."""
    try:
        return require_loghub_dir(*datasets)
    except LoghubNotFound as exc:
        raise SystemExit(f"error: {exc}") from None


DEFAULT_BASE_URL = "https://raw.githubusercontent.com/logpai/loghub/master"


@dataclass(frozen=True)
class DataFile:
    name: str          # file name as stored locally
    sha256: str
    upstream: str      # file name in loghub's repository
    first_lines: int | None = None  # keep only the first N lines (+ CSV header)


def _std(ds: str, log: str, structured: str, templates: str | None = None) -> tuple[DataFile, ...]:
    files = [DataFile(f"{ds}_2k.log", log, f"{ds}_2k.log"),
             DataFile(f"{ds}_2k.log_structured.csv", structured, f"{ds}_2k.log_structured.csv")]
    if templates:
        files.append(DataFile(f"{ds}_2k.log_templates.csv", templates, f"{ds}_2k.log_templates.csv"))
    return tuple(files)


DATASETS: dict[str, tuple[DataFile, ...]] = {
    "Linux": _std("Linux", "b3e20bc1afe732ab1bf3ed1de4bf9c809e4194e02f7dea911d918e5342e8e173",
                  "7c86d7b0ecb961a25f00d9475a154df97613b9974f31ce142a146caa2017c71e",
                  "60ed088e0aa899a467c66863c30e2ae460d7bc1def1a65bff70ec47a668df0f7"),
    "OpenSSH": _std("OpenSSH", "1e4912727fa88245113d41b16a0cd25ceadba7f931e1c406542885b91254264f",
                    "c0996a11545f4b94b435993760afa441a9e373f7bfc9e787afdb8e62f65acb4f",
                    "c23fb1bb925abd0ca2b110e661f5f0a1e0f66e4783e61a502ef3486a2d84b2c7"),
    "Apache": _std("Apache", "c7efa3eb686e3a96bd2f8f4457b2a7887e9cf2f3649327f1b4e87af841363ce8",
                   "54331d12eedf513f2127f4d89f0284c8b15fddfa5471103abf9db2c73d737778",
                   "64e4bf77bb87e6762e59df8ea7eef95ee4dd9be7f29702c767dff88ec951d11f"),
    "HDFS": _std("HDFS", "7c967000980c086ed55fa6544ba4f05fe66d44622795e890c68caf8bbb635035",
                 "729df59774e3dde934044028546d2a55d5e3d4370b9d12fcebbe4c087b2bf7b4",
                 "a07307511f67c9dc1f41ae730ae60dcce8360f2c72742f0b8a3a9cf1a403d1db"),
    "Zookeeper": _std("Zookeeper", "e40e0af5ef9eb6e4097200f260b9d1f626b3676f861a432e87977242e75543d8",
                      "e4a450c67595828103cfab049d971f54eee778fdded061222ba6581bed2a210a",
                      "c872fa4736247b62a2327742461e6bcbdeae9ccc36977a5c6c5c889d47d537fd"),
    "BGL": (
        DataFile("BGL_2k_first1000.log",
                 "9f53a813ee0c379a92168013da3a67e00c5fa22b138b4b72b641982647a82178",
                 "BGL_2k.log", first_lines=1000),
        DataFile("BGL_2k_first1000.log_structured.csv",
                 "d479bf7c8bee97dd62509af0ec424ead04de2c5ec9ad5d5b4b85b71ca5be1b04",
                 "BGL_2k.log_structured.csv", first_lines=1001),
    ),
}


class FetchError(Exception):
    pass


def _first_lines(data: bytes, n: int) -> bytes:
    lines = data.split(b"\n")
    return b"".join(line + b"\n" for line in lines[:n])


def fetch_dataset(
    name: str,
    dest: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    client: httpx.Client | None = None,
    on_progress: Callable[[str, int, int | None], None] | None = None,
) -> list[Path]:
    """Download one dataset into ``dest/name/``; verify every file; return the paths.

    A file already present with the right checksum is not downloaded again.
    """
    files = DATASETS[name]
    folder = dest / name  # made only once a verified file is saved: a failure leaves nothing
    own = client is None
    client = client or httpx.Client(timeout=60, follow_redirects=True)
    out = []
    try:
        for f in files:
            target = folder / f.name
            if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == f.sha256:
                out.append(target)
                continue
            url = f"{base_url.rstrip('/')}/{name}/{f.upstream}"
            chunks, done = [], 0
            try:
                with client.stream("GET", url) as resp:
                    if resp.status_code != 200:
                        raise FetchError(f"{url}: HTTP {resp.status_code}")
                    total = int(resp.headers.get("content-length", 0)) or None
                    for chunk in resp.iter_bytes():
                        chunks.append(chunk)
                        done += len(chunk)
                        if on_progress:
                            on_progress(f.name, done, total)
            except httpx.HTTPError as exc:
                raise FetchError(f"{url}: {exc}") from exc
            data = b"".join(chunks)
            if f.first_lines:
                data = _first_lines(data, f.first_lines)
            digest = hashlib.sha256(data).hexdigest()
            if digest != f.sha256:
                raise FetchError(f"{f.name}: checksum mismatch (got {digest}, expected {f.sha256}); "
                                 "the file was not saved")
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(data)
            tmp.replace(target)
            out.append(target)
    finally:
        if own:
            client.close()
    return out
