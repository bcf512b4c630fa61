"""The phase runner: drives one claimed handoff from its last persisted phase to its end.

Part of the handoff service layer (services.run is its only caller, through the job runner
gaiaorch.jobs, which claims the handoff and keeps the claim alive). Each phase is written (phase
field + a running HandoffPhase row + an event) and committed *before* its external call, then
finished with its outcome and measured figures. A phase a dead worker left running is closed as
failed ("interrupted") by the recovery or the next claim, and a phase that did not succeed is run
again; every phase body is safe to repeat (release/reclaim calls are idempotent in the GAIA
contract, cleanup is a measurement, the transfer first checks who holds the lease).

Every write goes through the claim and is conditional on still holding it, so a worker that lost
the handoff to recovery (it stalled past the stale limit) stops instead of fighting the new one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.db import transaction
from django.utils import timezone

from gaiaorch import config, jobs
from gaiaorch.errors import DomainError
from handoffs import cleanup, measure, strategies
from handoffs.errors import PhaseFailed
from handoffs.models import FORWARD, TERMINAL, Handoff, HandoffPhase, Phase
from leases import holdings
from notifications.models import Severity
from notifications.services import record_event

logger = logging.getLogger(__name__)

SIGNAL_FIRST_BACKOFF_SECONDS = 0.25
Outcome = jobs.StepOutcome


class Unacknowledged(PhaseFailed):
    pass


class Runner:
    def __init__(self, claim: jobs.Claim, settings: config.Config):
        self.claim = claim
        self.handoff_id = claim.pk
        self.settings = settings
        self.deadline = 0.0
        self._source_lease: holdings.Holding | None = None

    # ---- the loop

    def drive(self) -> None:
        while self.step():
            pass

    def step(self) -> bool:
        """Run one phase; False once the handoff has ended."""
        handoff = Handoff.objects.get(pk=self.handoff_id)
        if handoff.phase in TERMINAL:
            return False
        interrupted = self._interrupted(handoff)
        if handoff.phase == Phase.ROLLING_BACK:
            self.roll_back(handoff, self.enter(handoff, Phase.ROLLING_BACK))
            return False
        if handoff.cancel_requested:
            self.begin_rollback(handoff, Phase.CANCELLED, self._cancel_error(handoff))
            return False
        phase = handoff.phase if interrupted else FORWARD[FORWARD.index(handoff.phase) + 1]
        if phase == Phase.COMPLETED:
            self.finish_handoff(handoff, Phase.COMPLETED)
            return False
        self.run_phase(handoff, phase)
        return True

    def _interrupted(self, handoff: Handoff) -> bool:
        """The current phase began but did not succeed (its worker died): it runs again."""
        record = handoff.phases.filter(name=handoff.phase).order_by("-started_at", "-id").first()
        return record is not None and record.outcome != Outcome.SUCCEEDED

    def run_phase(self, handoff: Handoff, phase: str) -> None:
        record = self.enter(handoff, phase)
        body = PHASE_BODIES[phase]
        try:
            figures, fields = body(self, handoff, record)
        except jobs.ClaimLost:
            raise
        except jobs.CancelRequested:
            self.fail_record(handoff, record, "cancel requested")
            self.begin_rollback(
                handoff, Phase.CANCELLED, self._cancel_error(Handoff.objects.get(pk=handoff.pk))
            )
        except Unacknowledged as failure:
            self.fail_record(handoff, record, failure.detail, **failure.context)
            if self.settings.handoffs.on_recipient_unacknowledged == "complete_with_warning":
                self.finish_handoff(handoff, Phase.COMPLETED, warning=failure.as_dict())
            else:
                self.begin_rollback(handoff, Phase.FAILED, {"phase": phase, **failure.as_dict()})
        except PhaseFailed as failure:
            self.fail_record(handoff, record, failure.detail, **failure.context)
            self.begin_rollback(handoff, Phase.FAILED, {"phase": phase, **failure.as_dict()})
        except Exception as exc:  # a bug or a database hiccup must still end in rollback, not limbo
            logger.exception("handoff %s: phase %s raised", handoff.id, phase)
            self.fail_record(handoff, record, f"unexpected error: {exc!r}")
            self.begin_rollback(
                handoff, Phase.FAILED, {"phase": phase, "detail": f"unexpected error: {exc!r}"}
            )
        else:
            self.succeed_record(handoff, record, figures, **fields)

    # ---- persistence (each write checks the claim)

    def _claimed(self, handoff: Handoff, **fields: Any) -> dict[str, Any]:
        """Fields to write under the claim, applied to the in-memory handoff too."""
        for name, value in fields.items():
            setattr(handoff, name, value)
        return fields

    def enter(self, handoff: Handoff, phase: str, **fields: Any) -> HandoffPhase:
        previous = handoff.phase
        with transaction.atomic():
            record = self.claim.begin_step(phase, job=self._claimed(handoff, phase=phase, **fields))
            record_event(
                "handoff.phase_changed",
                f"Handoff {handoff.type}: {phase}",
                actor=handoff.requested_by,
                severity=Severity.WARNING if phase == Phase.ROLLING_BACK else Severity.INFO,
                data=handoff.event_data(previous_phase=previous, error=handoff.error),
                subject=("handoff", handoff.id),
            )
        timeout = handoff.timeout_seconds or self.settings.handoffs.phase_timeouts[phase]
        self.deadline = time.monotonic() + timeout
        return record

    def succeed_record(self, handoff: Handoff, record: HandoffPhase, figures: dict, **fields: Any) -> None:
        self._finish_record(handoff, record, Outcome.SUCCEEDED, "", figures, fields)

    def fail_record(self, handoff: Handoff, record: HandoffPhase, detail: str, **figures: Any) -> None:
        self._finish_record(handoff, record, Outcome.FAILED, detail, figures, {})

    def _finish_record(self, handoff, record, outcome, detail, figures, fields) -> None:
        with transaction.atomic():
            self.claim.finish_step(
                record, outcome, detail, job=self._claimed(handoff, **fields), **_jsonable(figures)
            )
            record_event(
                "handoff.phase_finished" if outcome == Outcome.SUCCEEDED else "handoff.phase_failed",
                f"Handoff {handoff.type}: {record.name} {outcome}",
                detail,
                actor=handoff.requested_by,
                severity=Severity.INFO if outcome == Outcome.SUCCEEDED else Severity.WARNING,
                data=handoff.event_data(outcome=outcome, figures=record.figures),
                subject=("handoff", handoff.id),
            )

    def begin_rollback(self, handoff: Handoff, ends_as: str, error: dict[str, Any]) -> None:
        record = self.enter(handoff, Phase.ROLLING_BACK, rollback_to=ends_as, error=error)
        self.roll_back(handoff, record)

    def finish_handoff(
        self, handoff: Handoff, phase: str, warning: dict | None = None, **fields: Any
    ) -> None:
        now = timezone.now()
        warnings = [*handoff.warnings, {"code": "recipient_unacknowledged", **warning}] if warning else None
        with transaction.atomic():
            extra = {"warnings": warnings} if warnings else {}
            self.claim.begin_step(
                phase,
                job=self._claimed(handoff, phase=phase, completed_at=now, **extra, **fields),
                started_at=now,
                finished_at=now,
                outcome=Outcome.SUCCEEDED,
            )
            severity = (
                Severity.INFO if phase == Phase.COMPLETED and not handoff.warnings else Severity.WARNING
            )
            record_event(
                f"handoff.{phase}",
                _ending_title(handoff),
                (handoff.error or {}).get("detail", ""),
                actor=handoff.requested_by,
                severity=Severity.ERROR if phase == Phase.FAILED else severity,
                data=handoff.event_data(error=handoff.error, warnings=handoff.warnings),
                subject=("handoff", handoff.id),
            )

    # ---- waiting: the claim, cancellation, deadlines

    def pause(self, seconds: float, cancellable: bool = True) -> None:
        self.claim.checkpoint(cancellable)
        time.sleep(max(0.0, min(seconds, self.deadline - time.monotonic())))

    def waiting(self, cancellable: bool = True) -> strategies.Waiting:
        return strategies.Waiting(lambda seconds: self.pause(seconds, cancellable), self.deadline)

    def call_timeout(self) -> float:
        return max(0.1, min(self.settings.handoffs.http_timeout_seconds, self.deadline - time.monotonic()))

    def _cancel_error(self, handoff: Handoff) -> dict[str, Any]:
        return {
            "phase": handoff.phase,
            "detail": f"cancelled by {handoff.cancel_requested_by or 'an operator'} during {handoff.phase}",
            "code": "cancelled",
        }

    # ---- phase bodies: each returns (figures, handoff fields to store)

    def release_gpu(self, handoff: Handoff, record: HandoffPhase):
        kind = self.settings.handoffs.types[handoff.type]
        figures: dict[str, Any] = {"vram_before_mib": _used_or_none(handoff.gpu_index)}
        if kind.release == config.STACK_STRATEGY:
            stopped = strategies.container_action(
                "stop", self._stack_gpu_services(handoff.source), self.waiting()
            )
            return {**figures, "container": stopped}, {}
        payload = {"reason": handoff.reason or f"handoff {handoff.type}", "handoff_id": str(handoff.id)}
        called = False
        for service in self.settings.gpu_chain(handoff.source):
            if service.release:
                figures[service.name] = self._with_retries(service, service.release, payload, _busy)
                called = True
        if not called:
            raise PhaseFailed(f"{handoff.source} has no release strategy configured", service=handoff.source)
        return figures, {}

    def wait_cuda_cleanup(self, handoff: Handoff, record: HandoffPhase):
        kind = self.settings.handoffs.types[handoff.type]
        before = handoff.phases.filter(name=Phase.RELEASING_GPU, outcome=Outcome.SUCCEEDED).last()
        vram_before = (before.figures if before else {}).get("vram_before_mib")
        sample = measure.telemetry.sample()
        container_proof = (
            self.settings.handoffs.accept_container_stopped_as_proof and self.settings.stops_container(kind)
        )
        if not sample.available and container_proof:
            return {"proof": "container_stopped", "telemetry": sample.reason}, {}
        threshold = cleanup.threshold_for(
            handoff.gpu_index,
            configured_baseline=self.settings.gpu.baseline_mib,
            residual_mib=self.settings.gpu.residual_mib,
            need_mib=self.settings.vram_needed_mib(handoff.destination),
        )
        figures = measure.wait_for_cleanup(
            handoff.gpu_index,
            threshold,
            deadline=self.deadline,
            poll_seconds=self.settings.gpu.poll_ms / 1000,
            pause=self.pause,
        )
        return {"vram_before_mib": vram_before, **figures}, {}

    def transfer_ownership(self, handoff: Handoff, record: HandoffPhase):
        current = holdings.current_holder(handoff.gpu_index)
        adopted = current is not None and current.requester == handoff.destination
        holding = current if adopted else self._transfer(handoff, handoff.destination, handoff.source)
        figures = {
            "lease_id": str(holding.lease_id),
            "fencing_token": holding.fencing_token,
            "adopted": adopted,
        }
        return figures, {"destination_lease_id": holding.lease_id, "fencing_token": holding.fencing_token}

    def _transfer(self, handoff: Handoff, to: str, expected: str) -> holdings.Holding:
        try:
            return holdings.transfer(
                gpu=handoff.gpu_index,
                to=to,
                expected_holder=expected,
                reason=f"handoff {handoff.type} {handoff.id}",
                actor=handoff.requested_by,
            )
        except DomainError as refusal:
            raise PhaseFailed(refusal.detail, code=refusal.code, **refusal.context) from None

    def signal_recipient(self, handoff: Handoff, record: HandoffPhase):
        kind = self.settings.handoffs.types[handoff.type]
        payload = self._lease_payload(handoff, handoff.destination_lease_id, handoff.fencing_token)
        if kind.signal == config.STACK_STRATEGY:
            started = strategies.start_stack(self.settings.service(handoff.destination).stack, self.waiting())
            return {
                "container": started,
                **self._wait_chain_healthy(handoff.destination, cancellable=True),
            }, {}
        figures: dict[str, Any] = {}
        for service in reversed(self.settings.gpu_chain(handoff.destination)):
            strategy = service.ready or service.reclaim
            if strategy:
                figures[service.name] = self._until_acknowledged(service, strategy, payload)
        return figures, {}

    def _until_acknowledged(self, service: config.Service, strategy: config.Strategy, payload: dict) -> dict:
        """Retry with backoff until the recipient answers 2xx or the phase deadline passes."""
        try:
            return self._with_retries(service, strategy, payload, retry_if=lambda failure: True)
        except PhaseFailed as failure:
            raise Unacknowledged(
                f"{service.name} never acknowledged the GPU after {failure.context['attempts']} attempts: "
                f"{failure.detail}",
                code="recipient_unacknowledged",
                attempts=failure.context["attempts"],
                # the last answer's service, url, status and body, as every failed call carries them
                **{key: value for key, value in failure.context.items() if key not in ("attempts", "code")},
            ) from None

    def _with_retries(
        self,
        service: config.Service,
        strategy: config.Strategy,
        payload: dict,
        retry_if: Callable[[PhaseFailed], bool],
    ) -> dict:
        """Run a strategy, again with backoff while `retry_if` says the failure is passing."""
        backoff, attempts = SIGNAL_FIRST_BACKOFF_SECONDS, 0
        while True:
            attempts += 1
            try:
                answer = strategies.run_strategy(
                    service, strategy, self.call_timeout(), payload, self.waiting()
                )
                return {"attempts": attempts, **answer}
            except PhaseFailed as failure:
                if not retry_if(failure) or time.monotonic() + backoff >= self.deadline:
                    raise PhaseFailed(failure.detail, **failure.context, attempts=attempts) from None
            self.pause(backoff)
            backoff = min(backoff * 2, self.settings.handoffs.signal_retry_max_seconds)

    # ---- rollback

    def roll_back(self, handoff: Handoff, record: HandoffPhase) -> None:
        """Return the lease to the source, ask the source to reclaim, verify its health."""
        reached = set(handoff.phases.values_list("name", flat=True))
        figures: dict[str, Any] = {}
        problems: list[dict[str, Any]] = []
        steps: list[tuple[str, Callable[[], Any]]] = []
        if Phase.SIGNALING_RECIPIENT in reached:
            steps.append(("destination_release", lambda: self._release_destination(handoff)))
        steps.append(("lease", lambda: self._return_lease(handoff)))
        if Phase.RELEASING_GPU in reached:
            steps.append(("reclaim", lambda: self._reclaim_source(handoff)))
            steps.append(("health", lambda: self._wait_chain_healthy(handoff.source)))
        for name, action in steps:
            try:
                figures[name] = action() or "ok"
            except PhaseFailed as failure:
                figures[name] = "failed"
                if name != "destination_release":  # best effort: the lease move is what fences it out
                    problems.append({"step": name, **failure.as_dict()})
        self._end_rollback(handoff, record, figures, problems)

    def _end_rollback(self, handoff: Handoff, record: HandoffPhase, figures: dict, problems: list) -> None:
        error = dict(handoff.error or {})
        if problems:
            error["rollback"] = {"complete": False, "problems": problems}
            error["detail"] = f"{error.get('detail', 'failed')}; rollback incomplete: {problems[0]['detail']}"
            self.fail_record(handoff, record, "rollback incomplete", **figures, problems=problems)
        else:
            error["rollback"] = {"complete": True}
            error["detail"] = (
                f"{error.get('detail', 'failed')}; rolled back: GPU returned to {handoff.source}"
            )
            self.succeed_record(handoff, record, figures)
        ends_as = handoff.rollback_to if not problems else Phase.FAILED
        self.finish_handoff(handoff, ends_as or Phase.FAILED, error=error)

    def _release_destination(self, handoff: Handoff) -> dict:
        if self.settings.handoffs.types[handoff.type].signal == config.STACK_STRATEGY:
            services = self._stack_gpu_services(handoff.destination)
            return strategies.container_action("stop", services, self.waiting(cancellable=False))
        payload = {"reason": f"rollback of handoff {handoff.id}", "handoff_id": str(handoff.id)}
        return {
            service.name: strategies.run_strategy(
                service, service.release, self.call_timeout(), payload, self.waiting(cancellable=False)
            )
            for service in self.settings.gpu_chain(handoff.destination)
            if service.release
        }

    def _return_lease(self, handoff: Handoff) -> dict:
        current = holdings.current_holder(handoff.gpu_index)
        if current is not None and current.requester == handoff.source:
            self._source_lease = current
            return {"holder": handoff.source, "moved": False, "lease_id": str(current.lease_id)}
        if current is None:
            # The destination let go (a failed container start gives its lease back): take it if free.
            self._source_lease = holdings.take_if_free(
                gpu=handoff.gpu_index,
                requester=handoff.source,
                reason=f"rollback of handoff {handoff.id}",
                actor=handoff.requested_by,
            )
            if self._source_lease is not None:
                return {"holder": handoff.source, "moved": True, "lease_id": str(self._source_lease.lease_id)}
        if current is None or current.requester != handoff.destination:
            holder = current.requester if current else None
            raise PhaseFailed(
                f"GPU {handoff.gpu_index} is held by {holder or 'a waiter'}, not by {handoff.destination}: "
                "the lease was not returned",
                holder=holder,
            )
        self._source_lease = self._transfer(handoff, handoff.source, handoff.destination)
        return {"holder": handoff.source, "moved": True, "lease_id": str(self._source_lease.lease_id)}

    def _reclaim_source(self, handoff: Handoff) -> dict:
        kind = self.settings.handoffs.types[handoff.type]
        if kind.release == config.STACK_STRATEGY:
            services = self._stack_gpu_services(handoff.source)
            return strategies.container_action("start", services, self.waiting(cancellable=False))
        lease = self._source_lease
        payload = self._lease_payload(
            handoff, lease.lease_id if lease else None, lease.fencing_token if lease else None
        )
        figures = {}
        for service in reversed(self.settings.gpu_chain(handoff.source)):
            strategy = service.reclaim or service.ready
            if strategy:
                figures[service.name] = strategies.run_strategy(
                    service, strategy, self.call_timeout(), payload, self.waiting(cancellable=False)
                )
        return figures

    def _wait_chain_healthy(self, name: str, cancellable: bool = False) -> dict:
        waiting = self.waiting(cancellable)
        for service in self.settings.gpu_chain(name):
            strategies.wait_healthy(service, self.call_timeout(), waiting.deadline, waiting.pause)
        return {"healthy": True}

    # ---- helpers

    def _lease_payload(self, handoff: Handoff, lease_id, fencing_token) -> dict[str, Any]:
        return {
            "lease_id": str(lease_id) if lease_id else None,
            "fencing_token": fencing_token,
            "gpu": handoff.gpu_index,
            "handoff_id": str(handoff.id),
            "reason": handoff.reason,
        }

    def _stack_gpu_services(self, requester: str) -> list[str]:
        stack = self.settings.service(requester).stack
        return [service.name for service in self.settings.stack_gpu_services(stack)]


PHASE_BODIES = {
    Phase.RELEASING_GPU: Runner.release_gpu,
    Phase.WAITING_CUDA_CLEANUP: Runner.wait_cuda_cleanup,
    Phase.TRANSFERRING_OWNERSHIP: Runner.transfer_ownership,
    Phase.SIGNALING_RECIPIENT: Runner.signal_recipient,
}


def _busy(failure: PhaseFailed) -> bool:
    """409 is how a GAIA service says "busy, ask again" (gaia-core mid-generation)."""
    return failure.context.get("status") == HTTPStatus.CONFLICT


def _used_or_none(gpu: int) -> int | None:
    try:
        return measure.measure(gpu).used_mib
    except PhaseFailed:
        return None


def _ending_title(handoff: Handoff) -> str:
    endings = {
        Phase.COMPLETED: "completed",
        Phase.FAILED: "failed",
        Phase.CANCELLED: "was cancelled",
    }
    return f"Handoff {handoff.type} {endings[handoff.phase]}: {handoff.source} → {handoff.destination}"


def _jsonable(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures go into a JSONField: UUIDs and other objects become strings."""
    return json.loads(json.dumps(figures, default=str))
