"""GPU lease rules: the only code that changes Gpu and Lease rows.

Every decision about a GPU (grant, release, expire, revoke, transfer, seating its resident) runs in
one transaction holding that GPU's row lock, writes its audit events inside that transaction (in one
insert), and grants the next eligible waiter before committing. Public functions take keyword
arguments and are stable: other apps (handoffs, containers) call acquire, release, transfer,
current_holder and gpu_status.

Outside decisions, two conditional updates touch leases: a requester claiming its grant (`claim`)
and the wait poller stamping signs of life (`poll_open_waits`). Decisions lock the live lease rows
they read, so such an update waits for a decision in flight and then re-checks its condition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import FilteredRelation, Q
from django.utils import timezone

from gaiaorch import attribution, config, statements, telemetry
from gaiaorch.errors import Conflict, InvalidRequest, NotFound, Unavailable
from gaiaorch.statements import CompiledRead
from gaiaorch.unchanged import WhileUnchanged
from gaiaorch_client.contract import ANY_GPU
from leases import events, wakeups
from leases.models import Gpu, Lease, LeaseStatus
from notifications.services import record_events

CHOICE_ATTEMPTS = 3  # an 'any' acquire chooses again when its GPU was taken between choice and lock
REAPER = "lease-reaper"
RESIDENT_SEATER = "lease-resident"
GAVE_UP = "gave up waiting"

EVENT_TITLES = {
    "requested": "{requester} asked for GPU {gpu}",
    "granted": "{requester} was granted GPU {gpu}",
    "standing": "{requester} holds GPU {gpu} as its resident",
    "released": "{requester} released GPU {gpu}",
    "expired": "{requester}'s lease on GPU {gpu} expired",
    "unclaimed": "{requester} did not claim GPU {gpu} in time; it was passed on",
    "revoked": "{requester}'s lease on GPU {gpu} was revoked",
    "cancelled": "{requester} left the queue for GPU {gpu}",
}


@dataclass(frozen=True)
class AcquireResult:
    lease: Lease
    granted: bool
    queue_position: int | None
    waiting_for: str
    created: bool = False  # True when this call made the queue entry (not a re-acquire)
    choice: str = ""  # an 'any' acquire: why this GPU, and what each other GPU lacked


@dataclass(frozen=True)
class Released:
    """A release and where it left the GPU: who holds it now, how many still wait."""

    lease: Lease
    next_holder: str | None
    queue_length: int


# ---------------------------------------------------------------- requesters and GPUs


def requesters() -> list[str]:
    """Requester names are the configured services (containers and plain processes alike)."""
    return config.current().requesters()


def check_requester(requester: str) -> None:
    if requester not in requesters():
        raise InvalidRequest(
            f"Unknown requester {requester!r}.",
            fields={"requester": [f"must be one of: {', '.join(requesters())}"]},
        )


def _wanted_gpus(sampled: telemetry.Telemetry) -> tuple[dict[int, dict[str, Any]], bool]:
    """The GPU rows there should be: from telemetry, or settings.GPU_COUNT while it is unavailable;
    each with its configured resident. Also whether telemetry measured them."""
    measured = sampled.available and bool(sampled.gpus)
    if measured:
        wanted = {g.index: {"uuid": g.uuid, "name": g.name, "total_mib": g.total_mib} for g in sampled.gpus}
    else:
        wanted = {index: {} for index in range(settings.GPU_COUNT)}
    residents = config.current().leases.residents
    return {
        i: {**facts, "present": True, "resident": residents.get(i, "")} for i, facts in wanted.items()
    }, measured


def _unlike(gpu: Gpu, facts: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in facts.items() if getattr(gpu, name) != value}


def sync_gpus(sampled: telemetry.Telemetry | None = None) -> list[Gpu]:
    """Make Gpu rows match telemetry (or settings.GPU_COUNT) and the configured residents. A GPU
    seen for the first time, or newly given a resident, is handed to that resident if it is free."""
    wanted, measured = _wanted_gpus(sampled or telemetry.sample())
    rows = {gpu.index: gpu for gpu in Gpu.objects.all()}
    to_seat = []
    for index, facts in wanted.items():
        gpu = rows.get(index)
        if gpu is None:
            with transaction.atomic():
                # get_or_create survives a concurrent creator of the same row (unique index + savepoint).
                gpu, created = Gpu.objects.get_or_create(index=index, defaults=facts)
                if created:
                    _presence_event(gpu, events.GPU_APPEARED)
            rows[index] = gpu
            if created and gpu.resident:
                to_seat.append(index)
        changed = _unlike(gpu, facts)
        if changed:
            with transaction.atomic():
                # The update names the presence it changes, so of two syncs only one reports it.
                if not Gpu.objects.filter(pk=gpu.pk, present=gpu.present).update(**changed):
                    Gpu.objects.filter(pk=gpu.pk).update(**changed)
                elif changed.get("present"):
                    _presence_event(gpu, events.GPU_APPEARED, **changed)
            for name, value in changed.items():
                setattr(gpu, name, value)
            if changed.get("resident"):
                to_seat.append(index)
    if measured:
        # Only a working probe may say a GPU is gone; a failing one must not hide GPUs.
        for gone in Gpu.objects.filter(present=True).exclude(index__in=wanted):
            with transaction.atomic():
                if Gpu.objects.filter(pk=gone.pk, present=True).update(present=False):
                    _presence_event(gone, events.GPU_DISAPPEARED)
    for index in to_seat:
        seat_resident(index)
    present = [gpu for gpu in rows.values() if gpu.index in wanted or (gpu.present and not measured)]
    return sorted(present, key=lambda gpu: gpu.index)


def _presence_event(gpu: Gpu, type: str, **now: Any) -> None:
    """A GPU appearing in telemetry or gone from it (gpu.appeared, gpu.disappeared)."""
    facts = {"gpu": gpu.index, "uuid": gpu.uuid, "name": gpu.name, "total_mib": gpu.total_mib, **now}
    facts.pop("present", None)
    facts.pop("resident", None)
    appeared = type == events.GPU_APPEARED
    record_events(
        [
            {
                "type": type,
                "title": f"GPU {gpu.index} {'appeared' if appeared else 'is gone'}"
                + (f" ({facts['name']})" if facts["name"] else ""),
                "data": facts if appeared else {k: facts[k] for k in ("gpu", "uuid", "name")},
                "subject": ("gpu", gpu.index),
            }
        ]
    )


def seat_resident(gpu: int) -> Lease | None:
    """Hand a free GPU nobody waits for to its configured resident (its standing lease)."""
    with _deciding(gpu, RESIDENT_SEATER) as state:
        state.seat_resident = True
    return state.holder


# The reads of every decision, compiled once (gaiaorch.statements).
#
# Every decision about one GPU holds its row lock until commit: without it two PostgreSQL
# transactions could both see the GPU free and grant it twice (the partial unique index
# would then fail one of them with a 500). SQLite's IMMEDIATE transactions serialise
# writers already, and select_for_update is a no-op there.
_LOCKED_GPU = CompiledRead(
    lambda index: Gpu.objects.filter(index=index, present=True).order_by("pk").select_for_update()[:1],
    index=Gpu._meta.get_field("index"),
)
# why: claims and the wait poller's signs of life are conditional updates made outside
# decisions; locking the live rows read here makes them wait for this decision and then
# re-check their condition against its outcome (SQLite serialises every writer anyway).
_LOCKED_LIVE_LEASES = CompiledRead(
    lambda gpu: Lease.objects.live().filter(gpu=gpu).select_for_update().order_by(),
    gpu=Lease._meta.get_field("gpu"),
)
_LEASE_OWNER = CompiledRead(
    lambda lease: Lease.objects.filter(pk=lease).values_list("requester", "gpu__index")[:1],
    lease=Lease._meta.pk,
)


def _locked_gpu(index: int) -> Gpu:
    for attempt in range(2):
        rows = _LOCKED_GPU.models(index=index)
        if rows:
            return rows[0]
        if attempt == 0:
            sync_gpus()
    raise _unknown_gpu(index)


def _unknown_gpu(index: int) -> InvalidRequest:
    known = ", ".join(str(g) for g in Gpu.objects.filter(present=True).values_list("index", flat=True))
    return InvalidRequest(f"GPU {index} does not exist.", fields={"gpu": [f"unknown GPU; known: {known}"]})


@dataclass(frozen=True)
class LeaseOwner:
    """Whose a lease is and on which GPU: what a caller checks before acting on it."""

    id: uuid.UUID
    requester: str
    gpu: int


def lease_owner(lease_id: Any) -> LeaseOwner:
    """The lease's requester and GPU index (one statement); NotFound when there is no such lease."""
    try:
        lease_uuid = lease_id if isinstance(lease_id, uuid.UUID) else uuid.UUID(str(lease_id))
        row = _LEASE_OWNER.first_row(lease=lease_uuid)
    except (ValidationError, ValueError):
        raise InvalidRequest(
            f"{lease_id!r} is not a lease id.", fields={"lease_id": ["must be a UUID"]}
        ) from None
    if row is None:
        raise NotFound(f"No lease {lease_id}.", lease_id=str(lease_id))
    requester, gpu = row
    return LeaseOwner(lease_uuid, requester, gpu)


def _lease_gpu_index(lease_id: Any) -> int:
    return lease_owner(lease_id).gpu


# ---------------------------------------------------------------- one GPU's live leases


def _grant_order(lease: Lease) -> tuple[int, int]:
    # Higher priority first, then arrival (a per-GPU counter, so ties are impossible).
    return (-lease.priority, lease.arrival)


@dataclass
class GpuState:
    """A GPU's live leases (read under its row lock when deciding); transitions keep it current,
    and collect what the decision writes at its end: new leases, the GPU's counters, the events."""

    gpu: Gpu
    holder: Lease | None
    queue: list[Lease]  # waiting entries in grant order
    rules: Any = field(default_factory=lambda: config.current().leases)  # the leases: section
    changed_gpu_fields: set[str] = field(default_factory=set)
    new: list[Lease] = field(default_factory=list)  # inserted at the end, as they stand then
    events: list[dict[str, Any]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # lease ids whose waits to wake once committed
    attending: set[str] = field(default_factory=set)  # leases whose owner takes part in this decision
    handed: dict[str, Lease] = field(default_factory=dict)  # grants for waits open in this process
    seat_resident: bool = False  # give a GPU left free and unwanted to its resident
    resident_left: bool = False  # the resident's standing lease ended in this decision

    @property
    def resident(self) -> str | None:
        return self.rules.resident(self.gpu.index)

    def live(self) -> list[Lease]:
        return ([self.holder] if self.holder else []) + self.queue

    def find(self, lease_id: Any) -> Lease | None:
        return next((lease for lease in self.live() if str(lease.id) == str(lease_id)), None)

    def for_requester(self, requester: str) -> Lease | None:
        return next((lease for lease in self.live() if lease.requester == requester), None)

    def position(self, lease: Lease) -> int | None:
        return self.queue.index(lease) + 1 if lease in self.queue else None

    def remove(self, lease: Lease) -> None:
        if self.holder == lease:
            self.holder = None
        if lease in self.queue:
            self.queue.remove(lease)

    def overdue(self, now: datetime) -> bool:
        return any(lease.expires_at and lease.expires_at <= now for lease in self.live())


def _state_of(gpu: Gpu, live: list[Lease]) -> GpuState:
    for lease in live:
        lease.gpu = gpu
    live.sort(key=_grant_order)
    holder = next((lease for lease in live if lease.status == LeaseStatus.ACTIVE), None)
    return GpuState(gpu, holder, [lease for lease in live if lease.status == LeaseStatus.WAITING])


def _locked_state(gpu: Gpu) -> GpuState:
    return _state_of(gpu, _LOCKED_LIVE_LEASES.models(gpu=gpu.pk))


@contextmanager
def _deciding(index: int, actor: str) -> Iterator[GpuState]:
    """One decision about one GPU in one transaction: lock it, read its live leases, expire the
    overdue ones, let the caller act, grant the next waiter, write, commit. An exception rolls it
    all back."""
    with transaction.atomic():
        state = _locked_state(_locked_gpu(index))
        _expire_overdue(state)
        yield state
        _grant_next(state, actor)
        _write(state)


def _write(state: GpuState) -> None:
    statements.insert(state.new)
    if state.changed_gpu_fields:
        statements.save_fields(state.gpu, sorted(state.changed_gpu_fields))
    record_events(state.events)
    if state.changed:
        changed = sorted(state.changed)
        handed = {key: _result(lease, state) for key, lease in state.handed.items() if lease is state.holder}
        transaction.on_commit(lambda: WAITS.notify(*changed, handed=handed))


def _save(lease: Lease, fields: list[str]) -> None:
    """Write changed fields now; a lease made in this decision is inserted at its end instead."""
    if not lease._state.adding:
        statements.save_fields(lease, fields)


def describe_wait(lease: Lease, state: GpuState) -> str:
    """A human sentence saying what a waiter waits for."""
    position = state.position(lease)
    if position is None:
        return ""
    gpu = state.gpu.index
    held = ""
    if state.holder is not None:
        held = f"GPU {gpu} is held by {state.holder.requester}"
        if state.holder.standing:
            held += ", its resident: it yields only through a handoff"
    if position > 1:
        ahead = f"{position - 1} request{'s' if position > 2 else ''} ahead in the queue for GPU {gpu}"
        return f"{ahead}; {held}" if held else ahead
    return held or lease.waiting_for or f"the next grant of GPU {gpu}"


def _result(lease: Lease, state: GpuState, created: bool = False) -> AcquireResult:
    return AcquireResult(
        lease=lease,
        granted=lease.status == LeaseStatus.ACTIVE,
        queue_position=state.position(lease),
        waiting_for=describe_wait(lease, state),
        created=created,
    )


# ---------------------------------------------------------------- transitions (inside _deciding)


def _event(state: GpuState, lease: Lease, what: str, actor: str, message: str = "", **data: Any) -> None:
    names = {"requester": lease.requester, "gpu": state.gpu.index}
    state.events.append(
        {
            "type": events.TRANSITIONS[what],
            "title": EVENT_TITLES[what].format(**names),
            "message": message,
            "actor": actor,
            "data": {
                "lease_id": str(lease.id),
                **names,
                "status": lease.status,
                "fencing_token": lease.fencing_token,
                "reason": lease.reason,
                **data,
            },
            "subject": ("lease", lease.id),
        }
    )
    state.changed.add(str(lease.id))


def _expiry(lease: Lease, now: datetime) -> datetime | None:
    return now + timedelta(seconds=lease.ttl_seconds) if lease.ttl_seconds else None


def _life(lease: Lease, rules) -> timedelta:
    """How long a waiting entry lives after a sign of life: its TTL, else the grace period."""
    return timedelta(seconds=lease.ttl_seconds or rules.waiter_grace_seconds)


def _new_lease(state: GpuState, *, standing: bool = False, **fields: Any) -> Lease:
    now = timezone.now()
    asked_ttl = fields.pop("ttl_seconds", None)
    ttl = None if standing else asked_ttl or settings.LEASE_DEFAULT_TTL_SECONDS
    gpu = state.gpu
    lease = Lease(
        gpu=gpu,
        arrival=gpu.next_arrival,
        requested_at=now,
        last_heartbeat_at=now,
        ttl_seconds=ttl,
        standing=standing,
        **fields,
    )
    # A waiting entry lives while its owner shows signs of life, so a vanished client leaves no ghost.
    lease.expires_at = now + _life(lease, state.rules)
    state.new.append(lease)
    gpu.next_arrival += 1
    state.changed_gpu_fields.add("next_arrival")
    state.queue.append(lease)
    state.queue.sort(key=_grant_order)
    return lease


def _grant(state: GpuState, lease: Lease, actor: str, **data: Any) -> None:
    now = timezone.now()
    lease.status = LeaseStatus.ACTIVE
    lease.fencing_token = state.gpu.next_fencing_token
    lease.granted_at = lease.last_heartbeat_at = now
    lease.expires_at = _expiry(lease, now)
    lease.claim_by = None
    lease.waiting_for = ""
    if WAITS.is_open(str(lease.id)):
        # Its owner is here: its wait is open in this process, and is handed the grant once committed.
        state.handed[str(lease.id)] = lease
    elif str(lease.id) not in state.attending and not lease.standing:
        # Nobody may be there to take it (a client gone without a word): its requester claims it
        # (its wait returns it, it acquires or heartbeats) by this time, or it is passed on.
        lease.claim_by = now + timedelta(seconds=lease.ttl_seconds or state.rules.claim_window_seconds)
        lease.expires_at = lease.claim_by
    _save(
        lease,
        [
            "status",
            "fencing_token",
            "granted_at",
            "last_heartbeat_at",
            "expires_at",
            "claim_by",
            "waiting_for",
        ],
    )
    # The counter lives on the locked Gpu row and only goes up: tokens are never reused, even
    # after every lease row of the GPU is deleted or the process restarts.
    state.gpu.next_fencing_token += 1
    state.changed_gpu_fields.add("next_fencing_token")
    state.queue.remove(lease)
    state.holder = lease
    if lease.requester == state.resident:
        _set_loan(state, False)  # the GPU is back with its resident
    if lease.standing:
        _event(state, lease, "standing", actor, standing=True, **data)
    else:
        _event(state, lease, "granted", actor, **data)


def _end(state: GpuState, lease: Lease, status: str, actor: str, reason: str = "", what: str = "") -> None:
    if lease is state.holder and lease.standing:
        state.resident_left = True
    lease.status = status
    lease.ended_at = timezone.now()
    lease.ended_by = actor[:150]
    lease.end_reason = reason[:500]
    lease.waiting_for = ""
    _save(lease, ["status", "ended_at", "ended_by", "end_reason", "waiting_for"])
    state.remove(lease)
    _event(state, lease, what or status, actor, reason)


def _renew(state: GpuState, lease: Lease, *, adopt: bool = True) -> None:
    """A sign of life of the lease's owner: a waiting entry lives on (and, with `adopt`, is
    re-adopted: a hung-up wait that made it may no longer withdraw it); a grant is claimed."""
    now = timezone.now()
    lease.last_heartbeat_at = now
    fields = ["last_heartbeat_at", "expires_at"]
    if lease.status == LeaseStatus.WAITING:
        lease.expires_at = now + _life(lease, state.rules)
        if adopt:
            lease.adoption += 1
            fields.append("adoption")
    else:
        lease.expires_at = _expiry(lease, now)
        lease.claim_by = None
        fields.append("claim_by")
    _save(lease, fields)


def _expire_overdue(state: GpuState) -> None:
    now = timezone.now()
    for lease in state.live():
        if lease.expires_at and lease.expires_at <= now:
            _end(state, lease, LeaseStatus.EXPIRED, REAPER, *_expiry_reason(lease, state.rules))


def _expiry_reason(lease: Lease, rules) -> tuple[str, str]:
    """(reason, event) of an expiry: a grant not claimed, a waiter gone silent, a TTL run out."""
    if lease.status == LeaseStatus.ACTIVE and lease.claim_by is not None:
        window = (lease.claim_by - lease.granted_at).total_seconds()  # type: ignore[operator]  # an active lease was granted
        return f"granted but not claimed within {window:g} s; passed on to the next waiter", "unclaimed"
    if lease.status == LeaseStatus.WAITING:
        life = _life(lease, rules).total_seconds()
        return f"no sign of life for {life:g} s (no open wait, heartbeat or acquire)", "expired"
    return "not renewed within its TTL", "expired"


def _memory_blocker(gpu: Gpu, lease: Lease) -> str:
    """Why measured memory forbids granting `lease` now ("" when it may be granted), naming who
    holds it: "9.1 GiB held by pid 4242 `python train.py`, outside any lease"."""
    if lease.memory_mib is None:
        return ""
    sample = telemetry.sample()
    sampled = sample.gpu(gpu.index)
    if sampled is None or sampled.free_mib >= lease.memory_mib:
        return ""  # without telemetry there is nothing to measure: admission by queue order only
    needed = f"{lease.memory_mib} MiB free needed, {sampled.free_mib} MiB free on GPU {gpu.index}"
    owners = attribution.current(sample).gpu(gpu.index)
    holders = owners.holders()[:3] if owners else []
    if not holders:
        why = owners.reason if owners else "no process list"
        return f"{needed}: {sampled.used_mib / 1024:.1f} GiB in use by processes outside any lease ({why})"
    return f"{needed}: " + "; ".join(f"{owner.describe()}, outside any lease" for owner in holders)


def _grant_next(state: GpuState, actor: str) -> None:
    """Give a free GPU to the head of its queue, if measured memory allows (strict order: a
    blocked head blocks everyone behind it, so a newcomer never overtakes a waiter); a GPU left
    free with nobody waiting goes back to its resident when it was on loan, or when asked."""
    if state.holder is None and state.queue:
        head = state.queue[0]
        blocker = _memory_blocker(state.gpu, head)[:300]
        if not blocker:
            _grant(state, head, actor)
        elif head.waiting_for != blocker:
            head.waiting_for = blocker
            _save(head, ["waiting_for"])
    if state.resident_left:
        # Handed on (a handoff, or the queue after a revoke): a loan. Given up with nobody to take it: free.
        _set_loan(state, state.holder is not None and state.holder.requester != state.resident)
    elif (
        state.holder is None
        and not state.queue
        and state.resident
        and (state.seat_resident or state.gpu.on_loan)
    ):
        _seat(state, actor)


def _seat(state: GpuState, actor: str) -> None:
    check_requester(state.resident)  # type: ignore[arg-type]  # seated only when there is one
    lease = _new_lease(
        state, requester=state.resident, reason=f"resident of GPU {state.gpu.index}", standing=True
    )
    _grant(state, lease, actor)


def _set_loan(state: GpuState, on_loan: bool) -> None:
    if state.gpu.on_loan != on_loan:
        state.gpu.on_loan = on_loan
        state.changed_gpu_fields.add("on_loan")


def _ended_conflict(lease_id: Any) -> Conflict:
    lease = Lease.objects.select_related("gpu").get(pk=lease_id)
    holder = Lease.objects.active().filter(gpu=lease.gpu).values_list("requester", flat=True).first()
    return Conflict(
        f"Lease {lease.id} is already {lease.status}.",
        lease_id=str(lease.id),
        status=lease.status,
        holder=holder,
    )


# ---------------------------------------------------------------- reads: one consistent snapshot


_GPU_COLUMNS = [field.attname for field in Gpu._meta.concrete_fields]
_LEASE_COLUMNS = [field.attname for field in Lease._meta.concrete_fields]
# Every present GPU joined to its live leases (a GPU without any: one row of nulls for them), by
# GPU and status, so the queue index answers it, not a scan of the history.
_SNAPSHOT = CompiledRead(
    lambda: (
        Gpu.objects.filter(present=True)
        .annotate(live=FilteredRelation("leases", condition=Q(leases__status__in=LeaseStatus.live())))
        .values_list(
            *[field.name for field in Gpu._meta.concrete_fields],
            *[f"live__{field.name}" for field in Lease._meta.concrete_fields],
        )
        .order_by()
    )
)


def _snapshot() -> list[GpuState]:
    """Every present GPU with its live leases, in one statement (compiled once) whatever the
    number of GPUs, waiters or ended leases: each GPU's counters and its leases are read at the
    same moment (a holder's token is always below its GPU's next one)."""
    gpus: dict[int, Gpu] = {}
    live: dict[int, list[Lease]] = defaultdict(list)
    width = len(_GPU_COLUMNS)
    for row in _SNAPSHOT.rows():
        gpu = gpus.get(row[0])
        if gpu is None:
            gpu = gpus[row[0]] = Gpu.from_db("default", _GPU_COLUMNS, row[:width])
        if row[width] is not None:
            live[gpu.pk].append(Lease.from_db("default", _LEASE_COLUMNS, row[width:]))
    return [_state_of(gpu, live[gpu.pk]) for gpu in sorted(gpus.values(), key=lambda gpu: gpu.index)]


def _in_step(states: list[GpuState], wanted: dict[int, dict[str, Any]], measured: bool) -> bool:
    """Whether the rows read match what telemetry and the configuration want (nothing to sync)."""
    rows = {state.gpu.index: state.gpu for state in states}
    if any(index not in rows or _unlike(rows[index], facts) for index, facts in wanted.items()):
        return False
    return not measured or set(rows) <= set(wanted)


def _settled(sampled: telemetry.Telemetry) -> list[GpuState]:
    """The snapshot a read answers from: GPU rows synced first when they differ from what is
    wanted, overdue leases expired first (both rare: a steady read is the two statements)."""
    wanted, measured = _wanted_gpus(sampled)
    states = _snapshot()
    if not _in_step(states, wanted, measured):
        sync_gpus(sampled)
        states = _snapshot()
    overdue = _overdue(states)
    for index in overdue:
        with _deciding(index, REAPER):
            pass
    return _snapshot() if overdue else states


def _overdue(states: list[GpuState]) -> list[int]:
    now = timezone.now()
    return [state.gpu.index for state in states if state.overdue(now)]


def _still_settled(states: list[GpuState], sampled: telemetry.Telemetry) -> bool:
    """Whether a snapshot read earlier needs neither a GPU sync nor an expiry now."""
    return _in_step(states, *_wanted_gpus(sampled)) and not _overdue(states)


def settle(gpu: int) -> GpuState:
    """A fresh view of one GPU for a read; lazily expires what is overdue first."""
    state = next((state for state in _settled(telemetry.sample()) if state.gpu.index == gpu), None)
    if state is None:
        raise _unknown_gpu(gpu)
    return state


def expire_due() -> list[int]:
    """End every live lease past its expiry (holders, unclaimed grants, silent waiters) and grant
    the next waiters."""
    overdue = Lease.objects.live().filter(expires_at__lte=timezone.now())
    indexes = sorted(set(overdue.values_list("gpu__index", flat=True)))
    for index in indexes:
        with _deciding(index, REAPER):
            pass
    return indexes


def admit_waiting() -> list[int]:
    """Try free GPUs whose queue head waits for memory (freed by processes outside any lease)."""
    free = Gpu.objects.filter(present=True, leases__status=LeaseStatus.WAITING).exclude(
        leases__status=LeaseStatus.ACTIVE
    )
    indexes = sorted(set(free.values_list("index", flat=True)))
    for index in indexes:
        with _deciding(index, REAPER):
            pass
    return indexes


def reap() -> None:
    """The ticker job: expiry within TTL + one interval, and memory-blocked admissions."""
    expire_due()
    admit_waiting()


# ---------------------------------------------------------------- public API


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidRequest(f"{name} must be a positive integer.", fields={name: ["must be >= 1"]})


def acquire(
    *,
    requester: str,
    reason: str,
    gpu: int | str = 0,
    priority: int = 0,
    ttl_seconds: int | None = None,
    memory_mib: int | None = None,
    actor: str,
) -> AcquireResult:
    """Ask for a GPU: granted at once when free and nobody waits, else queued.

    Re-acquire by the holder returns (and renews, and claims) its lease; a waiter asking again
    gets its entry, renewed and re-adopted. `gpu="any"`: the GPU is chosen by measured free
    memory (choose_gpu); the lease then needs that memory for its grant, as `memory_mib` does.
    """
    check_requester(requester)
    _check_positive("ttl_seconds", ttl_seconds)
    _check_positive("memory_mib", memory_mib)
    fields = {"reason": reason[:500], "priority": priority, "ttl_seconds": ttl_seconds}
    if gpu != ANY_GPU:
        return _acquire_on(int(gpu), requester, memory_mib, fields, actor)
    need = need_of(requester, memory_mib)
    for attempt in range(CHOICE_ATTEMPTS):
        choice = choose_gpu(requester, need)
        last = attempt == CHOICE_ATTEMPTS - 1
        try:
            result = _acquire_on(
                choice.gpu, requester, need or None, fields, actor, choice=choice, expect_free=not last
            )
        except _ChoiceTaken:
            continue  # another request took the GPU first: choose again, from what stands now
        waiting_for = result.waiting_for
        if not result.granted and not choice.own and not choice.fits:
            waiting_for = f"{choice.sentence}; queued on GPU {choice.gpu}: {waiting_for}"
        return dataclasses.replace(result, choice=choice.sentence, waiting_for=waiting_for)
    raise AssertionError("unreachable: the last attempt expects nothing")


class _ChoiceTaken(Exception):
    """The GPU an 'any' acquire chose was taken before its decision locked it (rolled back)."""


def _acquire_on(
    gpu: int,
    requester: str,
    memory_mib: int | None,
    fields: dict[str, Any],
    actor: str,
    *,
    choice: GpuChoice | None = None,
    expect_free: bool = False,
) -> AcquireResult:
    with _deciding(gpu, actor) as state:
        lease = state.for_requester(requester)
        created = lease is None
        if lease is not None:
            _renew(state, lease)
        else:
            if expect_free and choice is not None and choice.fits and (state.holder or state.queue):
                raise _ChoiceTaken()
            chosen = {"asked_gpu": ANY_GPU, "choice": choice.sentence} if choice is not None else {}
            lease = _new_lease(state, requester=requester, memory_mib=memory_mib, **fields)
            _event(
                state, lease, "requested", actor, priority=fields["priority"], memory_mib=memory_mib, **chosen
            )
        state.attending.add(str(lease.id))
    return _result(lease, state, created)


# ---------------------------------------------------------------- choosing a GPU by memory


@dataclass(frozen=True)
class GpuChoice:
    """Where an 'any' acquire goes, and the sentence saying why (every GPU's state)."""

    gpu: int
    fits: bool  # free now (nobody holds it, nobody waits) with the need free in memory
    sentence: str
    own: bool = False  # the requester already has a live lease there (a re-acquire)


def _gib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB"


def need_of(requester: str, memory_mib: int | None) -> int:
    """The free memory an 'any' acquire needs: `memory_mib`, else what the configuration declares
    for the requester (`vram_mib` of it and the GPU services it depends on, as a handoff counts
    it); 0 when neither says."""
    if memory_mib is not None:
        return memory_mib
    settings_ = config.current()
    return settings_.vram_needed_mib(requester) if requester in settings_.services else 0


def _spare(sample: telemetry.GpuSample | None) -> str:
    return (
        f"also free ({_gib(sample.free_mib)} free)"
        if sample is not None
        else "also free (memory not measured)"
    )


def _unusable(state: GpuState) -> str:
    """Why a GPU is not free for a newcomer ("" when it is): a holder, or waiters it must not overtake."""
    if state.holder is not None:
        resident = ", its resident" if state.holder.standing else ""
        return f"held by {state.holder.requester}{resident}"
    if state.queue:
        waiting = len(state.queue)
        return (
            f"free, but {waiting} request{'s' if waiting > 1 else ''} wait{'' if waiting > 1 else 's'} for it"
        )
    return ""


def _free_mib(sample: telemetry.GpuSample | None) -> int:
    return sample.free_mib if sample is not None else 0


def choose_gpu(requester: str, need_mib: int) -> GpuChoice:
    """The GPU for an 'any' acquire needing `need_mib` free (0: no need declared).

    Granted where it can be now: a GPU nobody holds or waits for whose measured free memory (the
    telemetry sample, not "no lease") fits the need; the best fit (least free memory left over),
    or with no need the GPU with the most free memory. When none fits, queued on a GPU whose
    memory could ever hold the need, preferring one nobody holds, then the shortest queue, then
    the most free memory; the sentence says per GPU why it was not chosen. A requester with a
    live lease already keeps it (a re-acquire). With a need and no telemetry: 503, since no GPU
    can be chosen by memory; a need no GPU could ever hold: 400.
    """
    sampled = telemetry.sample()
    if need_mib and not sampled.available:
        raise Unavailable(
            f"GPU telemetry is unavailable ({sampled.reason}): no GPU can be chosen by free memory "
            f'for {_gib(need_mib)}. Name a GPU instead of "any".',
            code="telemetry_unavailable",
            telemetry=sampled.backend,
        )
    states = _settled(sampled)
    own = [state for state in states if state.for_requester(requester)]
    if own:
        held = next((state for state in own if state.holder and state.holder.requester == requester), own[0])
        return GpuChoice(
            held.gpu.index, True, f"GPU {held.gpu.index}: {requester} has a lease there", own=True
        )
    views = []  # (state, sample, why-not) per GPU
    for state in states:
        sample = sampled.gpu(state.gpu.index)
        why = _unusable(state)
        if not why and sample is None and sampled.available:
            why = "not measured by telemetry"
        elif not why and sample is not None and sample.free_mib < need_mib:
            why = f"{_gib(sample.free_mib)} free, {_gib(need_mib)} needed"
        views.append((state, sample, why))
    fitting = [(state, sample) for state, sample, why in views if not why]
    if fitting:
        if need_mib:
            state, sample = min(fitting, key=lambda pair: (_free_mib(pair[1]) - need_mib, pair[0].gpu.index))
        else:
            state, sample = min(fitting, key=lambda pair: (-_free_mib(pair[1]), pair[0].gpu.index))
        index = state.gpu.index
        free = f" ({_gib(sample.free_mib)} free)" if sample is not None else " (memory not measured)"
        fit = f"the best fit for {_gib(need_mib)}" if need_mib else "free"
        others = [
            f"GPU {s.gpu.index}: {why or _spare(sample)}" for s, sample, why in views if s.gpu.index != index
        ]
        return GpuChoice(index, True, "; ".join([f"GPU {index}: {fit}{free}", *others]))
    sentence = "; ".join(f"GPU {state.gpu.index}: {why}" for state, _, why in views)
    possible = [
        (state, sample)
        for state, sample, _ in views
        if sample is None or sample.total_mib - (sample.reserved_mib or 0) >= need_mib
    ]
    if not possible:
        largest = max(
            (sample.total_mib - (sample.reserved_mib or 0) for _, sample, _ in views if sample), default=0
        )
        raise InvalidRequest(
            f"No GPU could ever hold {_gib(need_mib)}: the largest has {_gib(largest)} "
            "beyond the driver's reservation.",
            fields={"memory_mib": [f"at most {largest} MiB on this box"]},
        )
    state, _ = min(
        possible,
        key=lambda pair: (
            pair[0].holder is not None,
            len(pair[0].queue),
            -(pair[1].free_mib if pair[1] else 0),
            pair[0].gpu.index,
        ),
    )
    return GpuChoice(state.gpu.index, False, sentence)


def _end_live(lease_id: Any, actor: str, decide, gpu: int | None = None) -> tuple[Lease, GpuState]:
    """Run `decide(state, lease)` on a live lease; an ended one is a 409, raised after commit so
    that any expiry found on the way is kept. `gpu`: the lease's GPU, when the caller read it."""
    with _deciding(_lease_gpu_index(lease_id) if gpu is None else gpu, actor) as state:
        lease = state.find(lease_id)
        refusal = decide(state, lease) if lease is not None else None
    if lease is None:
        raise _ended_conflict(lease_id)
    if refusal is not None:
        raise refusal
    return lease, state


def _released(lease: Lease, state: GpuState) -> Released:
    return Released(lease, state.holder.requester if state.holder else None, len(state.queue))


def release(lease_id: Any, *, actor: str, reason: str = "", gpu: int | None = None) -> Lease:
    """End an active lease (or withdraw a waiting entry) and grant the next waiter."""
    return release_reporting(lease_id, actor=actor, reason=reason, gpu=gpu).lease


def release_reporting(lease_id: Any, *, actor: str, reason: str = "", gpu: int | None = None) -> Released:
    """release(), also saying who holds the GPU afterwards and how many still wait."""
    lease, state = _end_live(lease_id, actor, lambda state, lease: _release(state, lease, actor, reason), gpu)
    return _released(lease, state)


def _release(state: GpuState, lease: Lease, actor: str, reason: str) -> None:
    if lease == state.holder:
        _end(state, lease, LeaseStatus.RELEASED, actor, reason)
    else:
        _end(state, lease, LeaseStatus.CANCELLED, actor, reason or "released while waiting")


def release_without_id(*, gpu: int | None, requester: str | None, actor: str, reason: str = "") -> Lease:
    """Release without a lease id, as the seed's callers do.

    With a requester (a service acting for itself): its own lease is released, or its own queue
    entry withdrawn, on `gpu`, or on the only GPU where it has one. Without a requester (an
    operator): the current holder of `gpu`, or of the only GPU, is released. Nothing to release
    is a Conflict (`nothing_held`), raised after commit so that any expiry found on the way is kept.
    """
    return release_without_id_reporting(gpu=gpu, requester=requester, actor=actor, reason=reason).lease


def release_without_id_reporting(
    *, gpu: int | None, requester: str | None, actor: str, reason: str = ""
) -> Released:
    """release_without_id(), also saying who holds the GPU afterwards and how many still wait."""
    index = gpu if gpu is not None else _unnamed_gpu(requester)
    if index is None:
        raise _nothing_held(requester, gpu=None, queue_length=0, holder=None)
    if requester is None and not reason:
        reason = f"{actor} released the holder of GPU {index} without a lease id"
    with _deciding(index, actor) as state:
        lease = state.for_requester(requester) if requester else state.holder
        if lease is not None:
            _release(state, lease, actor, reason)
    if lease is None:
        holder = state.holder.requester if state.holder else None
        raise _nothing_held(requester, gpu=index, queue_length=len(state.queue), holder=holder)
    return _released(lease, state)


def _unnamed_gpu(requester: str | None) -> int | None:
    """The GPU a release without id and without ?gpu= is about: the requester's (None when it has
    a lease nowhere and the box has several GPUs), or the only GPU."""
    present = [each.index for each in sync_gpus()]
    indexes = present
    if requester is not None:
        where = Lease.objects.live().filter(requester=requester).values_list("gpu__index", flat=True)
        indexes = sorted(set(where)) or (present if len(present) == 1 else [])
    if len(indexes) > 1:
        listed = ", ".join(map(str, indexes))
        raise InvalidRequest(
            f"Name the GPU to release (?gpu= or the body's gpu): it could be GPU {listed}.",
            fields={"gpu": [f"required when more than one GPU is concerned; one of {listed}"]},
        )
    return indexes[0] if indexes else None


def _nothing_held(
    requester: str | None, *, gpu: int | None, queue_length: int, holder: str | None
) -> Conflict:
    where = f"GPU {gpu}" if gpu is not None else "any GPU"
    if requester:
        detail = f"{requester} holds no lease and waits in no queue on {where}; nothing was released."
    else:
        detail = f"Nobody holds {where}; nothing was released."
    return Conflict(
        detail,
        code="nothing_held",
        success=False,
        message=detail,
        gpu=gpu,
        holder=holder,
        queue_length=queue_length,
    )


def _attended(state: GpuState, lease: Lease, *, adopt: bool = True) -> None:
    state.attending.add(str(lease.id))
    _renew(state, lease, adopt=adopt)


def heartbeat(lease_id: Any, *, actor: str, gpu: int | None = None) -> Lease:
    """Renew a live lease's TTL (a waiting entry's life; a grant is claimed). An expired lease is
    gone: acquire again."""
    return _end_live(lease_id, actor, lambda state, lease: _attended(state, lease), gpu)[0]


def revoke(lease_id: Any, *, actor: str, reason: str) -> Lease:
    """An operator takes a lease away (holder or waiter); the next waiter is granted."""
    if not reason.strip():
        raise InvalidRequest("A revoke needs a reason.", fields={"reason": ["this field is required"]})
    return _end_live(
        lease_id, actor, lambda state, lease: _end(state, lease, LeaseStatus.REVOKED, actor, reason)
    )[0]


def cancel(lease_id: Any, *, actor: str, reason: str = "") -> Lease:
    """Withdraw a waiting entry from the queue."""

    def decide(state: GpuState, lease: Lease) -> Conflict | None:
        if lease == state.holder:
            return Conflict(
                f"Lease {lease.id} holds GPU {state.gpu.index}; release it instead of cancelling.",
                lease_id=str(lease.id),
                status=lease.status,
            )
        _end(state, lease, LeaseStatus.CANCELLED, actor, reason or "withdrawn")
        return None

    return _end_live(lease_id, actor, decide)[0]


def _ended_result(lease_id: Any) -> AcquireResult:
    return AcquireResult(Lease.objects.select_related("gpu").get(pk=lease_id), False, None, "")


def check(lease_id: Any, *, renew: bool = False) -> AcquireResult:
    """Where a lease stands now (after lazy expiry); `renew`: its owner is here (attend)."""
    if renew:
        return attend(lease_id)
    state = settle(_lease_gpu_index(lease_id))
    lease = state.find(lease_id)
    return _ended_result(lease_id) if lease is None else _result(lease, state)


def attend(lease_id: Any, *, adopt: bool = True, gpu: int | None = None) -> AcquireResult:
    """The owner of a lease is here (a wait starts or times out): a waiting entry lives on and,
    with `adopt`, is re-adopted; a grant is claimed. Returns where the lease stands."""
    index = _lease_gpu_index(lease_id) if gpu is None else gpu
    with _deciding(index, REAPER) as state:
        lease = state.find(lease_id)
        if lease is not None:
            _attended(state, lease, adopt=adopt)
    return _ended_result(lease_id) if lease is None else _result(lease, state)


def claim(lease_id: Any) -> AcquireResult:
    """Where a lease stands, for a wait that was woken: a grant waiting to be claimed is claimed
    (one conditional update); a waiting entry comes without its queue position."""
    lease = Lease.objects.select_related("gpu").get(pk=lease_id)
    if lease.status == LeaseStatus.ACTIVE and lease.claim_by is not None:
        now = timezone.now()
        expires_at = _expiry(lease, now)
        # why: outside any decision, so conditional: a decision passing this grant on locks the
        # row first, and this update then finds it no longer active, or past its deadline.
        claimed = Lease.objects.filter(pk=lease.pk, status=LeaseStatus.ACTIVE, claim_by__gt=now).update(
            claim_by=None, expires_at=expires_at, last_heartbeat_at=now
        )
        if claimed:
            lease.claim_by, lease.expires_at, lease.last_heartbeat_at = None, expires_at, now
        else:
            lease = settle(lease.gpu.index).find(lease_id) or Lease.objects.select_related("gpu").get(
                pk=lease_id
            )
    return AcquireResult(lease, lease.status == LeaseStatus.ACTIVE, None, "")


def poll_open_waits(lease_ids: list[str]) -> list[str]:
    """For the wait poller of a process (one query for all its open waits): the leases among
    these that are no longer waiting. An open wait is a sign of life: entries past half their
    life are stamped, in one update per distinct life."""
    now = timezone.now()
    rules = config.current().leases
    rows = Lease.objects.filter(pk__in=lease_ids).values_list("id", "status", "expires_at", "ttl_seconds")
    waiting, due = set(), defaultdict(list)
    for lease_id, status, expires_at, ttl_seconds in rows:
        if status != LeaseStatus.WAITING:
            continue
        waiting.add(str(lease_id))
        life = timedelta(seconds=ttl_seconds or rules.waiter_grace_seconds)
        if expires_at is None or expires_at - now < life / 2:
            due[life].append(lease_id)
    for life, ids in due.items():
        _stamp_signs_of_life(ids, now, life)
    return [lease_id for lease_id in lease_ids if lease_id not in waiting]


def _stamp_signs_of_life(ids: list[Any], now: datetime, life: timedelta) -> None:
    with transaction.atomic():
        # why: written outside decisions; rows a decision has locked are skipped (stamped at the
        # next poll), so a stamp never waits for a decision nor deadlocks with one.
        free = Lease.objects.filter(pk__in=ids, status=LeaseStatus.WAITING).select_for_update(
            skip_locked=True
        )
        Lease.objects.filter(pk__in=list(free.values_list("pk", flat=True))).update(
            expires_at=now + life, last_heartbeat_at=now
        )


WAITS = wakeups.Waits(poll=poll_open_waits)


async def wait(lease_id: Any, *, timeout_seconds: float) -> AcquireResult:
    """Wait until the lease is no longer waiting or the timeout passes, holding no thread and no
    database connection: woken by a commit of this process at once, or by the process's one poller.
    A grant is claimed; on a timeout the entry is renewed and its position reported."""
    deadline = time.monotonic() + timeout_seconds
    with WAITS.listen(str(lease_id)) as waiter:  # before reading: a change in between still wakes it
        result = await sync_to_async(claim)(lease_id)
        while result.lease.status == LeaseStatus.WAITING:
            remaining = deadline - time.monotonic()
            woken = remaining > 0 and await waiter.wait(remaining)
            if not woken:
                return await sync_to_async(attend)(lease_id, adopt=False)
            # A grant a decision of this process made while this wait was open comes with the
            # wake-up, claimed; any other change is read (and a grant claimed) here.
            result = waiter.take() or await sync_to_async(claim)(lease_id)
    return result


def withdraw(lease_id: Any, *, adoption: int, actor: str) -> bool:
    """Withdraw a waiting entry whose wait's caller hung up, unless it was re-adopted since."""
    withdrawn = False

    def decide(state: GpuState, lease: Lease) -> None:
        nonlocal withdrawn
        # why: compare-and-withdraw under the GPU's lock, where every re-adoption happens too:
        # the requester may have asked again meanwhile (an acquire, a heartbeat, another wait)
        # and been told it is queued; that later answer must hold.
        if lease.status == LeaseStatus.WAITING and lease.adoption == adoption:
            _end(state, lease, LeaseStatus.CANCELLED, actor, GAVE_UP)
            withdrawn = True

    try:
        _end_live(lease_id, actor, decide)
    except Conflict:
        return False  # ended meanwhile
    return withdrawn


async def give_up(entry: AcquireResult, *, keep_queued: bool, actor: str) -> None:
    """The caller of a wait hung up: withdraw the entry its own call made (unless keep_queued)."""
    if entry.created and not keep_queued:
        await asyncio.shield(
            sync_to_async(withdraw)(entry.lease.id, adoption=entry.lease.adoption, actor=actor)
        )


async def wait_out(
    entry: AcquireResult, *, timeout_seconds: float, keep_queued: bool, actor: str
) -> AcquireResult:
    """Wait on a queue entry (docs/leases.md, "Waiting").

    A timeout keeps the entry: it lives on for the grace period and the answer gives its
    position. A caller that hangs up withdraws the entry its own call made (`entry.created`),
    unless `keep_queued` or something re-adopted it since; an entry that existed before stays.
    """
    if entry.lease.status != LeaseStatus.WAITING:
        return entry
    try:
        return await wait(entry.lease.id, timeout_seconds=timeout_seconds)
    except asyncio.CancelledError:
        await give_up(entry, keep_queued=keep_queued, actor=actor)
        raise


def transfer(
    *, gpu: int, to_requester: str, reason: str, actor: str, expected_holder: str | None = None
) -> Lease:
    """Atomically end the GPU's active lease (if any) and grant a new one to `to_requester`,
    bypassing the queue and memory admission (the caller verifies memory itself). Taken from the
    resident, the GPU is on loan; given to the resident, it is its standing lease again.
    With `expected_holder`, refuse (409) unless that requester holds it."""
    check_requester(to_requester)
    with _deciding(gpu, actor) as state:
        current = state.holder
        if expected_holder is not None and (current is None or current.requester != expected_holder):
            holder = current.requester if current else None
            raise Conflict(
                f"GPU {gpu} is held by {holder or 'nobody'}, not {expected_holder}.",
                code="holder_mismatch",
                gpu=gpu,
                holder=holder,
                lease_id=str(current.id) if current else None,
            )
        if current is not None:
            _end(state, current, LeaseStatus.RELEASED, actor, f"transferred to {to_requester}: {reason}")
        pending = state.for_requester(to_requester)
        if pending is not None:
            _end(state, pending, LeaseStatus.CANCELLED, actor, "superseded by a transfer of the GPU")
        standing = to_requester == state.resident
        lease = _new_lease(state, requester=to_requester, reason=reason[:500], standing=standing)
        state.attending.add(str(lease.id))
        _grant(state, lease, actor, transfer=True, previous_holder=current.requester if current else None)
    return lease


def current_holder(gpu: int) -> Lease | None:
    return settle(gpu).holder


def get_lease(lease_id: Any) -> Lease:
    """The lease as it stands now (after lazy expiry of its GPU)."""
    state = settle(_lease_gpu_index(lease_id))
    return state.find(lease_id) or Lease.objects.select_related("gpu").get(pk=lease_id)


# ---------------------------------------------------------------- status


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _memory(gpu: Gpu, sampled: telemetry.GpuSample | None, owners: attribution.GpuAttribution | None):
    """Measured memory: the seed's three figures, the driver's reservation, and who holds the rest."""
    return {
        "total_mb": sampled.total_mib if sampled else gpu.total_mib,
        "used_mb": sampled.used_mib if sampled else None,
        "free_mb": sampled.free_mib if sampled else None,
        "reserved_mb": sampled.reserved_mib if sampled else None,
        "by_service_mb": owners.by_service() if owners else {},
        "unattributed_mb": owners.unattributed_mib if owners else None,
        "attribution_available": bool(owners and owners.available),
        "attribution_reason": owners.reason if owners else "no telemetry",
    }


def _tenants(owners: attribution.GpuAttribution | None) -> list[dict[str, Any]]:
    """Processes holding memory outside every configured service, largest first."""
    held = [owner for owner in owners.holders() if owner.unattributed] if owners else []
    return [
        {"pid": o.pid, "command": o.command, "used_mib": o.used_mib, "describe": o.describe()} for o in held
    ]


def _queue(state: GpuState) -> list[dict[str, Any]]:
    entries = []
    for position, lease in enumerate(state.queue, start=1):
        entries.append(
            {
                "position": position,
                "lease_id": str(lease.id),
                "requester": lease.requester,
                "reason": lease.reason,
                "priority": lease.priority,
                "memory_mib": lease.memory_mib,
                "requested_at": _iso(lease.requested_at),
                "expires_at": _iso(lease.expires_at),
                "waiting_for": describe_wait(lease, state),
            }
        )
    return entries


@dataclass(frozen=True)
class _GpuView:
    """What a status entry says of one GPU and its leases (everything but the measured memory)."""

    state: GpuState
    leases: dict[str, Any]  # the entry's fields from `gpu` to `on_loan`
    queue: list[dict[str, Any]]


def _gpu_view(state: GpuState) -> _GpuView:
    gpu, holder = state.gpu, state.holder
    leases = {
        "gpu": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "owner": holder.requester if holder else None,
        "lease_id": str(holder.id) if holder else None,
        "reason": holder.reason if holder else None,
        "acquired_at": _iso(holder.granted_at) if holder else None,
        "expires_at": _iso(holder.expires_at) if holder else None,
        "claim_by": _iso(holder.claim_by) if holder else None,
        "last_heartbeat_at": _iso(holder.last_heartbeat_at) if holder else None,
        "fencing_token": holder.fencing_token if holder else None,
        "next_fencing_token": gpu.next_fencing_token,
        "resident": state.resident,
        "standing": bool(holder and holder.standing),
        "on_loan": gpu.on_loan,
    }
    return _GpuView(state, leases, _queue(state))


# A status read is frequent and the leases change far less often: their part of the answer is
# kept while nothing at all is committed to the database (gaiaorch.unchanged).
_STATUS_VIEWS: WhileUnchanged[list[_GpuView]] = WhileUnchanged()


def _status_views(sampled: telemetry.Telemetry) -> list[_GpuView]:
    """Every GPU's view from a settled snapshot, kept while the database and the configuration are
    unchanged, no lease has fallen due since and the GPU rows still match telemetry."""
    return _STATUS_VIEWS.read(
        lambda: [_gpu_view(state) for state in _settled(sampled)],
        key=config.current(),
        still_good=lambda views: _still_settled([view.state for view in views], sampled),
    )


def _one_gpu_status(
    view: _GpuView, sampled: telemetry.Telemetry, owners: attribution.Attribution
) -> dict[str, Any]:
    gpu = view.state.gpu
    attributed = owners.gpu(gpu.index)
    return {
        **view.leases,
        "memory": _memory(gpu, sampled.gpu(gpu.index), attributed),
        "tenants": _tenants(attributed),
        "telemetry_available": sampled.available,
        "telemetry_reason": sampled.reason,
        "queue": view.queue,
    }


def gpu_status(gpu: int | None = None) -> dict[str, Any]:
    """Status of one GPU (`gpu` given) or the whole document: seed top-level fields for GPU 0
    (owner, lease_id, reason, acquired_at, memory, queue) plus `gpus`, one entry per GPU; read
    from one consistent snapshot in a constant number of queries.

    Each GPU entry: gpu, uuid, name, owner, lease_id, reason, acquired_at, expires_at, claim_by,
    last_heartbeat_at, fencing_token, next_fencing_token, resident, standing, on_loan, memory
    {total_mb, used_mb, free_mb, reserved_mb, by_service_mb, unattributed_mb,
    attribution_available, attribution_reason}, tenants [{pid, command, used_mib, describe}]
    (memory held outside every service), telemetry_available, telemetry_reason, queue
    [{position, lease_id, requester, reason, priority, memory_mib, requested_at, expires_at,
    waiting_for}].
    """
    sampled = telemetry.sample()
    owners = attribution.current(sampled)
    views = _status_views(sampled)
    if gpu is not None:
        view = next((view for view in views if view.state.gpu.index == gpu), None)
        if view is None:
            raise NotFound(f"GPU {gpu} does not exist.", gpu=gpu)
        return _one_gpu_status(view, sampled, owners)
    entries = [_one_gpu_status(view, sampled, owners) for view in views]
    first = entries[0] if entries else {}
    seed_fields = ("owner", "lease_id", "reason", "acquired_at", "expires_at", "fencing_token", "memory")
    return {
        **{name: first.get(name) for name in seed_fields},
        "queue": first.get("queue", []),
        "tenants": first.get("tenants", []),
        "telemetry_available": sampled.available,
        "telemetry_reason": sampled.reason,
        "telemetry_backend": sampled.backend,
        "gpus": entries,
    }


FREE_OWNER = "none"  # the seed's owner of a free GPU (gaia-web shows "--" for it)


def seed_gpu_status(gpu: int | None = None) -> dict[str, Any]:
    """gpu_status in the seed's shape, for the seed paths (/gpu/status, /status): the owner of a
    free GPU is "none" instead of null, at the top level and in every GPU entry."""
    document = gpu_status(gpu)
    for entry in [document, *document.get("gpus", [])]:
        if entry["owner"] is None:
            entry["owner"] = FREE_OWNER
    return document
