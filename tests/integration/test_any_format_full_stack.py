"""A format SmartLogs has no built-in parser for, through the production path on real engines
(API → RabbitMQ → bridge → Kafka → worker → Elasticsearch): the worker learns the header of
the replayed file's stream, events are stored at their own time with their fields, and
templates group as in the embedded mode (issue 17)."""

from __future__ import annotations

import csv

import httpx

from smartlogs.cli.evaluation import grouping_accuracy
from tests.integration.stack import cli, stack_logs, wait_total


def test_a_new_format_is_learned_by_the_worker(stack, loghub):
    url = stack["url"]
    log = loghub / "Hadoop" / "Hadoop_2k.log"
    r = cli(stack, "replay", str(log), "--run-id", "af1", "--batch-size", "500")
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_total(url, 2000, procs=stack["procs"]) == 2000, stack_logs(stack)

    found = httpx.get(f"{url}/api/events",
                      params={"q": "Created MRAppMaster", "limit": 5}).json()["events"]
    one = next(e for e in found if e["id"] == "af1:1")
    assert one["timestamp"] == "2015-10-18T18:01:47.978Z"  # the line's own time
    assert one["format"] == "inferred" and one["level"] == "INFO" and one["parse_ok"]
    assert one["component"] == "org.apache.hadoop.mapreduce.v2.app.MRAppMaster"
    assert one["fields"]["context"] == "main"

    # every stored template id, by line number, scored against loghub's ground truth
    got: dict[str, str] = {}
    templates = httpx.get(f"{url}/api/templates", params={"limit": 10000}).json()["templates"]
    for t in templates:
        tid = t.get("template_id") or t.get("id")
        page = httpx.get(f"{url}/api/events", params={"template": tid, "limit": 1000}).json()
        assert page["total"] <= 1000
        for e in page["events"]:
            got[e["id"]] = e["template_id"]
    with open(f"{log}_structured.csv", newline="") as f:
        truth = [r["EventId"] for r in csv.DictReader(f)]
    ids = [f"af1:{n}" for n in range(1, 2001)]
    assert all(i in got for i in ids), len(got)
    assert grouping_accuracy(truth, [got[i] for i in ids]) >= 0.95

    # the learned layouts live in the worker: the API says so instead of an empty list
    r = httpx.get(f"{url}/api/sources")
    assert r.status_code == 404 and "worker" in r.json()["detail"]
