"""The runtime: what runs the pure core (``streams``) over a transport and into a store.

``stage`` is what both modes do after ``Pipeline.process`` (the poison policy, the catalog,
merges and incidents taken from the pipeline, the metrics of a stored batch); ``embedded`` and
``shards`` run it over the spool, one partition set per shard process; ``worker`` runs it in a
Faust consumer group over the Kafka topic; ``checkpoints`` (a file) and ``state_topic`` /
``state_records`` (a compacted Kafka topic) keep each partition's learned state; ``retention``
deletes old events; ``alerting`` evaluates the alert rules and delivers their notifications.
"""
