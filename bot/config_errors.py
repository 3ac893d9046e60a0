"""Configuration errors as one line for the operator: the first unknown key, named with the
closest valid one, else the first invalid value with its environment variable."""

from __future__ import annotations

import difflib
from typing import get_args

from pydantic import BaseModel, ValidationError


def describe(exc: ValidationError, root: type[BaseModel], env_prefix: str) -> str:
    """One line. An unknown key comes first, since it is most often a typo of a key whose
    value then seems ignored; it is named, with the closest valid name."""
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    error = errors[0]
    parts = [str(part) for part in error["loc"] if not isinstance(part, int)]
    location = ".".join(parts)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if error["type"] == "extra_forbidden":
        return (
            f"unknown setting {location}{_closest(parts, root)} (config file or environment){more}"
        )
    message = error["msg"].removeprefix("Value error, ")
    if not location:
        return f"invalid configuration: {message}"
    env_name = env_prefix + location.upper().replace(".", "__")
    return f"invalid setting {location}: {message} (config file or {env_name}){more}"


def _closest(parts: list[str], root: type[BaseModel]) -> str:
    """ ": did you mean X?", X the valid key closest to the unknown one: in its own table first
    (by spelling, then a key the unknown one is a word of: lang for default_lang), else
    anywhere (a key put in the wrong table)."""
    names = _setting_names(root)
    unknown = parts[-1].lower()
    table = [name for name in names if name.rsplit(".", 1)[0] == ".".join(parts[:-1])]
    found = _spelled_like(unknown, table) or [
        name for name in table if unknown in name.rsplit(".", 1)[-1].split("_")
    ]
    found = found or _spelled_like(unknown, names)
    return f": did you mean {found[0]}?" if found else ""


def _spelled_like(unknown: str, names: list[str]) -> list[str]:
    last = {name.rsplit(".", 1)[-1]: name for name in reversed(names)}
    return [last[match] for match in difflib.get_close_matches(unknown, list(last), 1, 0.75)]


def _setting_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every valid dotted key, tables included."""
    names = []
    for name, field in model.model_fields.items():
        names.append(prefix + name)
        for inner in (field.annotation, *get_args(field.annotation)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                names.extend(_setting_names(inner, f"{prefix}{name}."))
    return names
