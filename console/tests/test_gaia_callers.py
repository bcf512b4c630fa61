"""The original GAIA callers, replayed against gaiaorch.

Each test sends one request to a seed route exactly as the original code sends it (method, path,
query, body or no body, Content-Type), plus at most an `Authorization: Token …` header, and asserts
what that caller reads from the answer. docs/gaia-callers.md lists every call with its source file
in azraeltruthsay/gaia; the `Call` constants below name the same files.

Writes are replayed twice: with the caller's token, and without any (the originals send none)
from the address the caller sends from, with the trusted networks of a GAIA box configured
(TRUSTED_NETWORKS): the host's scripts at 127.0.0.1, the services on their compose network.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
from django.test import Client

from gaiaorch.auth import ensure_service_account, issue_token
from handoffs.models import TERMINAL, Handoff
from handoffs.tests.conftest import TRAINING_MIB
from leases import services as leases
from notifications.models import Event

pytestmark = pytest.mark.django_db

SEED_WAIT_SECONDS = 30  # handoffs.default_wait_seconds, as an operator restoring the seed's behaviour sets it
HOST = "127.0.0.1"  # gaia.sh and scripts/ run on the host
COMPOSE_NETWORK = "172.18.0.7"  # the GAIA services' containers share a compose network
TRUSTED_NETWORKS = [
    {"network": "127.0.0.1/32", "acts_as": "olivia"},  # the host's scripts act as the operator
    {"network": "172.18.0.0/16", "acts_as": "gaia-stack"},  # the services, where a request names none
]


@dataclass(frozen=True)
class Call:
    """One request of an original caller; `source` is its file in azraeltruthsay/gaia."""

    caller: str
    source: str
    method: str
    path: str
    body: bytes | None = None  # None: no body at all
    content_type: str | None = None  # sent even without a body (curl -H 'Content-Type: …')

    @property
    def address(self) -> str:
        return HOST if self.caller == "operator" else COMPOSE_NETWORK

    def replay(self, token: str | None = None, path: str | None = None):
        extra: dict = {"REMOTE_ADDR": self.address}
        if token:
            extra["HTTP_AUTHORIZATION"] = f"Token {token}"
        if self.content_type and not self.body:
            extra["CONTENT_TYPE"] = self.content_type
        return Client().generic(
            self.method,
            path or self.path,
            data=self.body or b"",
            content_type=self.content_type or "application/octet-stream",
            **extra,
        )


def urllib_json(body: dict) -> bytes:
    return json.dumps(body).encode()  # json.dumps(...).encode(), as the urllib callers send it


# --- the calls ------------------------------------------------------------------------------------

CORE_PREEMPTS_STUDY = Call(
    "gaia-core",
    "gaia-core/gaia_core/cognition/sleep_cycle_loop.py",
    "POST",
    "/handoff/study-to-prime",
    b"{}",  # httpx json={}
    "application/json",
)
CORE_ORACLE_FALLBACK = Call(
    "gaia-core",
    "gaia-core/gaia_core/models/_model_pool_impl.py (first commit, cbc0b26)",
    "POST",
    "/notify/oracle-fallback",
    urllib_json(
        {
            "fallback_model": "groq/llama-3.3-70b",
            "original_role": "prime",
            "reason": "Local model not available",
        }
    ),
    "application/json",
)
STUDY_TRAINER_ACQUIRES = Call(
    "gaia-study", "gaia-study/gaia_study/adaptive_trainer.py", "POST", "/handoff/prime-to-study"
)
STUDY_TRAINER_RETURNS = Call(
    "gaia-study", "gaia-study/gaia_study/adaptive_trainer.py", "POST", "/handoff/study-to-prime"
)
STUDY_SUBPROCESS_REACQUIRES = Call(
    "gaia-study", "gaia-study/gaia_study/adaptive_subprocess.py", "POST", "/handoff/prime-to-study"
)
PIPELINE = "gaia-study/scripts/self_awareness_pipeline.py"
PIPELINE_GPU_STATUS = Call("gaia-study", PIPELINE, "GET", "/gpu/status")
PIPELINE_STATUS = Call("gaia-study", PIPELINE, "GET", "/status")
PIPELINE_OPENAPI = Call("gaia-study", PIPELINE, "GET", "/openapi.json")
PIPELINE_HEALTH = Call("gaia-study", PIPELINE, "GET", "/health")
PIPELINE_ACQUIRES = Call(
    "gaia-study",
    PIPELINE,
    "POST",
    "/handoff/prime-to-study",
    urllib_json({"handoff_type": "prime_to_study", "reason": "self_awareness_pipeline training"}),
    "application/json",
)
PIPELINE_RETURNS = Call(
    "gaia-study",
    PIPELINE,
    "POST",
    "/handoff/study-to-prime",
    urllib_json({"handoff_type": "study_to_prime", "reason": "training complete, returning GPU"}),
    "application/json",
)
WEB_STATUS = Call("gaia-web", "gaia-web/gaia_web/routes/system.py", "GET", "/status")
AUDIO_ACQUIRES = Call(
    "gaia-audio",
    "gaia-audio/gaia_audio/gpu_manager.py",
    "POST",
    "/gpu/acquire",
    json.dumps(
        {
            "requester": "gaia-audio",
            "reason": "Prime Speaker TTS synthesis",
            "timeout_seconds": 30,
            "priority": 0,
        }
    ).encode(),
    "application/json",
)
DOCTOR_CLEANS_UP = Call(
    "gaia-doctor",
    "gaia-doctor/doctor.py",
    "POST",
    "/gpu/release",
    urllib_json({"reason": "zombie_cleanup:pid_4242"}),
    "application/json",
)
DOCTOR_GPU_STATUS = Call("gaia-doctor", "gaia-doctor/doctor.py", "GET", "/gpu/status")
SH_HEALTH = Call("operator", "gaia.sh", "GET", "/health")
SH_STATUS = Call("operator", "gaia.sh", "GET", "/status")
SH_GPU_STATUS = Call("operator", "gaia.sh", "GET", "/gpu/status")
SH_GPU_RELEASE = Call("operator", "gaia.sh", "POST", "/gpu/release")
SH_PRIME_TO_STUDY = Call("operator", "gaia.sh", "POST", "/handoff/prime-to-study")
SH_STUDY_TO_PRIME = Call("operator", "gaia.sh", "POST", "/handoff/study-to-prime")
SH_HANDOFF_STATUS = Call("operator", "gaia.sh", "GET", "/handoff/{id}/status")
LIFECYCLE_RELEASES = Call(
    "operator", "scripts/training_lifecycle.py", "POST", "/gpu/release", b"{}", "application/json"
)
LIFECYCLE_STATUS = Call("operator", "scripts/training_lifecycle.py", "GET", "/status")
QLORA_PRIME_TO_STUDY = Call(
    "operator", "scripts/validate_qlora.sh", "POST", "/handoff/prime-to-study", None, "application/json"
)
QLORA_STUDY_TO_PRIME = Call(
    "operator", "scripts/validate_qlora.sh", "POST", "/handoff/study-to-prime", None, "application/json"
)
PROMOTE = "scripts/promote_pipeline.sh"
PROMOTE_GPU_OWNER = Call("operator", PROMOTE, "GET", "/gpu/status")
PROMOTE_HANDOFF = Call(
    "operator",
    PROMOTE,
    "POST",
    "/handoff/prime-to-study",
    b'{"reason": "promotion_pipeline", "timeout_seconds": 60}',
    "application/json",
)
PROMOTE_HANDOFF_STATUS = Call("operator", PROMOTE, "GET", "/handoff/{id}/status")
PROMOTE_RELEASES_CANDIDATE = Call("operator", PROMOTE, "POST", "/gpu/release")
CLI_GPU_STATUS = Call("operator", "scripts/gaia_cli.py", "GET", "/gpu/status")

PRIME_TO_STUDY_CALLS = [
    SH_PRIME_TO_STUDY,
    STUDY_TRAINER_ACQUIRES,
    PIPELINE_ACQUIRES,
    QLORA_PRIME_TO_STUDY,
    PROMOTE_HANDOFF,
]
STUDY_TO_PRIME_CALLS = [CORE_PREEMPTS_STUDY, STUDY_TRAINER_RETURNS, PIPELINE_RETURNS, SH_STUDY_TO_PRIME]


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def token_of(db, service_token):
    """The token a caller sends: its service account's, or an operator's for host scripts."""

    keys: dict[str, str] = {}

    def token(caller: str) -> str:
        from django.contrib.auth import get_user_model

        if caller not in keys:  # a key is shown once: keep it for the test's later calls
            if caller == "operator":
                olivia, _ = get_user_model().objects.get_or_create(
                    username="olivia", defaults={"is_staff": True}
                )
                keys[caller] = issue_token(olivia)
            else:
                keys[caller] = service_token(caller)
        return keys[caller]

    return token


@pytest.fixture(params=["token", "no token"])
def auth(request, token_of, settings, django_user_model):
    """How a write is sent: with the caller's token, and as the original sends it (no token)
    from a trusted network."""
    if request.param == "token":
        return token_of
    django_user_model.objects.get_or_create(username="olivia", defaults={"is_staff": True})
    orchestrator = {**settings.GAIAORCH.get("orchestrator", {}), "trusted_networks": TRUSTED_NETWORKS}
    grants = {
        **settings.GAIAORCH.get("grants", {}),
        "gaia-stack": ["oracle_fallback"],
    }  # the notice names none
    settings.GAIAORCH = {**settings.GAIAORCH, "orchestrator": orchestrator, "grants": grants}
    return lambda caller: None


@pytest.fixture
def seed_wait(settings):
    """handoffs.default_wait_seconds set: starts answer when the handoff has ended, as the seed did."""
    handoffs = {**settings.GAIAORCH["handoffs"], "default_wait_seconds": SEED_WAIT_SECONDS}
    settings.GAIAORCH = {**settings.GAIAORCH, "handoffs": handoffs}


@pytest.fixture
def study_trains(hold_gpu, gpu):
    """gaia-study holds GPU 0 and trains on it."""
    hold_gpu("gaia-study")
    gpu.set(TRAINING_MIB)


def holder() -> str | None:
    lease = leases.current_holder(0)
    return lease.requester if lease else None


# --- handoffs -------------------------------------------------------------------------------------

transactional = pytest.mark.django_db(transaction=True)


@transactional
def test_it_answers_gaia_cores_preemption_with_200_once_the_gpu_is_back(
    gaia, study_trains, worker, seed_wait, auth
):
    assert_gaia_core_preempts(auth("gaia-core"))


@pytest.mark.postgres
@transactional
def test_it_answers_gaia_cores_preemption_with_200_on_postgresql(
    gaia, study_trains, worker, seed_wait, token_of
):
    assert_gaia_core_preempts(token_of("gaia-core"))


def assert_gaia_core_preempts(token: str | None) -> None:
    response = CORE_PREEMPTS_STUDY.replay(token)
    assert response.status_code == 200  # gaia-core counts only 200 as "preemption initiated"
    assert holder() == "gaia-core"
    assert response.json()["phase"] == "completed"


@transactional
def test_it_answers_gaia_cores_preemption_with_a_failure_status_when_the_handoff_fails(
    gaia, study_trains, worker, seed_wait, token_of
):
    gaia["gaia-core"].respond("/gpu/reclaim", status=500)
    response = CORE_PREEMPTS_STUDY.replay(token_of("gaia-core"))
    assert response.status_code == 502  # not 200: gaia-core retries at its next poll
    assert response.json()["error"] == "handoff_failed"
    assert holder() == "gaia-study"  # rolled back


@transactional
@pytest.mark.parametrize("call", PRIME_TO_STUDY_CALLS, ids=lambda call: call.source)
def test_it_answers_a_prime_to_study_start_with_2xx_only_once_study_holds_the_gpu(
    gaia, hold_gpu, worker, seed_wait, auth, call
):
    """The training callers start training on any 2xx (validate_qlora.sh, the pipeline)."""
    hold_gpu("gaia-core")
    response = call.replay(auth(call.caller))
    assert response.status_code == 200
    assert holder() == "gaia-study"
    assert response.json()["handoff_id"]  # promote_pipeline.sh and gaia.sh read it


@transactional
@pytest.mark.parametrize("call", STUDY_TO_PRIME_CALLS[1:], ids=lambda call: call.source)
def test_it_answers_a_study_to_prime_start_with_2xx_once_prime_holds_the_gpu(
    gaia, study_trains, worker, seed_wait, auth, call
):
    """The pipeline then waits for gaia-prime's health; the trainer only logs a 200."""
    response = call.replay(auth(call.caller))
    assert response.status_code == 200
    assert holder() == "gaia-core"


@transactional
def test_it_answers_the_trainers_repeated_request_while_study_trains_without_harm(
    gaia, study_trains, worker, token_of
):
    response = STUDY_SUBPROCESS_REACQUIRES.replay(token_of("gaia-study"))
    assert response.status_code == 409  # ignored by the caller, which then polls free VRAM
    assert response.json()["holder"] == "gaia-study"
    assert holder() == "gaia-study" and not Handoff.objects.exists()


@transactional
def test_it_lets_the_promotion_script_follow_a_handoff_it_started(gaia, hold_gpu, worker, auth):
    hold_gpu("gaia-core")
    started = PROMOTE_HANDOFF.replay(auth("operator"))
    assert started.status_code == 202  # curl -sf: any 2xx; no default wait is configured
    handoff_id = started.json()["handoff_id"]
    for poller in (PROMOTE_HANDOFF_STATUS, SH_HANDOFF_STATUS):
        assert follow(poller, handoff_id) == "completed"
    assert holder() == "gaia-study"


def follow(poller: Call, handoff_id: str) -> str:
    """Poll the status as promote_pipeline.sh does, until the phase is completed, failed or cancelled."""
    path = poller.path.replace("{id}", handoff_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = poller.replay(path=path)
        assert response.status_code == 200
        if response.json()["phase"] in TERMINAL:
            return response.json()["phase"]
        time.sleep(0.1)
    return response.json()["phase"]


@pytest.fixture
def core_resident(gaia, settings):
    """gaia-core is GPU 0's resident, as config/orchestrator.yaml ships it."""
    residents = {**(settings.GAIAORCH.get("leases") or {}), "residents": {0: "gaia-core"}}
    settings.GAIAORCH = {**settings.GAIAORCH, "leases": residents}


@transactional
@pytest.mark.parametrize("call", PRIME_TO_STUDY_CALLS, ids=lambda call: call.source)
def test_it_hands_a_fresh_boxs_gpu_from_prime_to_study(
    gaia, core_resident, worker, seed_wait, token_of, call
):
    """No original caller ever takes a lease for gaia-core: Prime is loaded at boot, and gaia-core
    holds GPU 0 as its resident."""
    response = call.replay(token_of(call.caller))
    assert response.status_code == 200
    assert holder() == "gaia-study"


@transactional
def test_it_gives_the_gpu_back_to_its_resident_when_training_ends(
    gaia, core_resident, worker, seed_wait, token_of
):
    """The training callers release the GPU after training (gaia.sh gpu release, the lifecycle
    script) instead of handing it back: it returns to gaia-core, which Prime serves again."""
    assert PIPELINE_ACQUIRES.replay(token_of("gaia-study")).status_code == 200
    assert LIFECYCLE_RELEASES.replay(token_of("operator")).status_code == 200
    assert holder() == "gaia-core"
    assert STUDY_TRAINER_ACQUIRES.replay(token_of("gaia-study")).status_code == 200  # and again
    assert holder() == "gaia-study"


@transactional
def test_it_tells_gaia_cores_sleep_loop_that_the_preemption_handoff_ended(
    gaia, study_trains, worker, seed_wait, token_of
):
    """gaia-core's sleep loop leaves its dreaming state when told POST /sleep/study-handoff."""
    response = CORE_PREEMPTS_STUDY.replay(token_of("gaia-core"))
    told = gaia["gaia-core"].called("/sleep/study-handoff")
    assert [call.body for call in told] == [
        {"direction": "study_to_prime", "handoff_id": response.json()["handoff_id"]}
    ]


# --- GPU leases -----------------------------------------------------------------------------------


def test_it_grants_gaia_audio_a_lease_for_the_prime_speaker(settings, auth):
    services = {**settings.GAIAORCH["services"], "gaia-audio": {"gpu": True, "port": 8080}}
    settings.GAIAORCH = {**settings.GAIAORCH, "services": services}
    response = AUDIO_ACQUIRES.replay(auth("gaia-audio"))
    assert response.status_code == 200 and response.json()["success"] is True
    lease_id = response.json()["lease_id"]
    released = Call(
        "gaia-audio",
        AUDIO_ACQUIRES.source,
        "POST",
        "/gpu/release",
        json.dumps({"lease_id": lease_id}).encode(),
        "application/json",
    ).replay(auth("gaia-audio"))
    assert released.status_code == 200  # the answer is not read; the lease must end
    assert holder() is None


def test_it_queues_gaia_audio_behind_gpu_0s_resident(settings, token_of):
    """With the shipped residency gaia-core holds GPU 0: the Prime speaker is told it is not granted."""
    settings.GAIAORCH = {**settings.GAIAORCH, "leases": {"residents": {0: "gaia-core"}}}
    response = AUDIO_ACQUIRES.replay(token_of("gaia-audio"))
    assert response.status_code == 202 and response.json()["success"] is False  # gaia-audio does not load
    assert "gaia-core, its resident" in response.json()["waiting_for"]
    assert holder() == "gaia-core"


@pytest.mark.parametrize(
    "call", [SH_GPU_RELEASE, LIFECYCLE_RELEASES, PROMOTE_RELEASES_CANDIDATE], ids=lambda call: call.source
)
def test_it_releases_the_holder_for_an_operators_release_without_an_id(core_lease, auth, call):
    response = call.replay(auth(call.caller))
    assert response.status_code == 200  # promote_pipeline.sh: curl -sf exit code
    body = response.json()
    assert body["success"] is True  # training_lifecycle.py, printed by gaia.sh
    assert body["message"] and body["queue_length"] == 0
    assert holder() is None
    assert Event.objects.filter(type="lease.released").get().actor == "olivia"


def test_it_says_so_when_an_operators_release_finds_nothing_held(token_of):
    response = SH_GPU_RELEASE.replay(token_of("operator"))
    assert response.status_code == 409
    assert response.json()["success"] is False and "nothing was released" in response.json()["message"]


def test_it_releases_nothing_of_others_on_the_doctors_clean_up(core_lease, auth):
    response = DOCTOR_CLEANS_UP.replay(auth("gaia-doctor"))
    assert response.status_code == 409  # the doctor ignores the answer
    assert response.json()["error"] == "nothing_held"
    assert holder() == "gaia-core"


@pytest.mark.parametrize(
    "call", [DOCTOR_GPU_STATUS, SH_GPU_STATUS, CLI_GPU_STATUS], ids=lambda call: call.source
)
def test_it_serves_the_seed_gpu_status_to_readers_without_a_token(core_lease, call):
    body = call.replay().json()
    assert (body["owner"], body["lease_id"]) == ("gaia-core", str(core_lease.id))
    assert isinstance(body["queue"], list)  # gaia_cli.py prints it
    assert set(body["memory"]) >= {"used_mb", "total_mb"}


@pytest.mark.parametrize("call", [PIPELINE_GPU_STATUS, PROMOTE_GPU_OWNER], ids=lambda call: call.source)
def test_it_names_the_gpu_owner_as_the_training_scripts_compare_it(study_trains, call):
    assert call.replay().json()["owner"] == "gaia-study"
    leases.release(leases.current_holder(0).id, actor="test")
    assert call.replay().json()["owner"] == "none"  # promote_pipeline.sh: "GPU unowned"


# --- status, health, notifications ----------------------------------------------------------------


def gaia_web_gpu_owner(body: dict) -> str:
    """gaia-web's system_status(): the newer gpu_owner string, else gpu.owner with "none" as "--"."""
    gpu_owner = body.get("gpu_owner", "")
    if gpu_owner and gpu_owner != "--":
        return gpu_owner
    owner = body.get("gpu", {}).get("owner", "none")
    return owner if owner != "none" else "--"


def test_it_shows_gaia_web_the_gpu_owner_or_dashes(db):
    response = WEB_STATUS.replay()
    assert response.status_code == 200
    assert gaia_web_gpu_owner(response.json()) == "--"
    leases.acquire(requester="gaia-core", reason="serving", actor="gaia-core")
    assert gaia_web_gpu_owner(WEB_STATUS.replay().json()) == "gaia-core"
    assert isinstance(response.json()["status"], str)  # passed through to its dashboard


def test_it_answers_the_health_and_status_reads_of_the_shell_and_the_scripts(db):
    assert SH_HEALTH.replay().status_code == 200  # curl -sf before every gpu/handoff command
    for call in (SH_STATUS, LIFECYCLE_STATUS, PIPELINE_STATUS):
        response = call.replay()
        assert response.status_code == 200 and response.json()
        assert "active_handoff" in response.json()  # gaia.sh handoff status


def test_it_passes_the_pipelines_preflight_by_its_health_fallback(db):
    assert PIPELINE_GPU_STATUS.replay().status_code == 200
    assert PIPELINE_OPENAPI.replay().status_code == 404  # the schema lives at /api/schema/
    assert PIPELINE_HEALTH.replay().status_code == 200  # what the preflight checks instead


def test_it_takes_gaia_cores_oracle_fallback_notice(auth):
    response = CORE_ORACLE_FALLBACK.replay(auth("gaia-core"))
    assert response.status_code == 200  # the only thing gaia-core reads
    assert Event.objects.filter(type="notification.oracle_fallback").count() == 1


@transactional
async def test_it_pushes_the_oracle_fallback_notice_in_the_seeds_shape(auth):
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from console.asgi import application

    token = await sync_to_async(auth)("gaia-web")
    core = await sync_to_async(ensure_service_account)("gaia-core")  # its account.* events come first
    headers = [(b"authorization", f"Token {token}".encode())] if token else []
    socket = WebsocketCommunicator(application, "/ws/notifications", headers=headers)
    socket.scope["client"] = (COMPOSE_NETWORK, 41000)  # read when the connection starts, below
    connected, _ = await socket.connect()
    assert connected
    try:
        await sync_to_async(CORE_ORACLE_FALLBACK.replay)(core)
        notice = await socket.receive_json_from(timeout=5)
    finally:
        await socket.disconnect()
    assert notice["notification_type"] == "oracle_fallback"
    assert {"notification_id", "title", "message", "timestamp", "data"} <= set(notice)
    assert notice["data"]["fallback_model"] == "groq/llama-3.3-70b"
    assert notice["data"]["original_role"] == "prime"
    assert notice["data"]["reason"] == "Local model not available"
    assert notice["data"]["timestamp"]
