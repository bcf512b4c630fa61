"""Taking the GPU back: reclaim ladders, and the proof that a source's memory is back.

A source is back when each of its GPU-chain services holds again what it held before the release
(its attributed memory before the release, less its residual allowance), not when its health URL
answers. Each service's `reclaim` (else `ready`) ladder is climbed in dependency order (gaia-prime
before gaia-core): after each step the GPU is sampled every `gpu.poll_ms` until the memory is
back or the step's deadline passes; then the next step is tried. Without attribution — before
the release or now — the step's own answer (vLLM's `/is_sleeping` false, a 2xx) is all there
is: recorded as `rule: answered`, the weaker proof.

Used by the rollback (handoffs.runner) and by the ticker's retries of an incomplete one
(handoffs.services.retry_reclaims).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gaiaorch import config
from gaiaorch.config import RECLAIM, Service
from handoffs import cleanup, strategies
from handoffs.errors import PhaseFailed

MEMORY_BACK, ANSWERED = "memory_back", "answered"


@dataclass(frozen=True)
class Reclaim:
    settings: config.Config
    gpu: int
    held_before: dict[str, int] | None  # attributed MiB per service before the release; None: unknown
    payload: dict[str, Any]
    waiting: strategies.Waiting
    http_timeout: float

    def chain(self, services: list[Service]) -> dict[str, Any]:
        """Reclaim every service (dependencies first); PhaseFailed naming the first that is not back."""
        figures: dict[str, Any] = {}
        failures: list[PhaseFailed] = []
        for service in reversed(services):
            strategy = service.reclaim or service.ready
            if not strategy:
                continue
            try:
                figures[service.name] = self.one(service)
            except PhaseFailed as failure:
                figures[service.name] = {"failed": failure.detail, **failure.context}
                failures.append(failure)
        if failures:
            first = failures[0]
            raise PhaseFailed(first.detail, **{**first.context, "services": figures})
        return figures

    def one(self, service: Service) -> dict[str, Any]:
        steps = (service.reclaim or service.ready).steps
        records: list[dict[str, Any]] = []
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            waiting = self._step_waiting(step.deadline_seconds)
            record: dict[str, Any] = {"step": index + 1, "action": step.action}
            records.append(record)
            try:
                record |= strategies.take_step(
                    service,
                    step,
                    RECLAIM,
                    self.payload,
                    waiting,
                    http_timeout=self.http_timeout,
                    retry_if=strategies.busy,
                    backoff_max=self.settings.handoffs.signal_retry_max_seconds,
                )
            except PhaseFailed as failure:
                record |= {"outcome": "failed", "error": failure.detail}
                if last:
                    raise PhaseFailed(failure.detail, **failure.context, ladder=records) from None
                continue
            record["outcome"] = "answered"
            record["memory"] = memory = self.wait_back(service, waiting)
            if memory["back"]:
                return {"ladder": records, "rule": memory["rule"]}
        raise PhaseFailed(
            f"{service.name} answered its reclaim but holds {memory['held_mib']} MiB on GPU {self.gpu}, "
            f"{memory['wanted_mib']} MiB or more expected (it held {memory['before_mib']} MiB before the "
            "release): its memory is not back",
            service=service.name,
            code="memory_not_back",
            ladder=records,
        )

    def started(self, services: list[Service]) -> dict[str, Any]:
        """After a stack start: each service's memory back; PhaseFailed naming the first that is not."""
        figures = {}
        for service in services:
            figures[service.name] = memory = self.wait_back(service, self.waiting)
            if not memory["back"]:
                raise PhaseFailed(
                    f"{service.name} started but holds {memory['held_mib']} MiB on GPU {self.gpu}, "
                    f"{memory['wanted_mib']} MiB or more expected: its memory is not back",
                    service=service.name,
                    code="memory_not_back",
                    memory=figures,
                )
        return figures

    def _step_waiting(self, deadline_seconds: float | None) -> strategies.Waiting:
        deadline = self.waiting.deadline
        if deadline_seconds is not None:
            deadline = min(deadline, time.monotonic() + deadline_seconds)
        return strategies.Waiting(self.waiting.pause, deadline)

    def wait_back(self, service: Service, waiting: strategies.Waiting) -> dict[str, Any]:
        """Sample until `service` holds what it held before (less its allowance), or the deadline."""
        before = (self.held_before or {}).get(service.name) if self.held_before is not None else None
        if before is None:
            return {"back": True, "rule": ANSWERED, "why": "its memory was not attributed before the release"}
        wanted = max(0, before - self.settings.residual_mib(service))
        poll = self.settings.gpu.poll_ms / 1000
        while True:
            reading = cleanup.read(self.gpu)
            if not reading.attributed:
                reason = reading.attribution.reason
                return {"back": True, "rule": ANSWERED, "why": f"attribution is unavailable now: {reason}"}
            held = reading.attribution.service_mib(service.name)
            figures = {"held_mib": held, "wanted_mib": wanted, "before_mib": before}
            if held >= wanted:
                return {"back": True, "rule": MEMORY_BACK, **figures}
            if time.monotonic() + poll > waiting.deadline:
                return {"back": False, "rule": "", **figures}
            waiting.pause(poll)


def held_before(release_figures: dict[str, Any]) -> dict[str, int] | None:
    """What each source-chain service held before the release, as the releasing phase measured it."""
    return release_figures.get("held_before_mib")


def lease_payload(handoff, lease_id, fencing_token) -> dict[str, Any]:
    return {
        "lease_id": str(lease_id) if lease_id else None,
        "fencing_token": fencing_token,
        "gpu": handoff.gpu_index,
        "handoff_id": str(handoff.id),
        "reason": handoff.reason,
    }
