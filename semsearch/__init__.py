"""semsearch: Kafka-driven streaming indexer for semantic search with pinned embedding models."""

__version__ = "0.1.0"
