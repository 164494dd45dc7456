"""Collectors, the stream client, the pure ingest pipeline, shard consumers, archive, quarantine, replay (issue 3)."""
