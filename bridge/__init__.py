"""RabbitMQ → Kafka bridge: HTTP batches in, source-keyed line batches out (see ``bridge.bridge``)."""

from bridge.bridge import Bridge, InvalidBatch, decode_batch, run_bridge

__all__ = ["Bridge", "InvalidBatch", "decode_batch", "run_bridge"]
