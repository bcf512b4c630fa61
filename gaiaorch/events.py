"""The event types of the base layer (gaiaorch.event_types): accounts and their tokens."""

from __future__ import annotations

from gaiaorch.event_types import declare

ACCOUNT_CREATED = declare(
    "account.created",
    "info",
    "An account was created: a service's, or the first operator's (read_only: it reads and never writes).",
    payload=("account", "read_only"),
)
ACCOUNT_TOKEN_ISSUED = declare(
    "account.token_issued",
    "info",
    "An account was given a new API token (rotated: its old key stopped working).",
    payload=("account", "prefix", "rotated"),
)
ACCOUNT_TOKEN_REVOKED = declare(
    "account.token_revoked",
    "warning",
    "An account's API token was revoked: its key stopped working and none replaces it.",
    payload=("account", "prefix"),
)
ACCOUNT_READ_ONLY_CHANGED = declare(
    "account.read_only_changed",
    "info",
    "An account was made read-only, or allowed to write again.",
    payload=("account", "read_only"),
)
ADMIN_CHANGED = declare(
    "admin.changed",
    "warning",
    "An operator added, changed or deleted a row in the admin (an account, a group, a queued task).",
    payload=("model", "object", "action", "changed"),
)
