"""What a kind of job declares to the runner: its tables, its policy, what its app records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.db.models import Q
from django.utils import timezone

from gaiaorch.jobs.records import ClaimedJob, StepOutcome, StepRecord

if TYPE_CHECKING:
    from gaiaorch.jobs.claims import Claim


@dataclass(frozen=True)
class JobPolicy:
    """How one kind of job is kept alive and recovered: the one place these numbers are decided.

    The heartbeat runs in its own thread, so a job blocked in a long call still beats; the stale
    limit only has to cover a few missed beats (a busy database), never the length of a call.
    """

    beat_every_seconds: float  # the claim is renewed this often while the job runs
    stale_after_seconds: float  # a claim not renewed for this long belongs to a dead worker
    recovery_interval_seconds: float  # the ticker looks for stale jobs this often
    # A job is handed to a worker at most this often (first run included), then abandoned;
    # None: it is handed over again until it ends, resuming from its last persisted step.
    max_attempts: int | None = None


class JobKind(ABC):
    """One kind of claimed job. The runner (gaiaorch.jobs) claims, beats, writes step rows and
    recovers; a subclass names its tables and says what its app records at each of those turns."""

    name: ClassVar[str]  # in log lines and the ticker's job name
    model: ClassVar[type[ClaimedJob]]
    step_model: ClassVar[type[StepRecord]]
    step_job_field: ClassVar[str]  # the step model's column naming its job, e.g. "operation_id"
    active: ClassVar[Q]  # the rows a worker may still drive
    cancel_requested: ClassVar[Q | None] = None  # the rows someone asked to stop; None: not cancellable
    # The rows whose task never reached the queue (the broker refused it after commit): recovery
    # queues them at its next pass instead of waiting for the stale limit.
    unqueued: ClassVar[Q | None] = None

    @abstractmethod
    def policy(self) -> JobPolicy:
        """Read at each claim, each recovery pass and, for its cadence, by the ticker after each run."""

    @abstractmethod
    def enqueue(self, pk: Any) -> None:
        """Hand the job to the worker pool (called after the recovery transaction commits)."""

    def claimed(self, claim: Claim) -> None:
        """In the claim's transaction: what the app records when a worker takes the job."""
        return None  # most kinds record nothing here

    @abstractmethod
    def requeued(self, job: Any, silence: str) -> None:  # job: a row of the kind's model
        """In the recovery transaction: the app's event for a job handed to a worker again."""

    def abandoned(self, job: Any, silence: str) -> None:
        """In the recovery transaction: end a job that used up `max_attempts`."""
        raise NotImplementedError(f"{self.name} bounds its attempts but does not say how to abandon a job")

    def close_running_steps(self, pk: Any, detail: str) -> int:
        """Fail the step rows a dead worker left running (it can no longer finish them)."""
        return self.step_model.objects.filter(
            **{self.step_job_field: pk}, outcome=StepOutcome.RUNNING
        ).update(outcome=StepOutcome.FAILED, finished_at=timezone.now(), detail=detail)
