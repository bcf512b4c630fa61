"""Operations whose worker died are resumed once, then failed with a clear error — never stuck."""

from datetime import timedelta

import pytest
from django.utils import timezone

from containers import runner, services
from containers.models import Operation, OperationStep
from containers.tests.conftest import stack_config
from gaiaorch import ticker
from leases import services as leases

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(minutes=5)


@pytest.fixture
def queued(settings, monkeypatch):
    settings.GAIAORCH = stack_config("busybox")
    handed = []
    monkeypatch.setattr(services, "enqueue", handed.append)
    return handed


def abandoned(attempts: int, **fields) -> Operation:
    """An operation whose worker stopped beating five minutes ago."""
    return Operation.objects.create(
        kind="live_stop",
        status="running",
        requested_by="olivia",
        attempts=attempts,
        claimed_by="gaia-host:4242",
        heartbeat_at=timezone.now() - LONG_AGO,
        enqueued_at=timezone.now() - LONG_AGO,
        **fields,
    )


def test_it_hands_an_abandoned_operation_to_a_worker_again(queued, django_capture_on_commit_callbacks):
    operation = abandoned(attempts=1)
    OperationStep.objects.create(operation=operation, name="stop t-web", service="t-web")

    with django_capture_on_commit_callbacks(execute=True):
        assert services.recover_stale_operations() == [operation.id]

    operation.refresh_from_db()
    assert queued == [operation.id]
    assert (operation.status, operation.attempts, operation.claimed_by) == ("running", 2, "")
    step = operation.steps.get()
    assert step.outcome == "failed" and "interrupted: no worker has driven it" in step.detail


def test_it_fails_an_operation_abandoned_twice_and_returns_its_gpu_lease(queued):
    lease = leases.acquire(requester="t-core-candidate", reason="candidate start", actor="olivia").lease
    operation = abandoned(attempts=2, lease_id=str(lease.id))

    services.recover_stale_operations()

    operation.refresh_from_db()
    assert operation.status == "failed"
    assert operation.error.startswith("Operation abandoned: no worker has driven it for 15 s")
    assert "gave up after 2 attempts" in operation.error
    assert queued == []
    assert leases.current_holder(0) is None


def test_it_fails_a_queued_operation_no_worker_ever_picked_up(queued, django_capture_on_commit_callbacks):
    operation = Operation.objects.create(
        kind="live_start", requested_by="olivia", attempts=1, enqueued_at=timezone.now() - LONG_AGO
    )

    with django_capture_on_commit_callbacks(execute=True):
        services.recover_stale_operations()
    Operation.objects.filter(pk=operation.pk).update(enqueued_at=timezone.now() - LONG_AGO)
    services.recover_stale_operations()

    operation.refresh_from_db()
    assert queued == [operation.id]
    assert operation.status == "failed"


def test_it_leaves_an_operation_alone_while_its_worker_beats(queued):
    operation = abandoned(attempts=1)
    Operation.objects.filter(pk=operation.pk).update(heartbeat_at=timezone.now())

    assert services.recover_stale_operations() == []
    assert Operation.objects.get(pk=operation.pk).claimed_by == "gaia-host:4242"


def test_it_fails_an_operation_that_passed_its_deadline_before_its_next_step(queued):
    operation = Operation.objects.create(
        kind="live_stop",
        requested_by="olivia",
        services=["t-web"],
        params={"action": "stop", "stack": "live", "gpu_enabled": False},
        deadline_at=timezone.now() - timedelta(seconds=1),
    )

    runner.run(operation.id)

    operation.refresh_from_db()
    assert operation.status == "failed"
    assert operation.error.startswith("the operation passed its deadline")
    assert "before stop t-web" in operation.error


def test_it_fails_an_operation_whose_lease_already_ended(queued):
    lease = leases.acquire(requester="t-core-candidate", reason="candidate start", actor="olivia").lease
    leases.release(lease.id, actor="olivia", reason="done by hand")
    operation = abandoned(attempts=2, lease_id=str(lease.id))

    services.recover_stale_operations()

    assert Operation.objects.get(pk=operation.pk).status == "failed"


def test_it_recovers_operations_from_the_ticker_every_five_seconds(
    queued, django_capture_on_commit_callbacks
):
    recovery = ticker.PERIODIC["containers.operation.recover"]
    operation = abandoned(attempts=1)

    with django_capture_on_commit_callbacks(execute=True):
        recovery.func()

    assert recovery.seconds() == 5.0
    assert queued == [operation.id]
