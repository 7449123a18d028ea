"""semsearch: Kafka-driven streaming indexer for semantic search with pinned embedding models."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from semsearch.cli import main
    from semsearch.stack import set_pointer_when_indexed
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "semsearch.cli": ("main",),
            "semsearch.stack": ("set_pointer_when_indexed",),
        },
    )

__all__ = ["main", "set_pointer_when_indexed"]

__version__ = "0.1.0"
