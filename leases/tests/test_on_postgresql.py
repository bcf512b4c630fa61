"""The service and API suites again, on the real PostgreSQL server (row locks, partial indexes,
the event log's advisory lock), in the PostgreSQL pass of scripts/test."""

import pytest

from leases.tests import test_api, test_services

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

for suite in (test_services, test_api):
    for name, test in vars(suite).items():
        if name.startswith("test_it_"):
            globals()[f"{name}_on_postgresql"] = test
