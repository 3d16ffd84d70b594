"""HTTP ingest and query API (FastAPI)."""
