"""The summary, readiness (with the worker heartbeat and /health), metrics (with their folded
figures) and hardening suites again, on the real PostgreSQL server (interval arithmetic and JSON
casts in the metric queries), in the PostgreSQL pass of scripts/test."""

import pytest

from console.tests import test_hardening, test_metrics, test_metrics_fold, test_readiness, test_summary
from gaiaorch.tests import test_health

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

for suite in (test_summary, test_readiness, test_health, test_metrics, test_metrics_fold, test_hardening):
    for name, test in vars(suite).items():
        if name.startswith("test_it_") and not name.endswith("_on_postgresql"):
            globals()[f"{name}_on_postgresql"] = test
