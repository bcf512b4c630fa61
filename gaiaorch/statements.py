"""Reads compiled once: the SQL of a queryset that the ORM builds and compiles on its first run,
each later run binding only its own values.

The ORM compiles a statement anew on every run, and on a small CPU compiling a simple select
costs several times executing it; the reads every lease decision makes are these. The SQL is
still the ORM's (the queryset is the one source of the statement): it is compiled with a
stand-in value for each parameter, and each run puts its values in the stand-ins' places,
prepared for the database as the ORM prepares them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from django.db import connections, models

# Stand-in values: unlikely to equal a constant of the statement, and each found exactly once (an
# integer one is near the top of its column's range: the ORM drops a lookup of a value outside it).
_STAND_IN_UUID = uuid.UUID("5e171e5a-0000-4000-8000-00000000c0de")


class CompiledRead:
    """One read: `build(**parameters)` returns its queryset; `parameters` names each parameter's
    model field (which says how its value is prepared for the database)."""

    def __init__(self, build: Callable[..., models.QuerySet], **parameters: models.Field) -> None:
        self.build, self.parameters = build, parameters
        self._compiled: dict[tuple[str, str], tuple[models.QuerySet, str, list[Any], dict[int, str]]] = {}
        # why: two serving threads may compile the same read at once; the second must see the first's.
        self._lock = threading.Lock()

    def models(self, using: str = "default", **values: Any) -> list[Any]:
        """The rows, as instances of the queryset's model (no select_related)."""
        queryset, sql, params = self._bound(using, values)
        return list(queryset.model._default_manager.db_manager(using).raw(sql, params))

    def first_row(self, using: str = "default", **values: Any) -> tuple | None:
        """The first row, as a tuple of the selected columns (a values_list queryset's)."""
        _, sql, params = self._bound(using, values)
        with connections[using].cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()

    def _bound(self, using: str, values: dict[str, Any]) -> tuple[models.QuerySet, str, list[Any]]:
        connection = connections[using]
        key = (using, connection.vendor)
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key) or self._compile(connection)
                self._compiled[key] = compiled
        queryset, sql, params, slots = compiled
        bound = list(params)
        for position, name in slots.items():
            bound[position] = self.parameters[name].get_db_prep_value(values[name], connection)
        return queryset, sql, bound

    def _compile(self, connection) -> tuple[models.QuerySet, str, list[Any], dict[int, str]]:
        named = enumerate(self.parameters.items())
        stand_ins = {name: _stand_in(field, offset, connection) for offset, (name, field) in named}
        queryset = self.build(**stand_ins)
        sql, params = queryset.query.get_compiler(connection=connection).as_sql()
        slots: dict[int, str] = {}
        for name, value in stand_ins.items():
            prepared = self.parameters[name].get_db_prep_value(value, connection)
            found = [position for position, param in enumerate(params) if param == prepared]
            if len(found) != 1:
                raise ValueError(f"parameter {name!r} appears {len(found)} times in {sql!r}, not once")
            slots[found[0]] = name
        return queryset, sql, list(params), slots


def _stand_in(field: models.Field, offset: int, connection) -> Any:
    if isinstance(field, models.ForeignKey):
        field = field.target_field
    if isinstance(field, models.UUIDField):
        return uuid.UUID(int=_STAND_IN_UUID.int + offset)
    if isinstance(field, models.IntegerField | models.AutoField):
        _, largest = connection.ops.integer_field_range(field.get_internal_type())
        return largest - 101 - offset
    raise TypeError(f"no stand-in value for a {type(field).__name__} parameter")
