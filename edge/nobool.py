"""Booleans are not numbers in a config: pydantic's lax mode reads `true` (and YAML 1.1's `yes`,
`on`) as 1 for an int or float field, so `coreset_ratio: yes` kept the whole bank and `source: true`
opened camera 1. Models that inherit NoBoolNumbers refuse a bool wherever a number is expected;
ints for floats and numeric text are still read as before."""

from __future__ import annotations

import types
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationInfo, field_validator


def _takes(annotation) -> tuple[bool, bool, bool]:
    """(a number, a bool, text) anywhere in the annotation: unions, Literal, tuple/list items."""
    if annotation is bool:
        return False, True, False
    if annotation in (int, float):
        return True, False, False
    if annotation is str:
        return False, False, True
    if annotation is Any:
        return False, True, True
    origin = get_origin(annotation)
    args = [a for a in get_args(annotation) if a is not Ellipsis]
    if origin is Literal:
        return (any(type(a) in (int, float) for a in args), any(type(a) is bool for a in args),
                any(isinstance(a, str) for a in args))
    if origin is Annotated:
        args = args[:1]
    elif origin not in (Union, types.UnionType, tuple, list, set, frozenset):
        return False, False, False  # a model, Path, dict, ...: refuses or reads a bool by itself
    kinds = [_takes(a) for a in args]
    return tuple(any(k[i] for k in kinds) for i in range(3))  # type: ignore[return-value]


class NoBoolNumbers(BaseModel):
    BOOL_HINT: ClassVar[str] = " (YAML reads yes, no, on and off as true/false too)"

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, v, info: ValidationInfo):
        if isinstance(v, bool) or (isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v)):
            number, boolean, text = _takes(cls.model_fields[info.field_name].annotation)
            if number and not boolean:
                what = "a number or text (quote text)" if text else "a number"
                raise ValueError(f"must be {what}, not true/false{cls.BOOL_HINT}")
        return v
