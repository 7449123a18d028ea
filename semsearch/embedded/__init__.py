"""Embedded stand-ins for production services (Kafka, Redis) so one command runs the stack."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from semsearch.embedded.broker import (
        EmbeddedBroker,
        free_port,
        resolve_bootstrap,
        wait_until_ready,
    )
    from semsearch.embedded.redis import EmbeddedRedis, ping, resolve_redis, start_embedded_redis
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "semsearch.embedded.broker": (
                "EmbeddedBroker",
                "free_port",
                "resolve_bootstrap",
                "wait_until_ready",
            ),
            "semsearch.embedded.redis": (
                "EmbeddedRedis",
                "ping",
                "resolve_redis",
                "start_embedded_redis",
            ),
        },
    )

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "free_port",
    "ping",
    "resolve_bootstrap",
    "resolve_redis",
    "start_embedded_redis",
    "wait_until_ready",
]
