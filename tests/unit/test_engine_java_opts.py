"""scripts/engines: the JVM flags Elasticsearch is started with (SMARTLOGS_ES_JAVA_OPTS)."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def es_java_opts(**env: str) -> str:
    script = f'source "{REPO}/scripts/engines/common.sh"; es_java_opts'
    base = {k: v for k, v in os.environ.items() if not k.startswith("SMARTLOGS_ES_")}
    return subprocess.run(["bash", "-c", script], env={**base, **env}, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_the_heap_alone_by_default():
    assert es_java_opts() == "-Xms512m -Xmx512m"
    assert es_java_opts(SMARTLOGS_ES_HEAP="1g") == "-Xms1g -Xmx1g"


def test_more_flags_follow_the_heap():
    assert es_java_opts(SMARTLOGS_ES_JAVA_OPTS="-XX:-UseCodeCacheFlushing -XX:+AlwaysPreTouch") == (
        "-Xms512m -Xmx512m -XX:-UseCodeCacheFlushing -XX:+AlwaysPreTouch")
