"""The fields of a GPU request are declared once (gaiaorch_client.contract) and every place that
takes them is built from that declaration: the API's serializers, the async wait view's call of
the lease service, `manage.py gpu acquire|wait` and the client."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pytest

from gaiaorch_client import Client, contract
from leases.api.serializers import AcquireSerializer, WaitAcquireSerializer
from leases.management.commands.gpu import Command

NAMES = [field.name for field in contract.ACQUIRE]
WAIT_NAMES = [field.name for field in contract.WAIT]


def cli_options(subcommand: str) -> dict[str, argparse.Action]:
    parser = Command().create_parser("manage.py", "gpu")
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action for action in subparsers.choices[subcommand]._actions}


def test_it_keeps_the_contract_free_of_any_dependency():
    """The client is copied into services as it is: its contract needs the standard library only."""
    tree = ast.parse(Path(contract.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_it_builds_the_api_serializers_from_the_contract():
    assert list(AcquireSerializer().fields) == [*NAMES, "timeout_seconds"]
    assert list(WaitAcquireSerializer().fields) == [*NAMES, *WAIT_NAMES]
    fields = AcquireSerializer().fields
    for field in contract.ACQUIRE:
        assert fields[field.name].required == field.required
        if field.minimum is not None:
            assert (fields[field.name].min_value, fields[field.name].max_value) == (
                field.minimum,
                field.maximum,
            )
    assert WaitAcquireSerializer().fields["timeout_seconds"].default == 60.0


def test_it_builds_the_command_line_options_from_the_contract():
    acquire, wait = cli_options("acquire"), cli_options("wait")
    assert set(NAMES) <= set(acquire) and set(NAMES + WAIT_NAMES) <= set(wait)
    assert acquire["ttl_seconds"].option_strings == ["--ttl"]
    assert acquire["memory_mib"].option_strings == ["--memory-mib"]
    assert wait["timeout_seconds"].option_strings == ["--timeout"] and wait["timeout_seconds"].default == 60.0
    assert wait["keep_queued"].option_strings == ["--keep-queued"]
    assert acquire["requester"].required and not wait["requester"].required


def test_it_sends_each_field_from_the_client_and_refuses_any_other_option():
    client = Client("http://127.0.0.1:9", requester="gaia-study", token="t")
    body = client._acquire_request("LoRA", {"gpu": 1, "priority": 2, "ttl_seconds": 60, "memory_mib": 4096})
    assert sorted(body) == sorted(NAMES)
    with pytest.raises(TypeError, match="unknown acquire option"):
        client._acquire_request("LoRA", {"memroy_mib": 4096})


def test_it_carries_a_new_field_to_every_place_that_takes_acquire_fields(monkeypatch):
    """A field added to contract.ACQUIRE only: the API validates it, the wait view and the command
    pass it to the lease service, the command line offers it and the client sends it."""
    colour = contract.Field("colour", str, "a new field", default="blue", max_length=10)
    monkeypatch.setattr(contract, "ACQUIRE", (*contract.ACQUIRE, colour))

    api = AcquireSerializer(data={"requester": "gaia-study", "reason": "LoRA", "colour": "red"})
    assert api.is_valid(), api.errors
    assert contract.acquire_arguments(api.validated_data)["colour"] == "red"
    too_long = WaitAcquireSerializer(data={"requester": "gaia-study", "reason": "LoRA", "colour": "x" * 11})
    assert not too_long.is_valid() and "colour" in too_long.errors
    assert cli_options("acquire")["colour"].default == "blue" and "colour" in cli_options("wait")
    body = Client("http://127.0.0.1:9", requester="gaia-study", token="t")._acquire_request(
        "LoRA", {"colour": "red"}
    )
    assert body["colour"] == "red"
