"""Real engines for integration tests: RabbitMQ, Kafka and Elasticsearch on loopback.

Started once per session by the project's own scripts (scripts/engines/start.sh, which
succeeds at once if they already run). On a laptop without them the tests skip; with
CI=true an engine that cannot start FAILS the run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.ci import engine_unavailable

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "engines"


_unavailable = engine_unavailable  # the name tests/integration modules import


def _ensure(engine: str) -> None:
    if os.environ.get("SMARTLOGS_ENGINES_EXTERNAL"):  # engines managed elsewhere (compose, CI)
        return
    proc = subprocess.run([str(SCRIPTS / "start.sh"), engine], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        _unavailable(f"scripts/engines/start.sh {engine} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="session")
def engine_env() -> dict[str, str]:
    out = subprocess.run([str(SCRIPTS / "env.sh")], capture_output=True, text=True, check=True).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = v.strip("'\"")
    return env


@pytest.fixture(scope="session")
def rabbitmq(engine_env) -> str:
    _ensure("rabbitmq")
    return engine_env["SMARTLOGS_AMQP_URL"]


@pytest.fixture(scope="session")
def kafka(engine_env):
    """Kafka's bootstrap address; the topics this session creates are deleted at its end
    (left behind, a few hundred topics from earlier runs made the broker several times
    slower per record on this machine)."""
    _ensure("kafka")
    bootstrap = engine_env["SMARTLOGS_KAFKA_BOOTSTRAP"]
    before = _kafka_admin(bootstrap, _topics)
    yield bootstrap
    if before is not None:
        _kafka_delete_new_topics(bootstrap, before)


def _kafka_admin(bootstrap: str, action):
    """Run ``await action(admin)`` with a Kafka admin client; None (and a warning) if Kafka
    cannot be reached: the clean-up is a courtesy, never a test failure."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        await admin.start()
        try:
            return await action(admin)
        finally:
            await admin.close()

    try:
        return asyncio.run(run())
    except Exception as exc:  # noqa: BLE001
        print(f"warning: Kafka topic clean-up skipped: {exc}")
        return None


async def _topics(admin) -> set[str]:
    return set(await admin.list_topics())


def _kafka_delete_new_topics(bootstrap: str, before: set[str]) -> None:
    """Delete the topics new since this session began; a full stack's topics only when they
    carry a tag of this session's stacks (tests/integration/stack.py ``TAGS``): another
    session sharing the broker keeps the topics of the stack it is running (deleting them
    mid-test made its worker lose its partitions)."""
    from tests.integration.stack import TAGS, TOPIC_MARKS

    def ours(topic: str) -> bool:
        return any(tag in topic for tag in TAGS) or not any(m in topic for m in TOPIC_MARKS)

    async def delete(admin):
        new = sorted(t for t in await _topics(admin) - before if ours(t))
        for i in range(0, len(new), 50):
            await admin.delete_topics(new[i:i + 50])

    _kafka_admin(bootstrap, delete)


@pytest.fixture(scope="session")
def elasticsearch(engine_env) -> str:
    _ensure("elasticsearch")
    return engine_env["SMARTLOGS_ES_URL"]


@pytest.fixture
def stack(tmp_path, rabbitmq, kafka, elasticsearch):
    """`smartlogs api`, `bridge` and `worker` running on the real engines (tests/integration/stack.py)."""
    from tests.integration.stack import run_stack

    yield from run_stack(tmp_path, rabbitmq, kafka, elasticsearch)
