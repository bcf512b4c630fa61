import pytest
import yaml
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from containers.tests.conftest import stack_config
from gaiaorch import config


def names(services) -> list[str]:
    return [service.name for service in services]


def test_it_parses_the_shipped_configuration_into_ordered_stacks():
    parsed = config.load(settings.GAIAORCH)

    live = parsed.stack_services("live")
    assert names(parsed.start_order(live)) == [
        "gaia-prime",
        "gaia-mcp",
        "gaia-core",
        "gaia-web",
        "gaia-study",
    ]
    assert names(parsed.stop_order(live)) == ["gaia-study", "gaia-web", "gaia-core", "gaia-mcp", "gaia-prime"]
    assert parsed.services["gaia-core-candidate"].vram_need_mib == 16384
    assert parsed.stacks["candidate"].gpu_requester == "gaia-core-candidate"
    assert parsed.twin(parsed.services["gaia-core"]).name == "gaia-core-candidate"
    assert parsed.services["gaia-web"].stop_timeout_seconds == 30


def test_it_stops_only_a_service_and_its_dependents():
    parsed = config.load(settings.GAIAORCH)

    assert names(parsed.stop_order([parsed.services["gaia-mcp"]])) == ["gaia-web", "gaia-core", "gaia-mcp"]
    assert names(parsed.start_order([parsed.services["gaia-web"]])) == [
        "gaia-prime",
        "gaia-mcp",
        "gaia-core",
        "gaia-web",
    ]


def broken(mutate) -> str:
    document = stack_config("busybox")
    mutate(document)
    with pytest.raises(ImproperlyConfigured) as refused:
        config.load(document)
    return str(refused.value)


def test_it_refuses_a_dependency_on_an_unknown_service():
    message = broken(lambda d: d["services"]["t-web"].update(depends_on=["t-nope"]))
    assert message == "services.t-web.depends_on: names unknown service 't-nope'"


def test_it_refuses_a_dependency_cycle():
    message = broken(lambda d: d["services"]["t-mcp"].update(depends_on=["t-web"]))
    assert "dependency cycle" in message
    assert "t-mcp -> t-web -> t-core -> t-mcp" in message


def test_it_refuses_a_dependency_on_the_other_stack():
    message = broken(lambda d: d["services"]["t-core-candidate"].update(depends_on=["t-mcp"]))
    assert "'t-mcp' is in the live stack, not candidate" in message


def test_it_refuses_to_manage_its_own_container():
    message = broken(
        lambda d: d["services"]["t-web"].update(container_name=d["orchestrator"]["own_container"])
    )
    assert "is the orchestrator's own container" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("stack", "staging", "services.t-web.stack: must be one of ['live', 'candidate']"),
        ("vram_mib", [4096, -1], "services.t-web.vram_mib: must be an integer >= 1, got -1"),
        ("vram_mib", "lots", "services.t-web.vram_mib: must be an integer >= 1, got 'lots'"),
        ("stop_timeout_seconds", "soon", "services.t-web.stop_timeout_seconds: must be an integer"),
        ("container_name", None, "services.t-web: needs compose_service or container_name"),
        ("network_alias", "PREFIX", "services.t-web.network_alias: must differ from container_name"),
    ],
)
def test_it_refuses_bad_service_fields(field, value, expected):
    def mutate(document):
        service = document["services"]["t-web"]
        service[field] = service["container_name"] if value == "PREFIX" else value
        if value is None:
            del service[field]

    assert broken(mutate).startswith(expected)


def test_it_refuses_two_services_with_one_network_name():
    message = broken(lambda d: d["services"]["t-core-candidate"].update(network_alias="core"))
    assert message == "services.t-core-candidate.network_alias: 'core' is already the network name of t-core"


def test_it_refuses_an_unknown_stack_section():
    assert "unknown stack(s) ['staging']" in broken(lambda d: d["stacks"].update(staging={}))


def test_it_loads_a_configuration_file(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(stack_config("busybox", "gaia-net")))

    parsed = config.load(config.load_yaml(path))

    assert parsed.docker.network == "gaia-net"
    assert parsed.services["t-core-candidate"].vram_mib == (4096, 2048)


def test_it_follows_a_settings_override(settings):
    settings.GAIAORCH = stack_config("busybox")

    assert "t-core" in config.current().services
