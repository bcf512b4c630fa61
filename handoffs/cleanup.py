"""The release ladder, climbed until the memory proves the release (handoffs.measure's rules).

`releasing_gpu` takes the first step of each source-chain service's ladder (a step that fails
hands over to the next one at once). `waiting_cuda_cleanup` samples the GPU every `gpu.poll_ms`
and judges every reading; while the release is not verified, a service that still holds memory
above its allowance (any service, when attribution is unavailable) whose step's deadline has
passed is escalated to its next step. The phase ends at the first verified reading, or fails at
its deadline with the last verdict's sentence, its refusal code and figures.

Every step taken is one record in the phase figures (`ladder`): service, step, action, answer or
error, call seconds, when it answered (`answered_at`, epoch seconds), and the memory the service
held and the GPU's free memory when the next step superseded it or the phase ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gaiaorch import attribution, config
from gaiaorch.config import Service, Step
from handoffs import measure
from handoffs.errors import PhaseFailed
from handoffs.measure import Reading, Rules, Verdict

TakeStep = Callable[[Service, Step], dict[str, Any]]  # runs one step; PhaseFailed when it failed
READINGS_KEPT = 2000  # enough to look back over any settle window at any poll interval


def rules_for(settings: config.Config, kind: config.HandoffType, source: list[Service]) -> Rules:
    gpu = settings.gpu
    return Rules(
        handoff_type=kind.name,
        source=tuple(service.name for service in source),
        recipient=kind.destination,
        residual_mib={service.name: settings.residual_mib(service) for service in source},
        need_mib=settings.vram_needed_mib(kind.destination),
        headroom_mib=gpu.headroom_mib,
        settle_window_ms=gpu.settle_window_ms,
        settle_delta_mib=gpu.settle_delta_mib,
        settle_samples=gpu.settle_samples,
        co_residence=kind.co_residence,
    )


def read(gpu: int) -> Reading:
    sample, owners = measure.measure(gpu, attribution.current)
    return Reading(time.monotonic(), sample, owners)


class Ladders:
    """The source chain's release ladders: every step taken, in order, and where each service stands."""

    def __init__(self, services: list[Service], records: list[dict[str, Any]], take: TakeStep):
        self.services = [service for service in services if service.release]
        self.records = records
        self.take = take
        self.failures: dict[str, PhaseFailed] = {}  # each service's last failed step, as it failed

    def last(self, service: Service) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r["service"] == service.name), None)

    def climb(self, service: Service, start: int) -> dict[str, Any] | None:
        """Take steps from `start` until one answers; its record, or None when every one failed."""
        steps = service.release.steps
        for index in range(start, len(steps)):
            record = {"service": service.name, "step": index + 1, "action": steps[index].action}
            began = time.monotonic()
            try:
                record |= {"outcome": "answered", **self.take(service, steps[index])}
            except PhaseFailed as failure:
                self.failures[service.name] = failure
                record |= {
                    "outcome": "failed",
                    "error": failure.detail,
                    "status": failure.context.get("status"),
                }
            record["seconds"] = round(time.monotonic() - began, 3)
            record["answered_at"] = time.time()
            self.records.append(record)
            if record["outcome"] == "answered":
                return record
        return None

    def first_steps(self) -> None:
        """Each service's first step, in chain order; PhaseFailed when a whole ladder failed."""
        for service in self.services:
            if self.climb(service, 0) is None:
                failure = self.failures[service.name]
                context = {"service": service.name, **failure.context, "ladder": self.records}
                raise PhaseFailed(failure.detail, **context)

    def due(self, service: Service) -> bool:
        """Whether `service` may go to its next step: there is one, and its current step's deadline passed."""
        record = self.last(service)
        index = record["step"] if record else 0
        if index >= len(service.release.steps):
            return False
        if record is None or record["outcome"] == "failed":
            return True
        deadline = service.release.steps[index - 1].deadline_seconds
        return deadline is not None and time.time() - record["answered_at"] >= deadline

    def escalate(self, service: Service, reading: Reading) -> None:
        self.close(service, reading)
        record = self.last(service)
        self.climb(service, record["step"] if record else 0)

    def close(self, service: Service, reading: Reading) -> None:
        """Write what the service held after its latest step (once)."""
        record = self.last(service)
        if record is not None and "memory_after_mib" not in record:
            held = reading.attribution.service_mib(service.name) if reading.attributed else None
            record["memory_after_mib"] = held
            record["free_after_mib"] = reading.gpu.free_mib

    def close_all(self, reading: Reading) -> None:
        for service in self.services:
            self.close(service, reading)

    def stopped_a_container(self) -> bool:
        return any(r["outcome"] == "answered" and "container" in r for r in self.records)

    def latest_answer(self) -> dict[str, Any] | None:
        answered = [r for r in self.records if r["outcome"] == "answered"]
        return answered[-1] if answered else None


def wait_until_released(
    ladders: Ladders,
    rules: Rules,
    gpu: int,
    *,
    deadline: float,
    poll_seconds: float,
    pause: Callable[[float], None],
) -> dict[str, Any]:
    """Sample, judge, escalate; the figures of the verified release, PhaseFailed at the deadline.

    Samples are taken on a fixed cadence (a slow step or sample shifts the next ones, never
    shortens a poll), so a settle window of N polls is N polls long."""
    started = next_sample = time.monotonic()
    readings: list[Reading] = []
    while True:
        readings = [*readings[-READINGS_KEPT:], read(gpu)]
        verdict = measure.judge(readings, rules)
        if verdict.verified:
            return _verified(ladders, verdict, readings, started)
        if verdict.refusal == measure.UNVERIFIABLE:
            raise _refusal(ladders, verdict, readings, started)
        for service in ladders.services:
            if _holds(service, verdict, readings[-1]) and ladders.due(service):
                ladders.escalate(service, readings[-1])
        next_sample = max(next_sample + poll_seconds, time.monotonic())
        if next_sample > deadline:
            raise _refusal(ladders, verdict, readings, started)
        pause(next_sample - time.monotonic())


def _holds(service: Service, verdict: Verdict, reading: Reading) -> bool:
    """Whether the next step of `service` could help: it holds too much, or nobody can tell."""
    if reading.attributed:
        return service.name in verdict.over_residual
    return verdict.refusal == measure.NOT_ENOUGH_FREE


def _summary(ladders: Ladders, verdict: Verdict, readings: list[Reading], started: float) -> dict[str, Any]:
    ladders.close_all(readings[-1])
    return {
        **verdict.figures,
        "verdict": verdict.sentence,
        "samples": len(readings),
        "seconds": round(time.monotonic() - started, 3),
        "ladder": ladders.records,
    }


def _verified(ladders: Ladders, verdict: Verdict, readings: list[Reading], started: float) -> dict[str, Any]:
    figures = _summary(ladders, verdict, readings, started)
    answer = ladders.latest_answer()
    if answer is not None:
        # From the answer of the step that made the difference to the settled verification.
        figures["reclaim"] = {
            "service": answer["service"],
            "step": answer["step"],
            "action": answer["action"],
            "seconds": round(max(0.0, time.time() - answer["answered_at"]), 3),
        }
    return figures


def _refusal(ladders: Ladders, verdict: Verdict, readings: list[Reading], started: float) -> PhaseFailed:
    figures = _summary(ladders, verdict, readings, started)
    gpu = readings[-1].gpu.index
    return PhaseFailed(
        f"the release on GPU {gpu} was not verified: {verdict.sentence}",
        code="release_not_verified",
        refusal=verdict.refusal,
        gpu=gpu,
        **figures,
    )
