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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import DatabaseError, connections, models

# Stand-in values: unlikely to equal a constant of the statement, and each found exactly once (an
# integer one is near the top of its column's range: the ORM drops a lookup of a value outside it).
_STAND_IN_UUID = uuid.UUID("5e171e5a-0000-4000-8000-00000000c0de")


@dataclass(frozen=True)
class _Compiled:
    model: type[models.Model]
    sql: str
    params: list[Any]
    slots: dict[int, str]  # position in params -> parameter name
    converters: list[tuple[int, list[Callable], Any]]  # column -> the database's converters for it
    whole_rows: bool  # the columns are the model's concrete fields, in order


class CompiledRead:
    """One read: `build(**parameters)` returns its queryset; `parameters` names each parameter's
    model field (which says how its value is prepared for the database)."""

    def __init__(self, build: Callable[..., models.QuerySet], **parameters: models.Field) -> None:
        self.build, self.parameters = build, parameters
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        # why: two serving threads may compile the same read at once; the second must see the first's.
        self._lock = threading.Lock()

    def models(self, using: str = "default", **values: Any) -> list[Any]:
        """The rows, as instances of the queryset's model (a read of whole rows, no select_related)."""
        compiled = self._for(using)
        if not compiled.whole_rows:
            raise TypeError(f"{compiled.sql!r} does not read whole {compiled.model.__name__} rows")
        return [compiled.model.from_db(using, None, row) for row in self._rows(compiled, using, values)]

    def first_row(self, using: str = "default", **values: Any) -> tuple | None:
        """The first row, as a tuple of the selected columns (a values_list queryset's)."""
        rows = self._rows(self._for(using), using, values)
        return tuple(rows[0]) if rows else None

    def _rows(self, compiled: _Compiled, using: str, values: dict[str, Any]) -> list:
        connection = connections[using]
        params = list(compiled.params)
        for position, name in compiled.slots.items():
            params[position] = self.parameters[name].get_db_prep_value(values[name], connection)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        if compiled.converters:
            rows = [_converted(list(row), compiled.converters, connection) for row in rows]
        return rows

    def _for(self, using: str) -> _Compiled:
        connection = connections[using]
        key = (using, connection.vendor)
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key) or self._compile(connection)
                self._compiled[key] = compiled
        return compiled

    def _compile(self, connection) -> _Compiled:
        named = enumerate(self.parameters.items())
        stand_ins = {name: _stand_in(field, offset, connection) for offset, (name, field) in named}
        queryset = self.build(**stand_ins)
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        slots: dict[int, str] = {}
        for name, value in stand_ins.items():
            prepared = self.parameters[name].get_db_prep_value(value, connection)
            found = [position for position, param in enumerate(params) if param == prepared]
            if len(found) != 1:
                raise ValueError(f"parameter {name!r} appears {len(found)} times in {sql!r}, not once")
            slots[found[0]] = name
        columns = [expression for expression, _, _ in compiler.select]
        # The converters depend only on the database's settings, the same for every connection
        # to it, so the compiling connection's serve every thread's.
        converters = sorted(compiler.get_converters(columns).items())
        fields = [getattr(column, "target", None) for column in columns]
        whole = fields == list(queryset.model._meta.concrete_fields)
        return _Compiled(
            queryset.model, sql, list(params), slots, [(p, c, e) for p, (c, e) in converters], whole
        )


def _converted(row: list, converters: list[tuple[int, list[Callable], Any]], connection) -> list:
    for position, functions, expression in converters:
        value = row[position]
        for function in functions:
            value = function(value, expression, connection)
        row[position] = value
    return row


def _stand_in(field: models.Field, offset: int, connection) -> Any:
    if isinstance(field, models.ForeignKey):
        field = field.target_field
    if isinstance(field, models.UUIDField):
        return uuid.UUID(int=_STAND_IN_UUID.int + offset)
    if isinstance(field, models.IntegerField | models.AutoField):
        _, largest = connection.ops.integer_field_range(field.get_internal_type())
        return largest - 101 - offset
    raise TypeError(f"no stand-in value for a {type(field).__name__} parameter")


# ---------------------------------------------------------------- writes built once


def save_fields(instance: models.Model, fields: Sequence[str], using: str = "default") -> None:
    """`instance.save(update_fields=fields)` as one UPDATE by primary key, its SQL built once per
    model and set of fields. No model signal is sent: only for models nothing listens to."""
    connection = connections[using]
    model = type(instance)
    chosen = [model._meta.get_field(name) for name in fields]
    sql = _update_sql(model, tuple(field.name for field in chosen), using, connection.vendor)
    values = [field.get_db_prep_save(field.pre_save(instance, False), connection) for field in chosen]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, model._meta.pk.get_db_prep_value(instance.pk, connection)])
        if cursor.rowcount != 1:
            raise DatabaseError(f"{model.__name__} {instance.pk} was not updated ({cursor.rowcount} rows)")


def insert(instances: Sequence[models.Model], using: str = "default") -> None:
    """`bulk_create(instances)` as one INSERT … RETURNING the primary keys, its SQL built once per
    model and number of rows; the instances get their keys and are saved. No model signal is
    sent (bulk_create sends none either)."""
    if not instances:
        return
    connection = connections[using]
    model = type(instances[0])
    fields = _inserted_fields(model)
    sql = _insert_sql(model, len(instances), using, connection.vendor)
    params = [
        field.get_db_prep_save(field.pre_save(instance, True), connection)
        for instance in instances
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        keys = [row[0] for row in cursor.fetchall()]
    pk = model._meta.pk
    for instance, key in zip(instances, keys, strict=True):
        instance.pk = pk.to_python(key)
        instance._state.adding = False
        instance._state.db = using


def _inserted_fields(model: type[models.Model]) -> list[models.Field]:
    """Every concrete column but a key the database makes (an auto-incremented id)."""
    auto = isinstance(model._meta.pk, models.AutoField)  # BigAutoField and SmallAutoField included
    return [field for field in model._meta.concrete_fields if not (auto and field.primary_key)]


@cache
def _update_sql(model: type[models.Model], names: tuple[str, ...], using: str, vendor: str) -> str:
    quote = connections[using].ops.quote_name
    fields = [model._meta.get_field(name) for name in names]
    _refuse_placeholders(fields)
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {quote(model._meta.pk.column)} = %s"


@cache
def _insert_sql(model: type[models.Model], rows: int, using: str, vendor: str) -> str:
    quote = connections[using].ops.quote_name
    fields = _inserted_fields(model)
    _refuse_placeholders(fields)
    columns = ", ".join(quote(field.column) for field in fields)
    values = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * rows)
    table, key = quote(model._meta.db_table), quote(model._meta.pk.column)
    return f"INSERT INTO {table} ({columns}) VALUES {values} RETURNING {key}"


def _refuse_placeholders(fields: Sequence[models.Field]) -> None:
    special = [field.name for field in fields if hasattr(field, "get_placeholder")]
    if special:
        raise TypeError(f"fields written through an SQL expression are not supported here: {special}")
