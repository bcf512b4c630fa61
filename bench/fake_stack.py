"""A benchmark's own gaiaorch: a configuration document in a fresh var directory, the fake GPU
backend, and no setting inherited from the caller's environment (its database, its Redis)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

INHERITED_URLS = ("DATABASE_URL", "REDIS_URL")  # the caller's services, never the benchmark's


def use(var_dir: Path, stack: dict[str, Any], **environment: str) -> None:
    """Write `stack` as the configuration and point this process's settings at it; call before
    Django is set up. `environment` adds GAIAORCH_… variables,
    or the benchmark's own DATABASE_URL and REDIS_URL."""
    import yaml

    (var_dir / "orchestrator.yaml").write_text(yaml.safe_dump(stack))
    for name in [key for key in os.environ if key.startswith("GAIAORCH_") or key in INHERITED_URLS]:
        del os.environ[name]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="gaiaorch.settings",
        GAIAORCH_CONFIG=str(var_dir / "orchestrator.yaml"),
        GAIAORCH_VAR_DIR=str(var_dir),
        GAIAORCH_GPU_BACKEND="fake",
        GAIAORCH_FAKE_GPU_FILE=str(var_dir / "fake-gpu.json"),
        GAIAORCH_LOG_LEVEL="WARNING",
        **environment,
    )
