"""Kafka producers: publish document-change and control events."""
