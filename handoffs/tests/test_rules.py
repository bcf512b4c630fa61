"""The verification rules (handoffs.measure) on readings made by hand: settling, the three
conditions, co-residence, the aggregate fallback."""

from __future__ import annotations

import pytest

from gaiaorch.attribution import GpuAttribution, ProcessOwner
from gaiaorch.telemetry import GpuSample
from handoffs import measure
from handoffs.measure import Reading, Rules

TOTAL, RESERVED = 24576, 615
RULES = Rules(
    handoff_type="prime_to_study",
    source=("gaia-core", "gaia-prime"),
    recipient="gaia-study",
    residual_mib={"gaia-core": 512, "gaia-prime": 1024},
    need_mib=16384,
    headroom_mib=512,
    settle_window_ms=300,
    settle_delta_mib=64,
    settle_samples=3,
)


def reading(at: float, prime_mib: int, other_mib: int = 0, attributed: bool = True) -> Reading:
    used = prime_mib + other_mib
    gpu = GpuSample(0, "GPU-0", "H200", TOTAL, used, TOTAL - RESERVED - used, RESERVED)
    owners = [ProcessOwner(101, prime_mib, "vllm serve", "gaia-prime", "cmdline")]
    if other_mib:
        owners.append(ProcessOwner(4242, other_mib, "python train.py"))
    reason = "" if attributed else "NVML lists no process"
    return Reading(at, gpu, GpuAttribution(0, attributed, reason, tuple(owners), RESERVED))


def judge(*readings: Reading, rules: Rules = RULES) -> measure.Verdict:
    return measure.judge(list(readings), rules)


def test_it_verifies_a_release_once_free_memory_held_still_over_the_window():
    freeing = [reading(0.0, 11000), *(reading(0.1 * n, 600) for n in range(1, 5))]
    assert judge(*freeing[:3]).refusal == measure.NOT_SETTLED  # 2 samples over 100 ms
    verdict = judge(*freeing)
    assert (verdict.verified, verdict.rule) == (True, measure.RELEASED)
    assert verdict.figures["settle"] == {
        "settled": True,
        "samples": 4,
        "span_ms": 300,
        "spread_mib": 0,
        "window_ms": 300,
        "delta_mib": 64,
        "min_samples": 3,
    }
    assert verdict.figures["source_mib"] == {"gaia-core": 0, "gaia-prime": 600}


def test_it_counts_a_window_from_the_first_reading_after_the_drop():
    readings = [reading(0.0, 11000), *(reading(0.1 * n, 600) for n in range(1, 5))]
    assert not judge(*readings[:4]).verified  # 200 ms since the drop
    verdict = judge(*readings)
    assert verdict.verified and verdict.figures["settle"]["span_ms"] == 300


def test_it_waits_while_free_memory_still_changes_by_more_than_the_delta():
    still_freeing = [reading(n * 0.1, 600 + 200 * (5 - n)) for n in range(6)]
    verdict = judge(*still_freeing)
    assert verdict.refusal == measure.NOT_SETTLED and "still changing" in verdict.sentence
    jitter = [reading(n * 0.1, 600 + (30 if n % 2 else 0)) for n in range(5)]
    assert judge(*jitter).verified  # 30 MiB apart: within the 64 MiB delta


def test_it_refuses_while_the_source_holds_more_than_its_allowance_even_if_the_recipient_fits():
    verdict = judge(*(reading(n * 0.1, 4000) for n in range(5)))
    assert verdict.refusal == measure.SOURCE_HOLDS and verdict.over_residual == {"gaia-prime": 4000}
    assert "gaia-study would fit beside it, but prime_to_study allows no co-residence" in verdict.sentence


def test_it_lets_both_stay_resident_only_where_allowed():
    allowed = Rules(**{**RULES.__dict__, "co_residence": True})
    verdict = judge(*(reading(n * 0.1, 4000) for n in range(5)), rules=allowed)
    assert (verdict.verified, verdict.rule, verdict.figures["both_resident"]) == (
        True,
        measure.CO_RESIDENT,
        True,
    )
    assert judge(*(reading(n * 0.1, 9000) for n in range(5)), rules=allowed).refusal == measure.SOURCE_HOLDS


def test_it_keeps_a_residual_allowance_per_service():
    assert judge(*(reading(n * 0.1, 1000) for n in range(5))).verified  # within gaia-prime's 1024


def test_it_refuses_when_the_recipient_does_not_fit_naming_who_holds_the_memory():
    verdict = judge(*(reading(n * 0.1, 0, other_mib=9318) for n in range(5)))
    assert verdict.refusal == measure.NOT_ENOUGH_FREE
    assert verdict.sentence == (
        "14643 MiB free on GPU 0, 16896 MiB needed (16384 for gaia-study + 512 headroom): "
        "9.1 GiB held by pid 4242 `python train.py`, outside any service"
    )


def test_it_falls_back_to_the_aggregate_rule_without_attribution():
    verdict = judge(*(reading(n * 0.1, 4000, attributed=False) for n in range(5)))
    assert (verdict.rule, verdict.figures["weaker"], verdict.figures["attribution"]) == (
        measure.AGGREGATE,
        True,
        "unavailable",
    )
    blind = Rules(**{**RULES.__dict__, "need_mib": 0})
    assert judge(reading(0, 4000, attributed=False), rules=blind).refusal == measure.UNVERIFIABLE


@pytest.mark.parametrize("late_ms", [0, 3])
def test_it_tolerates_a_sample_falling_a_little_early(late_ms):
    readings = [
        reading(0.0, 11000),
        *(reading(0.1 * n - late_ms / 1000 * (n == 4), 600) for n in range(1, 5)),
    ]
    assert judge(*readings).verified
