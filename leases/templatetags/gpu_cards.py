"""`{% gpu_cards status %}`: the one drawing of the GPU cards, for the GPU admin page and the
operator dashboard (which re-renders it every two seconds), from `leases.services.gpu_status()`."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from gaiaorch.actions import confirmation_url

register = template.Library()


def memory_bar(memory: dict[str, Any]) -> dict[str, Any] | None:
    total, used, reserved = memory.get("total_mb"), memory.get("used_mb"), memory.get("reserved_mb")
    if not total or used is None:
        return None
    return {
        "percent": round(100 * used / total),
        "used_gib": used / 1024,
        "total_gib": total / 1024,
        "reserved_percent": round(100 * reserved / total, 1) if reserved else None,
    }


def card(gpu: dict[str, Any]) -> dict[str, Any]:
    lease_id = gpu["lease_id"]
    return {
        **gpu,
        "bar": memory_bar(gpu["memory"]),
        "lease_url": reverse("admin:leases_lease_change", args=[lease_id]) if lease_id else None,
        "revoke_url": confirmation_url("revoke-lease", lease_id=lease_id) if lease_id else None,
        "queue": [
            {**entry, "cancel_url": confirmation_url("cancel-lease", lease_id=entry["lease_id"])}
            for entry in gpu["queue"]
        ],
    }


@register.inclusion_tag("leases/gpu_cards.html")
def gpu_cards(status: dict[str, Any]) -> dict[str, Any]:
    return {"status": status, "gpus": [card(gpu) for gpu in status["gpus"]]}
