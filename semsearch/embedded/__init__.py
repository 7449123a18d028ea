"""Embedded stand-ins for production services (Kafka, Redis) so one command runs the stack."""
