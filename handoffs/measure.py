"""Judging freed VRAM: the rules a release must pass before anyone else gets the GPU.

A service saying "released" proves nothing (vLLM's sleep has answered 200 while the memory stayed
held; SGLang acknowledges before it frees). A release is verified only when it has settled:

1. **released**: every service of the source's GPU chain holds at most its residual allowance on
   the GPU — its *attributed* memory, the GPU processes gaiaorch maps to it (gaiaorch.attribution);
2. **the recipient fits**: free memory ≥ what the recipient declared it needs + the headroom;
3. **settled**: free memory stopped changing — within `settle_delta_mib` over the last
   `settle_window_ms`, seen by at least `settle_samples` samples — so the recipient never starts
   while the previous holder is still freeing.

Where the handoff type allows co-residence, 1 may fail when 2 and 3 hold: both stay resident
(rule `co_resident`). Without attribution (NVML's process list does not account for the memory in
use), only 2 and 3 can be checked: the *aggregate* rule, recorded as the weaker one; it needs a
declared need, else nothing can be proven.

Free of Django: readings are made by the caller (handoffs.cleanup), so bench/ can judge its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gaiaorch import telemetry
from gaiaorch.attribution import GpuAttribution
from gaiaorch.telemetry import GpuSample
from handoffs.errors import PhaseFailed

RELEASED, CO_RESIDENT, AGGREGATE = "released", "co_resident", "aggregate"
# Why a release is not verified (yet): the refusal's code when the deadline passes.
SOURCE_HOLDS = "source_holds_memory"
NOT_ENOUGH_FREE = "not_enough_free"
NOT_SETTLED = "not_settled"
UNVERIFIABLE = "unverifiable"
HOLDERS_NAMED = 3  # processes named in a refusal's sentence (all are in its figures)
TIMER_SLACK_MS = 5  # how early a sample may fall (sleeps overrun or underrun a little) and still count


@dataclass(frozen=True)
class Reading:
    """One sample of one GPU, with who holds its memory."""

    at: float  # time.monotonic() when it was taken
    gpu: GpuSample
    attribution: GpuAttribution

    @property
    def attributed(self) -> bool:
        return self.attribution.available


@dataclass(frozen=True)
class Rules:
    handoff_type: str
    source: tuple[str, ...]  # the source's GPU chain, the source first
    recipient: str
    residual_mib: Mapping[str, int]  # per source-chain service
    need_mib: int  # what the recipient's chain declared (vram_mib)
    headroom_mib: int
    settle_window_ms: int
    settle_delta_mib: int
    settle_samples: int
    co_residence: bool = False

    @property
    def required_free_mib(self) -> int:
        return self.need_mib + self.headroom_mib


@dataclass(frozen=True)
class Verdict:
    verified: bool
    rule: str  # the rule that passed ("" while not verified)
    refusal: str  # why not, while not verified ("" once verified)
    sentence: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def over_residual(self) -> dict[str, int]:
        return self.figures.get("over_residual", {})


def settle(readings: Sequence[Reading], rules: Rules) -> dict[str, Any]:
    """Whether free memory stopped changing: the trailing readings whose free figures lie within
    settle_delta_mib of each other, spanning settle_window_ms with settle_samples of them."""
    latest = readings[-1]
    low = high = latest.gpu.free_mib
    count, first = 0, latest
    for reading in reversed(readings):
        free = reading.gpu.free_mib
        if max(high, free) - min(low, free) > rules.settle_delta_mib:
            break
        low, high, count, first = min(low, free), max(high, free), count + 1, reading
    span_ms = round((latest.at - first.at) * 1000)
    settled = count >= rules.settle_samples and span_ms + TIMER_SLACK_MS >= rules.settle_window_ms
    return {
        "settled": settled,
        "samples": count,
        "span_ms": span_ms,
        "spread_mib": high - low,
        "window_ms": rules.settle_window_ms,
        "delta_mib": rules.settle_delta_mib,
        "min_samples": rules.settle_samples,
    }


def judge(readings: Sequence[Reading], rules: Rules) -> Verdict:
    """The verdict on the latest reading (and the trailing ones, for settling)."""
    latest = readings[-1]
    gpu, owners = latest.gpu, latest.attribution
    settled = settle(readings, rules)
    fits = gpu.free_mib >= rules.required_free_mib
    figures: dict[str, Any] = {
        "used_mib": gpu.used_mib,
        "free_mib": gpu.free_mib,
        "total_mib": gpu.total_mib,
        "reserved_mib": gpu.reserved_mib,
        "need_mib": rules.need_mib,
        "headroom_mib": rules.headroom_mib,
        "required_free_mib": rules.required_free_mib,
        "settle": settled,
        "attribution": "available" if latest.attributed else "unavailable",
        "holders": [owner.as_dict() for owner in owners.holders(excluding=rules.source)],
    }
    if not latest.attributed:
        figures["attribution_reason"] = owners.reason
        return _aggregate(rules, gpu, fits, settled, figures)
    held = {name: owners.service_mib(name) for name in rules.source}
    over = {name: mib for name, mib in held.items() if mib > rules.residual_mib[name]}
    figures |= {"source_mib": held, "residual_mib": dict(rules.residual_mib), "over_residual": over}
    if over and not (rules.co_residence and fits):
        return Verdict(False, "", SOURCE_HOLDS, _holds_sentence(rules, gpu, over, fits), figures)
    if not fits:
        return Verdict(False, "", NOT_ENOUGH_FREE, _room_sentence(rules, gpu, owners), figures)
    if not settled["settled"]:
        return Verdict(False, "", NOT_SETTLED, _settle_sentence(gpu, settled), figures)
    if over:
        kept = ", ".join(f"{name} keeps {mib} MiB" for name, mib in over.items())
        sentence = (
            f"co-residence allowed for {rules.handoff_type}: {kept} on GPU {gpu.index} and "
            f"{rules.recipient} fits beside it ({gpu.free_mib} MiB free, {rules.required_free_mib} needed): "
            "both stay resident"
        )
        return Verdict(
            True, CO_RESIDENT, "", sentence, {**figures, "rule": CO_RESIDENT, "both_resident": True}
        )
    sentence = (
        f"released: {_held_list(held)} on GPU {gpu.index}, within the allowance; "
        f"{gpu.free_mib} MiB free ≥ {rules.required_free_mib} needed, settled"
    )
    return Verdict(True, RELEASED, "", sentence, {**figures, "rule": RELEASED})


def _aggregate(rules: Rules, gpu: GpuSample, fits: bool, settled: dict, figures: dict) -> Verdict:
    """Without attribution: free ≥ need + headroom, settled — blind to who keeps what."""
    why = figures["attribution_reason"]
    if rules.need_mib <= 0:
        sentence = (
            f"GPU memory attribution is unavailable on GPU {gpu.index} ({why}) and {rules.recipient} "
            "declares no vram_mib: nothing can prove the release (declare the recipient's vram_mib, "
            "or let gaiaorch see the GPU processes)"
        )
        return Verdict(False, "", UNVERIFIABLE, sentence, figures)
    if not fits:
        sentence = (
            f"{gpu.free_mib} MiB free on GPU {gpu.index}, {rules.required_free_mib} MiB needed "
            f"({rules.need_mib} for {rules.recipient} + {rules.headroom_mib} headroom); "
            f"who holds the rest is unknown: {why}"
        )
        return Verdict(False, "", NOT_ENOUGH_FREE, sentence, figures)
    if not settled["settled"]:
        return Verdict(False, "", NOT_SETTLED, _settle_sentence(gpu, settled), figures)
    sentence = (
        f"the aggregate rule, the weaker one: {gpu.free_mib} MiB free ≥ {rules.required_free_mib} needed, "
        f"settled, but whether the source kept memory is unknown ({why})"
    )
    return Verdict(True, AGGREGATE, "", sentence, {**figures, "rule": AGGREGATE, "weaker": True})


def _held_list(held: Mapping[str, int]) -> str:
    return ", ".join(f"{name} holds {mib} MiB" for name, mib in held.items())


def _holds_sentence(rules: Rules, gpu: GpuSample, over: Mapping[str, int], fits: bool) -> str:
    kept = "; ".join(
        f"{name} still holds {mib} MiB on GPU {gpu.index} (allowance {rules.residual_mib[name]} MiB)"
        for name, mib in over.items()
    )
    if fits:
        kept += f"; {rules.recipient} would fit beside it, but {rules.handoff_type} allows no co-residence"
    return kept


def _room_sentence(rules: Rules, gpu: GpuSample, owners: GpuAttribution) -> str:
    sentence = (
        f"{gpu.free_mib} MiB free on GPU {gpu.index}, {rules.required_free_mib} MiB needed "
        f"({rules.need_mib} for {rules.recipient} + {rules.headroom_mib} headroom)"
    )
    holders = owners.holders(excluding=rules.source)[:HOLDERS_NAMED]
    if holders:
        named = "; ".join(
            owner.describe() + ("" if owner.service else ", outside any service") for owner in holders
        )
        sentence += f": {named}"
    return sentence


def _settle_sentence(gpu: GpuSample, settled: dict[str, Any]) -> str:
    return (
        f"free memory on GPU {gpu.index} is still changing: {settled['spread_mib']} MiB apart over the "
        f"last {settled['samples']} samples ({settled['span_ms']} ms); settled means within "
        f"{settled['delta_mib']} MiB over {settled['window_ms']} ms and {settled['min_samples']} samples"
    )


def measure(gpu: int, attribute: Callable[[telemetry.Telemetry], Any]) -> tuple[GpuSample, GpuAttribution]:
    """One sample of `gpu` with its attribution (`attribute(sample)` → gaiaorch.attribution's answer)."""
    sample = telemetry.sample()
    found = sample.gpu(gpu) if sample.available else None
    if found is None:
        reason = sample.reason or f"telemetry reports no GPU {gpu}"
        raise PhaseFailed(
            f"GPU telemetry is unavailable: {reason}",
            gpu=gpu,
            telemetry=sample.backend,
            refusal="telemetry_unavailable",
        )
    owners = attribute(sample).gpu(gpu) or GpuAttribution(gpu, False, "attribution reported nothing for it")
    return found, owners
