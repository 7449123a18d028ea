"""Kafka producers: publish document-change and control events."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from producers.corpus import read_events
    from producers.publisher import BrokerUnreachableError, Publisher, PublishError
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "producers.corpus": ("read_events",),
            "producers.publisher": ("BrokerUnreachableError", "PublishError", "Publisher"),
        },
    )

__all__ = ["BrokerUnreachableError", "PublishError", "Publisher", "read_events"]
