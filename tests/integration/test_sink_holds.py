"""The worker's write through the shared sink (streams.runtime.stage.Sink, issue 18) when
Elasticsearch cannot be reached, on the real engines: the worker reaches Elasticsearch through
a gate on loopback that this test shuts and opens again (the shared Elasticsearch itself is
never stopped). While shut the batch is held and retried under the one retry policy
(``SMARTLOGS_SINK_RETRY_CAP_SECONDS``), the worker's /healthz reports the sink waiting, and
afterwards every accepted line is stored exactly once."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.stack import cli, free_port, run_stack, stack_logs, wait_total

pytestmark = pytest.mark.engines


class Gate:
    """A TCP forwarder on loopback that can be shut (new connections refused, open ones cut)
    and opened again on the same port."""

    def __init__(self, target_port: int):
        self.port, self.target = free_port(), target_port
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._srv: socket.socket | None = None
        self.open()

    def open(self) -> None:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(128)
        srv.settimeout(0.2)
        self._srv = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def shut(self) -> None:
        srv, self._srv = self._srv, None
        srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while self._srv is srv:
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def _worker_health(env) -> tuple[int, dict]:
    r = httpx.get(f"http://127.0.0.1:{env['SMARTLOGS_WORKER_METRICS_PORT']}/healthz", timeout=5)
    return r.status_code, r.json()


def _sink_failures(env) -> float:
    text = httpx.get(f"http://127.0.0.1:{env['SMARTLOGS_WORKER_METRICS_PORT']}/metrics",
                     timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('smartlogs_sink_failures_total{store="elasticsearch"}'))


def test_the_worker_holds_a_batch_while_elasticsearch_is_unreachable_and_stores_it_once(
        tmp_path, rabbitmq, kafka, elasticsearch, loghub):
    gate = Gate(urlsplit(elasticsearch).port)
    stack_gen = run_stack(tmp_path, rabbitmq, kafka, f"http://127.0.0.1:{gate.port}",
                          extra_env={"SMARTLOGS_SINK_RETRY_CAP_SECONDS": "2"})
    stack = next(stack_gen)
    env, url = stack["env"], stack["url"]
    try:
        r = cli(stack, "replay", str(loghub / "Linux" / "Linux_2k.log"), "--run-id", "gate",
                "--batch-size", "250")
        assert r.returncode == 0 and "accepted 2,000" in r.stdout, r.stdout + r.stderr
        assert wait_total(url, 2000, procs=stack["procs"]) == 2000, stack_logs(stack)
        before = _sink_failures(env)

        gate.shut()
        r = httpx.post(f"{url}/ingest", json={"id": "gate:held", "message": "gateheldtoken posted "
                                              "while elasticsearch is away"}, timeout=10)
        assert r.status_code == 202, r.text  # RabbitMQ and Kafka hold it meanwhile
        deadline = time.monotonic() + 90
        while True:
            status, detail = _worker_health(env)
            if status == 503 and detail["sink"].get("waiting_for_elasticsearch_since"):
                break
            assert time.monotonic() < deadline, (status, detail, stack_logs(stack))
            time.sleep(0.5)
        assert detail["sink"]["error"]  # why, as the sink state says
        assert _sink_failures(env) > before

        gate.open()
        assert wait_total(url, 2001, procs=stack["procs"]) == 2001, stack_logs(stack)
        deadline = time.monotonic() + 60
        while (health := _worker_health(env))[0] != 200:
            assert time.monotonic() < deadline, health
            time.sleep(0.5)
        assert health[1]["sink"] == {"ok": True}
        time.sleep(3)  # nothing stored twice once the held batch went through
        assert wait_total(url, 2001) == 2001
        got = httpx.get(f"{url}/api/events", params={"q": "gateheldtoken", "limit": 5},
                        timeout=10).json()
        assert got["total"] == 1, got
    finally:
        if gate._srv is None:
            gate.open()
        next(stack_gen, None)
        gate.shut()
