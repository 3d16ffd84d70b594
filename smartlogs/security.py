"""Credentials and TLS for every engine connection and for the API, from :class:`Settings`.

The ONE place where settings become client arguments::

    kafka_client_kwargs(s)       aiokafka producer/consumer/admin keyword arguments
    faust_broker_credentials(s)  faust-streaming ``broker_credentials`` (None: plaintext)
    amqp_connect_url(s)          the RabbitMQ URL with SMARTLOGS_AMQP_USERNAME/_PASSWORD applied
    amqp_ssl_context(s)          ssl.SSLContext for ``amqps://`` URLs (None for ``amqp://``)
    es_client_kwargs(s)          elasticsearch.Elasticsearch keyword arguments
    uvicorn_ssl_kwargs(s)        HTTPS for the API (SMARTLOGS_TLS_CERTFILE / _KEYFILE)

and the redaction of secrets from what SmartLogs prints:

    redact_url(url)              ``amqp://user:***@host/``: for URLs that are logged or returned
    redact(text)                 every URL password and every registered secret replaced by ***
    register_secrets(s)          remember the configured secrets; once registered, every log
                                 record (message, arguments, traceback) is scrubbed of them
                                 before any handler sees it, whoever configured the handlers
                                 (Faust and uvicorn install their own).

Secrets in :class:`Settings` are ``SecretStr`` (never shown by ``repr``); the URL settings stay
plain strings for compatibility, so they go through :func:`redact_url` wherever they are shown.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

if TYPE_CHECKING:  # pragma: no cover
    from smartlogs.settings import Settings

__all__ = [
    "KAFKA_PROTOCOLS", "KAFKA_SASL_MECHANISMS", "MASK", "ConfigError", "amqp_connect_url",
    "amqp_ssl_context", "client_ssl_context", "es_client_kwargs", "faust_broker_credentials",
    "kafka_client_kwargs", "kafka_ssl_context", "redact", "redact_url", "register_secret",
    "register_secrets", "settings_secrets", "uvicorn_ssl_kwargs",
]

MASK = "***"
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class ConfigError(ValueError):
    """Security settings that do not fit together (the message names the settings)."""


def _secret(value: Any) -> str | None:
    """The plain value of a SecretStr (or str), None when unset or empty."""
    if value is None:
        return None
    plain = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return plain or None


def _path(value: Any) -> str | None:
    return str(value) if value else None


# -- TLS ------------------------------------------------------------------------------------

def client_ssl_context(*, ca_file: Any = None, cert_file: Any = None, key_file: Any = None,
                       key_password: Any = None, verify: bool = True,
                       what: str = "connection") -> ssl.SSLContext:
    """A client-side TLS context: the system CAs (or ``ca_file``), an optional client
    certificate (mutual TLS), hostname and certificate checks unless ``verify`` is false."""
    if key_file and not cert_file:
        raise ConfigError(f"{what}: a client key file needs its certificate file")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=_path(ca_file))
        if cert_file:
            ctx.load_cert_chain(str(cert_file), _path(key_file), password=_secret(key_password))
    except (OSError, ssl.SSLError) as exc:  # a missing/unreadable file: say which setting
        raise ConfigError(f"{what}: cannot load the TLS files ({type(exc).__name__}: "
                          f"{redact(str(exc))})") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -- Kafka ----------------------------------------------------------------------------------

def _kafka_protocol(s: Settings) -> str:
    protocol = (s.kafka_security_protocol or "PLAINTEXT").upper()
    if protocol not in KAFKA_PROTOCOLS:
        raise ConfigError(f"SMARTLOGS_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of "
                          f"{', '.join(KAFKA_PROTOCOLS)}")
    return protocol


def kafka_ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL/SASL_SSL (None for PLAINTEXT/SASL_PLAINTEXT)."""
    if _kafka_protocol(s) not in ("SSL", "SASL_SSL"):
        return None
    return client_ssl_context(ca_file=s.kafka_ca_file, cert_file=s.kafka_cert_file,
                              key_file=s.kafka_key_file, key_password=s.kafka_key_password,
                              verify=s.kafka_tls_verify, what="Kafka")


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments (``AIOKafkaProducer``/``AIOKafkaConsumer``/admin client)
    for the configured security protocol: ``security_protocol`` always, ``ssl_context`` for
    SSL/SASL_SSL, ``sasl_mechanism``/``sasl_plain_username``/``sasl_plain_password`` for
    SASL_PLAINTEXT/SASL_SSL (aiokafka uses the ``sasl_plain_*`` pair for SCRAM too)."""
    s = settings
    protocol = _kafka_protocol(s)
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    ctx = kafka_ssl_context(s)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if protocol.startswith("SASL_"):
        mechanism = (s.kafka_sasl_mechanism or "PLAIN").upper()
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(f"SMARTLOGS_KAFKA_SASL_MECHANISM={mechanism!r}: expected one of "
                              f"{', '.join(KAFKA_SASL_MECHANISMS)}")
        username, password = s.kafka_sasl_username, _secret(s.kafka_sasl_password)
        if not username or password is None:
            raise ConfigError(f"SMARTLOGS_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                              "SMARTLOGS_KAFKA_SASL_USERNAME and SMARTLOGS_KAFKA_SASL_PASSWORD")
        kwargs.update(sasl_mechanism=mechanism, sasl_plain_username=username,
                      sasl_plain_password=password)
    return kwargs


def faust_broker_credentials(settings: Settings):
    """faust-streaming ``broker_credentials`` matching :func:`kafka_client_kwargs`:
    ``SASLCredentials`` (with the TLS context for SASL_SSL), ``SSLCredentials`` for SSL,
    None for PLAINTEXT (Faust's default)."""
    from faust.auth import SASLCredentials, SSLCredentials

    kwargs = kafka_client_kwargs(settings)
    protocol = kwargs["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(kwargs["ssl_context"])
    creds = SASLCredentials(username=kwargs["sasl_plain_username"],
                            password=kwargs["sasl_plain_password"],
                            ssl_context=kwargs.get("ssl_context"),
                            mechanism=kwargs["sasl_mechanism"])
    return creds


# -- RabbitMQ -------------------------------------------------------------------------------

def amqp_connect_url(settings: Settings) -> str:
    """SMARTLOGS_AMQP_URL with SMARTLOGS_AMQP_USERNAME / SMARTLOGS_AMQP_PASSWORD (when set)
    put into its userinfo, percent-encoded. Never log the result: log :func:`redact_url`."""
    s = settings
    url = s.amqp_url
    username, password = s.amqp_username, _secret(s.amqp_password)
    if username is None and password is None:
        return url
    parts = urlsplit(url)
    old_user = unquote(parts.username or "") if parts.username else "guest"
    user = quote(username if username is not None else old_user, safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = f"{user}:{quote(password, safe='')}" if password is not None else user
    netloc = f"{userinfo}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def amqp_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for RabbitMQ: a context when SMARTLOGS_AMQP_URL is ``amqps://``, else None.

    Setting a CA/certificate file for a plain ``amqp://`` URL is a configuration error (it
    would silently not be used)."""
    s = settings
    scheme = urlsplit(s.amqp_url).scheme.lower()
    tls_files = [n for n in ("amqp_ca_file", "amqp_cert_file", "amqp_key_file") if getattr(s, n)]
    if scheme != "amqps":
        if tls_files:
            names = ", ".join(f"SMARTLOGS_{n.upper()}" for n in tls_files)
            raise ConfigError(f"{names} set but SMARTLOGS_AMQP_URL is not amqps:// "
                              f"({redact_url(s.amqp_url)}); use amqps:// for TLS")
        return None
    query = urlsplit(s.amqp_url).query
    if not tls_files and s.amqp_tls_verify and re.search(
            r"(^|&)(cafile|capath|cadata|certfile|keyfile|no_verify_ssl)=", query):
        return None  # aiormq's own URL parameters (amqps://...?cafile=...) configure TLS
    return client_ssl_context(ca_file=s.amqp_ca_file, cert_file=s.amqp_cert_file,
                              key_file=s.amqp_key_file, key_password=s.amqp_key_password,
                              verify=s.amqp_tls_verify, what="RabbitMQ")


# -- Elasticsearch --------------------------------------------------------------------------

def es_client_kwargs(settings: Settings) -> dict[str, Any]:
    """``elasticsearch.Elasticsearch`` keyword arguments: ``api_key`` or ``basic_auth``,
    ``ca_certs``, ``verify_certs`` (only those that are set). A user:password in
    SMARTLOGS_ES_URL also works (the client turns it into basic auth)."""
    s = settings
    kwargs: dict[str, Any] = {}
    api_key, password = _secret(s.es_api_key), _secret(s.es_password)
    if api_key and (s.es_username or password):
        raise ConfigError("set SMARTLOGS_ES_API_KEY or SMARTLOGS_ES_USERNAME/_PASSWORD, not both")
    if api_key:
        kwargs["api_key"] = api_key
    elif s.es_username or password:
        if not s.es_username or password is None:
            raise ConfigError("SMARTLOGS_ES_USERNAME and SMARTLOGS_ES_PASSWORD go together")
        kwargs["basic_auth"] = (s.es_username, password)
    if s.es_ca_file:
        kwargs["ca_certs"] = str(s.es_ca_file)
    if not s.es_verify_certs:
        kwargs["verify_certs"] = False
        kwargs["ssl_show_warn"] = False  # the operator chose it; said once at start instead
    return kwargs


# -- the API --------------------------------------------------------------------------------

def uvicorn_ssl_kwargs(settings: Settings) -> dict[str, Any]:
    """HTTPS for the API: ``ssl_certfile``/``ssl_keyfile`` (+ key password) for uvicorn.run,
    or {} (plain HTTP) when SMARTLOGS_TLS_CERTFILE is unset."""
    s = settings
    if not s.tls_certfile and not s.tls_keyfile:
        return {}
    if not s.tls_certfile:
        raise ConfigError("SMARTLOGS_TLS_KEYFILE is set but SMARTLOGS_TLS_CERTFILE is not")
    for name, value in (("SMARTLOGS_TLS_CERTFILE", s.tls_certfile),
                        ("SMARTLOGS_TLS_KEYFILE", s.tls_keyfile)):
        if value and not _readable(value):
            raise ConfigError(f"{name}={value}: not a readable file")
    kwargs: dict[str, Any] = {"ssl_certfile": str(s.tls_certfile)}
    if s.tls_keyfile:
        kwargs["ssl_keyfile"] = str(s.tls_keyfile)
    password = _secret(s.tls_keyfile_password)
    if password is not None:
        kwargs["ssl_keyfile_password"] = password
    return kwargs


def _readable(path: Any) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


# -- redaction ------------------------------------------------------------------------------

# scheme://authority — the authority ends at the first /, ?, # or whitespace/quote, or where
# the next URL of a comma-separated list begins
_SCHEME = r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://"
_URL = re.compile(rf"(?P<scheme>{_SCHEME})(?P<authority>(?:(?!{_SCHEME})[^\s/?#'\"<>()\[\]])*)")


def _mask_authority(m: re.Match) -> str:
    authority = m.group("authority")
    if "@" not in authority:
        return m.group(0)
    userinfo, _, hostport = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{m.group('scheme')}{user}{':' + MASK if colon else ''}@{hostport}"


def redact_url(url: Any) -> str:
    """The URL (or comma-separated URLs) with any password in its userinfo replaced by ***."""
    return _URL.sub(_mask_authority, str(url))


_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET = 3  # shorter values would mask ordinary text (and are no real secret)
# RabbitMQ's public default (guest/guest): masking it would turn every "guest" in the logs into
# *** (the user name in URLs too) while hiding nothing; URLs still show it as guest:***@
_WELL_KNOWN = {"guest"}


def register_secret(value: Any) -> None:
    """Remember a secret value: :func:`redact` (and, once installed, every log record)
    replaces it by ***. Its percent-encoded form is remembered too."""
    plain = _secret(value)
    if plain is None or len(plain) < _MIN_SECRET or plain in _WELL_KNOWN:
        return
    with _secrets_lock:
        _secrets.update({plain, quote(plain, safe=""), quote(plain)})
    _install_log_redaction()


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret the settings hold: the passwords in the URLs, the SASL password, the
    Elasticsearch password and API key, the TLS key passwords."""
    s = settings
    out: list[str] = []
    for url in (s.amqp_url, s.es_url):
        password = urlsplit(str(url)).password if "@" in str(url) else None
        if password:
            out += [password, unquote(password)]
    for name in ("amqp_password", "kafka_sasl_password", "es_password", "es_api_key",
                 "tls_keyfile_password", "amqp_key_password", "kafka_key_password"):
        plain = _secret(getattr(s, name, None))
        if plain:
            out.append(plain)
    return out


def register_secrets(settings: Settings) -> None:
    """Register every secret of ``settings`` (see :func:`register_secret`)."""
    for value in settings_secrets(settings):
        register_secret(value)


def redact(text: Any) -> str:
    """``text`` with URL passwords and every registered secret replaced by ***."""
    out = redact_url(text)
    with _secrets_lock:
        secrets_ = sorted(_secrets, key=len, reverse=True)
    for value in secrets_:
        if value in out:
            out = out.replace(value, MASK)
    return out


def describe_error(exc: BaseException) -> str:
    """A short reason for logs and 503 bodies (the publisher's, the bridge's): the exception's
    type and text, scrubbed of URL passwords and registered secrets (``redact``); a timeout
    (``asyncio.TimeoutError`` is ``TimeoutError``) is "timed out"."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = redact(str(exc).strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_installed = False


def _install_log_redaction() -> None:
    """Wrap the log record factory once: each new record's message (with its arguments) and
    traceback are rendered and scrubbed right away, so no handler or formatter (ours, Faust's,
    uvicorn's) can print a registered secret."""
    global _installed
    with _secrets_lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let the handler report it
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
