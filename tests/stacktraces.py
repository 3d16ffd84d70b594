"""Real stack traces, made on the spot by a real JVM and a real Python (not typed-in samples)."""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
from pathlib import Path

from tests.ci import missing

JAVA = r"""
import java.util.logging.*;
public class Billing {
    static void charge(int attempt) { throw new IllegalStateException("gateway closed, attempt " + attempt); }
    static void run() {
        try { charge(3); }
        catch (IllegalStateException e) { throw new RuntimeException("invoice 42 failed", e); }
    }
    public static void main(String[] args) {
        System.setProperty("java.util.logging.SimpleFormatter.format",
                           "%1$tF %1$tT,%1$tL %4$s %3$s - %5$s%6$s%n");
        Logger log = Logger.getLogger("com.acme.Billing");
        log.info("billing run started");
        try { run(); } catch (RuntimeException e) { log.log(Level.SEVERE, "billing run crashed", e); }
        log.info("billing run retried");
    }
}
"""


def java_log(tmp_path: Path) -> str:
    """What java.util.logging writes for an exception with a cause: 3 events, one a trace."""
    java = shutil.which("java")
    if java is None:
        missing("java is not installed (Kafka and Elasticsearch need it too: make engines-up)")
    src = tmp_path / "Billing.java"
    src.write_text(JAVA)
    r = subprocess.run([java, str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stderr  # java.util.logging's ConsoleHandler writes to stderr


def python_log() -> str:
    """What the logging module writes for an exception raised while handling another."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))
    log = logging.getLogger("smartlogs.test.stacktrace")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("import started")
        try:
            {}["missing"]
        except KeyError:
            try:
                int("not a number")
            except ValueError:
                log.exception("import of batch 7 failed")
        log.info("import finished")
    finally:
        log.removeHandler(handler)
    return out.getvalue()
