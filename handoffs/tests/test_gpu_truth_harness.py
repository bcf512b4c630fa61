"""bench/gpu_truth.py, the real-GPU harness, runs whole on the fake backend.

Its clean release must come out right end to end: the service started by runstack, the fakes
writing the fake telemetry file, attribution finding Prime's memory, the handoff completing with
Prime's memory gone before Study was signalled. Its other checks (and cases) judge rules that are
still to come (no negative phase durations, settled verification, …); the GPU box runs them all.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from handoffs.tests.processes import ROOT

pytestmark = pytest.mark.slow


def test_it_runs_the_clean_release_case_on_the_fake_backend(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "bench/gpu_truth.py",
            "--backend",
            "fake",
            "--cases",
            "clean_release",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = json.loads((out / "gpu-truth.json").read_text())
    assert done.returncode in (0, 1), f"{done.stdout}\n{done.stderr}\n{report.get('harness_error')}"
    (case,) = report["cases"]
    assert not case["error"], case["error"]
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
    assert case["attribution"]["before"]["by_service_mib"]["gaia-prime"] == report["sizes"]["prime_mib"]
    assert "| Clean release |" in (out / "gpu-truth.md").read_text()
    assert sorted(path.name for path in out.iterdir()) == [
        "fakes.log",
        "gpu-truth.json",
        "gpu-truth.md",
        "service.log",
    ]
