"""Typed settings, read from the environment (prefix ``SMARTLOGS_``).

One frozen model per concern; services read them through :func:`get_settings`, which
tests override with ``get_settings.cache_clear()`` after changing the environment.
Lower layers (pipeline, store) take explicit arguments, never settings.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "rules_from_file"]


def rules_from_file(path: Path):
    """(rules, warm-up lines) of an alert rule file (YAML, ``streams.alerts.load_rules``);
    ``streams.alerts.RuleError`` names the file, the rule and what is wrong."""
    import yaml

    from streams.alerts import RuleError, load_rules

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"{path}: not valid YAML: {exc}") from None
    return load_rules(data, str(path))


class Settings(BaseSettings):
    """Everything configurable, with defaults that work on loopback."""

    model_config = SettingsConfigDict(env_prefix="SMARTLOGS_", frozen=True, extra="ignore")

    # where the embedded mode keeps its database and checkpoints
    data_dir: Path = Field(Path("var"), description="Directory for the embedded store and checkpoints.")
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on.")

    # ingest limits
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0, description="Largest request body (after gzip decoding).")
    max_line_length: int = Field(65536, gt=0, description="Longer lines are truncated and flagged.")
    max_backlog_events: int = Field(
        500_000, ge=0, description="Accepted-but-unprocessed events above which ingest answers 503 "
        "(a single batch larger than this can never fit: 413)."
    )
    max_lines_per_request: int = Field(
        100_000, gt=0, description="Most lines (or events) one ingest request may carry, on every "
        "receiver; more is a 413, refused before the lines are split. Bounds a request's memory: "
        "each line costs a few hundred bytes of objects however short it is.")
    ingest_concurrency: int = Field(
        4, ge=1, description="Ingest requests decoded and handed to the transport at once; the "
        "others wait their turn with their body still unparsed, so concurrent large bodies do not "
        "multiply the memory peak.")
    read_timeout: float = Field(
        30.0, gt=0, description="Seconds a client may take to send a request's headers, and "
        "between two pieces of its body; slower requests are closed (headers) or answered 408.")

    logs_json: bool = Field(False, description="Log JSON lines (one event per line) instead of text.")

    # syslog receiver (RFC 5424 / RFC 3164 over TCP and UDP) in the API process
    syslog_host: str = Field("127.0.0.1", description="Address the syslog receiver binds to "
                             "(syslog has no authentication: loopback or a trusted network).")
    syslog_port: int = Field(5514, ge=0, le=65535, description="Syslog port, TCP and UDP (0: off).")
    syslog_udp: bool = Field(True, description="Also receive syslog over UDP (lossy by nature).")

    # Kafka topic source (ingest_api/receivers/kafka_source.py): consume an existing topic of
    # raw lines or JSON events in `smartlogs up` / `smartlogs api`; off while the topic is empty
    kafka_source_topic: str = Field("", description="Topic(s) to consume, comma-separated (empty: off).")
    kafka_source_group: str = Field("smartlogs-source", description="Consumer group of the Kafka source.")
    kafka_source_format: Literal["raw", "json", "auto"] = Field(
        "auto", description="Record values: raw lines, JSON events, or auto (JSON if it decodes).")
    kafka_source_bootstrap: str | None = Field(
        None, description="Bootstrap servers of the source topic (default: kafka_bootstrap).")
    kafka_source_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts in the topic.")
    kafka_source_max_records: int = Field(2000, gt=0, description="Records per fetch (one accept and commit each).")

    # access control
    query_timeout: float = Field(10.0, gt=0, le=3600, description="Seconds a store may spend on one "
                                 "search or stats query (enforced in SQLite/Elasticsearch); past "
                                 "it the API answers 503 query_timeout.")
    rate_limit_per_key: float = Field(50.0, ge=0, description="Requests per second per API key (0: no limit).")

    # processing
    window_seconds: int = Field(60, gt=0, description="Tumbling event-time window length, seconds.")
    default_year: int | None = Field(
        None, ge=1, le=9999, description="Year for syslog lines that carry none (default: the current year)."
    )
    log_format: str | None = Field(None, description="Force one header format instead of detection "
                                   "(one of streams.parsing.FORMATS: rfc5424, syslog, apache, hdfs, "
                                   "zookeeper, json; or a grok pattern / regex with named groups; "
                                   "empty: detect). Any other name is refused at start.")
    log_patterns: dict[str, str] = Field(default_factory=dict, description=(
        "Declared formats per source, JSON {glob: pattern}: the glob matches the source's "
        "name (X-SmartLogs-Stream, a shipped file's path, a receiver: syslog, loki, otlp, "
        "http, file) or the line's host; the pattern is grok (%{TIMESTAMP_ISO8601:timestamp}) "
        "or a regex with named groups. The first glob that matches wins."))
    builtin_formats: bool = Field(True, description="Try the built-in header formats (syslog, RFC 5424, "
                                  "Apache, log4j, JSON, ...) before the layout learned per source; "
                                  "false: learned layouts alone.")
    infer_headers: bool = Field(True, description="Learn each source's header layout from its first "
                                "lines (timestamp, level, component, pid) when no built-in format fits.")
    multiline: bool = Field(True, description="Join continuation lines (stack traces, indented "
                            "dumps) to their event in text bodies, replay and ship.")
    alert_rules: Path | None = Field(None, description="YAML file of alert rules (see "
                                     "deploy/alerts.example.yaml); checked at start.")
    alert_webhook_url: str | None = Field(None, description="Alerts: a generic JSON webhook (POST).")
    alert_slack_url: str | None = Field(None, description="Alerts: a Slack-compatible incoming webhook.")
    console_url: str | None = Field(None, description="The console's address for links in alerts "
                                    "(default: http://HOST:PORT).")
    checkpoint_seconds: float = Field(5.0, gt=0, description="How often model state is checkpointed.")
    sink_retry_first_seconds: float = Field(
        0.5, gt=0, description="A batch the store (SQLite, Elasticsearch) did not take is tried "
        "again after this many seconds, then after twice as long each time, up to "
        "sink_retry_cap_seconds; it is held meanwhile, never dropped (both modes).")
    sink_retry_cap_seconds: float = Field(
        10.0, gt=0, description="The longest wait between two attempts to store a batch.")
    shards: int = Field(
        0, ge=0, description="Embedded mode: shard processes running the partitions' pipelines "
        "(shard k owns the partitions p with p % shards == k; at most one per partition). "
        "0: the number of cores; 1: one shard, in the API process.")
    retention_days: float = Field(
        0, ge=0, description="Delete events whose event time is older than this many days (0: keep "
        "everything). Embedded: in small batches in the background; Elasticsearch: whole daily or "
        "monthly indices once their period is past the cutoff. Checked every 10 minutes.")
    hst_trees: int = Field(10, ge=1, description="HalfSpaceTrees: number of trees.")
    hst_height: int = Field(6, ge=1, le=20, description="HalfSpaceTrees: tree height (cost grows as 2^height).")
    hst_window: int = Field(250, ge=1, description="HalfSpaceTrees: reference window size (warm-up length).")
    anomaly_quantile: float = Field(0.995, gt=0, lt=1, description="Adaptive threshold: running score quantile.")
    min_anomaly_score: float = Field(0.7, ge=0, le=1, description="Scores below this are never anomalies.")
    incident_gap_seconds: float = Field(
        300.0, gt=0, description="Incidents: flagged lines of one cause (same source or pattern, "
        "same strongest evidence) at most this many seconds apart (event time) are one incident.")
    incident_quiet_seconds: float = Field(
        300.0, gt=0, description="Incidents: an incident is resolved once its stream's later lines "
        "are this many seconds (event time) past its last line, or nothing of it arrived for "
        "this long.")
    incident_examples: int = Field(5, ge=1, le=100, description="Incidents: example lines kept per incident.")

    # the full stack (RabbitMQ → bridge → Kafka → worker → Elasticsearch)
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ URL.")
    amqp_queue: str = Field("smartlogs.ingest", description="Durable queue the API publishes to.")
    amqp_dlq: str = Field("smartlogs.ingest.dlq", description="Where the bridge puts undecodable messages.")
    amqp_max_queue_bytes: int = Field(
        1024**3, ge=0, description="Bound on the ingest queue's ready messages, bytes; when it is "
        "full (bridge or Kafka down for long) the API answers 503 instead of the queue growing "
        "without bound. Applied when the queue is created. 0: unbounded.")
    amqp_prefetch: int = Field(64, ge=1, description="Bridge: unacknowledged AMQP messages in flight.")
    publish_timeout: float = Field(5.0, gt=0, description="API: seconds to wait for a publisher confirm.")
    stuck_after_seconds: float = Field(
        60.0, gt=0, description="API readiness: work waiting (ready messages on the ingest "
        "queue, records for the worker on Kafka) with no progress for this long makes /healthz "
        "say degraded.")
    health_probe_seconds: float = Field(
        5.0, gt=0, description="API readiness: how often the ingest queue (consumers, ready "
        "messages) and the worker's Kafka lag are read.")
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_topic: str = Field("smartlogs.raw", description="Topic of raw line batches, keyed by host.")
    kafka_dlq_topic: str = Field("smartlogs.dlq", description="Documents Elasticsearch rejected.")
    partitions: int = Field(
        4, ge=1, validation_alias=AliasChoices("SMARTLOGS_PARTITIONS", "SMARTLOGS_KAFKA_PARTITIONS",
                                               "partitions", "kafka_partitions"),
        description="Partitions work is keyed into by source (streams/partitions.py): the raw "
        "topic's in the full stack, the spool's in embedded mode; each has its own learned "
        "state. SMARTLOGS_KAFKA_PARTITIONS is the old name. Fixed for an existing data directory.")
    worker_id: str = Field("smartlogs-worker", description="Faust app id: consumer group and changelog prefix.")
    bridge_metrics_port: int = Field(9464, ge=0, le=65535, description="Bridge: /metrics port (0: off).")
    worker_metrics_port: int = Field(9465, ge=0, le=65535, description="Worker: /metrics port (0: off).")
    metrics_host: str = Field("127.0.0.1", description="Bridge/worker: /metrics bind address.")
    es_url: str = Field("http://127.0.0.1:9200", description="Elasticsearch URL.")
    es_index_prefix: str = Field("smartlogs-events", description="Indices <prefix>-YYYY.MM (or .DD).")
    es_index_period: Literal["month", "day"] = Field(
        "month", description="One Elasticsearch index per UTC month (or day) of event time. "
        "Months keep replays of old logs on few shards; days suit high volume and finer retention.")
    es_refresh_interval: str = Field(
        "500ms", pattern=r"^[1-9][0-9]*(ms|s)$",
        description="How often Elasticsearch makes new events searchable (e.g. 500ms, 1s, 30s): "
        "an event waits up to one interval; shorter costs Elasticsearch more CPU per event. "
        "Applied to the index template and to existing indices when the worker starts.")

    # -- credentials and TLS (mapped to client arguments in smartlogs/security.py only) ----
    # secrets are SecretStr: never shown by repr(), never logged (security.register_secrets)
    amqp_username: str | None = Field(None, description="RabbitMQ user (overrides the URL's).")
    amqp_password: SecretStr | None = Field(None, description="RabbitMQ password (overrides the URL's).")
    amqp_ca_file: Path | None = Field(None, description="RabbitMQ TLS (amqps://): CA bundle to trust.")
    amqp_cert_file: Path | None = Field(None, description="RabbitMQ TLS: client certificate (mutual TLS).")
    amqp_key_file: Path | None = Field(None, description="RabbitMQ TLS: client private key.")
    amqp_key_password: SecretStr | None = Field(None, description="RabbitMQ TLS: password of the client key.")
    amqp_tls_verify: bool = Field(True, description="RabbitMQ TLS: verify the broker's certificate and name.")
    kafka_security_protocol: str = Field(
        "PLAINTEXT", description="Kafka: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str = Field("PLAIN", description="Kafka SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL user.")
    kafka_sasl_password: SecretStr | None = Field(None, description="Kafka SASL password.")
    kafka_ca_file: Path | None = Field(None, description="Kafka TLS: CA bundle to trust.")
    kafka_cert_file: Path | None = Field(None, description="Kafka TLS: client certificate (mutual TLS).")
    kafka_key_file: Path | None = Field(None, description="Kafka TLS: client private key.")
    kafka_key_password: SecretStr | None = Field(None, description="Kafka TLS: password of the client key.")
    kafka_tls_verify: bool = Field(True, description="Kafka TLS: verify the broker's certificate and name.")
    es_username: str | None = Field(None, description="Elasticsearch user (basic auth).")
    es_password: SecretStr | None = Field(None, description="Elasticsearch password.")
    es_api_key: SecretStr | None = Field(None, description="Elasticsearch API key (instead of user/password).")
    es_ca_file: Path | None = Field(None, description="Elasticsearch TLS (https://): CA bundle to trust.")
    es_verify_certs: bool = Field(True, description="Elasticsearch TLS: verify the certificate and name.")
    tls_certfile: Path | None = Field(None, description="API: serve HTTPS with this certificate (chain).")
    tls_keyfile: Path | None = Field(None, description="API: the certificate's private key.")
    tls_keyfile_password: SecretStr | None = Field(None, description="API: password of the private key.")

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        from streams.parsing import FORMATS

        if v in (None, ""):
            return None
        if v not in FORMATS:
            if "%{" not in v and "(?P<" not in v and "(?<" not in v:
                raise ValueError(f"unknown log format {v!r}; expected one of: "
                                 f"{', '.join(FORMATS)}, or a grok pattern / regex with named "
                                 "groups, or empty to detect (other headers are learned per "
                                 "source)")
            from streams.formats import UserFormat

            UserFormat(v)  # FormatError (a ValueError): refused at start, pattern and error
        return v

    @field_validator("log_patterns")
    @classmethod
    def _patterns_compile(cls, v: dict[str, str]) -> dict[str, str]:
        from streams.formats import UserFormat

        for glob, pattern in v.items():
            if not glob:
                raise ValueError("log_patterns: an empty source glob")
            UserFormat(pattern)
        return v

    @field_validator("alert_rules")
    @classmethod
    def _alert_rules_valid(cls, v: Path | None) -> Path | None:
        if v is not None:
            from streams.alerts import RuleError

            try:
                rules_from_file(v)  # refused at start: the file, the rule, what is wrong
            except RuleError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("alert_webhook_url", "alert_slack_url", "console_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v

    @property
    def kafka_partitions(self) -> int:
        """The old name of :attr:`partitions` (the raw topic's partitions)."""
        return self.partitions

    @property
    def shard_count(self) -> int:
        """Shards embedded mode runs: ``shards`` (0: the cores), at most one per partition."""
        import os

        return max(1, min(self.shards or os.cpu_count() or 1, self.partitions))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "smartlogs.db"

    @property
    def keys_path(self) -> Path:
        return self.data_dir / "keys.db"

    @property
    def checkpoint_path(self) -> Path:
        return self.data_dir / "pipeline.ckpt"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

