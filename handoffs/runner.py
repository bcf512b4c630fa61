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
from datetime import timedelta
from typing import Any, cast

from django.db import transaction
from django.utils import timezone

from gaiaorch import config, jobs
from gaiaorch.config import RECLAIM, RELEASE
from gaiaorch.errors import DomainError
from handoffs import cleanup, events, reclaims, strategies
from handoffs.errors import PhaseFailed
from handoffs.models import FORWARD, TERMINAL, Handoff, HandoffPhase, IncompleteRollback, Phase
from leases import holdings
from notifications.models import Severity
from notifications.services import record_event

logger = logging.getLogger(__name__)

Outcome = jobs.StepOutcome
LOGGED_FIGURES_LIMIT = 1500  # characters of a phase's figures quoted in its log line


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
            self.complete(handoff)
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
            figures, fields, *detail = body(self, handoff, record)
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
                self.complete(handoff, warning=failure.as_dict())
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
            self.succeed_record(handoff, record, figures, *detail, **fields)

    # ---- persistence (each write checks the claim)

    def _claimed(self, handoff: Handoff, **fields: Any) -> dict[str, Any]:
        """Fields to write under the claim, applied to the in-memory handoff too."""
        for name, value in fields.items():
            setattr(handoff, name, value)
        return fields

    def enter(self, handoff: Handoff, phase: str, **fields: Any) -> HandoffPhase:
        previous = handoff.phase
        with transaction.atomic():
            record = cast(
                HandoffPhase, self.claim.begin_step(phase, job=self._claimed(handoff, phase=phase, **fields))
            )
            record_event(
                events.HANDOFF_PHASE_CHANGED,
                f"Handoff {handoff.type}: {phase}",
                actor=handoff.requested_by,
                severity=Severity.WARNING if phase == Phase.ROLLING_BACK else Severity.INFO,
                data=handoff.event_data(previous_phase=previous, error=handoff.error),
                subject=("handoff", handoff.id),
            )
        timeout = handoff.timeout_seconds or self.settings.handoffs.phase_timeouts[phase]
        self.deadline = time.monotonic() + timeout
        return record

    def succeed_record(
        self, handoff: Handoff, record: HandoffPhase, figures: dict, detail: str = "", **fields: Any
    ) -> None:
        self._finish_record(handoff, record, Outcome.SUCCEEDED, detail, figures, fields)

    def fail_record(self, handoff: Handoff, record: HandoffPhase, detail: str, **figures: Any) -> None:
        logger.warning(
            "handoff %s (%s): %s failed: %s; figures %s",
            handoff.id,
            handoff.type,
            record.name,
            detail,
            _compact(figures),
        )
        self._finish_record(handoff, record, Outcome.FAILED, detail, figures, {})

    def _finish_record(self, handoff, record, outcome, detail, figures, fields) -> None:
        with transaction.atomic():
            self.claim.finish_step(
                record, outcome, detail, job=self._claimed(handoff, **fields), **_jsonable(figures)
            )
            succeeded = outcome == Outcome.SUCCEEDED
            record_event(
                events.HANDOFF_PHASE_FINISHED if succeeded else events.HANDOFF_PHASE_FAILED,
                f"Handoff {handoff.type}: {record.name} {outcome}",
                detail,
                actor=handoff.requested_by,
                severity=Severity.INFO if outcome == Outcome.SUCCEEDED else Severity.WARNING,
                data=handoff.event_data(outcome=outcome, figures=record.figures),
                subject=("handoff", handoff.id),
            )

    def begin_rollback(self, handoff: Handoff, ends_as: str, error: dict[str, Any]) -> None:
        logger.warning(
            "handoff %s (%s): rolling back to %s after %s: %s",
            handoff.id,
            handoff.type,
            handoff.source,
            error.get("phase", handoff.phase),
            error.get("detail", ""),
        )
        record = self.enter(handoff, Phase.ROLLING_BACK, rollback_to=ends_as, error=error)
        self.roll_back(handoff, record)

    def complete(self, handoff: Handoff, warning: dict | None = None) -> None:
        """Tell whoever the handoff type names that it ended (best effort), then end it completed."""
        notice = self.notify(handoff)
        self.finish_handoff(handoff, Phase.COMPLETED, warning=warning, figures=notice)

    def finish_handoff(
        self,
        handoff: Handoff,
        phase: str,
        warning: dict | None = None,
        figures: dict | None = None,
        incomplete: list[dict[str, Any]] | None = None,
        **fields: Any,
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
                figures=_jsonable(figures or {}),
            )
            if incomplete:
                self._record_incomplete_rollback(handoff, incomplete)
            severity = (
                Severity.INFO if phase == Phase.COMPLETED and not handoff.warnings else Severity.WARNING
            )
            record_event(
                events.HANDOFF_ENDED[phase],
                _ending_title(handoff),
                (handoff.error or {}).get("detail", ""),
                actor=handoff.requested_by,
                severity=Severity.ERROR if phase == Phase.FAILED else severity,
                data=handoff.event_data(error=handoff.error, warnings=handoff.warnings),
                subject=("handoff", handoff.id),
            )
        if phase != Phase.COMPLETED:
            log = logger.error if incomplete else logger.warning
            log(
                "handoff %s (%s) %s: %s",
                handoff.id,
                handoff.type,
                phase,
                (handoff.error or {}).get("detail", ""),
            )

    def _record_incomplete_rollback(self, handoff: Handoff, problems: list[dict[str, Any]]) -> None:
        """The source was left without the GPU it had: a critical event, and a row the ticker
        retries (reclaim) and /ready reports until it is reclaimed or an operator acknowledges it."""
        retry = any(problem["step"] in RETRIED_STEPS for problem in problems)
        IncompleteRollback.objects.create(
            handoff_id=handoff.id,
            gpu_index=handoff.gpu_index,
            source=handoff.source,
            problems=_jsonable({"problems": problems})["problems"],
            retry_reclaim=retry,
            next_attempt_at=timezone.now()
            + timedelta(seconds=self.settings.handoffs.reclaim_retry_base_seconds),
        )
        record_event(
            events.HANDOFF_ROLLBACK_INCOMPLETE,
            f"Rollback of handoff {handoff.type} left {handoff.source} without its GPU memory",
            problems[0]["detail"],
            actor=handoff.requested_by,
            severity=Severity.CRITICAL,
            data=handoff.event_data(problems=problems, reclaim_retried=retry),
            subject=("handoff", handoff.id),
        )

    # ---- waiting: the claim, cancellation, deadlines

    def pause(self, seconds: float, cancellable: bool = True) -> None:
        wake = min(time.monotonic() + seconds, self.deadline)  # the checkpoint's query is inside the pause
        self.claim.checkpoint(cancellable)
        time.sleep(max(0.0, wake - time.monotonic()))

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
        figures = self._before_release(handoff, kind)
        if kind.release == config.STACK_STRATEGY:
            stopped = strategies.container_action(
                "stop", self._stack_gpu_services(handoff.source), self.waiting()
            )
            return {**figures, "container": stopped}, {}
        ladders = self._ladders(handoff, kind, [])
        if not ladders.services:
            raise PhaseFailed(f"{handoff.source} has no release strategy configured", service=handoff.source)
        try:
            ladders.first_steps()
        except PhaseFailed as failure:  # keep what was held before: the rollback waits for it
            raise PhaseFailed(failure.detail, **{**figures, **failure.context}) from None
        return {**figures, "ladder": ladders.records}, {}

    def _before_release(self, handoff: Handoff, kind: config.HandoffType) -> dict[str, Any]:
        """What the GPU and each source service held before anything was asked to let go."""
        try:
            reading = cleanup.read(handoff.gpu_index)
        except PhaseFailed:
            return {"vram_before_mib": None, "held_before_mib": None}
        owners = reading.attribution
        held = {s.name: owners.service_mib(s.name) for s in self._source_services(handoff, kind)}
        return {
            "vram_before_mib": reading.gpu.used_mib,
            "held_before_mib": held if owners.available else None,
            "attribution": "available" if owners.available else f"unavailable: {owners.reason}",
        }

    def _ladders(
        self, handoff: Handoff, kind: config.HandoffType, records: list[dict[str, Any]]
    ) -> cleanup.Ladders:
        """The source chain's release ladders (none for a stack release: stopping it was the step)."""
        payload = {"reason": handoff.reason or f"handoff {handoff.type}", "handoff_id": str(handoff.id)}

        def take(service: config.Service, step: config.Step) -> dict[str, Any]:
            return self._take(service, step, RELEASE, payload, strategies.busy)

        stack = kind.release == config.STACK_STRATEGY
        return cleanup.Ladders([] if stack else self.settings.gpu_chain(handoff.source), records, take)

    def _take(self, service, step, direction, payload, retry_if, waiting=None) -> dict[str, Any]:
        return strategies.take_step(
            service,
            step,
            direction,
            payload,
            waiting or self.waiting(),
            http_timeout=self.settings.handoffs.http_timeout_seconds,
            retry_if=retry_if,
            backoff_max=self.settings.handoffs.signal_retry_max_seconds,
        )

    def _source_services(self, handoff: Handoff, kind: config.HandoffType) -> list[config.Service]:
        """Whose memory must go: the source's GPU chain, or its stack's GPU services."""
        if kind.release == config.STACK_STRATEGY:
            # The config check gives a stack strategy's service a stack.
            return self.settings.stack_gpu_services(self.settings.service(handoff.source).stack)  # type: ignore[union-attr, arg-type]
        return self.settings.gpu_chain(handoff.source)

    def wait_cuda_cleanup(self, handoff: Handoff, record: HandoffPhase):
        kind = self.settings.handoffs.types[handoff.type]
        released = self._release_figures(handoff)
        ladders = self._ladders(handoff, kind, list(released.get("ladder", [])))
        before = {key: released.get(key) for key in ("vram_before_mib", "held_before_mib")}
        container_proof = (
            self.settings.handoffs.accept_container_stopped_as_proof and self.settings.stops_container(kind)
        )
        sample = cleanup.measure.telemetry.sample()
        if not sample.available and container_proof:
            return {**before, **self._container_proof(handoff, kind, ladders, sample.reason)}, {}
        rules = cleanup.rules_for(self.settings, kind, self._source_services(handoff, kind))
        figures = cleanup.wait_until_released(
            ladders,
            rules,
            handoff.gpu_index,
            deadline=self.deadline,
            poll_seconds=self.settings.gpu.poll_ms / 1000,
            pause=self.pause,
        )
        return {**before, **figures}, {}, _verdict_detail(figures)

    def _container_proof(self, handoff, kind, ladders: cleanup.Ladders, why: str) -> dict[str, Any]:
        """Without telemetry: climb the ladders to their first container stop; that stop is the proof."""
        if kind.release != config.STACK_STRATEGY:
            for service in ladders.services:
                while not ladders.stopped_a_container() and ladders.due(service):
                    ladders.climb(service, ladders.last(service)["step"] if ladders.last(service) else 0)  # type: ignore[index]
            if not ladders.stopped_a_container():
                raise PhaseFailed(
                    f"GPU telemetry is unavailable ({why}) and no release step stopped a container",
                    refusal="telemetry_unavailable",
                    ladder=ladders.records,
                )
        return {"proof": "container_stopped", "telemetry": why, "ladder": ladders.records}

    def _release_figures(self, handoff: Handoff) -> dict[str, Any]:
        return release_figures(handoff)

    def transfer_ownership(self, handoff: Handoff, record: HandoffPhase):
        current = holdings.current_holder(handoff.gpu_index)
        adopted = current is not None and current.requester == handoff.destination
        holding = (
            cast(holdings.Holding, current)
            if adopted
            else self._transfer(handoff, handoff.destination, handoff.source)
        )
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
        payload = reclaims.lease_payload(handoff, handoff.destination_lease_id, handoff.fencing_token)
        if kind.signal == config.STACK_STRATEGY:
            # The config check gives a stack strategy's service a stack.
            started = strategies.start_stack(self.settings.service(handoff.destination).stack, self.waiting())  # type: ignore[union-attr, arg-type]
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
        """Each step asked again with backoff until the recipient acknowledges or the step's
        deadline (the last: the phase's) passes; then the next step."""
        for index, step in enumerate(strategy.steps):
            waiting = self.waiting()
            if step.deadline_seconds is not None and index < len(strategy.steps) - 1:
                waiting = strategies.Waiting(
                    waiting.pause, min(waiting.deadline, time.monotonic() + step.deadline_seconds)
                )
            try:
                return {"step": index + 1, **self._take(service, step, RECLAIM, payload, _always, waiting)}
            except PhaseFailed as failure:
                last = failure
        raise Unacknowledged(
            f"{service.name} never acknowledged the GPU after {last.context['attempts']} attempts: "
            f"{last.detail}",
            code="recipient_unacknowledged",
            attempts=last.context["attempts"],
            # the last answer's service, url, status and body, as every failed call carries them
            **{key: value for key, value in last.context.items() if key not in ("attempts", "code")},
        )

    def notify(self, handoff: Handoff) -> dict[str, Any]:
        """`handoffs.<type>.notify`: POST {direction, handoff_id} (gaia-core's /sleep/study-handoff).
        A failure is logged and recorded, never a failed handoff: the GPU has already moved."""
        call = self.settings.handoffs.types[handoff.type].notify
        if call is None:
            return {}
        body = {"direction": handoff.type, "handoff_id": str(handoff.id)}
        try:
            answer = strategies.http_call("notify", call, self.settings.handoffs.http_timeout_seconds, body)
        except PhaseFailed as failure:
            logger.warning(
                "handoff %s (%s): the notice to %s failed: %s",
                handoff.id,
                handoff.type,
                call.url,
                failure.detail,
            )
            return {"notified": {"url": call.url, "failed": failure.detail}}
        return {"notified": {"url": call.url, "answer": answer}}

    # ---- rollback

    def roll_back(self, handoff: Handoff, record: HandoffPhase) -> None:
        """Return the lease to the source, have the source reclaim until its memory is back, check
        its health."""
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
                figures[name] = {"failed": failure.detail, **failure.context}
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
        self.finish_handoff(handoff, ends_as or Phase.FAILED, error=error, incomplete=problems)

    def _release_destination(self, handoff: Handoff) -> dict:
        if self.settings.handoffs.types[handoff.type].signal == config.STACK_STRATEGY:
            services = self._stack_gpu_services(handoff.destination)
            return strategies.container_action("stop", services, self.waiting(cancellable=False))
        payload = {"reason": f"rollback of handoff {handoff.id}", "handoff_id": str(handoff.id)}
        waiting = self.waiting(cancellable=False)
        return {
            service.name: self._take(service, service.release.steps[0], RELEASE, payload, _never, waiting)
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
        waiting = self.waiting(cancellable=False)
        if kind.release != config.STACK_STRATEGY:
            return reclaim_chain(
                self.settings, handoff, self._release_figures(handoff), self._source_lease, waiting
            )
        services = self._source_services(handoff, kind)
        started = strategies.container_action("start", [service.name for service in services], waiting)
        held_before = reclaims.held_before(self._release_figures(handoff))
        reclaim = reclaims.Reclaim(self.settings, handoff.gpu_index, held_before, {}, waiting, 0)
        return {"container": started, "memory": reclaim.started(services)}

    def _wait_chain_healthy(self, name: str, cancellable: bool = False) -> dict:
        waiting = self.waiting(cancellable)
        for service in self.settings.gpu_chain(name):
            strategies.wait_healthy(service, self.call_timeout(), waiting.deadline, waiting.pause)
        return {"healthy": True}

    # ---- helpers

    def _stack_gpu_services(self, requester: str) -> list[str]:
        stack = self.settings.service(requester).stack  # type: ignore[union-attr]  # a configured service
        return [service.name for service in self.settings.stack_gpu_services(stack)]  # type: ignore[arg-type]


def release_figures(handoff: Handoff) -> dict[str, Any]:
    """The last releasing phase's figures (a failed one keeps what was held before, too)."""
    released = handoff.phases.filter(name=Phase.RELEASING_GPU).last()
    return released.figures if released else {}


def reclaim_chain(
    settings: config.Config,
    handoff: Handoff,
    release_figures: dict[str, Any],
    lease: holdings.Holding | None,
    waiting: strategies.Waiting,
) -> dict[str, Any]:
    """The source chain's reclaim ladders, each until its memory is back (handoffs.reclaims)."""
    payload = reclaims.lease_payload(
        handoff, lease.lease_id if lease else None, lease.fencing_token if lease else None
    )
    reclaim = reclaims.Reclaim(
        settings,
        handoff.gpu_index,
        reclaims.held_before(release_figures),
        payload,
        waiting,
        settings.handoffs.http_timeout_seconds,
    )
    return reclaim.chain(settings.gpu_chain(handoff.source))


PHASE_BODIES: dict[str, Callable[[Runner, Handoff, HandoffPhase], Any]] = {
    Phase.RELEASING_GPU: Runner.release_gpu,
    Phase.WAITING_CUDA_CLEANUP: Runner.wait_cuda_cleanup,
    Phase.TRANSFERRING_OWNERSHIP: Runner.transfer_ownership,
    Phase.SIGNALING_RECIPIENT: Runner.signal_recipient,
}


RETRIED_STEPS = ("reclaim", "health")  # rollback steps the ticker tries again (handoffs.services)


def _always(failure: PhaseFailed) -> bool:
    return True


def _never(failure: PhaseFailed) -> bool:
    return False


def _verdict_detail(figures: dict[str, Any]) -> str:
    return figures.get("verdict", "")


def _compact(figures: dict[str, Any]) -> str:
    text = json.dumps(figures, default=str, separators=(",", ":"))
    return text if len(text) <= LOGGED_FIGURES_LIMIT else text[: LOGGED_FIGURES_LIMIT - 1] + "…"


def _ending_title(handoff: Handoff) -> str:
    endings: dict[str, str] = {
        Phase.COMPLETED: "completed",
        Phase.FAILED: "failed",
        Phase.CANCELLED: "was cancelled",
    }
    return f"Handoff {handoff.type} {endings[handoff.phase]}: {handoff.source} → {handoff.destination}"


def _jsonable(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures go into a JSONField: UUIDs and other objects become strings."""
    return json.loads(json.dumps(figures, default=str))
