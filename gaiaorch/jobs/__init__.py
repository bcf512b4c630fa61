"""The one runner of long, resumable jobs: container operations and handoffs.

- A worker *claims* a job row by a conditional UPDATE (`Claim.take`); of two racing, one wins.
- While the job runs, a side thread renews `heartbeat_at` every `beat_every_seconds`
  (`Claim.kept_alive`); the job checks `Claim.checkpoint()` where it may stop.
- Every write the job makes goes through its claim and is conditional on still holding it; a
  worker that lost its claim gets ClaimLost and stops.
- Each step is a row written before its external call and finished after (`begin_step`,
  `finish_step`); a step a dead worker left running is closed as failed ("interrupted: ...").
- The ticker runs `recover(kind)` every `recovery_interval_seconds`: a job silent for
  `stale_after_seconds` is handed to a worker again, up to `max_attempts`, then abandoned.

A kind of job (`JobKind`) names its tables and its `JobPolicy` and says what its app records;
what a step does stays in the app.
"""

from gaiaorch.jobs.claims import CancelRequested, Claim, ClaimLost, beat, worker_id
from gaiaorch.jobs.kinds import JobKind, JobPolicy
from gaiaorch.jobs.records import ClaimedJob, StepOutcome, StepRecord
from gaiaorch.jobs.runner import drive, recover, schedule_recovery

__all__ = [
    "CancelRequested",
    "Claim",
    "ClaimLost",
    "ClaimedJob",
    "JobKind",
    "JobPolicy",
    "StepOutcome",
    "StepRecord",
    "beat",
    "drive",
    "recover",
    "schedule_recovery",
    "worker_id",
]
