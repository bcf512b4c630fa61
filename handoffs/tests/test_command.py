from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from handoffs.models import Handoff

pytestmark = pytest.mark.django_db(transaction=True)


def handoff_command(*args) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("handoff", *args, stdout=out, stderr=err)
    return exited.value.code, out.getvalue(), err.getvalue()  # type: ignore[return-value]


def test_it_prints_one_line_per_phase_and_exits_0_on_success(gaia, hold_gpu, synchronous_worker):
    hold_gpu("gaia-core")
    code, out, _ = handoff_command("prime-to-study", "--reason", "cli test")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("handoff ") and "gaia-core → gaia-study" in lines[0]
    phases = [line.split()[0] for line in lines[1:]]
    assert phases == [
        "initiated",
        "releasing_gpu",
        "waiting_cuda_cleanup",
        "transferring_ownership",
        "signaling_recipient",
        "completed",
    ]
    assert "used_mib=600" in lines[3]


def test_it_exits_1_when_the_handoff_fails(gaia, hold_gpu, synchronous_worker):
    hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", status=500)
    code, out, err = handoff_command("prime-to-study")
    assert code == 1
    assert "answered 500" in err
    assert out.splitlines()[-1].split()[0] == "failed"


def test_it_exits_2_when_completed_with_a_warning(gaia, hold_gpu, synchronous_worker, configure):
    hold_gpu("gaia-core")
    configure("handoffs", on_recipient_unacknowledged="complete_with_warning")
    gaia["gaia-study"].respond("/study/gpu-ready", status=500)
    code, _, err = handoff_command("prime-to-study")
    assert code == 2
    assert "recipient_unacknowledged" in err


def test_it_refuses_with_the_conflict_in_words(gaia, hold_gpu):
    hold_gpu("gaia-study")
    with pytest.raises(CommandError, match="not_holder: gaia-core does not hold GPU 0"):
        call_command("handoff", "prime-to-study")


def test_it_shows_status_and_cancels(gaia, hold_gpu):
    hold_gpu("gaia-core")
    code, out, _ = handoff_command("prime-to-study", "--no-wait")
    handoff_id = out.split()[1]
    assert code == 0
    code, out, _ = handoff_command("status", handoff_id)
    assert "phase: initiated" in out
    code, out, _ = handoff_command("cancel", handoff_id)
    assert "cancel requested" in out
    assert Handoff.objects.get(pk=handoff_id).cancel_requested
