"""What the API answers when its store cannot: Elasticsearch down, overloaded or still
starting (its shards not yet allocated: ``search_phase_execution_exception``, 503) is a 503
with ``Retry-After``; a query Elasticsearch refuses as too big or malformed (a 4xx of its own)
(400) is a 422 that says why. Never a 500 (the brief: bad input or a busy engine is a clear error).

>>> from elasticsearch import ConnectionError as EsConnectionError
>>> store_refusal(EsConnectionError("refused")).status
503
>>> store_refusal(ValueError("a bug")) is None
True
"""

from __future__ import annotations

from ingest_api.decode import IngestError
from smartlogs.security import redact

__all__ = ["STORE_ERRORS", "store_refusal"]


def _store_errors() -> tuple[type[BaseException], ...]:
    from elasticsearch import ApiError, TransportError

    from smartlogs.store.elasticsearch import ElasticsearchStoreError

    return (ElasticsearchStoreError, ApiError, TransportError)


STORE_ERRORS = _store_errors()


def store_refusal(exc: BaseException) -> IngestError | None:
    """The answer for a store's exception ``exc``, or None when it is not the store's (a bug)."""
    if not isinstance(exc, STORE_ERRORS):
        return None
    text = redact(f"{type(exc).__name__}: {exc}")[:300]
    status = getattr(getattr(exc, "meta", None), "status", None)
    if status == 400:  # a query it cannot run (too many clauses, malformed): the asker's to change
        return IngestError(422, "invalid_query", f"the store refused the query ({text}); "
                           "narrow or simplify it")
    return IngestError(503, "store_unavailable", f"the store cannot answer now ({text}); "
                       "retry later", retry_after=5)
