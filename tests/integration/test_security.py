"""Credentials and TLS against the real engines, and no secret in any log line or answer.

* RabbitMQ: a dedicated user made with ``rabbitmqctl`` (scripts/engines/rabbitmqctl.sh) publishes
  through the API's AMQP transport; a wrong password is a clear 503 / health answer / status
  line, never a leaked password. ``amqps://`` is tested through a TLS-terminating proxy in front
  of the real broker (RabbitMQ itself runs without a TLS listener here).
* Kafka: the broker's SASL_PLAINTEXT listener (PLAIN; scripts/engines/start.sh adds it on
  Kafka port + 2): the bridge's producer and the Faust worker authenticate; a wrong password
  fails clearly and nothing is acknowledged.
* Elasticsearch: a SECOND, throw-away instance with ``xpack.security.enabled=true``, HTTPS
  (a CA made here) and a file-realm superuser (``elasticsearch-users useradd``).
* The API over HTTPS (SMARTLOGS_TLS_CERTFILE/_KEYFILE); plain HTTP is refused.

Every process runs with secret-bearing settings; its whole log and every answer are searched
for the secret strings. With CI=true a missing engine fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from smartlogs.security import kafka_client_kwargs
from smartlogs.settings import Settings
from tests.integration.conftest import SCRIPTS, _unavailable
from tests.tls_certs import make_certs

pytestmark = pytest.mark.engines


# -- helpers ---------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_secret(text: str, *secrets: str, where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"secret {secret[:3]}… leaked in {where}:\n{text[-3000:]}"


def _base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    ours = ("SMARTLOGS_AMQP", "SMARTLOGS_KAFKA", "SMARTLOGS_ES_", "SMARTLOGS_TLS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update({
        "SMARTLOGS_DATA_DIR": str(tmp_path / "var"),
        "SMARTLOGS_SYSLOG_PORT": "0",
        "SMARTLOGS_BRIDGE_METRICS_PORT": str(_free_port()),
        "SMARTLOGS_WORKER_METRICS_PORT": str(_free_port()),
        "SMARTLOGS_CHECKPOINT_SECONDS": "1",
        "COLUMNS": "250", "NO_COLOR": "1",
    })
    env.update(extra)
    return env


class Proc:
    """A ``smartlogs VERB`` subprocess with its combined output in a file."""

    def __init__(self, tmp_path: Path, name: str, args: list[str], env: dict[str, str]):
        self.log_path = tmp_path / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "smartlogs.cli", *args], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _wait_until(pred, timeout: float, what: str, procs: tuple[Proc, ...] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.proc.poll() is None, f"{p.log_path.name} exited:\n{p.log()[-3000:]}"
        value = pred()
        if value:
            return value
        time.sleep(0.3)
    details = "\n".join(f"--- {p.log_path.name}\n{p.log()[-2500:]}" for p in procs)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{details}")


def _trust(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only ``ca`` (httpx's verify=)."""
    return ssl.create_default_context(cafile=str(ca))


def _get(url: str, **kw) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10, **kw)
    except httpx.TransportError:
        return None


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartlogs.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


async def _queue_depth(url: str, name: str) -> int:
    conn = await aio_pika.connect(url, timeout=10)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(name, passive=True)  # as declared by the publisher
        return q.declaration_result.message_count


async def _delete_queues(url: str, *names: str) -> None:
    try:
        conn = await aio_pika.connect(url, timeout=10)
        async with conn:
            ch = await conn.channel()
            for n in names:
                await ch.queue_delete(n, if_unused=False, if_empty=False)
    except Exception:  # noqa: BLE001, S110 - best-effort cleanup
        pass


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def rmq_user(rabbitmq):
    """A dedicated RabbitMQ user with a password (rabbitmqctl on the engines' node)."""
    from urllib.parse import urlsplit

    user, password = f"sl-sec-{uuid.uuid4().hex[:6]}", f"amqp-pw-{uuid.uuid4().hex}"
    ctl = [str(SCRIPTS / "rabbitmqctl.sh")]
    for args in (["add_user", user, password],
                 ["set_permissions", "-p", "/", user, ".*", ".*", ".*"]):
        proc = subprocess.run(ctl + args, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            _unavailable(f"rabbitmqctl {args[0]} failed (engines managed elsewhere?):\n"
                         f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    port = urlsplit(rabbitmq).port
    yield {"user": user, "password": password, "port": port,
           "url": f"amqp://{user}:{password}@127.0.0.1:{port}/", "guest_url": rabbitmq}
    subprocess.run(ctl + ["delete_user", user], capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def kafka_sasl(kafka, engine_env) -> dict:
    bootstrap = engine_env.get("SMARTLOGS_KAFKA_SASL_BOOTSTRAP")
    if not bootstrap:
        _unavailable("Kafka has no SASL listener (SMARTLOGS_KAFKA_SASL_PORT=0?)")
    host, port = bootstrap.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(3)
        if s.connect_ex((host, int(port))) != 0:
            _unavailable(f"nothing listens on the Kafka SASL port {bootstrap}: a broker started "
                         "before the listener was added; scripts/engines/restart.sh kafka")
    return {"bootstrap": bootstrap, "plain_bootstrap": kafka,
            "user": os.environ.get("SMARTLOGS_KAFKA_BROKER_SASL_USER", "smartlogs"),
            "password": os.environ.get("SMARTLOGS_KAFKA_BROKER_SASL_PASSWORD", "smartlogs-secret")}


def _engines_vars() -> dict[str, str]:
    script = (f'source "{SCRIPTS}/common.sh"; require_java_home; '
              'printf "%s\\n" "$JAVA_HOME_FOUND" "$ES_HOME" "$ES_USER" "$(id -u)"')
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                         check=False)
    if out.returncode != 0:
        _unavailable(f"engines environment: {out.stderr[-1500:]}")
    java, es_home, es_user, uid = out.stdout.split()
    return {"java": java, "es_home": es_home, "es_user": es_user, "root": uid == "0"}


@pytest.fixture(scope="module")
def secure_es(certs):
    """A second Elasticsearch (own state dir and ports): security on, HTTPS with our CA, a
    file-realm superuser. Stopped and deleted afterwards."""
    v = _engines_vars()
    es_home = Path(v["es_home"])
    if not (es_home / ".installed").exists():
        proc = subprocess.run([str(SCRIPTS / "install.sh"), "elasticsearch"], capture_output=True,
                              text=True, timeout=900, check=False)
        if proc.returncode != 0:
            _unavailable(f"install.sh elasticsearch failed:\n{proc.stderr[-3000:]}")
    # under /var/tmp: the unprivileged Elasticsearch user must reach it (pytest's tmp is 0700)
    root = Path(tempfile.mkdtemp(prefix="smartlogs-es-secure-", dir="/var/tmp"))
    root.chmod(0o755)
    conf = root / "config"
    shutil.copytree(es_home / "config", conf)
    for f in (certs.ca, certs.cert, certs.key):
        shutil.copy(f, conf / f.name)
    for d in ("data", "logs", "run", "tmp"):
        (root / d).mkdir()
    user, password = "smartlogs-test", f"es-pw-{uuid.uuid4().hex}"
    http_port, transport_port = _free_port(), _free_port()
    base_env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
                f"ES_JAVA_HOME={v['java']}", f"ES_PATH_CONF={conf}", f"ES_TMPDIR={root / 'tmp'}",
                "ES_JAVA_OPTS=-Xms256m -Xmx256m"]
    as_user = ["runuser", "-u", v["es_user"], "--"] if v["root"] else []
    if v["root"]:
        subprocess.run(["chown", "-R", f"{v['es_user']}:", str(root)], check=True)
    pidfile = root / "run" / "es.pid"
    try:
        proc = subprocess.run([*as_user, *base_env, str(es_home / "bin" / "elasticsearch-users"),
                               "useradd", user, "-p", password, "-r", "superuser"],
                              capture_output=True, text=True, timeout=120, cwd=root, check=False)
        if proc.returncode != 0:
            _unavailable(f"elasticsearch-users useradd failed:\n{proc.stdout}{proc.stderr}")
        start = subprocess.run(
            [*as_user, *base_env, "timeout", "240", str(es_home / "bin" / "elasticsearch"), "-d",
             "-p", str(pidfile), "-E", "cluster.name=smartlogs-secure", "-E", "node.name=secure",
             "-E", f"path.data={root / 'data'}", "-E", f"path.logs={root / 'logs'}",
             "-E", "network.host=127.0.0.1", "-E", f"http.port={http_port}",
             "-E", f"transport.port={transport_port}", "-E", "discovery.type=single-node",
             "-E", "xpack.security.enabled=true",
             "-E", "xpack.security.http.ssl.enabled=true",
             "-E", f"xpack.security.http.ssl.certificate={certs.cert.name}",
             "-E", f"xpack.security.http.ssl.key={certs.key.name}",
             "-E", f"xpack.security.http.ssl.certificate_authorities={certs.ca.name}",
             "-E", "xpack.security.transport.ssl.enabled=false",
             "-E", "cluster.routing.allocation.disk.threshold_enabled=false"],
            capture_output=True, text=True, timeout=300, cwd=root, check=False)
        if start.returncode != 0:
            _unavailable(f"secured Elasticsearch did not start ({start.returncode}):\n"
                         f"{start.stdout[-3000:]}{start.stderr[-2000:]}")
        url = f"https://127.0.0.1:{http_port}"
        ok = False
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            r = _get(f"{url}/_cluster/health", verify=_trust(certs.ca), auth=(user, password))
            if r is not None and r.status_code == 200 and r.json()["status"] in ("green", "yellow"):
                ok = True
                break
            time.sleep(1)
        if not ok:
            logs = "\n".join(p.read_text()[-2000:] for p in (root / "logs").glob("*.log"))
            _unavailable(f"secured Elasticsearch not healthy at {url}:\n{logs}")
        yield {"url": url, "user": user, "password": password, "ca": certs.ca, "root": root}
    finally:
        if pidfile.exists():
            pid = int(pidfile.read_text().strip())
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(120):
                    os.kill(pid, 0)
                    time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


# -- RabbitMQ --------------------------------------------------------------------------------

def test_amqp_transport_with_a_dedicated_user_and_password_settings(rmq_user):
    """SMARTLOGS_AMQP_USERNAME/_PASSWORD (not in the URL): the API's transport publishes."""
    from ingest_api.transports import AmqpTransport

    queue = f"test.sec.{uuid.uuid4().hex[:8]}"
    s = Settings(amqp_url=f"amqp://127.0.0.1:{rmq_user['port']}/", amqp_username=rmq_user["user"],
                 amqp_password=rmq_user["password"], amqp_queue=queue, publish_timeout=5)
    assert rmq_user["password"] not in s.amqp_url and rmq_user["password"] not in repr(s)

    async def main():
        t = AmqpTransport(s)
        await t.start()
        try:
            ok, detail = t.health()
            assert ok and detail["broker"] == "connected" and "broker_error" not in detail
            await t.accept([{"id": "sec-1", "message": "hello"}], batch_id="b-1")
            assert await _queue_depth(rmq_user["url"], queue) == 1
        finally:
            await t.stop()
            await _delete_queues(rmq_user["url"], queue)

    asyncio.run(main())


def test_wrong_amqp_password_is_a_clear_503_and_never_leaks(rmq_user, tmp_path):
    """`smartlogs api` (debug logging, the most verbose) with a wrong password in the AMQP URL
    (and one in the Elasticsearch URL): ingest, /healthz and `smartlogs status` say the login
    was refused; no password anywhere."""
    wrong_url_pw, wrong_setting_pw = f"bad-url-{uuid.uuid4().hex}", f"bad-set-{uuid.uuid4().hex}"
    port = _free_port()
    env = _base_env(tmp_path, SMARTLOGS_PORT=str(port), SMARTLOGS_PUBLISH_TIMEOUT="2",
                    SMARTLOGS_AMQP_URL=f"amqp://{rmq_user['user']}:{wrong_url_pw}@127.0.0.1:{rmq_user['port']}/",
                    SMARTLOGS_AMQP_QUEUE=f"test.sec.{uuid.uuid4().hex[:8]}",
                    SMARTLOGS_ES_URL=f"http://elastic:{wrong_setting_pw}@127.0.0.1:{_free_port()}")
    secrets = (wrong_url_pw, wrong_setting_pw, rmq_user["password"])
    api = Proc(tmp_path, "api", ["api", "--log-level", "debug"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        r = _wait_until(lambda: (x := _get(f"{url}/healthz")) is not None and x, 60, "the API",
                        (api,))
        assert r.status_code == 503
        health = r.json()
        assert health["broker"] == "disconnected"
        assert "ACCESS_REFUSED" in health["broker_error"], health
        r = httpx.post(f"{url}/ingest", json={"message": "x"}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"]
        body = r.json()
        assert body["error"] == "queue_unavailable" and "Login was refused" in body["detail"], body
        st = _cli(env, "status", "--url", url, "--interval", "0.2",
                  "--bridge-metrics", f"http://127.0.0.1:{_free_port()}/metrics",
                  "--worker-metrics", f"http://127.0.0.1:{_free_port()}/metrics")
        assert st.returncode == 1 and "ACCESS_REFUSED" in st.stdout, st.stdout + st.stderr
        for text, where in ((r.text, "the 503 body"), (orjson.dumps(health).decode(), "/healthz"),
                            (st.stdout + st.stderr, "smartlogs status")):
            _no_secret(text, *secrets, where=where)
    finally:
        api.stop()
    log = api.log()
    assert "ACCESS_REFUSED" in log and "DEBUG" in log
    _no_secret(log, *secrets, where="the API log")


class _TlsProxy:
    """A TLS-terminating TCP proxy (server certificate from our CA) in front of a plain port."""

    def __init__(self, certs, target_port: int):
        self.port = _free_port()
        self.target_port = target_port
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(certs.cert), str(certs.key))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def pipe(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except Exception:  # noqa: BLE001, S110 - a side closed
                pass
            finally:
                writer.close()

        async def handle(reader, writer):
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

        async def main():
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=self.ctx)
            self.ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_amqps_with_our_ca_through_a_tls_proxy(rmq_user, certs):
    """amqps:// + SMARTLOGS_AMQP_CA_FILE: the publisher verifies the broker's certificate
    (real RabbitMQ behind a TLS-terminating proxy); another CA is refused with a clear error."""
    from ingest_api.publisher import AmqpPublisher, QueueUnavailable
    from smartlogs.security import amqp_connect_url, amqp_ssl_context

    proxy = _TlsProxy(certs, rmq_user["port"])
    queue = f"test.sec.tls.{uuid.uuid4().hex[:8]}"
    try:
        def publisher(ca):
            s = Settings(amqp_url=f"amqps://127.0.0.1:{proxy.port}/",
                         amqp_username=rmq_user["user"],
                         amqp_password=rmq_user["password"], amqp_ca_file=ca)
            return AmqpPublisher(amqp_connect_url(s), queue, timeout=5,
                                 ssl_context=amqp_ssl_context(s))

        async def main():
            pub = publisher(certs.ca)
            await pub.start()
            await pub.publish([{"id": "tls-1", "message": "over TLS"}], batch_id="tls")
            await pub.close()
            assert await _queue_depth(rmq_user["url"], queue) == 1
            bad = publisher(certs.other_ca)
            with pytest.raises(QueueUnavailable) as info:
                await bad.start()
            await bad.close()
            assert "CERTIFICATE_VERIFY_FAILED" in str(info.value), info.value
            assert rmq_user["password"] not in str(info.value)

        asyncio.run(main())
    finally:
        proxy.close()
        asyncio.run(_delete_queues(rmq_user["url"], queue))


# -- Kafka SASL ------------------------------------------------------------------------------

async def _read_items(settings: Settings, topic: str, n: int, timeout: float = 30) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                **kafka_client_kwargs(settings))
    await consumer.start()
    items: list[dict] = []
    try:
        deadline = time.monotonic() + timeout
        while len(items) < n and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                for m in msgs:
                    items.extend(orjson.loads(m.value))
    finally:
        await consumer.stop()
    return items


def test_bridge_produces_over_sasl_and_a_wrong_password_fails_clearly(rmq_user, kafka_sasl,
                                                                      tmp_path):
    from ingest_api.publisher import AmqpPublisher

    tag = uuid.uuid4().hex[:8]
    queue, dlq, topic = f"test.sec.{tag}", f"test.sec.{tag}.dlq", f"test-sec-{tag}"
    sasl = Settings(kafka_bootstrap=kafka_sasl["bootstrap"],
                    kafka_security_protocol="SASL_PLAINTEXT",
                    kafka_sasl_username=kafka_sasl["user"],
                    kafka_sasl_password=kafka_sasl["password"])
    items = [{"id": f"{tag}-{i}", "host": "web1", "message": f"line {i}"} for i in range(20)]

    async def publish():
        pub = AmqpPublisher(rmq_user["url"], queue, dlq=dlq, timeout=5)
        await pub.start()
        await pub.publish(items, batch_id=f"{tag}-b")
        await pub.close()

    common = {"SMARTLOGS_AMQP_URL": f"amqp://127.0.0.1:{rmq_user['port']}/",
              "SMARTLOGS_AMQP_USERNAME": rmq_user["user"],
              "SMARTLOGS_AMQP_PASSWORD": rmq_user["password"],
              "SMARTLOGS_AMQP_QUEUE": queue, "SMARTLOGS_AMQP_DLQ": dlq,
              "SMARTLOGS_KAFKA_TOPIC": topic, "SMARTLOGS_KAFKA_BOOTSTRAP": kafka_sasl["bootstrap"],
              "SMARTLOGS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
              "SMARTLOGS_KAFKA_SASL_MECHANISM": "PLAIN",
              "SMARTLOGS_KAFKA_SASL_USERNAME": kafka_sasl["user"]}
    wrong = f"bad-sasl-{uuid.uuid4().hex}"
    secrets = (rmq_user["password"], wrong, kafka_sasl["password"])
    try:
        # 1. a wrong SASL password: the bridge says authentication failed and acks nothing
        asyncio.run(publish())
        bad = Proc(tmp_path, "bridge-bad", ["bridge", "--log-level", "debug"],
                   _base_env(tmp_path, **common, SMARTLOGS_KAFKA_SASL_PASSWORD=wrong))
        try:
            _wait_until(lambda: "Authentication failed" in bad.log(), 60,
                        "the bridge to report the SASL failure", (bad,))
            _wait_until(lambda: "Kafka 127.0.0.1" in bad.log() and "unavailable" in bad.log(), 30,
                        "the bridge's own warning", (bad,))
        finally:
            bad.stop()
        log = bad.log()
        assert "SaslAuthenticationFailed" in log or "Invalid username or password" in log
        assert "moved" not in log  # nothing went to Kafka, so nothing was acknowledged
        _no_secret(log, *secrets, where="the bridge log (wrong password)")
        assert asyncio.run(_queue_depth(rmq_user["url"], queue)) == 1

        # 2. the right password: the same message reaches the topic over SASL
        good = Proc(tmp_path, "bridge", ["bridge"],
                    _base_env(tmp_path, **common,
                              SMARTLOGS_KAFKA_SASL_PASSWORD=kafka_sasl["password"]))
        try:
            got = asyncio.run(_read_items(sasl, topic, len(items), timeout=60))
            assert sorted(i["id"] for i in got) == sorted(i["id"] for i in items), \
                good.log()[-3000:]
            _wait_until(lambda: asyncio.run(_queue_depth(rmq_user["url"], queue)) == 0, 30,
                        "the ack", (good,))
        finally:
            good.stop()
        assert "moved 20 lines of 1 message(s) to Kafka" in good.log()
        _no_secret(good.log(), *secrets, where="the bridge log")
    finally:
        asyncio.run(_delete_queues(rmq_user["url"], queue, dlq))


# -- Elasticsearch with security -------------------------------------------------------------

def test_elasticsearch_store_with_basic_auth_over_https(secure_es):
    from elasticsearch import AuthenticationException

    from smartlogs.security import es_client_kwargs
    from smartlogs.store import EventQuery
    from smartlogs.store.elasticsearch import ElasticsearchStore

    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    good = Settings(es_url=secure_es["url"], es_username=secure_es["user"],
                    es_password=secure_es["password"], es_ca_file=secure_es["ca"])
    store = ElasticsearchStore(good.es_url, index_prefix=prefix, refresh="wait_for",
                               client_kwargs=es_client_kwargs(good))
    try:
        assert store.health()["status"] in ("green", "yellow")
        events = [{"id": f"{prefix}-{i}", "ts": time.time(), "message": f"secure hello {i}",
                   "host": "h1", "score": 0.1, "anomaly": False} for i in range(5)]
        assert store.write(events) == 5
        assert store.search(EventQuery(q="secure", limit=10)).total == 5
    finally:
        store.close()

    # a wrong password: health says unauthorized, a write raises a clear 401; no password shown
    wrong = f"bad-es-{uuid.uuid4().hex}"
    bad = Settings(es_url=secure_es["url"], es_username=secure_es["user"], es_password=wrong,
                   es_ca_file=secure_es["ca"])
    bad_store = ElasticsearchStore(bad.es_url, index_prefix=prefix, max_retries=0,
                                   client_kwargs=es_client_kwargs(bad))
    h = bad_store.health()
    assert h["status"] == "unauthorized" and "unable to authenticate user" in h["error"], h
    with pytest.raises(AuthenticationException) as info:
        bad_store.write([{"id": "x", "ts": time.time(), "message": "m"}])
    assert info.value.status_code == 401
    for text in (str(h), str(info.value)):
        _no_secret(text, wrong, secure_es["password"], where="the Elasticsearch errors")
    bad_store.close()

    # credentials in the URL work too (the client turns them into basic auth)
    from urllib.parse import quote

    in_url = Settings(es_url=secure_es["url"].replace(
        "https://", f"https://{secure_es['user']}:{quote(secure_es['password'])}@"),
        es_ca_file=secure_es["ca"])
    s2 = ElasticsearchStore(in_url.es_url, index_prefix=prefix,
                            client_kwargs=es_client_kwargs(in_url))
    assert s2.health()["status"] in ("green", "yellow")
    assert secure_es["password"] not in s2.url  # the URL kept for messages is redacted
    s2.close()

    # without our CA the certificate is not trusted
    no_ca = ElasticsearchStore(secure_es["url"], index_prefix=prefix, max_retries=0,
                               client_kwargs={"basic_auth": (secure_es["user"],
                                                             secure_es["password"])})
    h = no_ca.health()
    assert h["status"] == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in h["error"], h
    no_ca.close()
    # and plain HTTP to the HTTPS port gets nothing
    r = _get(secure_es["url"].replace("https://", "http://") + "/_cluster/health",
             auth=(secure_es["user"], secure_es["password"]))
    assert r is None or r.status_code >= 400


# -- the API over HTTPS ----------------------------------------------------------------------

def test_smartlogs_up_serves_https_only(certs, tmp_path):
    port = _free_port()
    env = _base_env(tmp_path, SMARTLOGS_PORT=str(port), SMARTLOGS_TLS_CERTFILE=str(certs.cert),
                    SMARTLOGS_TLS_KEYFILE=str(certs.key))
    up = Proc(tmp_path, "up", ["up"], env)
    url = f"https://127.0.0.1:{port}"
    try:
        _wait_until(lambda: (r := _get(f"{url}/healthz", verify=_trust(certs.ca))) is not None
                    and r.status_code == 200, 60, "the HTTPS API", (up,))
        r = httpx.post(f"{url}/ingest", json={"message": "hello over TLS", "host": "tls1"},
                       verify=_trust(certs.ca), timeout=10)
        assert r.status_code == 202, r.text
        # the CLI trusts the same CA through SSL_CERT_FILE
        found = _wait_until(lambda: (x := _cli({**env, "SSL_CERT_FILE": str(certs.ca)}, "search",
                                               "hello", "--url", url, "--json")).returncode == 0
                            and orjson.loads(x.stdout)["total"] == 1 and x, 30, "the event", (up,))
        assert orjson.loads(found.stdout)["events"][0]["host"] == "tls1"
        # plain HTTP to the same port is refused (no HTTP answer at all)
        with pytest.raises(httpx.TransportError):
            httpx.post(f"http://127.0.0.1:{port}/ingest", json={"message": "plain"}, timeout=5)
        # a client that does not trust our CA refuses the server
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/healthz", verify=_trust(certs.other_ca), timeout=5)
    finally:
        up.stop()
    assert f"https://127.0.0.1:{port}" in up.log()


def test_bad_tls_settings_fail_clearly(tmp_path):
    env = _base_env(tmp_path, SMARTLOGS_PORT=str(_free_port()),
                    SMARTLOGS_TLS_CERTFILE=str(tmp_path / "missing.pem"))
    r = _cli(env, "up")
    assert r.returncode == 1 and "SMARTLOGS_TLS_CERTFILE" in r.stderr and "readable" in r.stderr


# -- everything at once: the full stack with every credential --------------------------------

def test_full_stack_with_credentials_everywhere(rmq_user, kafka_sasl, secure_es, certs, tmp_path):
    """HTTPS API → RabbitMQ (dedicated user) → bridge → Kafka (SASL) → Faust worker (SASL) →
    Elasticsearch (HTTPS + basic auth) → queries back through the API. No secret in any log,
    in /healthz or in `smartlogs status`."""
    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    env = _base_env(
        tmp_path,
        SMARTLOGS_PORT=str(port), SMARTLOGS_TLS_CERTFILE=str(certs.cert),
        SMARTLOGS_TLS_KEYFILE=str(certs.key),
        SMARTLOGS_AMQP_URL=f"amqp://{rmq_user['user']}:{rmq_user['password']}@127.0.0.1:{rmq_user['port']}/",
        SMARTLOGS_AMQP_QUEUE=f"test.sec.fs.{tag}", SMARTLOGS_AMQP_DLQ=f"test.sec.fs.{tag}.dlq",
        SMARTLOGS_KAFKA_BOOTSTRAP=kafka_sasl["bootstrap"],
        SMARTLOGS_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", SMARTLOGS_KAFKA_SASL_MECHANISM="PLAIN",
        SMARTLOGS_KAFKA_SASL_USERNAME=kafka_sasl["user"],
        SMARTLOGS_KAFKA_SASL_PASSWORD=kafka_sasl["password"],
        SMARTLOGS_KAFKA_TOPIC=f"test-sec-fs-{tag}",
        SMARTLOGS_KAFKA_DLQ_TOPIC=f"test-sec-fs-dlq-{tag}",
        SMARTLOGS_WORKER_ID=f"test-sec-worker-{tag}",
        SMARTLOGS_ES_URL=secure_es["url"], SMARTLOGS_ES_USERNAME=secure_es["user"],
        SMARTLOGS_ES_PASSWORD=secure_es["password"], SMARTLOGS_ES_CA_FILE=str(secure_es["ca"]),
        SMARTLOGS_ES_INDEX_PREFIX=f"sec-fs-{tag}",
    )
    wrong = "not-the-es-password-" + tag
    secrets = (rmq_user["password"], kafka_sasl["password"], secure_es["password"], wrong)
    # the worker starts with a WRONG Elasticsearch password: it must hold the batch (401 is
    # an error for a person, not a reason to move past unwritten data), then a worker with
    # the right password stores everything, once
    procs = [Proc(tmp_path, verb, [verb], env) for verb in ("api", "bridge")]
    procs.append(Proc(tmp_path, "worker-wrong-password", ["worker"],
                      {**env, "SMARTLOGS_ES_PASSWORD": wrong}))
    url = f"https://127.0.0.1:{port}"
    ca = _trust(certs.ca)
    n = 300
    try:
        _wait_until(lambda: (r := _get(f"{url}/healthz", verify=ca)) is not None
                    and r.status_code == 200, 90, "a healthy API", tuple(procs))
        lines = "\n".join(f"Jun 14 15:16:{i % 60:02d} combo sshd(pam_unix)[{1000 + i}]: "
                          f"authentication failure; logname= uid=0 euid=0 tty=NODEVssh "
                          f"ruser= rhost=10.0.0.{i % 250} user=u{i}" for i in range(n))
        r = httpx.post(f"{url}/ingest", content=lines, headers={"Content-Type": "text/plain"},
                       verify=ca, timeout=30)
        assert r.status_code == 202, r.text
        worker_health = f"http://127.0.0.1:{env['SMARTLOGS_WORKER_METRICS_PORT']}/healthz"
        bad = _wait_until(lambda: (h := _get(worker_health)) is not None and h.status_code == 503
                          and "sink" in h.json() and h.json()["sink"].get("error") and h,
                          120, "the worker holding its batch", tuple(procs))
        assert "401" in bad.json()["sink"]["error"] or "uthentication" in bad.json()["sink"]["error"]
        _no_secret(bad.text, *secrets, where="worker /healthz")
        bad_worker = procs[2]
        assert bad_worker.proc.poll() is None  # alive, waiting, not crashed
        bad_worker.stop()
        assert "holding this batch" in bad_worker.log()
        procs[2] = Proc(tmp_path, "worker", ["worker"], env)

        def total():
            x = _get(f"{url}/api/events", params={"limit": 1}, verify=ca)
            return x is not None and x.status_code == 200 and x.json()["total"] >= n and x.json()
        got = _wait_until(total, 180, f"{n} events searchable", tuple(procs))
        assert got["total"] == n
        health = httpx.get(f"{url}/healthz", verify=ca, timeout=10)
        assert health.status_code == 200 and health.json()["store"]["reachable"] is True
        st = _cli({**env, "SSL_CERT_FILE": str(certs.ca)}, "status", "--url", url,
                  "--interval", "0.5",
                  "--bridge-metrics", f"http://127.0.0.1:{env['SMARTLOGS_BRIDGE_METRICS_PORT']}/metrics",
                  "--worker-metrics", f"http://127.0.0.1:{env['SMARTLOGS_WORKER_METRICS_PORT']}/metrics")
        assert st.returncode == 0, st.stdout + st.stderr
        for text, where in ((health.text, "/healthz"), (st.stdout + st.stderr, "smartlogs status")):
            _no_secret(text, *secrets, where=where)
    finally:
        for p in procs:
            p.stop()
        asyncio.run(_delete_queues(rmq_user["url"], env["SMARTLOGS_AMQP_QUEUE"],
                                   env["SMARTLOGS_AMQP_DLQ"]))
    for p in (*procs, bad_worker):
        _no_secret(p.log(), *secrets, where=p.log_path.name)
    assert "SASL_PLAINTEXT" in procs[1].log()  # the bridge says how it reaches Kafka
