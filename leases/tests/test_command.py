import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from leases import services
from leases.models import Lease


def gpu(*args) -> str:
    out = StringIO()
    call_command("gpu", "--actor", "olivia", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_acquires_releases_and_reports_in_json_and_text():
    granted = json.loads(gpu("--json", "acquire", "--requester", "gaia-core", "--reason", "inference"))
    assert granted["success"] is True and granted["fencing_token"] == 1
    queued = gpu("acquire", "--requester", "gaia-study", "--reason", "training", "--memory-mib", "4096")
    assert "number 1 in the queue" in queued
    text = gpu("status")
    assert "GPU 0: held by gaia-core (token 1" in text and "1. gaia-study (priority 0)" in text
    status = json.loads(gpu("--json", "status", "--gpu", "0"))
    assert status["owner"] == "gaia-core" and status["queue"][0]["requester"] == "gaia-study"
    released = json.loads(gpu("--json", "release", granted["lease_id"]))
    assert released["status"] == "released" and released["ended_by"] == "olivia"
    assert services.current_holder(0).requester == "gaia-study"


@pytest.mark.django_db
def test_it_heartbeats_and_revokes_with_a_reason():
    lease = services.acquire(requester="gaia-core", reason="x", ttl_seconds=30, actor="gaia-core").lease
    assert "is active" in gpu("heartbeat", str(lease.id))
    revoked = json.loads(gpu("--json", "revoke", str(lease.id), "--reason", "stuck"))
    assert revoked["status"] == "revoked" and revoked["end_reason"] == "stuck"


@pytest.mark.django_db
def test_it_fails_with_the_domain_error_and_prints_it_in_json():
    out = StringIO()
    with pytest.raises(CommandError, match="Unknown requester"):
        call_command("gpu", "--json", "acquire", "--requester", "mallory", "--reason", "x", stdout=out)
    assert json.loads(out.getvalue())["fields"]["requester"]
    with pytest.raises(CommandError, match="No lease"):
        gpu("release", "00000000-0000-0000-0000-000000000000")


@pytest.mark.django_db(transaction=True)
def test_it_waits_and_keeps_its_entry_with_its_position_on_timeout():
    services.acquire(requester="gaia-core", reason="x", actor="gaia-core")
    body = json.loads(gpu("--json", "wait", "--requester", "gaia-study", "--reason", "t", "--timeout", "0.2"))
    assert body["status"] == "waiting" and body["queue_position"] == 1
    again = json.loads(
        gpu("--json", "wait", "--requester", "gaia-study", "--reason", "t", "--timeout", "0.2")
    )
    assert again["lease_id"] == body["lease_id"] and again["queue_position"] == 1
    mine = services.acquire(requester="gaia-study-candidate", reason="x", actor="x").lease
    services.release(services.current_holder(0).id, actor="gaia-core")
    services.release(services.current_holder(0).id, actor="gaia-study")
    granted = json.loads(gpu("--json", "wait", "--lease", str(mine.id), "--timeout", "2"))
    assert granted["success"] is True and granted["fencing_token"] == 3
    assert Lease.objects.get(pk=mine.pk).claim_by is None
