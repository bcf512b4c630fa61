"""The event-type registry (gaiaorch.event_types) and the event log's writer that enforces it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from gaiaorch import event_types
from gaiaorch.event_types import EventContractError
from notifications.models import Event, Severity
from notifications.services import record_event, record_events
from notifications.tests.samples import sample

ROOT = Path(__file__).resolve().parents[2]
WRITERS = {"record_event", "record_events", "record"}


def test_it_refuses_an_unknown_type_and_writes_nothing(db):
    with pytest.raises(EventContractError, match=r"unknown event type 'lease\.granded'"):
        record_event("lease.granded", "a typo")
    assert not Event.objects.exists()


def test_it_refuses_a_payload_with_a_missing_or_an_undeclared_key(db):
    data = sample("webhook.retried", delivery_ids=[1], retried=1)
    with pytest.raises(EventContractError, match=r"lacks \['retried'\]"):
        record_event("webhook.retried", "retried", data={"delivery_ids": [1]})
    with pytest.raises(EventContractError, match=r"undeclared keys \['extra'\]"):
        record_event("webhook.retried", "retried", data={**data, "extra": 1})
    assert not Event.objects.exists()
    assert record_event("webhook.retried", "retried", data=data).data == data


def test_it_refuses_a_severity_the_type_does_not_allow_and_defaults_to_the_declared_one(db):
    with pytest.raises(EventContractError, match="severity 'critical'"):
        record_event("docker.available", "Docker is reachable", severity="critical")
    assert record_event("docker.unavailable", "Docker is unreachable").severity == "error"
    changed = sample("container.state_changed")
    assert (
        record_event("container.state_changed", "dead", severity="warning", data=changed).severity
        == "warning"
    )


def test_it_refuses_the_whole_batch_when_one_event_is_wrong(db):
    good = {"type": "docker.available", "title": "up"}
    with pytest.raises(EventContractError):
        record_events([good, {"type": "nobody.declared", "title": "down"}])
    assert not Event.objects.exists()


def test_it_lets_an_audit_mark_join_any_payload():
    assert (
        event_types.check("docker.available", None, {"authenticated": False, "client": "10.0.0.1"}) == "info"
    )


def test_it_refuses_an_unknown_type_from_the_command_line(db):
    with pytest.raises(CommandError, match=r"unknown event type 'test\.nothing'"):
        call_command("notify", "event", "test.nothing", "hello")
    call_command("notify", "event", "hello by hand")
    assert Event.objects.get().type == "manual.event"


def test_it_declares_each_type_in_its_apps_events_module_with_the_logs_severities():
    declared = event_types.load()
    shipped = [t for t in declared.values() if ".tests." not in t.module]
    assert shipped and all(t.module == f"{t.app}.events" for t in shipped)
    assert {t.app for t in shipped} == set(event_types.DECLARING_APPS)
    assert tuple(Severity.values) == event_types.SEVERITIES


def test_it_keeps_docs_events_md_as_the_registry_writes_it():
    """Fails when a type changed and docs/events.md was not regenerated: run manage.py events_doc."""
    assert (ROOT / event_types.DOC_PATH).read_text() == event_types.markdown()
    call_command("events_doc", "--check")


def test_it_documents_every_shipped_type():
    text = (ROOT / event_types.DOC_PATH).read_text()
    shipped = [t.name for t in event_types.load().values() if ".tests." not in t.module]
    assert all(f"| `{name}` |" in text for name in shipped)


def writes_an_event(call: ast.Call) -> bool:
    """A call of an event writer whose type is a string or an f-string."""
    name = getattr(call.func, "id", getattr(call.func, "attr", ""))
    return name in WRITERS and bool(call.args) and isinstance(call.args[0], ast.Constant | ast.JoinedStr)


def literal_types(source: str) -> list[int]:
    """Lines of event-writer calls whose type is spelt in place (a string or an f-string), and of
    dict literals with a "type" key that is, rather than a declared constant."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and writes_an_event(node):
            lines.append(node.lineno)
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.JoinedStr):
                    lines.append(node.lineno)
    return lines


def test_it_finds_no_event_type_spelt_in_place_at_a_call_site():
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for app in event_types.DECLARING_APPS
        for path in sorted((ROOT / app).rglob("*.py"))
        if not {"tests", "migrations"} & set(path.relative_to(ROOT).parts)
        for line in literal_types(path.read_text())
    ]
    assert found == []


def test_it_catches_a_type_built_with_an_f_string():
    assert literal_types('record_event(f"handoff.{phase}", "t")\n') == [1]
    assert literal_types('record_event("lease.granted", "t")\n') == [1]
    assert literal_types('events.append({"type": f"lease.{what}"})\n') == [1]
    assert literal_types("record_event(events.LEASE_GRANTED, 't')\n") == []
