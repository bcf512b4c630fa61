import json
from types import SimpleNamespace

import pytest

from gaiaorch import telemetry


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


class FakeNvml:
    """Stands in for the pynvml module: two devices, one with a process list that fails."""

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=80 * 1024 * telemetry.MIB, used=(480 + handle) * telemetry.MIB)

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}".encode()

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100"

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if handle == 1:
            raise RuntimeError("not supported")
        return [SimpleNamespace(pid=42, usedGpuMemory=100 * telemetry.MIB)]


def test_it_turns_nvml_figures_into_mib(monkeypatch, settings):
    settings.GPU_BACKEND = "nvml"
    monkeypatch.setattr(telemetry.Nvml, "_init", classmethod(lambda cls: FakeNvml()))
    result = telemetry.sample()
    assert result.available and result.backend == "nvml"
    assert result.gpu(0).as_dict() == {
        "index": 0,
        "uuid": "GPU-0",
        "name": "NVIDIA H100",
        "total_mb": 81920,
        "used_mb": 480,
        "free_mb": 81440,
        "processes": [{"pid": 42, "used_mib": 100}],
    }
    assert result.gpu(1).processes == []


def test_it_reports_an_nvml_failure_as_unavailable(monkeypatch, settings):
    settings.GPU_BACKEND = "nvml"

    def broken(cls):
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(telemetry.Nvml, "_init", classmethod(broken))
    result = telemetry.sample()
    assert not result.available
    assert "NVML failed: libnvidia-ml.so.1" in result.reason
