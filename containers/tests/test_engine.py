"""The Docker client's own translations, where a real engine cannot be made to misbehave on cue."""

from __future__ import annotations

import docker.errors
import pytest

from containers.engine import ContainerGone, DockerRefused, Engine


def test_it_refuses_a_container_that_vanished_right_after_it_was_made():
    """Between create (or start) and the inspect that follows, someone removed the container: the
    step fails naming it (a DockerRefused, which the runner records as the step's failure), instead of
    handing None to the next step."""
    with Engine() as engine:

        def gone(container_id):
            raise docker.errors.NotFound(f"No such container: {container_id}")

        engine.api.inspect_container = gone
        with pytest.raises(ContainerGone, match="gaia-core vanished right after Docker made or started it"):
            engine.inspect_made("0123abcd", "gaia-core")
        assert issubclass(ContainerGone, DockerRefused)
