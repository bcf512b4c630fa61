"""The one configuration model: precedence, strict parsing, every refusal naming its key."""

import copy
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from gaiaorch import config
from gaiaorch.config import ConfigError, database_from_url, load, load_yaml, overlay, read_document, reader

YAML = {"orchestrator": {"port": 7000, "debug": True}, "gpu": {"backend": "fake"}}


def problems_of(document) -> list[str]:
    _, found = config.parse(document)
    return [str(problem) for problem in found]


def test_it_prefers_environment_over_yaml_over_default():
    assert load(overlay(YAML, {"GAIAORCH_PORT": "7100"})).orchestrator.port == 7100
    assert load(overlay(YAML, {})).orchestrator.port == 7000
    assert load({}).orchestrator.port == 6410


def test_it_treats_an_empty_environment_variable_as_unset():
    assert load(overlay(YAML, {"GAIAORCH_PORT": ""})).orchestrator.port == 7000


def test_it_parses_yaml_values_with_the_same_strict_parser():
    assert problems_of({"gpu": {"backend": "cuda"}}) == [
        "gpu.backend: must be one of ['auto', 'nvml', 'fake', 'none'], got 'cuda'"
    ]


@pytest.mark.parametrize("word", ["1", "true", "YES", "on"])
def test_it_accepts_true_words_from_the_environment(word):
    assert load(overlay({}, {"GAIAORCH_DEBUG": word})).orchestrator.debug is True


@pytest.mark.parametrize("word", ["0", "false", "No", "off"])
def test_it_accepts_false_words_from_the_environment(word):
    assert load(overlay({}, {"GAIAORCH_OPEN_READS": word})).orchestrator.open_reads is False


@pytest.mark.parametrize("word", ["maybe", "2", "tru"])
def test_it_refuses_nonsense_booleans_naming_the_variable(word):
    found = problems_of(overlay({}, {"GAIAORCH_DEBUG": word}))
    assert found == [f"GAIAORCH_DEBUG must be one of {reader.BOOLEAN_WORDS}, got {word!r}"]


@pytest.mark.parametrize("raw", ["abc", "1.5", "7 000"])
def test_it_refuses_non_integers(raw):
    assert problems_of(overlay({}, {"GAIAORCH_PORT": raw})) == [
        f"GAIAORCH_PORT must be an integer, got {raw!r}"
    ]


def test_it_refuses_integers_out_of_range():
    assert problems_of(overlay({}, {"GAIAORCH_PORT": "70000"})) == [
        "GAIAORCH_PORT must be an integer <= 65535, got '70000'"
    ]
    assert problems_of({"orchestrator": {"port": 0}}) == ["orchestrator.port: must be an integer >= 1, got 0"]


def test_it_refuses_short_secrets():
    assert problems_of({"orchestrator": {"secret_key": "short"}}) == [
        "orchestrator.secret_key: must be at least 32 characters long"
    ]
    assert load({"orchestrator": {"secret_key": "k" * 40}}).orchestrator.secret_key == "k" * 40


def test_it_refuses_a_broken_yaml_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("orchestrator: [unclosed")
    with pytest.raises(ImproperlyConfigured, match="not valid YAML"):
        load_yaml(broken)


def test_it_refuses_a_config_path_that_does_not_exist(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="does not exist"):
        read_document(tmp_path, {"GAIAORCH_CONFIG": str(tmp_path / "nope.yaml")})


def test_it_reads_the_file_named_by_gaiaorch_config(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("orchestrator:\n  port: 7200\n")
    assert load(read_document(tmp_path, {"GAIAORCH_CONFIG": str(site)})).orchestrator.port == 7200


def test_it_turns_a_database_url_into_django_settings():
    db = database_from_url("postgres://gaia:s%40cret@db.local:5433/orch?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "orch",
        "gaia",
        "s@cret",
        "db.local",
        "5433",
    )
    assert db["OPTIONS"] == {"sslmode": "require"}


def test_it_refuses_a_database_url_it_cannot_use():
    assert problems_of(overlay({}, {"DATABASE_URL": "mysql://x@y/z"})) == [
        "DATABASE_URL must start with postgres://, got 'mysql'"
    ]
    assert problems_of(overlay({}, {"DATABASE_URL": "postgres://x@y/"})) == [
        "DATABASE_URL must name a database"
    ]


# --- one meaning per key --------------------------------------------------------------------

SHIPPED = load_yaml(Path(__file__).resolve().parents[2] / "config" / "orchestrator.yaml")


def shipped_with(path: str, value) -> dict:
    """The shipped document with one key set (dotted path; None deletes it)."""
    document = copy.deepcopy(SHIPPED)
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return document


def test_it_parses_the_shipped_configuration_without_a_problem():
    assert problems_of(SHIPPED) == []


def test_it_reads_a_one_step_release_and_a_ladder_into_the_same_model():
    one = load(
        shipped_with(
            "services.gaia-core.release", {"http": {"url": "http://x/gpu/release"}, "container": "stop"}
        )
    )
    (step,) = one.services["gaia-core"].release.steps
    assert (step.http.method, step.container, step.deadline_seconds, step.action) == (
        "POST",
        "stop",
        None,
        "http+container_stop",
    )
    ladder = load(SHIPPED).services["gaia-prime"].release.steps
    assert [(step.action, step.engine and step.engine.level, step.deadline_seconds) for step in ladder] == [
        ("vllm", 1, 20),
        ("vllm", 2, 20),
        ("container_stop", None, None),
    ]
    assert ladder[0].engine.url == "http://127.0.0.1:7777"
    assert load(SHIPPED).residual_mib(load(SHIPPED).services["gaia-prime"]) == 2048


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # The same key means one thing everywhere: a quoted boolean or number is refused.
        ("services.gaia-core.gpu", "false", "services.gaia-core.gpu: must be true or false, got 'false'"),
        (
            "services.gaia-study.vram_mib",
            "1024",
            "services.gaia-study.vram_mib: must be an integer >= 1, got '1024'",
        ),
        ("services.gaia-study.vram_mib", 0, "services.gaia-study.vram_mib: must be an integer >= 1, got 0"),
        ("services.gaia-web.colour", "blue", "services.gaia-web.colour: is not a known key"),
        ("services.gaia-web.port", "6414", "services.gaia-web.port: must be an integer, got '6414'"),
        ("services.gaia-web.depends_on", [1], "services.gaia-web.depends_on: must be a list of strings"),
        (
            "services.gaia-core.release.http.method",
            "FETCH",
            "services.gaia-core.release.http.method: must be one of",
        ),
        ("services.gaia-core.release.http.url", None, "services.gaia-core.release.http.url: is required"),
        ("services.gaia-core.release.sleep", True, "services.gaia-core.release.sleep: is not a known key"),
        ("services.gaia-web.container", {"command": "x"}, "services.gaia-web.container.image: is required"),
        ("services.gaia-web", "gaia-web", "services.gaia-web: must be a mapping, got 'gaia-web'"),
        ("stacks.live.gpu", -1, "stacks.live.gpu: must be an integer >= 0, got -1"),
        (
            "stacks.live.gpu_requester",
            "nobody",
            "stacks.live.gpu_requester: names 'nobody', which is not under",
        ),
        ("stacks.staging", {}, "stacks: unknown stack(s) ['staging']"),
        ("gpu.poll_ms", 1, "gpu.poll_ms: must be an integer >= 10, got 1"),
        ("gpu.residual", 5, "gpu.residual: is not a known key"),
        ("leases.default_ttl_seconds", 0, "leases.default_ttl_seconds: must be an integer >= 1, got 0"),
        ("leases.waiter_grace_seconds", 0, "leases.waiter_grace_seconds: must be an integer >= 1, got 0"),
        ("leases.claim_window_seconds", "10", "leases.claim_window_seconds: must be an integer, got '10'"),
        (
            "leases.residents",
            {0: "nobody"},
            "leases.residents.0: names 'nobody', which is not under services:",
        ),
        ("leases.residents", {"first": "gaia-core"}, "leases.residents.first: the key must be a GPU index"),
        ("leases.residents", {64: "gaia-core"}, "leases.residents.64: the key must be a GPU index"),
        ("leases.residents", ["gaia-core"], "leases.residents: must be a mapping of GPU index to service"),
        (
            "docker.reconcile_interval_seconds",
            "5",
            "docker.reconcile_interval_seconds: must be a number between 0.05 and 3600, got '5'",
        ),
        ("worker.count", 0, "worker.count: must be an integer >= 1, got 0"),
        (
            "handoffs.prime_to_study.destination",
            "nobody",
            "handoffs.prime_to_study.destination: names 'nobody'",
        ),
        ("handoffs.prime_to_study.source", None, "handoffs.prime_to_study.source: is required"),
        ("handoffs.prime_to_study.release", "x", "handoffs.prime_to_study.release: must be one of"),
        ("handoffs.prime_to_study.verify", True, "handoffs.prime_to_study.verify: is not a known key"),
        (
            "handoffs.Prime",
            {"source": "gaia-core", "destination": "gaia-study"},
            "handoffs.Prime: a handoff type name",
        ),
        ("handoffs.phase_timeout_second", 5, "handoffs.phase_timeout_second: is neither a handoffs setting"),
        ("handoffs.phase_timeouts", {"lunch": 5}, "handoffs.phase_timeouts: has unknown phases ['lunch']"),
        (
            "handoffs.on_recipient_unacknowledged",
            "shrug",
            "handoffs.on_recipient_unacknowledged: must be one of",
        ),
        (
            "handoffs.stale_after_seconds",
            5,
            "handoffs.stale_after_seconds: must exceed handoffs.http_timeout_seconds",
        ),
        (
            "notifications.relay_poll_ms",
            "fast",
            "notifications.relay_poll_ms: must be an integer, got 'fast'",
        ),
        (
            "notifications.webhooks",
            [{"url": "ftp://x"}],
            "notifications.webhooks[0].url: must be an http(s) URL",
        ),
        ("notifications.webhooks", [{"name": "x"}], "notifications.webhooks[0].url: is required"),
        ("notifications.webhooks", ["http://x"], "notifications.webhooks[0]: must be a mapping"),
        ("notifications.retry_max_seconds", -1, "notifications.retry_max_seconds: must be a number between"),
        (
            "services.gaia-web.container_name",
            "gaia-orchestrator",
            "services.gaia-web: is the orchestrator's own container 'gaia-orchestrator'",
        ),
        ("colour", "blue", "colour: is not a known key"),
        (
            "services.gaia-study.process",
            {},
            "services.gaia-study.process: needs a pidfile or a cmdline pattern",
        ),
        (
            "services.gaia-study.process",
            {"cmdline": "train[.py"},
            "services.gaia-study.process.cmdline: must be a regular expression",
        ),
        ("gpu.unlisted_tolerance_mib", -1, "gpu.unlisted_tolerance_mib: must be an integer >= 0"),
        (
            "orchestrator.trusted_networks",
            ["172.18.0.1/16"],
            "orchestrator.trusted_networks[0]: names 172.18.0.1/16, which has host bits set; "
            "did you mean 172.18.0.0/16?",
        ),
        ("orchestrator.trusted_networks", ["0.0.0.0/0"], "orchestrator.trusted_networks[0]: names 0.0.0.0/0"),
        (
            "orchestrator.trusted_networks",
            ["gaia_default"],
            "orchestrator.trusted_networks[0]: must be an IP",
        ),
        ("orchestrator.trusted_networks", "10.0.0.0/33", "orchestrator.trusted_networks: must be an IP"),
        (
            "orchestrator.trusted_networks",
            [{"network": "127.0.0.1/32", "acts_as": "o livia"}],
            "orchestrator.trusted_networks[0].acts_as: must be an account name",
        ),
        (
            "orchestrator.trusted_networks",
            [{"network": "127.0.0.1/32", "as": "olivia"}],
            "orchestrator.trusted_networks[0].as: is not a known key",
        ),
        (
            "orchestrator.trusted_networks",
            [{"acts_as": "olivia"}],
            "orchestrator.trusted_networks[0].network: is required",
        ),
        (
            "orchestrator.trusted_networks",
            ["::1", "::1/128"],
            "orchestrator.trusted_networks[1]: lists ::1/128 twice",
        ),
        ("orchestrator.trusted_networks", {"a": 1}, "orchestrator.trusted_networks: must be a list"),
        ("orchestrator.trusted_proxies", ["proxy"], "orchestrator.trusted_proxies[0]: must be an IP network"),
        ("grants.gaia-core", ["fly"], "grants.gaia-core: names unknown rights ['fly']; rights: live_stop"),
        ("grants.gaia core", ["swap"], "grants.gaia core: is not an account name"),
        ("grants.gaia-core", [1], "grants.gaia-core: must be a list of strings"),
        ("grants", ["swap"], "grants: must be a mapping"),
        ("gpu.backend", "cuda", "gpu.backend: must be one of ['auto', 'nvml', 'fake', 'none']"),
        (
            "gpu.baseline_mib",
            480,
            "gpu.baseline_mib: is no longer read: the driver's reservation is measured",
        ),
        ("gpu.baseline_interval_seconds", 5, "gpu.baseline_interval_seconds: is no longer read"),
        ("gpu.headroom_mib", -1, "gpu.headroom_mib: must be an integer >= 0"),
        ("gpu.settle_window_ms", "300", "gpu.settle_window_ms: must be an integer, got '300'"),
        ("gpu.settle_delta_mib", -5, "gpu.settle_delta_mib: must be an integer >= 0"),
        ("gpu.settle_samples", 0, "gpu.settle_samples: must be an integer >= 1"),
        (
            "gpu.tenant_interval_seconds",
            0,
            "gpu.tenant_interval_seconds: must be a number between 0.1 and 3600",
        ),
        ("services.gaia-prime.residual_mib", -1, "services.gaia-prime.residual_mib: must be an integer >= 0"),
        ("services.gaia-prime.release", [], "services.gaia-prime.release: must list at least one step"),
        (
            "services.gaia-prime.release",
            "sleep",
            "services.gaia-prime.release: must be a step (a mapping) or a list",
        ),
        (
            "services.gaia-prime.release",
            [{"vllm": {"url": "http://127.0.0.1:7777"}}, {"container": "stop"}],
            "services.gaia-prime.release[0].deadline_seconds: is required on every step but the last",
        ),
        (
            "services.gaia-prime.release",
            [{"vllm": {"url": "http://127.0.0.1:7777", "level": 3}}],
            "services.gaia-prime.release[0].vllm.level: must be an integer <= 2, got 3",
        ),
        (
            "services.gaia-prime.release",
            [{"vllm": {"url": "127.0.0.1:7777"}}],
            "services.gaia-prime.release[0].vllm.url: must be an http(s) URL",
        ),
        (
            "services.gaia-prime.release",
            [{"ollama": {"url": "http://127.0.0.1:11434"}}],
            "services.gaia-prime.release[0].ollama.model: is required",
        ),
        (
            "services.gaia-prime.release",
            {"ollama": {"url": "http://127.0.0.1:11434", "model": "m", "keep_alive": [1]}},
            "services.gaia-prime.release.ollama.keep_alive: must be a number of seconds or a duration",
        ),
        (
            "services.gaia-prime.release",
            [{"sglang": {"url": "http://x"}, "llamacpp": {"url": "http://x", "model": "m"}}],
            "services.gaia-prime.release[0]: makes one call, not 2 (sglang, llamacpp)",
        ),
        (
            "services.gaia-prime.release",
            [{"deadline_seconds": 5}],
            "services.gaia-prime.release[0]: needs a call",
        ),
        (
            "services.gaia-prime.release",
            {"container": "start"},
            "services.gaia-prime.release.container: must be one of ['stop', 'kill']",
        ),
        (
            "services.gaia-prime.reclaim",
            {"container": "kill"},
            "services.gaia-prime.reclaim.container: must be one of ['start']",
        ),
        (
            "services.gaia-prime.release",
            [{"container": "stop", "deadline_seconds": 0}],
            "services.gaia-prime.release[0].deadline_seconds: must be a number between 0.1 and 86400",
        ),
        (
            "handoffs.prime_to_study.co_residence",
            "yes",
            "handoffs.prime_to_study.co_residence: must be true or false",
        ),
        (
            "handoffs.prime_to_study.notify",
            {"method": "POST"},
            "handoffs.prime_to_study.notify.url: is required",
        ),
        (
            "handoffs.reclaim_retry_base_seconds",
            0,
            "handoffs.reclaim_retry_base_seconds: must be a number between",
        ),
        (
            "handoffs.reclaim_retry_max_seconds",
            1,
            "handoffs.reclaim_retry_max_seconds: must be at least handoffs.reclaim_retry_base_seconds",
        ),
    ],
)
def test_it_refuses_each_mistake_naming_its_path(path, value, expected):
    found = problems_of(shipped_with(path, value))
    assert len(found) == 1, found
    assert found[0].startswith(expected)


def test_it_reads_trusted_networks_from_yaml_and_from_the_environment():
    from ipaddress import ip_address, ip_network

    document = {
        "orchestrator": {"trusted_networks": ["172.18.0.0/16", {"network": "127.0.0.1", "acts_as": "olivia"}]}
    }
    from_yaml = load(document).orchestrator
    from_env = load(
        overlay({}, {"GAIAORCH_TRUSTED_NETWORKS": "172.18.0.0/16, 127.0.0.1/32=olivia"})
    ).orchestrator
    assert from_yaml.trusted_networks == from_env.trusted_networks
    assert from_yaml.trusted_network_of(ip_address("127.0.0.1")).acts_as == "olivia"
    assert from_yaml.trusted_network_of(ip_address("172.18.3.4")).network == ip_network("172.18.0.0/16")
    assert from_yaml.trusted_network_of(ip_address("10.0.0.1")) is None
    assert load({}).orchestrator.trusted_networks == ()  # off unless configured


def test_it_picks_the_most_specific_trusted_network():
    from ipaddress import ip_address

    document = {"orchestrator": {"trusted_networks": ["172.18.0.0/16", "172.18.0.1/32=olivia"]}}
    trusted = load(document).orchestrator
    assert trusted.trusted_network_of(ip_address("172.18.0.1")).acts_as == "olivia"
    assert trusted.trusted_network_of(ip_address("172.18.0.9")).acts_as == ""


def test_it_names_the_variable_of_a_bad_trusted_network():
    assert problems_of(overlay({}, {"GAIAORCH_TRUSTED_PROXIES": "10.0.0.1/8"})) == [
        "GAIAORCH_TRUSTED_PROXIES names 10.0.0.1/8, which has host bits set; did you mean 10.0.0.0/8?"
    ]


def test_it_reads_grants_by_account():
    parsed = load({"grants": {"deployer": ["candidate_start", "swap"]}})
    assert parsed.granted("deployer", "swap") and not parsed.granted("deployer", "live_stop")
    assert not parsed.granted("gaia-web", "swap")


def test_it_refuses_container_keys_on_a_service_outside_every_stack():
    document = shipped_with("services.trainer", {"gpu": True, "container_name": "trainer"})
    assert problems_of(document) == [
        "services.trainer.container_name: needs the service to be in a stack (set stack: live or candidate)"
    ]


def test_it_reports_every_problem_of_a_document_at_once():
    document = shipped_with("gpu.poll_ms", 1)
    document["services"]["gaia-web"]["port"] = "x"
    with pytest.raises(ConfigError) as refused:
        load(document)
    assert [problem.path for problem in refused.value.problems] == ["services.gaia-web.port", "gpu.poll_ms"]


# --- the stack ------------------------------------------------------------------------------


def test_it_lets_a_plain_process_hold_leases_without_a_container():
    document = shipped_with("services.trainer", {"gpu": True, "vram_mib": 8192})
    parsed = load(document)
    assert "trainer" in parsed.requesters()
    assert parsed.services["trainer"].in_container is False
    assert "trainer" not in [service.name for service in parsed.containers()]
    assert parsed.stacks["live"].services == ("gaia-prime", "gaia-core", "gaia-web", "gaia-mcp", "gaia-study")


def test_it_reads_resident_gpus_written_as_numbers_or_as_digits():
    assert load(shipped_with("leases.residents", {0: "gaia-core", "1": "gaia-study"})).leases.residents == {
        0: "gaia-core",
        1: "gaia-study",
    }


def test_it_names_handoff_types_in_either_spelling():
    types = load(SHIPPED).handoffs
    assert types.type_named("prime-to-study") is types.type_named("prime_to_study")
    assert types.type_named("prime-to-study").slug == "prime-to-study"


def test_it_follows_a_settings_override_and_parses_each_document_once(settings):
    settings.GAIAORCH = shipped_with("services.trainer", {})
    first = config.current()
    assert "trainer" in first.services
    assert config.current() is first


def test_it_is_checked_whole_by_the_system_check(settings):
    document = shipped_with("gpu.poll_ms", 1)
    document["handoffs"]["prime_to_study"]["destination"] = "nobody"
    settings.GAIAORCH = document
    with pytest.raises(SystemCheckError) as refused:
        call_command("check")
    report = str(refused.value)
    assert "(gaiaorch.E001) gpu.poll_ms: must be an integer >= 10, got 1" in report
    assert "(gaiaorch.E001) handoffs.prime_to_study.destination: names 'nobody'" in report


def test_it_documents_every_environment_variable_with_the_key_it_overrides():
    documented = (Path(__file__).resolve().parents[2] / "docs" / "CONFIGURATION.md").read_text()
    lines = documented.splitlines()
    for variable, path in config.ENVIRONMENT.items():
        assert any(f"`{variable}`" in line and f"`{path}`" in line for line in lines), variable


def test_it_documents_every_right_where_operators_grant_it():
    docs = Path(__file__).resolve().parents[2] / "docs"
    api, configuration = (docs / "api.md").read_text(), (docs / "CONFIGURATION.md").read_text()
    for right in config.RIGHTS:
        assert f"`{right}`" in api.split("## Rights", 1)[1].split("## Trusted networks")[0], right
        assert f"`{right}`" in configuration.split("## Rights", 1)[1], right
