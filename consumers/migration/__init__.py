"""Model migrations: control events in; shadow bootstrap, catch-up, gate at equal offsets, flip."""

from typing import TYPE_CHECKING

# mypy and IDEs read the real imports; the interpreter imports a name's module on first use.
if TYPE_CHECKING:
    from consumers.migration.control import ControlConsumer
    from consumers.migration.errors import MigrationAborted, MigrationError
    from consumers.migration.executor import Executor
    from consumers.migration.flip import PointerMove, roll_back
    from consumers.migration.gate import Gate
    from consumers.migration.orchestrator import MigrationOutcome, Orchestrator
    from consumers.migration.replay import ReplayError, offsets_in
    from consumers.migration.service import MigrationService, start_migrations
    from consumers.migration.shadow import bootstrap_shadow, catch_up
    from consumers.migration.status import MigrationStatus
else:
    from contracts._exports import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "consumers.migration.control": ("ControlConsumer",),
            "consumers.migration.errors": ("MigrationAborted", "MigrationError"),
            "consumers.migration.executor": ("Executor",),
            "consumers.migration.flip": ("PointerMove", "roll_back"),
            "consumers.migration.gate": ("Gate",),
            "consumers.migration.orchestrator": ("MigrationOutcome", "Orchestrator"),
            "consumers.migration.replay": ("ReplayError", "offsets_in"),
            "consumers.migration.service": ("MigrationService", "start_migrations"),
            "consumers.migration.shadow": ("bootstrap_shadow", "catch_up"),
            "consumers.migration.status": ("MigrationStatus",),
        },
    )

__all__ = [
    "ControlConsumer",
    "Executor",
    "Gate",
    "MigrationAborted",
    "MigrationError",
    "MigrationOutcome",
    "MigrationService",
    "MigrationStatus",
    "Orchestrator",
    "PointerMove",
    "ReplayError",
    "bootstrap_shadow",
    "catch_up",
    "offsets_in",
    "roll_back",
    "start_migrations",
]
