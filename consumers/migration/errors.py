"""Why a migration did not finish: every stage raises these, the orchestrator turns them into an
outcome (failed / aborted) and the serving index is never touched by either."""

from __future__ import annotations

from contracts.errors import SemsearchError


class MigrationError(SemsearchError):
    """A migration could not be carried out; the serving index is unchanged."""


class MigrationAborted(MigrationError):
    """The process is stopping; the migration will start over when it restarts."""
