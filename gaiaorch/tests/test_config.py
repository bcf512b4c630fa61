import pytest
from django.core.exceptions import ImproperlyConfigured

from gaiaorch.config import (
    Source,
    choice_parser,
    database_from_url,
    int_parser,
    load_yaml,
    parse_bool,
    parse_secret,
    source_from_environment,
)

YAML = {"orchestrator": {"port": 7000, "debug": "yes"}, "gpu": {"backend": "fake"}}


def test_it_prefers_environment_over_yaml_over_default():
    source = Source({"GAIAORCH_PORT": "7100"}, YAML)
    port = int_parser(1, 65535)
    assert source.get("GAIAORCH_PORT", "orchestrator.port", 6410, port) == 7100
    assert Source({}, YAML).get("GAIAORCH_PORT", "orchestrator.port", 6410, port) == 7000
    assert Source({}, {}).get("GAIAORCH_PORT", "orchestrator.port", 6410, port) == 6410


def test_it_treats_an_empty_environment_variable_as_unset():
    source = Source({"GAIAORCH_PORT": ""}, YAML)
    assert source.get("GAIAORCH_PORT", "orchestrator.port", 6410, int_parser()) == 7000


def test_it_parses_yaml_values_with_the_same_strict_parser():
    with pytest.raises(ImproperlyConfigured, match=r"gpu\.backend"):
        Source({}, {"gpu": {"backend": "cuda"}}).get(
            None, "gpu.backend", "none", choice_parser("nvml", "none")
        )


@pytest.mark.parametrize("word", ["1", "true", "YES", "on", True])
def test_it_accepts_true_words(word):
    assert parse_bool("X", word) is True


@pytest.mark.parametrize("word", ["0", "false", "No", "off", False])
def test_it_accepts_false_words(word):
    assert parse_bool("X", word) is False


@pytest.mark.parametrize("word", ["", "maybe", "2", "tru"])
def test_it_refuses_nonsense_booleans(word):
    with pytest.raises(ImproperlyConfigured, match="X must be one of"):
        parse_bool("X", word)


@pytest.mark.parametrize("raw", ["abc", "1.5", "", True])
def test_it_refuses_non_integers(raw):
    with pytest.raises(ImproperlyConfigured, match="must be an integer"):
        int_parser()("PORT", raw)


def test_it_refuses_integers_out_of_range():
    with pytest.raises(ImproperlyConfigured, match="<= 65535"):
        int_parser(1, 65535)("PORT", "70000")
    with pytest.raises(ImproperlyConfigured, match=">= 1"):
        int_parser(1, 65535)("PORT", "0")


def test_it_refuses_short_secrets():
    with pytest.raises(ImproperlyConfigured, match="at least 32"):
        parse_secret("KEY", "short")
    assert parse_secret("KEY", "k" * 40) == "k" * 40


def test_it_refuses_a_broken_yaml_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("orchestrator: [unclosed")
    with pytest.raises(ImproperlyConfigured, match="not valid YAML"):
        load_yaml(broken)


def test_it_refuses_a_config_path_that_does_not_exist(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="does not exist"):
        source_from_environment(tmp_path, {"GAIAORCH_CONFIG": str(tmp_path / "nope.yaml")})


def test_it_reads_the_file_named_by_gaiaorch_config(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("orchestrator:\n  port: 7200\n")
    source = source_from_environment(tmp_path, {"GAIAORCH_CONFIG": str(config)})
    assert source.get("GAIAORCH_PORT", "orchestrator.port", 6410, int_parser()) == 7200


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
    with pytest.raises(ImproperlyConfigured, match="postgres://"):
        database_from_url("mysql://x@y/z")
    with pytest.raises(ImproperlyConfigured, match="name a database"):
        database_from_url("postgres://x@y/")
