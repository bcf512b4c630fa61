import json
import sys
import threading
import types
from types import SimpleNamespace
from typing import Any

import pytest

from gaiaorch import telemetry

MIB = telemetry.MIB


@pytest.fixture
def fake_file(tmp_path, settings):
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(tmp_path / "gpus.json")
    return tmp_path / "gpus.json"


def test_it_reads_the_fake_file_on_every_sample(fake_file):
    telemetry.write_fake(fake_file, [{"index": 0, "total_mib": 24576, "used_mib": 512}])
    first = telemetry.sample()
    telemetry.write_fake(fake_file, [{"index": 0, "total_mib": 24576, "used_mib": 9000}])
    second = telemetry.sample()
    assert first.available and first.gpu(0).free_mib == 24064
    assert second.gpu(0).used_mib == 9000
    assert second.gpu(0).uuid == "GPU-fake-0"


def test_it_reports_a_missing_fake_file_as_unavailable(fake_file):
    result = telemetry.sample()
    assert not result.available
    assert "does not exist" in result.reason


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "unreadable"),
        (json.dumps({"gpu": []}), "must hold"),
        (json.dumps({"gpus": [{"index": 0}]}), "integer index"),
        (json.dumps({"gpus": [{"index": 0, "total_mib": 10, "used_mib": 11}]}), "between 0 and total"),
        (json.dumps({"gpus": ["x"]}), "must be an object"),
    ],
)
def test_it_reports_a_malformed_fake_file_with_the_reason(fake_file, content, reason):
    fake_file.write_text(content)
    result = telemetry.sample()
    assert not result.available
    assert reason in result.reason


def test_it_says_when_telemetry_is_off(settings):
    settings.GPU_BACKEND = "none"
    result = telemetry.sample()
    assert not result.available and "off" in result.reason


def fake_pynvml(*, v2: bool = True, compute=None, graphics=None, fail=()) -> types.ModuleType:
    """A stand-in for the pynvml module: one H200, NVML's figures in bytes.

    compute/graphics: {pid: MiB or None} per list; `fail` names the lists that raise.
    """
    module: Any = types.ModuleType("pynvml")
    module.nvmlMemory_v2 = 0x02000028
    module.nvmlInit = lambda: None
    module.nvmlDeviceGetCount = lambda: 1
    module.nvmlDeviceGetHandleByIndex = lambda index: f"handle-{index}"
    module.nvmlDeviceGetUUID = lambda handle: b"GPU-5c1e"
    module.nvmlDeviceGetName = lambda handle: "NVIDIA H200"

    def memory_info(handle, version=None):
        total, reserved, used = 143771 * MIB, 615 * MIB, 8810 * MIB
        if version is None:
            return SimpleNamespace(total=total, free=total - used - reserved, used=used + reserved)
        if not v2 or version != module.nvmlMemory_v2:
            raise RuntimeError("NVML_ERROR_FUNCTION_NOT_FOUND")
        return SimpleNamespace(
            version=version, total=total, reserved=reserved, free=total - used - reserved, used=used
        )

    def listing(name, processes):
        def running(handle):
            if name in fail:
                raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
            return [
                SimpleNamespace(pid=pid, usedGpuMemory=None if mib is None else mib * MIB)
                for pid, mib in (processes or {}).items()
            ]

        return running

    module.nvmlDeviceGetMemoryInfo = memory_info
    module.nvmlDeviceGetComputeRunningProcesses = listing("compute", compute)
    module.nvmlDeviceGetGraphicsRunningProcesses = listing("graphics", graphics)
    return module


@pytest.fixture
def nvml(monkeypatch, settings):
    """Install a fake pynvml module; returns a function that installs another."""
    settings.GPU_BACKEND = "nvml"

    def install(**options) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(**options))
        monkeypatch.setattr(telemetry.Nvml, "_ready", False)

    return install


def test_it_keeps_the_drivers_reservation_apart_with_memory_info_v2(nvml):
    nvml(compute={4242: 8800})
    result = telemetry.sample()
    assert result.available and result.backend == "nvml"
    assert result.gpu(0).as_dict() == {
        "index": 0,
        "uuid": "GPU-5c1e",
        "name": "NVIDIA H200",
        "total_mb": 143771,
        "used_mb": 8810,
        "free_mb": 143771 - 8810 - 615,
        "reserved_mb": 615,
        "processes": [{"pid": 4242, "used_mib": 8800}],
        "processes_visible": True,
        "processes_reason": "",
    }


def test_it_falls_back_to_memory_info_v1_with_the_reservation_unknown(nvml):
    nvml(v2=False, compute={4242: 8800})
    gpu = telemetry.sample().gpu(0)
    assert (gpu.used_mib, gpu.reserved_mib, gpu.free_mib) == (8810 + 615, None, 143771 - 8810 - 615)
    assert not gpu.visibility().visible
    assert "v1" in gpu.visibility().reason


def test_it_merges_compute_and_graphics_processes_by_pid(nvml):
    nvml(compute={10: 4000, 11: 300}, graphics={10: 4200, 12: 100})
    gpu = telemetry.sample().gpu(0)
    assert gpu.processes == (
        telemetry.GpuProcess(10, 4200),
        telemetry.GpuProcess(11, 300),
        telemetry.GpuProcess(12, 100),
    )
    assert gpu.listed_mib == 4600 and gpu.unlisted_mib == 8810 - 4600


def test_it_tolerates_one_process_list_failing(nvml):
    nvml(compute={4242: 8800}, fail=("graphics",))
    gpu = telemetry.sample().gpu(0)
    assert gpu.process_error == "" and gpu.visibility().visible


def test_it_says_when_nvml_cannot_list_processes(nvml):
    nvml(fail=("compute", "graphics"))
    gpu = telemetry.sample().gpu(0)
    assert "NVML_ERROR_NOT_SUPPORTED" in gpu.process_error
    assert not gpu.visibility().visible
    assert "cannot list the processes on GPU 0" in gpu.visibility().reason


def test_it_says_when_nvml_lists_processes_without_their_memory(nvml):
    nvml(compute={4242: None})
    gpu = telemetry.sample().gpu(0)
    assert gpu.process(4242).used_mib is None
    assert "without their memory (pids [4242])" in gpu.visibility().reason


def test_it_says_when_memory_is_used_but_nvml_lists_no_process(nvml):
    nvml()
    visibility = telemetry.sample().gpu(0).visibility()
    assert not visibility.visible
    assert "lists no process on GPU 0 while 8810 MiB beyond the driver's reservation" in visibility.reason
    assert "pid: host" in visibility.reason


def test_it_reports_an_nvml_failure_as_unavailable(monkeypatch, settings):
    settings.GPU_BACKEND = "nvml"

    def broken(cls):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(telemetry.Nvml, "_init", classmethod(broken))
    result = telemetry.sample()
    assert not result.available
    assert "NVML failed: libnvidia-ml.so.1" in result.reason


def test_it_reads_reservation_and_processes_from_the_fake_file(fake_file):
    telemetry.write_fake(
        fake_file,
        [{"index": 0, "total_mib": 24576, "used_mib": 9000, "reserved_mib": 600,
          "processes": [{"pid": 4242, "used_mib": 8900}]}],
    )  # fmt: skip
    gpu = telemetry.sample().gpu(0)
    assert (gpu.used_mib, gpu.reserved_mib, gpu.free_mib) == (9000, 600, 24576 - 9000 - 600)
    assert gpu.processes == (telemetry.GpuProcess(4242, 8900),)
    assert gpu.visibility().visible


def test_it_reads_the_old_fake_file_shape_as_memory_info_v1(fake_file):
    telemetry.write_fake(fake_file, [{"index": 0, "total_mib": 24576, "used_mib": 512}])
    gpu = telemetry.sample().gpu(0)
    assert (gpu.reserved_mib, gpu.processes, gpu.free_mib) == (None, (), 24064)


@pytest.mark.parametrize(
    "entry, reason",
    [
        ({"reserved_mib": 24000}, "between 0 and total"),
        ({"reserved_mib": -1}, "reserved_mib must be a non-negative integer"),
        ({"processes": {"pid": 1}}, "processes must be a list"),
        ({"processes": [{"used_mib": 5}]}, "'pid' is missing"),
        ({"processes": [{"pid": "x"}]}, "pid must be a non-negative integer"),
    ],
)
def test_it_reports_malformed_reservation_and_processes(fake_file, entry, reason):
    telemetry.write_fake(fake_file, [{"index": 0, "total_mib": 24576, "used_mib": 1000, **entry}])
    result = telemetry.sample()
    assert not result.available
    assert reason in result.reason


def test_it_loses_no_update_when_several_writers_change_the_fake_file(fake_file):
    telemetry.write_fake(fake_file, [{"index": 0, "total_mib": 24576, "used_mib": 0, "processes": []}])

    def add(pid: int) -> None:
        def change(gpus):
            gpus[0]["processes"].append({"pid": pid, "used_mib": 10})
            gpus[0]["used_mib"] += 10

        telemetry.update_fake(fake_file, change)

    threads = [threading.Thread(target=add, args=(pid,)) for pid in range(1, 41)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gpu = telemetry.sample().gpu(0)
    assert gpu.used_mib == 400 and sorted(p.pid for p in gpu.processes) == list(range(1, 41))


# --- backend auto, the default -------------------------------------------------------------------


@pytest.fixture
def auto(monkeypatch, settings):
    """Backend auto with NVML never initialised in this process; returns the initialisation calls."""
    settings.GPU_BACKEND = "auto"
    monkeypatch.setattr(telemetry.Nvml, "_ready", False)
    monkeypatch.setattr(telemetry.Nvml, "_failed", None)
    return monkeypatch


def test_it_is_off_with_nvmls_reason_under_auto_when_nvml_does_not_initialise(auto):
    calls = []

    def no_driver(cls):
        calls.append(1)
        raise OSError("NVML Shared Library Not Found")

    auto.setattr(telemetry.Nvml, "_init", classmethod(no_driver))
    first, second = telemetry.sample(), telemetry.sample()
    assert (first.available, first.backend) == (False, "none")
    assert first.reason == (
        "telemetry is off: GPU backend auto found no NVML "
        "(NVML did not initialise: NVML Shared Library Not Found)"
    )
    assert second.reason == first.reason and len(calls) == 1  # tried again only after a while
    auto.setattr(telemetry.time, "monotonic", lambda: 10**9)
    telemetry.sample()
    assert len(calls) == 2


def test_it_uses_nvml_under_auto_once_it_initialises(auto):
    auto.setitem(sys.modules, "pynvml", fake_pynvml())
    result = telemetry.sample()
    assert (result.available, result.backend) == (True, "nvml")
    assert result.gpu(0).reserved_mib == 615


def test_it_defaults_to_auto():
    from gaiaorch import config

    assert config.load({}).gpu.backend == "auto"
