"""smartlogs.security: settings → client arguments (aiokafka, Faust, aio-pika, Elasticsearch,
uvicorn) and the redaction of secrets from URLs, messages and log records."""

from __future__ import annotations

import logging
import ssl
import uuid
from urllib.parse import unquote, urlsplit

import pytest

from smartlogs import security as sec
from smartlogs.settings import Settings
from tests.tls_certs import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def _secret() -> str:
    return f"s3cret-{uuid.uuid4().hex[:12]}"


# -- settings ----------------------------------------------------------------------------------

def test_secrets_are_secretstr_from_the_environment_and_never_in_repr(monkeypatch):
    pw, key = _secret(), _secret()
    monkeypatch.setenv("SMARTLOGS_KAFKA_SASL_PASSWORD", pw)
    monkeypatch.setenv("SMARTLOGS_ES_API_KEY", key)
    monkeypatch.setenv("SMARTLOGS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    s = Settings()
    assert s.kafka_sasl_password.get_secret_value() == pw
    assert s.es_api_key.get_secret_value() == key
    assert pw not in repr(s) and key not in repr(s) and pw not in str(s.model_dump())


# -- Kafka -------------------------------------------------------------------------------------

def test_kafka_plaintext_is_the_default():
    assert sec.kafka_client_kwargs(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert sec.faust_broker_credentials(Settings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_sasl_plaintext(mechanism):
    pw = _secret()
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
                 kafka_sasl_username="svc", kafka_sasl_password=pw)
    assert sec.kafka_client_kwargs(s) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc", "sasl_plain_password": pw}


def test_kafka_sasl_ssl_and_ssl_carry_a_verifying_context(certs):
    s = Settings(kafka_security_protocol="sasl_ssl", kafka_sasl_username="svc",
                 kafka_sasl_password="pw-123", kafka_ca_file=certs.ca)
    kw = sec.kafka_client_kwargs(s)
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "PLAIN"
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert any("SmartLogs test ca" in str(c.get("subject")) for c in ctx.get_ca_certs())

    mtls = Settings(kafka_security_protocol="SSL", kafka_ca_file=certs.ca,
                    kafka_cert_file=certs.cert, kafka_key_file=certs.key, kafka_tls_verify=False)
    kw = sec.kafka_client_kwargs(mtls)
    assert set(kw) == {"security_protocol", "ssl_context"} and kw["security_protocol"] == "SSL"
    assert kw["ssl_context"].verify_mode == ssl.CERT_NONE and not kw["ssl_context"].check_hostname


def test_kafka_misconfigurations_are_clear_errors(tmp_path):
    with pytest.raises(sec.ConfigError, match="SMARTLOGS_KAFKA_SECURITY_PROTOCOL"):
        sec.kafka_client_kwargs(Settings(kafka_security_protocol="KERBEROS"))
    with pytest.raises(sec.ConfigError, match="SMARTLOGS_KAFKA_SASL_MECHANISM"):
        sec.kafka_client_kwargs(Settings(kafka_security_protocol="SASL_PLAINTEXT",
                                         kafka_sasl_mechanism="GSSAPI", kafka_sasl_username="u",
                                         kafka_sasl_password="p"))
    with pytest.raises(sec.ConfigError, match="SMARTLOGS_KAFKA_SASL_USERNAME"):
        sec.kafka_client_kwargs(Settings(kafka_security_protocol="SASL_PLAINTEXT"))
    with pytest.raises(sec.ConfigError, match="Kafka: cannot load the TLS files"):
        sec.kafka_client_kwargs(Settings(kafka_security_protocol="SSL",
                                         kafka_ca_file=tmp_path / "missing.pem"))


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL", "SSL"])
def test_faust_credentials_give_faust_the_same_client_arguments(protocol, certs):
    """Faust turns broker_credentials into aiokafka arguments itself: they must equal ours."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = Settings(kafka_security_protocol=protocol, kafka_sasl_mechanism="SCRAM-SHA-512",
                 kafka_sasl_username="svc", kafka_sasl_password="pw-123", kafka_ca_file=certs.ca)
    ours = sec.kafka_client_kwargs(s)
    creds = sec.faust_broker_credentials(s)
    assert "pw-123" not in repr(creds)
    faust_kw = {k: v for k, v in credentials_to_aiokafka_auth(creds).items() if v is not None}
    assert faust_kw.keys() == ours.keys()
    for k, v in ours.items():
        if k == "ssl_context":
            assert isinstance(faust_kw[k], ssl.SSLContext)
            assert faust_kw[k].verify_mode == v.verify_mode
        else:
            assert faust_kw[k] == v, k


# -- RabbitMQ ----------------------------------------------------------------------------------

def test_amqp_credentials_go_into_the_url_percent_encoded():
    s = Settings(amqp_url="amqp://guest:guest@10.0.0.5:5673/vhost?heartbeat=30",
                 amqp_username="ingest", amqp_password="p@ss:w/rd%")
    url = sec.amqp_connect_url(s)
    parts = urlsplit(url)
    assert unquote(parts.username) == "ingest" and unquote(parts.password) == "p@ss:w/rd%"
    assert (parts.hostname, parts.port, parts.path, parts.query) == ("10.0.0.5", 5673, "/vhost",
                                                                      "heartbeat=30")
    assert sec.amqp_connect_url(Settings(amqp_url="amqp://a:b@h/")) == "amqp://a:b@h/"
    only_pw = sec.amqp_connect_url(Settings(amqp_url="amqp://bob@h:1/", amqp_password="x1"))
    assert only_pw == "amqp://bob:x1@h:1/"


def test_amqp_tls_context_only_for_amqps(certs):
    assert sec.amqp_ssl_context(Settings()) is None
    with pytest.raises(sec.ConfigError, match="not amqps://.*guest:\\*\\*\\*@"):
        sec.amqp_ssl_context(Settings(amqp_ca_file=certs.ca))
    ctx = sec.amqp_ssl_context(Settings(amqp_url="amqps://u:p@broker:5671/", amqp_ca_file=certs.ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    # aiormq's own URL parameters keep working when no SMARTLOGS_AMQP_* TLS setting is given
    assert sec.amqp_ssl_context(Settings(amqp_url="amqps://h:5671/?cafile=/x.pem")) is None
    no_verify = sec.amqp_ssl_context(Settings(amqp_url="amqps://h/", amqp_tls_verify=False))
    assert no_verify.verify_mode == ssl.CERT_NONE


# -- Elasticsearch -----------------------------------------------------------------------------

def test_es_client_kwargs(certs):
    assert sec.es_client_kwargs(Settings()) == {}
    kw = sec.es_client_kwargs(Settings(es_username="elastic", es_password="pw-1",
                                       es_ca_file=certs.ca))
    assert kw == {"basic_auth": ("elastic", "pw-1"), "ca_certs": str(certs.ca)}
    kw = sec.es_client_kwargs(Settings(es_api_key="a2V5", es_verify_certs=False))
    assert kw == {"api_key": "a2V5", "verify_certs": False, "ssl_show_warn": False}
    with pytest.raises(sec.ConfigError, match="not both"):
        sec.es_client_kwargs(Settings(es_api_key="k", es_username="u", es_password="p"))
    with pytest.raises(sec.ConfigError, match="go together"):
        sec.es_client_kwargs(Settings(es_username="u"))


def test_es_client_sends_the_credentials(certs):
    """What the official client makes of our kwargs (the wire itself is tested against a
    secured Elasticsearch in tests/integration/test_security.py)."""
    from elasticsearch import Elasticsearch

    for settings, expected in (
        (Settings(es_username="elastic", es_password="pw-1"), "Basic ZWxhc3RpYzpwdy0x"),
        (Settings(es_api_key="a2V5OnNlY3JldA=="), "ApiKey a2V5OnNlY3JldA=="),
    ):
        es = Elasticsearch("http://127.0.0.1:1", **sec.es_client_kwargs(settings))
        assert es._headers["authorization"] == expected
        es.close()
    es = Elasticsearch("https://127.0.0.1:1", **sec.es_client_kwargs(Settings(es_ca_file=certs.ca)))
    node = es.transport.node_pool.all()[0]
    assert node.config.ca_certs == str(certs.ca) and node.config.verify_certs
    es.close()


# -- API TLS -----------------------------------------------------------------------------------

def test_uvicorn_ssl_kwargs(certs, tmp_path):
    assert sec.uvicorn_ssl_kwargs(Settings()) == {}
    kw = sec.uvicorn_ssl_kwargs(Settings(tls_certfile=certs.cert, tls_keyfile=certs.key,
                                         tls_keyfile_password="kp-1"))
    assert kw == {"ssl_certfile": str(certs.cert), "ssl_keyfile": str(certs.key),
                  "ssl_keyfile_password": "kp-1"}
    with pytest.raises(sec.ConfigError, match="SMARTLOGS_TLS_CERTFILE is not"):
        sec.uvicorn_ssl_kwargs(Settings(tls_keyfile=certs.key))
    with pytest.raises(sec.ConfigError, match="not a readable file"):
        sec.uvicorn_ssl_kwargs(Settings(tls_certfile=tmp_path / "nope.pem"))


# -- redaction ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "expected"), [
    ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
    ("amqps://u:p%40ss@h/v?x=1", "amqps://u:***@h/v?x=1"),
    ("https://elastic:pw@es:9200", "https://elastic:***@es:9200"),
    ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
    ("amqp://onlyuser@h/", "amqp://onlyuser@h/"),
    ("kafka://a:b@h1:9092,kafka://c:d@h2:9092", "kafka://a:***@h1:9092,kafka://c:***@h2:9092"),
    ("cannot reach amqp://x:y@h:1/ (refused)", "cannot reach amqp://x:***@h:1/ (refused)"),
    ("not a url: user:pw@host", "not a url: user:pw@host"),
])
def test_redact_url(url, expected):
    assert sec.redact_url(url) == expected


def test_settings_secrets_cover_urls_and_secret_fields():
    s = Settings(amqp_url="amqp://u:url%2Fpw@h/", es_url="https://e:espw@h:9200",
                 kafka_sasl_password="sasl-pw", es_api_key="api-key-1", amqp_password="amqp-pw",
                 tls_keyfile_password="key-pw")
    got = set(sec.settings_secrets(s))
    assert {"url/pw", "url%2Fpw", "espw", "sasl-pw", "api-key-1", "amqp-pw", "key-pw"} <= got


def test_an_error_is_described_in_one_line_without_its_secrets():
    """What the publisher's 503 bodies and the bridge's log lines say of a failure (one
    function for both, ``describe_error``)."""
    import asyncio

    pw = _secret()
    sec.register_secret(pw)
    assert sec.describe_error(asyncio.TimeoutError()) == "timed out"
    assert sec.describe_error(TimeoutError("connect")) == "timed out"
    assert sec.describe_error(ConnectionError(f" refused by amqp://u:{pw}@h/ \n")) == \
        "ConnectionError: refused by amqp://u:***@h/"
    assert sec.describe_error(OSError(f"auth failed with {pw}")) == "OSError: auth failed with ***"
    assert sec.describe_error(RuntimeError("  ")) == "RuntimeError"


def test_registered_secrets_never_reach_a_log_line():
    pw = _secret()
    sec.register_secret(pw)
    sec.register_secret("ab")  # too short to be a secret: ignored (it would mask ordinary text)
    sec.register_secret("guest")  # RabbitMQ's public default: ignored too
    assert sec.redact(f"x {pw} y ab guest") == "x *** y ab guest"

    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Capture()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.security.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.info("connecting with password %s to %s", pw, "amqp://svc:other-pw@h/")
    logger.warning(f"f-string {pw}")
    try:
        raise RuntimeError(f"login failed for {pw}")
    except RuntimeError:
        logger.exception("failed")
    logger.info("nothing secret here: %d", 42)
    text = "\n".join(records)
    assert pw not in text and "other-pw" not in text, text
    assert "connecting with password *** to amqp://svc:***@h/" in text
    assert "RuntimeError: login failed for ***" in text
    assert "nothing secret here: 42" in text


def test_json_log_lines_are_scrubbed_too():
    from smartlogs.logs import JsonFormatter

    pw = _secret()
    sec.register_secret(pw)
    logger = logging.getLogger(f"test.security.json.{uuid.uuid4().hex}")
    try:
        raise ValueError(pw)
    except ValueError:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "bad %s", (pw,),
                                   __import__("sys").exc_info())
    line = JsonFormatter("test").format(record)
    assert pw not in line and "bad ***" in line and "ValueError: ***" in line


@pytest.mark.parametrize(("verb", "env", "message"), [
    ("bridge", {"SMARTLOGS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SMARTLOGS_KAFKA_SASL_USERNAME"),
    ("worker", {"SMARTLOGS_ES_API_KEY": "k", "SMARTLOGS_ES_USERNAME": "u"}, "not both"),
    ("api", {"SMARTLOGS_AMQP_CA_FILE": "/etc/hostname"}, "not amqps://"),
])
def test_services_refuse_inconsistent_security_settings_with_one_clear_line(verb, env, message,
                                                                           tmp_path):
    import os
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTLOGS_")}
    full_env.update(env, SMARTLOGS_DATA_DIR=str(tmp_path), COLUMNS="200")
    r = subprocess.run([sys.executable, "-m", "smartlogs.cli", verb], env=full_env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and message in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
