"""Events for tests of the event log itself: test-only types, and declared types with a sample payload.

The registry refuses undeclared types and payloads (gaiaorch.event_types); a test about the log,
the feed or webhooks records either one of the test types below or a real type whose declared
payload keys `sample()` fills in (None unless given).
"""

from __future__ import annotations

from typing import Any

from gaiaorch.event_types import SEVERITIES, declare, lookup
from notifications.services import record_event

OTHER_SEVERITIES = tuple(level for level in SEVERITIES if level != "info")
TEST_PING = declare(
    "test.ping", "info", "A test's event.", optional=("gpu", "n", "count"), also=OTHER_SEVERITIES
)
X_PING = declare("x.ping", "info", "A test's event of another family.")
LEASES_OTHER = declare("leases.other", "info", "A test's event whose family only starts like lease.")


def sample(type: str, **given: Any) -> dict[str, Any]:
    """The declared payload of `type`, each key None unless given."""
    return {**dict.fromkeys(lookup(type).payload), **given}


def record_sample(type: str, title: str, message: str = "", *, data: dict | None = None, **fields: Any):
    """record_event with the declared payload of `type` filled in around `data`."""
    return record_event(type, title, message, data=sample(type, **(data or {})), **fields)
