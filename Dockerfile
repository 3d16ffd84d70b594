# One image for the SmartLogs services (api, bridge, worker, replay); the command picks the role.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY smartlogs ./smartlogs
COPY streams ./streams
COPY ingest_api ./ingest_api
COPY bridge ./bridge
COPY kibana ./kibana
RUN pip install . && useradd --create-home smartlogs && mkdir -p /var/lib/smartlogs \
    && chown smartlogs /var/lib/smartlogs
USER smartlogs
ENV SMARTLOGS_DATA_DIR=/var/lib/smartlogs SMARTLOGS_HOST=0.0.0.0
ENTRYPOINT ["smartlogs"]
CMD ["--help"]
