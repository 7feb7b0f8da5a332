"""A plugin's arguments: checked strictly against its pydantic model, and described for the catalog.

Arguments arrive as JSON values (a job spec's or an architecture document's
`google.protobuf.Struct`, where every number is a double), so an integral
number is taken as an integer and then validated in pydantic's strict JSON
mode: no string is coerced into a number, no boolean into an integer, and no
non-finite number passes. A refusal is InvalidArgument naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from maas.common.errors import InvalidArgument, some_of

M = TypeVar("M", bound=BaseModel)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_integral(item) for item in value]
    return value


def accepted(model: type[BaseModel]) -> set[str]:
    """Every key the model takes (field names and their aliases)."""
    names = set(model.model_fields)
    names.update(f.alias for f in model.model_fields.values() if f.alias)
    return names


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{str(part)[:40]}"
    return out


def validate(model: type[M], raw: Mapping[str, Any], field: str, owner: str, context: dict[str, Any]) -> M:
    """`raw` as an instance of `model`; InvalidArgument("<field>.<key>: why") for the first problem."""
    extra = set(raw) - accepted(model)
    if extra:
        raise InvalidArgument(f"{field}: {some_of(extra)} not accepted by '{owner}'")
    try:
        text = json.dumps(_integral(raw), allow_nan=False)
    except ValueError:
        raise InvalidArgument(f"{field}: numbers must be finite") from None
    except TypeError:
        raise InvalidArgument(f"{field}: values must be JSON numbers, strings, booleans, lists or objects") from None
    try:
        return model.model_validate_json(text, strict=True, context=context)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise InvalidArgument(f"{field}{_where(tuple(first.get('loc', ())))}: {message}") from None


@dataclass(frozen=True)
class Argument:
    """One argument as `maas catalog show` and ListCatalog describe it (from the JSON schema)."""

    name: str
    type: str
    required: bool
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] = ()
    description: str = ""
    schema: dict[str, Any] | None = None

    def bounds(self) -> str:
        """e.g. "[1, 64]", "(0, 1]", ">= 1", or "" when unbounded."""
        if self.minimum is None and self.maximum is None:
            return ""
        if self.maximum is None:
            return f"{'>' if self.exclusive_minimum else '>='} {_num(self.minimum)}"
        if self.minimum is None:
            return f"{'<' if self.exclusive_maximum else '<='} {_num(self.maximum)}"
        left = "(" if self.exclusive_minimum else "["
        right = ")" if self.exclusive_maximum else "]"
        return f"{left}{_num(self.minimum)}, {_num(self.maximum)}{right}"


def _num(value: float | None) -> str:
    assert value is not None
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return {**defs.get(ref.removeprefix("#/$defs/"), {}), **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _type_name(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    schema = _resolve(schema, defs)
    if "enum" in schema:
        return "choice"
    if "const" in schema:
        return "constant"
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        names = [_type_name(option, defs) for option in options]
        return " or ".join(dict.fromkeys(names))
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, dict):
            return f"list of {_type_name(items, defs)}"
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return "list of " + ", ".join(_type_name(p, defs) for p in prefix)
        return "list"
    if kind == "null":
        return "null"
    return str(kind or "any")


def _bound(schema: dict[str, Any], plain: str, exclusive: str) -> tuple[float | None, bool]:
    if isinstance(schema.get(exclusive), int | float):
        return float(schema[exclusive]), True
    if isinstance(schema.get(plain), int | float):
        return float(schema[plain]), False
    return None, False


def _bounded(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema that carries the bounds: an optional value's non-null option, a list's items."""
    schema = _resolve(schema, defs)
    for option in schema.get("anyOf") or ():
        option = _resolve(option, defs)
        if option.get("type") != "null":
            return _bounded(option, defs)
    if isinstance(schema.get("items"), dict):
        return _resolve(schema["items"], defs)
    return schema


def describe(model: type[BaseModel]) -> list[Argument]:
    """Every argument of `model` with its type, default, bounds, choices and description."""
    full = model.model_json_schema(mode="validation")
    defs = full.get("$defs", {})
    required = set(full.get("required", []))
    fields = {f.alias or key: f for key, f in model.model_fields.items()}
    out = []
    for name, raw in full.get("properties", {}).items():
        schema = _resolve(raw, defs)
        bounded = _bounded(schema, defs)
        low, low_exclusive = _bound(bounded, "minimum", "exclusiveMinimum")
        high, high_exclusive = _bound(bounded, "maximum", "exclusiveMaximum")
        declared = fields.get(name)
        default = schema.get("default")
        if declared is not None and name not in required:
            # default_factory values are not in the schema
            default = to_jsonable_python(declared.get_default(call_default_factory=True))
        out.append(
            Argument(
                name=name,
                type=_type_name(schema, defs),
                required=name in required,
                default=default,
                minimum=low,
                maximum=high,
                exclusive_minimum=low_exclusive,
                exclusive_maximum=high_exclusive,
                choices=tuple(bounded.get("enum", ())),
                description=str(schema.get("description") or ""),
                schema=raw,
            )
        )
    return out
