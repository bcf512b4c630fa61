"""System checks: the configuration document is validated whole before any process starts."""

from __future__ import annotations

from django.core import checks

from gaiaorch import config


@checks.register("gaiaorch")
def check_configuration(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """One error per problem of the configuration, each naming its key (gaiaorch.E001)."""
    return [
        checks.Error(str(problem), hint="docs/CONFIGURATION.md describes every key.", id="gaiaorch.E001")
        for problem in config.problems()
    ]
