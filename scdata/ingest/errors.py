"""The error an ingest stops with: its own module, so the driver and the commit both raise it."""

from __future__ import annotations

from ..runtime import remote


class IngestError(RuntimeError):
    """The ingest stopped; committed rounds are intact and a rerun resumes."""

    def __init__(self, message: str):
        super().__init__(remote.redact(message))  # URLs in it may carry credentials
