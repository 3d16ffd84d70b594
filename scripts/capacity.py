#!/usr/bin/env python3
"""How many processes and machines a sustained log rate needs: partitions, workers, API and
bridge replicas, RabbitMQ/Kafka brokers, Elasticsearch nodes, and storage per day.

    python scripts/capacity.py                       # 100,000 and 1,000,000 lines/s
    python scripts/capacity.py --rate 250000 --retention-days 14 --cores-per-node 16

Every input has a default measured on this project's 2-core benchmark machine (the figure and
where it comes from are in ``--help`` and docs/capacity.md); pass your own measurements with
the options. The model is deliberately simple: each process's CPU per line × the rate gives
the cores it needs, kept below ``--utilisation`` so a burst or a failed node has room; Python
processes (API, bridge, worker) use one core each (the GIL); brokers and Elasticsearch nodes
use ``--cores-per-node``. Kafka and Elasticsearch also get a floor from bytes on disk per
second and from replication. It is a starting point for sizing, not a guarantee: measure your
own lines (their length and how many templates they make change every figure).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

# CPU µs per line, full stack (bench/RESULTS.md, "full stack on real engines", 2026-11-26 02:47,
# the two runs: api 6-7, bridge 6-7, worker 79-85, RabbitMQ 2, Kafka 21-26, Elasticsearch 67-110)
MEASURED_US = {"api": 7.0, "bridge": 7.0, "worker": 85.0, "rabbitmq": 2.0, "kafka": 26.0,
               "elasticsearch": 110.0}
RAW_BYTES_PER_LINE = 108.0  # Linux_2k.log: 108 MB for 1,000,000 lines
# a line as a Kafka record value (JSON of the item, in batches of up to a few hundred lines):
# Linux_2k.log lines as items with their ids are 155 bytes; arrival time and source add ~40
KAFKA_BYTES_PER_LINE = 200.0
# stored and indexed, per copy: bench/bench_store_size.py --elasticsearch, 200,000 Linux_2k.log
# lines after a refresh and forcemerge: 188 bytes (bench/RESULTS.md)
ES_BYTES_PER_LINE = 190.0


@dataclass(frozen=True)
class Inputs:
    rate: float  # lines/s sustained
    us: dict[str, float]
    cores_per_node: int = 8
    utilisation: float = 0.6
    raw_bytes: float = RAW_BYTES_PER_LINE
    kafka_bytes: float = KAFKA_BYTES_PER_LINE
    kafka_replication: int = 3
    kafka_retention_hours: float = 24.0
    disk_mb_s_per_broker: float = 200.0
    es_bytes: float = ES_BYTES_PER_LINE
    es_replicas: int = 1
    retention_days: float = 7.0
    es_disk_tb_per_node: float = 4.0
    headroom_partitions: int = 2  # partitions per worker, so workers can double without a re-key
    lines_per_message: float = 100.0  # lines an HTTP batch carries through RabbitMQ
    rabbitmq_messages_per_node: float = 5000.0


def plan(i: Inputs) -> dict:
    """Processes and nodes for ``i.rate`` lines/s.

    >>> p = plan(Inputs(rate=100_000, us=MEASURED_US))
    >>> p["workers"], p["partitions"], p["api"], p["bridge"]
    (15, 30, 2, 2)
    >>> p["kafka_brokers"], p["elasticsearch_nodes"], p["rabbitmq_nodes"]
    (3, 6, 1)
    """
    def cores(name: str) -> float:
        return i.rate * i.us[name] / 1e6 / i.utilisation

    out: dict = {"rate": i.rate}
    for name in ("api", "bridge", "worker"):  # one core per Python process (the GIL)
        out[f"{name}_cores"] = cores(name)
        out[name if name != "worker" else "workers"] = max(1, math.ceil(cores(name)))
    out["partitions"] = out["workers"] * i.headroom_partitions
    # RabbitMQ's cost is per message (a batch of lines), persistent with publisher confirms
    out["rabbitmq_msgs"] = i.rate / i.lines_per_message
    out["rabbitmq_nodes"] = max(1, math.ceil(cores("rabbitmq") / i.cores_per_node),
                                math.ceil(out["rabbitmq_msgs"] / (i.rabbitmq_messages_per_node
                                                                  * i.utilisation)))
    # Kafka: CPU, and the bytes every broker writes (its share of the replicated stream)
    kafka_mb_s = i.rate * i.kafka_bytes * i.kafka_replication / 1e6
    out["kafka_mb_s"] = kafka_mb_s
    out["kafka_brokers"] = max(i.kafka_replication, math.ceil(cores("kafka") / i.cores_per_node),
                               math.ceil(kafka_mb_s / i.disk_mb_s_per_broker))
    out["kafka_disk_tb"] = kafka_mb_s * 3600 * i.kafka_retention_hours / 1e6
    # Elasticsearch: CPU, and disk for the retention with its replicas
    per_day_tb = i.rate * 86400 * i.es_bytes / 1e12
    out["raw_tb_per_day"] = i.rate * 86400 * i.raw_bytes / 1e12
    out["es_tb_per_day"] = per_day_tb * (1 + i.es_replicas)
    out["es_disk_tb"] = out["es_tb_per_day"] * i.retention_days
    out["elasticsearch_nodes"] = max(1 + i.es_replicas,
                                     math.ceil(cores("elasticsearch") / i.cores_per_node),
                                     math.ceil(out["es_disk_tb"] / i.es_disk_tb_per_node))
    out["total_cores"] = sum(cores(n) for n in i.us)
    return out


def render(p: dict, i: Inputs) -> str:
    rows = [
        ("workers (one core each)", f"{p['workers']:,}", f"{p['worker_cores']:.1f} cores"),
        ("Kafka partitions of the logs topic", f"{p['partitions']:,}",
         f"{i.headroom_partitions} per worker: room to double the workers"),
        ("API replicas", f"{p['api']:,}", f"{p['api_cores']:.1f} cores"),
        ("bridge replicas", f"{p['bridge']:,}", f"{p['bridge_cores']:.1f} cores"),
        ("RabbitMQ nodes", f"{p['rabbitmq_nodes']:,}",
         f"{p['rabbitmq_msgs']:,.0f} messages/s of {i.lines_per_message:g} lines "
         f"({i.rabbitmq_messages_per_node:,.0f}/s a node)"),
        ("Kafka brokers", f"{p['kafka_brokers']:,}",
         f"{p['kafka_mb_s']:,.0f} MB/s written with replication {i.kafka_replication}; "
         f"{p['kafka_disk_tb']:,.1f} TB for {i.kafka_retention_hours:g} h"),
        ("Elasticsearch data nodes", f"{p['elasticsearch_nodes']:,}",
         f"{i.cores_per_node} cores and {i.es_disk_tb_per_node:g} TB each"),
        ("raw logs per day", f"{p['raw_tb_per_day']:,.2f} TB", f"{i.raw_bytes:g} bytes a line"),
        ("Elasticsearch per day", f"{p['es_tb_per_day']:,.2f} TB",
         f"{i.es_bytes:g} bytes a line × {1 + i.es_replicas} copies"),
        (f"Elasticsearch for {i.retention_days:g} days", f"{p['es_disk_tb']:,.1f} TB", ""),
        ("CPU, all processes", f"{p['total_cores']:,.0f} cores",
         f"at {i.utilisation:.0%} utilisation"),
    ]
    w = max(len(r[0]) for r in rows)
    lines = [f"## {p['rate']:,.0f} lines/s sustained"]
    lines += [f"  {a:<{w}}  {b:>12}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--rate", type=float, action="append",
                    help="lines/s sustained (repeat for several; default 100,000 and 1,000,000)")
    for name, us in MEASURED_US.items():
        ap.add_argument(f"--{name}-us", type=float, default=us,
                        help=f"CPU µs per line of {name} (measured, bench/RESULTS.md)")
    ap.add_argument("--cores-per-node", type=int, default=8)
    ap.add_argument("--utilisation", type=float, default=0.6,
                    help="share of a core each process may use at the sustained rate")
    ap.add_argument("--raw-bytes", type=float, default=RAW_BYTES_PER_LINE,
                    help="bytes of a raw log line")
    ap.add_argument("--kafka-bytes", type=float, default=KAFKA_BYTES_PER_LINE,
                    help="bytes of a line in a Kafka record")
    ap.add_argument("--lines-per-message", type=float, default=100.0,
                    help="lines per HTTP request (one RabbitMQ message each)")
    ap.add_argument("--rabbitmq-messages-per-node", type=float, default=5000.0,
                    help="persistent messages/s with publisher confirms a RabbitMQ node takes "
                         "(measured, ../shared/design/architecture.md)")
    ap.add_argument("--kafka-replication", type=int, default=3)
    ap.add_argument("--kafka-retention-hours", type=float, default=24.0)
    ap.add_argument("--disk-mb-s-per-broker", type=float, default=200.0)
    ap.add_argument("--es-bytes", type=float, default=ES_BYTES_PER_LINE,
                    help="bytes per stored line in Elasticsearch, per copy")
    ap.add_argument("--es-replicas", type=int, default=1)
    ap.add_argument("--retention-days", type=float, default=7.0,
                    help="SMARTLOGS_RETENTION_DAYS")
    ap.add_argument("--es-disk-tb-per-node", type=float, default=4.0)
    a = ap.parse_args(argv)
    us = {name: getattr(a, f"{name}_us") for name in MEASURED_US}
    for rate in a.rate or [100_000, 1_000_000]:
        i = Inputs(rate=rate, us=us, cores_per_node=a.cores_per_node, utilisation=a.utilisation,
                   raw_bytes=a.raw_bytes, kafka_bytes=a.kafka_bytes,
                   kafka_replication=a.kafka_replication,
                   lines_per_message=a.lines_per_message,
                   rabbitmq_messages_per_node=a.rabbitmq_messages_per_node,
                   kafka_retention_hours=a.kafka_retention_hours,
                   disk_mb_s_per_broker=a.disk_mb_s_per_broker, es_bytes=a.es_bytes,
                   es_replicas=a.es_replicas, retention_days=a.retention_days,
                   es_disk_tb_per_node=a.es_disk_tb_per_node)
        print(render(plan(i), i))
        print()


if __name__ == "__main__":
    main()
