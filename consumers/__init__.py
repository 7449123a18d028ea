"""Kafka consumers: turn document-change events into index changes, with offsets in snapshots."""
