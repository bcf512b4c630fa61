"""django-q2 entry points: they take ids and hand over to the runner."""

from containers import runner


def run_operation(operation_id: int) -> None:
    runner.run(operation_id)
