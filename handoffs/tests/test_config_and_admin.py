import pytest
from django.core.exceptions import ImproperlyConfigured

from gaiaorch import config
from gaiaorch.errors import Unavailable
from handoffs import services, tasks
from handoffs.models import Handoff, Phase
from notifications.models import Event


def test_it_releases_the_gpu_dependencies_after_the_service_and_sums_what_they_need(gaia):
    settings = config.current()
    assert [service.name for service in settings.gpu_chain("gaia-core")] == ["gaia-core", "gaia-prime"]
    assert settings.vram_needed_mib("gaia-core") == 10240
    assert settings.vram_needed_mib("gaia-study") == 16384


def test_it_sums_a_list_of_vram_figures(gaia, configure_service):
    configure_service("gaia-study", vram_mib=[10240, 6144])
    assert config.current().vram_needed_mib("gaia-study") == 16384


@pytest.mark.parametrize(
    ("section", "values", "complaint"),
    [
        (
            "handoffs",
            {"prime_to_study": {"source": "gaia-core", "destination": "nobody"}},
            "not under services",
        ),
        ("handoffs", {"on_recipient_unacknowledged": "shrug"}, "on_recipient_unacknowledged"),
        ("handoffs", {"phase_timeouts": {"lunch": 5}}, "unknown phases"),
        ("handoffs", {"stale_after_seconds": 5, "http_timeout_seconds": 10}, "must exceed"),
        (
            "handoffs",
            {"prime_to_study": {"source": "gaia-core", "destination": "gaia-study", "release": "x"}},
            "release",
        ),
        ("gpu", {"poll_ms": 0}, "poll_ms"),
    ],
)
def test_it_refuses_nonsense_configuration_naming_the_key(gaia, configure, section, values, complaint):
    configure(section, **values)
    with pytest.raises(ImproperlyConfigured, match=complaint):
        config.current()


def test_it_refuses_a_bad_strategy(gaia, configure_service):
    configure_service("gaia-core", release={"container": "explode"})
    with pytest.raises(ImproperlyConfigured, match=r"services\.gaia-core\.release\.container"):
        config.current()


@pytest.mark.django_db
def test_it_does_not_take_a_missing_container_stop_as_proof(gaia, hold_gpu, settings, configure):
    hold_gpu("gaia-core")
    configure("handoffs", accept_container_stopped_as_proof=True)
    settings.GPU_BACKEND = "none"
    with pytest.raises(Unavailable, match="telemetry is unavailable"):
        services.start(type="prime_to_study", actor="olivia")


@pytest.mark.django_db
def test_it_accepts_a_stopped_container_as_proof_when_configured(
    gaia, hold_gpu, settings, configure, configure_service, monkeypatch
):
    hold_gpu("gaia-core")
    configure("handoffs", accept_container_stopped_as_proof=True)
    configure_service("gaia-prime", release={"container": "stop"})
    stopped = []
    monkeypatch.setattr(
        "handoffs.strategies.container_action", lambda action, names, waiting: stopped.append((action, names))
    )
    settings.GPU_BACKEND = "none"
    handoff = services.start(type="prime_to_study", actor="olivia")
    tasks.run_handoff(str(handoff.id))
    handoff.refresh_from_db()
    assert handoff.phase == Phase.COMPLETED
    assert stopped == [("stop", ["gaia-prime"])]
    assert handoff.phases.get(name="waiting_cuda_cleanup").figures["proof"] == "container_stopped"


@pytest.mark.django_db
def test_it_shows_the_timeline_and_acts_from_the_admin(gaia, hold_gpu, admin_client):
    hold_gpu("gaia-core")
    start = admin_client.get("/admin/handoffs/handoff/start/")
    assert start["Location"] == "/admin/dashboard/action/start-handoff"
    started = admin_client.post(
        start["Location"], {"type": "prime_to_study", "reason": "from admin", "gpu": 0}
    )
    assert started.status_code == 302
    handoff = Handoff.objects.get()
    assert handoff.requested_by == "admin"
    page = admin_client.get(f"/admin/handoffs/handoff/{handoff.id}/change/")
    assert page.status_code == 200
    assert b"initiated" in page.content
    assert admin_client.get("/admin/handoffs/handoff/").status_code == 200
    change_list = "/admin/handoffs/handoff/"
    selected = {"_selected_action": [str(handoff.id)]}
    asked = admin_client.post(change_list, {"action": "cancel_handoffs", **selected})
    assert asked["Location"] == f"/admin/dashboard/action/cancel-handoff?handoff_id={handoff.id}"
    admin_client.post(asked["Location"], {"handoff_id": str(handoff.id), "reason": "wrong night"})
    tasks.run_handoff(str(handoff.id))
    handoff.refresh_from_db()
    assert handoff.phase == Phase.CANCELLED
    asked = admin_client.post(change_list, {"action": "retry_handoffs", **selected})
    assert asked["Location"] == f"/admin/dashboard/action/retry-handoff?handoff_id={handoff.id}"
    admin_client.post(asked["Location"], {"handoff_id": str(handoff.id), "reason": "the right night"})
    retried = Handoff.objects.exclude(pk=handoff.pk).get()
    assert (retried.type, retried.phase, retried.reason) == ("prime_to_study", Phase.INITIATED, "from admin")
    started = Event.objects.filter(type="handoff.started", actor="admin").order_by("-id").first()
    assert started.message == f"Retry of {handoff.id}: the right night"
