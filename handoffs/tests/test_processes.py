"""Several real processes on PostgreSQL: racing starters, and a worker SIGKILLed in every phase."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from handoffs import services
from handoffs.models import Handoff, Phase
from handoffs.tests.conftest import IDLE_MIB
from handoffs.tests.processes import Process, environment, run_command, wait_for
from leases import holdings
from leases.models import Gpu

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RECOVERY_PROMISE_SECONDS = 30


@pytest.fixture
def children(gaia, settings, tmp_path, configure):
    """Environment for child processes; worker-friendly deadlines (a kill must land mid-phase)."""
    configure(
        "handoffs",
        phase_timeout_seconds=20,
        http_timeout_seconds=5,
        stale_after_seconds=6,
        recovery_interval_seconds=1,
    )
    env = environment(tmp_path, settings.GAIAORCH, settings.FAKE_GPU_FILE)
    started: list[Process] = []

    def start(*args: str) -> Process:
        process = Process(env, *args, log=tmp_path / f"{args[0]}.log")
        started.append(process)
        return process

    yield env, start
    for process in started:
        process.stop()


def test_it_lets_exactly_one_of_two_processes_start_a_handoff(gaia, hold_gpu, children):
    hold_gpu("gaia-core")
    env, _ = children
    results: list = [None, None]

    def starter(slot: int, kind: str) -> None:
        results[slot] = run_command(env, "handoff", kind, "--no-wait")

    threads = [
        threading.Thread(target=starter, args=(0, "prime-to-study")),
        threading.Thread(target=starter, args=(1, "prime-to-study")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(result.returncode for result in results)
    assert codes == [0, 1], [result.stderr for result in results]
    loser = next(result for result in results if result.returncode)
    assert "handoff_active" in loser.stderr
    assert Handoff.objects.count() == 1


def test_it_settles_a_true_race_with_the_database_constraint(gaia, hold_gpu, monkeypatch):
    """Both starters pass the application check; the partial unique index refuses the second."""
    hold_gpu("gaia-core")
    both_checked = threading.Barrier(2, timeout=10)
    original = services._require_source_holds

    def check_then_wait(gpu, kind):
        holding = original(gpu, kind)
        both_checked.wait()
        return holding

    monkeypatch.setattr(services, "_require_source_holds", check_then_wait)
    outcomes: list = []

    def starter() -> None:
        try:
            outcomes.append(services.start(type="prime_to_study", actor="racer"))
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=starter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
    assert len(refused) == 1, outcomes
    assert refused[0].code == "handoff_active"
    assert Handoff.objects.count() == 1


def phase_is(handoff_id, phase):
    return lambda: Handoff.objects.filter(pk=handoff_id, phase=phase).exists()


def kill_in_releasing(gaia, gpu):
    gaia["gaia-core"].respond("/gpu/release", hang=True)
    return Phase.RELEASING_GPU, lambda: gaia["gaia-core"].respond("/gpu/release")


def kill_in_cleanup(gaia, gpu):
    gaia["gaia-prime"].hooks.clear()
    return Phase.WAITING_CUDA_CLEANUP, lambda: gpu.set(IDLE_MIB)


def kill_in_signaling(gaia, gpu):
    gaia["gaia-study"].respond("/study/gpu-ready", hang=True)
    return Phase.SIGNALING_RECIPIENT, lambda: gaia["gaia-study"].respond("/study/gpu-ready")


SCENARIOS = {
    "releasing_gpu": kill_in_releasing,
    "waiting_cuda_cleanup": kill_in_cleanup,
    "signaling_recipient": kill_in_signaling,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_it_resumes_after_the_worker_is_killed(scenario, gaia, gpu, hold_gpu, children):
    hold_gpu("gaia-core")
    _, start = children
    start("ticker")
    worker = start("qcluster")
    phase, unblock = SCENARIOS[scenario](gaia, gpu)
    handoff = services.start(type="prime_to_study", actor="olivia")
    wait_for(phase_is(handoff.id, phase), 60, f"the worker reaching {phase}")
    time.sleep(0.3)  # well inside the phase's external call or polling loop
    worker.kill()
    unblock()
    start("qcluster")
    alive = time.monotonic()
    wait_for(phase_is(handoff.id, Phase.COMPLETED), 60, "completion after restart", interval=0.2)
    assert time.monotonic() - alive < RECOVERY_PROMISE_SECONDS
    handoff.refresh_from_db()
    interrupted = handoff.phases.get(name=phase, outcome="failed")
    assert interrupted.detail.startswith("interrupted")
    assert holdings.current_holder(0).requester == "gaia-study"


def test_it_resumes_after_a_kill_inside_the_ownership_transfer(gaia, gpu, hold_gpu, children):
    hold_gpu("gaia-core")
    _, start = children
    start("ticker")
    worker = start("qcluster")
    gaia["gaia-prime"].hooks.clear()
    handoff = services.start(type="prime_to_study", actor="olivia")
    wait_for(phase_is(handoff.id, Phase.WAITING_CUDA_CLEANUP), 60, "the worker reaching cleanup")
    blocker_ready, release_blocker = threading.Event(), threading.Event()

    def hold_gpu_row() -> None:
        # The lease service locks the Gpu row to transfer; holding it parks the worker inside the phase.
        with transaction.atomic():
            Gpu.objects.select_for_update().get(index=0)
            blocker_ready.set()
            release_blocker.wait(60)
        connection.close()

    blocker = threading.Thread(target=hold_gpu_row)
    blocker.start()
    blocker_ready.wait(10)
    gpu.set(IDLE_MIB)
    wait_for(phase_is(handoff.id, Phase.TRANSFERRING_OWNERSHIP), 30, "the worker entering the transfer")
    time.sleep(0.3)
    worker.kill()
    release_blocker.set()
    blocker.join()
    start("qcluster")
    wait_for(phase_is(handoff.id, Phase.COMPLETED), RECOVERY_PROMISE_SECONDS + 30, "completion after restart")
    handoff.refresh_from_db()
    assert handoff.phases.get(name=Phase.TRANSFERRING_OWNERSHIP, outcome="failed").detail.startswith(
        "interrupted"
    )
    assert holdings.current_holder(0).requester == "gaia-study"


def test_it_finishes_a_rollback_the_killed_worker_started(gaia, gpu, hold_gpu, children):
    core_lease = hold_gpu("gaia-core")
    _, start = children
    start("ticker")
    worker = start("qcluster")
    gaia["gaia-core"].respond("/gpu/release", status=500)
    gaia["gaia-core"].respond("/gpu/reclaim", hang=True)
    handoff = services.start(type="prime_to_study", actor="olivia")
    wait_for(lambda: gaia["gaia-core"].called("/gpu/reclaim"), 60, "the rollback calling reclaim")
    worker.kill()
    gaia["gaia-core"].respond("/gpu/reclaim")
    start("qcluster")
    wait_for(phase_is(handoff.id, Phase.FAILED), 60, "the rollback finishing after restart", interval=0.2)
    handoff.refresh_from_db()
    assert handoff.error["rollback"] == {"complete": True}
    assert holdings.current_holder(0).lease_id == core_lease.id


def test_it_cancels_from_another_process_during_cleanup(gaia, hold_gpu, children):
    core_lease = hold_gpu("gaia-core")
    env, start = children
    start("qcluster")
    gaia["gaia-prime"].hooks.clear()  # VRAM never drops: the worker waits in cleanup
    handoff = services.start(type="prime_to_study", actor="olivia")
    wait_for(phase_is(handoff.id, Phase.WAITING_CUDA_CLEANUP), 60, "the worker reaching cleanup")
    cancelled = run_command(env, "handoff", "cancel", str(handoff.id), "--wait", "--actor", "olivia")
    assert cancelled.returncode == 1, cancelled.stderr  # the handoff did not complete
    assert "cancel requested" in cancelled.stdout
    assert cancelled.stdout.splitlines()[-1].split()[0] == "cancelled"
    handoff.refresh_from_db()
    assert handoff.phase == Phase.CANCELLED
    assert handoff.phases.get(name=Phase.WAITING_CUDA_CLEANUP).detail == "cancel requested"
    assert holdings.current_holder(0).lease_id == core_lease.id
