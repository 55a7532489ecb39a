"""The layers settings are read from (a TOML file, the environment, flags), and a validation
error named after the layer its value came from: :meth:`pipeline.config.Settings.load`'s
helpers."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

from pipeline.errors import ConfigError

#: Each layer's values by setting name: "file", "env", "flag".
Layers = dict[str, dict[str, Any]]


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} not found") from None
    except UnicodeDecodeError as exc:  # a binary file, or another encoding than UTF-8
        raise ConfigError(
            f"config: cannot read {path}: not a UTF-8 text file (byte {exc.start + 1})"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config: cannot read {path}: {exc}") from None


def check_env_names(fields: Iterable[str], prefix: str, others: frozenset[str]) -> None:
    """A misspelt variable (FEEDBACK_PIPELINE_CONCURENCY) would otherwise be silently ignored."""
    known = others | {prefix + name.upper() for name in fields}
    for name in sorted(os.environ):
        # pydantic-settings matches names case-insensitively; so does this check.
        if name.upper().startswith(prefix) and name.upper() not in known:
            raise ConfigError(f"configuration error: {name}: is not a setting (a typo?)")


def read_env(cls: type[BaseSettings], prefix: str) -> dict[str, Any]:
    try:
        return EnvSettingsSource(cls)()
    except SettingsError as exc:
        # Raised for a value that must be JSON (FEEDBACK_PIPELINE_COLUMNS) and is not.
        match = re.search(r'field "(\w+)"', str(exc))
        name = prefix + (match[1] if match else "COLUMNS").upper()
        raise ConfigError(
            f"configuration error: {name}: not valid JSON; expected an object such as "
            '{"score": "rating"}'
        ) from None


def origin_of(
    name: str, layers: Layers, path: str | None, prefix: str, flags: dict[str, str]
) -> str:
    """The layer that won for ``name``, named as a user would type it."""
    origin = {
        "flag": flags.get(name, f"--{name.replace('_', '-')}"),
        "env": prefix + name.upper(),
        "file": f"{name} in {path}",
    }
    return next((origin[k] for k in ("flag", "env", "file") if name in layers[k]), name)


def describe(
    exc: ValidationError, layers: Layers, path: str | None, prefix: str, flags: dict[str, str]
) -> str:
    """A validation error in one line, naming the layer the bad value came from."""
    error = exc.errors(include_url=False)[0]
    name = str(error["loc"][0]) if error["loc"] else "settings"
    where = origin_of(name, layers, path, prefix, flags)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a setting"
    more = len(exc.errors()) - 1
    return f"configuration error: {where}: {message}" + (f" (and {more} more)" if more else "")
