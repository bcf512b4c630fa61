"""Statements of the hot path built once: reads whose SQL the ORM compiles on their first run,
each later run binding only its own values, and a row's update and rows' insert by key.

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
from django.db.models.query import (  # type: ignore[attr-defined]  # the ORM's own, not in its stubs
    RelatedPopulator,
    get_related_populators,
)

# Stand-in values: unlikely to equal a constant of the statement, and each found exactly once (an
# integer one is near the top of its column's range: the ORM drops a lookup of a value outside it).
_STAND_IN_UUID = uuid.UUID("5e171e5a-0000-4000-8000-00000000c0de")


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: list[Any]
    slots: dict[int, str]  # position in params -> the parameter whose value goes there
    model: type[models.Model]
    converters: list[tuple[int, tuple[list[Callable[..., Any]], Any]]]  # the ORM's, per column
    fields: slice  # the columns of the queryset's own model
    names: list[str]  # their attribute names, in that order
    aliases: list[str]  # every column's name (a values queryset's field and annotation names)
    related: list[RelatedPopulator]  # what select_related attaches, as the ORM's iterator does


class CompiledRead:
    """One read: `build(**parameters)` returns its queryset; `parameters` names each parameter's
    model field (which says how its value is prepared for the database)."""

    def __init__(self, build: Callable[..., models.QuerySet], **parameters: models.Field) -> None:
        self.build, self.parameters = build, parameters
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        # why: two serving threads may compile the same read at once; the second must see the first's.
        self._lock = threading.Lock()

    def models(self, using: str = "default", **values: Any) -> list[Any]:
        """The rows, as instances of the queryset's model with the objects its select_related
        names attached: built as the ORM's own iterator builds them (its converters, `from_db`)."""
        compiled, rows = self._run(using, values)
        instances = []
        for row in rows:
            instance = compiled.model.from_db(using, compiled.names, row[compiled.fields])
            for related in compiled.related:
                related.populate(row, instance)
            instances.append(instance)
        return instances

    def rows(self, using: str = "default", **values: Any) -> list[list[Any]]:
        """Every row, as a list of the selected columns (a values_list queryset's), converted."""
        return self._run(using, values)[1]

    def dicts(self, using: str = "default", **values: Any) -> list[dict[str, Any]]:
        """Every row, as a mapping of a values queryset's names to their converted values."""
        compiled, rows = self._run(using, values)
        return [dict(zip(compiled.aliases, row, strict=True)) for row in rows]

    def first_row(self, using: str = "default", **values: Any) -> tuple | None:
        """The first row, as a tuple of the selected columns (a values_list queryset's)."""
        _, rows = self._run(using, values)
        return tuple(rows[0]) if rows else None

    def _run(self, using: str, values: dict[str, Any]) -> tuple[_Compiled, list[Any]]:
        connection = connections[using]
        key = (using, connection.vendor)
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key) or self._compile(connection, using)
                self._compiled[key] = compiled
        bound = list(compiled.params)
        for position, name in compiled.slots.items():
            bound[position] = self.parameters[name].get_db_prep_value(values[name], connection)
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, bound)
            rows: list[Any] = cursor.fetchall()
        if compiled.converters:
            rows = [_converted(row, compiled.converters, connection) for row in rows]
        return compiled, rows

    def _compile(self, connection, using: str) -> _Compiled:
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
        select, klass_info = compiler.select, compiler.klass_info
        # A converter reads only what every connection of one alias shares (its time zone).
        converters = compiler.get_converters([expression for expression, _, _ in select])
        fields = klass_info["select_fields"] if klass_info else []
        start, end = (fields[0], fields[-1] + 1) if fields else (0, 0)
        return _Compiled(
            sql=sql,
            params=list(params),
            slots=slots,
            model=queryset.model,
            converters=list(converters.items()),
            fields=slice(start, end),
            names=[expression.target.attname for expression, _, _ in select[start:end]],
            aliases=[alias or expression.target.attname for expression, _, alias in select],
            related=get_related_populators(klass_info, select, using) if klass_info else [],
        )


def _converted(row: tuple, converters, connection) -> list[Any]:
    values = list(row)
    for position, (functions, expression) in converters:
        value = values[position]
        for function in functions:
            value = function(value, expression, connection)
        values[position] = value
    return values


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
    chosen = [_column(model, name) for name in fields]
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


def _column(model: type[models.Model], name: str) -> models.Field:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.concrete or field.column is None:
        raise TypeError(f"{model.__name__}.{name} is not a column")
    return field


def _inserted_fields(model: type[models.Model]) -> list[models.Field]:
    """Every concrete column but a key the database makes (an auto-incremented id)."""
    auto = isinstance(model._meta.pk, models.AutoField)  # BigAutoField and SmallAutoField included
    return [field for field in model._meta.concrete_fields if not (auto and field.primary_key)]


@cache
def _update_sql(model: type[models.Model], names: tuple[str, ...], using: str, vendor: str) -> str:
    quote = connections[using].ops.quote_name
    fields = [_column(model, name) for name in names]
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
