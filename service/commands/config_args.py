"""Command-line flags derived from the config models, so that a flag has the model's name, type,
choices, description and (only) its default: an option not given is not passed, and the model's
default applies, as it does over HTTP and in the settings."""

from __future__ import annotations

import argparse
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from scoring.errors import ConfigError


def flag_name(name: str, prefix: str = "") -> str:
    return "--" + (prefix + name).replace("_", "-")


def add_model_args(
    group: argparse._ActionsContainer,
    model: type[BaseModel],
    names: Iterable[str],
    *,
    prefix: str = "",
    flags: dict[str, str] | None = None,
) -> None:
    """One flag per field in `names` (`flags` renames some), with dest `prefix + name`."""
    for name in names:
        field = model.model_fields[name]
        flag = (flags or {}).get(name) or flag_name(name, prefix)
        kwargs: dict[str, Any] = {"dest": prefix.replace("-", "_") + name, "default": argparse.SUPPRESS}
        kind, choices = _scalar_type(field)
        if _is_sequence(field):  # tuple[X, ...]: one or more values after the flag
            kwargs["nargs"] = "+"
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if choices:
                kwargs["choices"] = choices
        kwargs["help"] = _help(field)
        group.add_argument(flag, **kwargs)


def model_kwargs(args: argparse.Namespace, names: Iterable[str], *, prefix: str = "") -> dict[str, Any]:
    """The fields given on the command line (absent ones keep the model's default)."""
    dest = prefix.replace("-", "_")
    return {name: getattr(args, dest + name) for name in names if hasattr(args, dest + name)}


def _is_sequence(field: FieldInfo) -> bool:
    return typing.get_origin(field.annotation) is tuple


def _scalar_type(field: FieldInfo) -> tuple[type, list[Any] | None]:
    """The type (and choices) of one value of the field; of one element for a tuple[X, ...]."""
    annotation = field.annotation
    if typing.get_origin(annotation) is tuple:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kinds) > 1:  # e.g. a number or "auto": the text goes to the model, which decides
            return str, None
        annotation = kinds[0]
    if typing.get_origin(annotation) is typing.Annotated:  # constraints are the model's to check
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        choices = list(typing.get_args(annotation))
        return type(choices[0]), choices
    if annotation in (int, float, str, bool):
        return annotation, None  # type: ignore[return-value]
    if typing.get_origin(annotation) is dict:
        return _mapping, None  # type: ignore[return-value]
    raise TypeError(f"no command-line form for a field of type {annotation!r}")


def _mapping(text: str) -> dict[str, str]:
    """`a=0.3,b=0.2` as {"a": "0.3", "b": "0.2"}; the model converts and checks the values. A key may
    hold '=' (the last one splits), not ','. Over HTTP any key can be given."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().rpartition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not KEY=VALUE (expected e.g. a=0.3,b=0.2)")
        if key in out:
            raise argparse.ArgumentTypeError(f"{key!r} is given twice")
        out[key] = value
    return out


def _help(field: FieldInfo) -> str:
    text = field.description or ""
    if field.default is not None and field.default is not False and not callable(field.default_factory):
        text += f" (default: {field.default})"
    return text.strip()


def as_flags(exc: ConfigError, names: Iterable[str], *, prefix: str = "", flags: dict[str, str] | None = None) -> ConfigError:
    """The model's error, naming the flags the user typed (`--chunk-docs=0`, not `chunk_docs=0`)."""
    text = str(exc)
    for name in names:
        flag = (flags or {}).get(name) or flag_name(name, prefix)
        text = re.sub(rf"(?<![\w-]){re.escape(name)}=", f"{flag}=", text)
    return ConfigError(text)
