"""A randomized stateful test: acquire / release / heartbeat / expire / revoke / cancel across two
GPUs, checked against a plain model of the rules after every step (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from gaiaorch.errors import Conflict
from leases import services
from leases.models import Gpu, Lease
from notifications.models import Event

GPUS = (0, 1)
REQUESTERS = ("gaia-core", "gaia-study", "gaia-core-candidate", "gaia-study-candidate", "gaia-prime")


@dataclass
class Entry:
    lease_id: str
    requester: str
    priority: int
    arrival: int


@dataclass
class GpuModel:
    holder: Entry | None = None
    queue: list[Entry] = field(default_factory=list)
    grants: int = 0

    def live(self) -> list[Entry]:
        return ([self.holder] if self.holder else []) + self.queue

    def grant_next(self) -> None:
        if self.holder is None and self.queue:
            self.queue.sort(key=lambda entry: (-entry.priority, entry.arrival))
            self.holder = self.queue.pop(0)
            self.grants += 1

    def end(self, lease_id: str) -> None:
        if self.holder and self.holder.lease_id == lease_id:
            self.holder = None
        self.queue = [entry for entry in self.queue if entry.lease_id != lease_id]
        self.grant_next()


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        Lease.objects.all().delete()
        Gpu.objects.all().delete()
        self.gpus = {index: GpuModel() for index in GPUS}
        self.arrivals = 0
        self.known: list[tuple[int, str]] = []  # (gpu, lease id) of every lease ever made
        self.events_before = Event.objects.filter(type__startswith="lease.").count()
        self.transitions = 0

    def _find(self, lease_id: str) -> tuple[GpuModel, Entry | None, bool]:
        gpu = next(index for index, known in self.known if known == lease_id)
        model = self.gpus[gpu]
        entry = next((entry for entry in model.live() if entry.lease_id == lease_id), None)
        return model, entry, bool(model.holder and model.holder.lease_id == lease_id)

    @rule(requester=st.sampled_from(REQUESTERS), gpu=st.sampled_from(GPUS), priority=st.integers(0, 2))
    def acquire(self, requester, gpu, priority):
        result = services.acquire(
            requester=requester, reason="work", gpu=gpu, priority=priority, actor=requester
        )
        model = self.gpus[gpu]
        existing = next((entry for entry in model.live() if entry.requester == requester), None)
        if existing:
            assert str(result.lease.id) == existing.lease_id and not result.created
            return
        self.arrivals += 1
        model.queue.append(Entry(str(result.lease.id), requester, priority, self.arrivals))
        self.known.append((gpu, str(result.lease.id)))
        self.transitions += 1
        before = model.grants
        model.grant_next()
        self.transitions += model.grants - before
        assert result.granted == (model.holder is not None and model.holder.lease_id == str(result.lease.id))

    def _ended(self, data, service, **kwargs):
        if not self.known:
            return
        _, lease_id = data.draw(st.sampled_from(self.known))
        model, entry, holds = self._find(lease_id)
        expected_error = self._expected_error(service, entry, holds)
        try:
            service(lease_id, **kwargs)
        except Conflict:
            assert expected_error, f"{service.__name__} refused a live lease"
            return
        assert not expected_error, f"{service.__name__} accepted an ended lease"
        before = model.grants
        model.end(lease_id)
        self.transitions += 1 + model.grants - before

    @staticmethod
    def _expected_error(service, entry, holds) -> bool:
        return entry is None or (service is services.cancel and holds)

    @rule(data=st.data())
    def release(self, data):
        self._ended(data, services.release, actor="test")

    @rule(data=st.data())
    def revoke(self, data):
        self._ended(data, services.revoke, actor="olivia", reason="operator says so")

    @rule(data=st.data())
    def cancel(self, data):
        self._ended(data, services.cancel, actor="test")

    @rule(data=st.data())
    def expire(self, data):
        live = [(gpu, lease_id) for gpu, lease_id in self.known if self._find(lease_id)[1]]
        if not live:
            return
        _, lease_id = data.draw(st.sampled_from(live))
        Lease.objects.filter(pk=lease_id).update(expires_at=timezone.now() - timedelta(seconds=1))
        services.reap()
        model = self._find(lease_id)[0]
        before = model.grants
        model.end(lease_id)
        self.transitions += 1 + model.grants - before

    @rule(data=st.data())
    def heartbeat(self, data):
        live = [lease_id for _, lease_id in self.known if self._find(lease_id)[1]]
        if live:
            services.heartbeat(data.draw(st.sampled_from(live)), actor="test")

    @invariant()
    def it_matches_the_model(self):
        for index, model in self.gpus.items():
            holder = Lease.objects.active().filter(gpu__index=index)
            assert [str(lease.id) for lease in holder] == ([model.holder.lease_id] if model.holder else [])
            ordered = sorted(model.queue, key=lambda entry: (-entry.priority, entry.arrival))
            queue = Lease.objects.waiting().filter(gpu__index=index).in_grant_order()
            assert [str(lease.id) for lease in queue] == [entry.lease_id for entry in ordered]

    @invariant()
    def it_keeps_one_holder_and_no_idle_gpu_with_waiters(self):
        for index in GPUS:
            active = Lease.objects.active().filter(gpu__index=index).count()
            waiting = Lease.objects.waiting().filter(gpu__index=index).count()
            assert active <= 1
            assert active == 1 or waiting == 0

    @invariant()
    def it_hands_out_fencing_tokens_in_increasing_order(self):
        for index in GPUS:
            granted = Lease.objects.filter(gpu__index=index, fencing_token__isnull=False).order_by(
                "granted_at", "fencing_token"
            )
            tokens = [lease.fencing_token for lease in granted]
            assert tokens == list(range(1, len(tokens) + 1))
            active = Lease.objects.active().filter(gpu__index=index).first()
            assert active is None or active.fencing_token == len(tokens)

    @invariant()
    def it_writes_one_event_per_transition(self):
        assert (
            Event.objects.filter(type__startswith="lease.").count() - self.events_before == self.transitions
        )


def run_machine():
    run_state_machine_as_test(
        LeaseMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


@pytest.mark.django_db
def test_it_keeps_the_lease_invariants_under_random_operations(two_gpus):
    run_machine()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db
def test_it_keeps_the_lease_invariants_under_random_operations_on_postgresql(two_gpus):
    run_machine()
