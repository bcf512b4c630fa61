"""The one failure a phase body raises; its context becomes the handoff's error."""

from __future__ import annotations

from typing import Any


class PhaseFailed(Exception):
    """A phase could not finish; `context` lands in the handoff's error and the event."""

    def __init__(self, detail: str, **context: Any):
        super().__init__(detail)
        self.detail = detail
        self.context = context

    def as_dict(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.context}
