"""bench/gpu_truth.py, the real-GPU harness, runs whole on the fake backend: the service started
by runstack, the fakes writing the fake telemetry file, attribution finding each fake by its
command line. Every one of its eight cases must pass here as on the GPU box.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.gpu_services import CUDA_CONTEXT_MIB
from handoffs.tests.processes import ROOT

pytestmark = pytest.mark.slow


def test_it_passes_every_case_on_the_fake_backend(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "bench/gpu_truth.py", "--backend", "fake", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    report = json.loads((out / "gpu-truth.json").read_text())
    failed = {
        case["name"]: case["error"] or [check for check in case["checks"] if not check["passed"]]
        for case in report["cases"]
        if not case["passed"]
    }
    assert done.returncode == 0 and report["passed"] == 8, f"{failed}\n{report.get('harness_error')}"
    case = next(case for case in report["cases"] if case["name"] == "clean_release")
    passed = {check["what"]: check["passed"] for check in case["checks"]}
    assert passed["NVML's process list attributes Prime's memory to gaia-prime (by command line)"]
    assert passed["handoff completed"]
    assert passed["Prime's memory was gone when Study was signalled"]
    assert passed["Study's allocation succeeded"]
    assert "no phase records a negative duration" in passed
    assert case["figures"]["freed_to_verified_seconds"] >= 0
    assert [phase["name"] for phase in case["phases"]][1:5] == [
        "releasing_gpu",
        "waiting_cuda_cleanup",
        "transferring_ownership",
        "signaling_recipient",
    ]
    prime_with_its_context = report["sizes"]["prime_mib"] + CUDA_CONTEXT_MIB
    assert case["attribution"]["before"]["by_service_mib"]["gaia-prime"] == prime_with_its_context
    assert (
        "| Clean release |" in (out / "gpu-truth.md").read_text()
        and "**8 of 8 cases passed.**" in (out / "gpu-truth.md").read_text()
    )
    acquire = next(case for case in report["cases"] if case["name"] == "memory_aware_acquire")
    assert (acquire["figures"]["granted"]["gpu"], acquire["figures"]["queued"]["status"]) == (0, "waiting")
    assert sorted(path.name for path in out.iterdir()) == [
        "fakes.log",
        "gpu-truth.json",
        "gpu-truth.md",
        "service.log",
    ]
