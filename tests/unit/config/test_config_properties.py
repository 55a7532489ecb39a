"""Property: whatever value any setting gets from a flag, the environment or the file,
``Settings.load`` returns settings inside the documented ranges, or raises one ConfigError line
that names where a bad value came from. Never another exception, never an ``inf`` timeout."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import annotated_types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paths import ROOT

from pipeline.config import ENV_PREFIX, Settings
from pipeline.errors import ConfigError

FIELDS = sorted(Settings.model_fields)
ORIGINS = ("flag", "env", "file")
_FLAG_NAMES = {"columns": "--map", "progress": "--no-progress", "reconcile": "--no-reconcile"}

#: Values a person (or a script) might give, and the awkward ones: inf, nan, huge, tiny,
#: negative, bools where numbers go, text where numbers go, nested tables.
VALUES = st.one_of(
    st.floats(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.sampled_from(
        ["inf", "-inf", "nan", "1e-300", "1e309", "true", "0", "-1", "1e6", "0.1", "16", "csv"]
    ),
    st.sampled_from(["http://127.0.0.1:99999", "https://x.example:0", "http://[::1]:8080"]),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
    st.dictionaries(st.sampled_from(["score", "text", "stars"]), st.text(max_size=5), max_size=2),
)
GIVEN = st.dictionaries(st.sampled_from(FIELDS), st.tuples(st.sampled_from(ORIGINS), VALUES))


def _reference() -> ModuleType:
    """The site's reference generator (docs/hooks/reference.py): the settings table it makes
    is the one the documentation shows."""
    spec = importlib.util.spec_from_file_location("docs_reference", REFERENCE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = ROOT / "docs" / "hooks" / "reference.py"


def documented_ranges() -> dict[str, tuple[float, float, float | None]]:
    """The documentation's table of ranges (Reference, Settings): name -> (lowest, highest,
    default; None: "none", the setting is off unless given). The properties below hold the
    code to these documented numbers: what the page says is what a value is checked against."""
    ranges = {}
    for name, shown, default, *_ in _reference().settings_rows():
        found = re.fullmatch(r"([\d.]+) to ([\d.]+)", shown)
        if found:
            low, high = float(found.group(1)), float(found.group(2))
            ranges[name] = (low, high, None if default == "none" else float(default))
    return ranges


RANGES = documented_ranges()
NUMERIC = sorted(RANGES)


def bounds(name: str) -> tuple[float, float]:
    low, high, _ = RANGES[name]
    return low, high


def test_every_number_setting_has_a_documented_range_and_default() -> None:
    numbers = {
        name
        for name, field in Settings.model_fields.items()
        if field.annotation in (int, float)
        or any(isinstance(m, annotated_types.Ge | annotated_types.Le) for m in field.metadata)
    }
    assert numbers == set(RANGES)
    for name, (_, _, default) in RANGES.items():
        assert Settings.model_fields[name].default == default, name


@given(st.sampled_from(NUMERIC), st.sampled_from([0, 1]), st.sampled_from(ORIGINS))
def test_the_documented_bounds_are_accepted(name: str, which: int, origin: str) -> None:
    value = bounds(name)[which]
    with sources({name: (origin, value)}) as (path, flags):
        loaded = Settings.load(path, **flags)
    assert getattr(loaded, name) == value


def env_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def origin_name(name: str, origin: str, path: str) -> str:
    if origin == "flag":
        return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
    if origin == "env":
        return ENV_PREFIX + name.upper()
    return f"{name} in {path}"


@contextmanager
def sources(given: dict[str, tuple[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The config file and the environment for the drawn values; yields (file, flags)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "TWILIO_"))}
    flags = {name: value for name, (origin, value) in given.items() if origin == "flag"}
    for name, (origin, value) in given.items():
        if origin == "env":
            env[ENV_PREFIX + name.upper()] = env_text(value)
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, env, clear=True):
        path = Path(tmp) / "settings.toml"
        lines = [f"{n} = {toml_value(v)}" for n, (o, v) in given.items() if o == "file"]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        yield str(path), flags


def check_in_range(loaded: Settings) -> None:
    for name in NUMERIC:
        value = getattr(loaded, name)
        if value is None and RANGES[name][2] is None:
            continue  # an optional number left off
        low, high = bounds(name)
        assert not isinstance(value, bool), name
        assert isinstance(value, int | float), name
        assert math.isfinite(value), name
        assert low <= value <= high, (name, value)
    assert isinstance(loaded.progress, bool)
    assert isinstance(loaded.reconcile, bool)
    parts = urlsplit(loaded.base_url)
    assert parts.scheme in ("http", "https")
    assert parts.port is None or 1 <= parts.port <= 65535


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GIVEN)
def test_load_is_in_range_or_one_config_error_naming_the_origin(
    given: dict[str, tuple[str, Any]],
) -> None:
    with sources(given) as (path, flags):
        try:
            loaded = Settings.load(path, **flags)
        except ConfigError as exc:
            message = str(exc)
        else:
            check_in_range(loaded)
            return
    assert "\n" not in message
    if message.startswith(f"config: cannot read {path}: "):
        # The file as a whole is not TOML (a control character in a string, say).
        assert any(origin == "file" for origin, _ in given.values())
        return
    named = {origin_name(n, o, path) for n, (o, _) in given.items()}
    match = re.match(r"configuration error: (.+?): ", message)
    assert match, message
    assert match[1] in named, (message, named)


@given(st.sampled_from(NUMERIC), st.sampled_from(ORIGINS))
def test_infinite_and_nan_are_refused_everywhere(name: str, origin: str) -> None:
    for value in (math.inf, -math.inf, math.nan):
        with sources({name: (origin, value)}) as (path, flags):
            try:
                Settings.load(path, **flags)
            except ConfigError as exc:
                # The else branch names the value a hypothesis run accepted: not pytest.raises.
                assert str(exc).startswith(  # noqa: PT017
                    f"configuration error: {origin_name(name, origin, path)}"
                )
            else:
                raise AssertionError(f"{name} = {value} from {origin} was accepted")


@given(st.sampled_from(NUMERIC), st.sampled_from(ORIGINS), st.booleans())
def test_a_bool_is_never_a_number(name: str, origin: str, value: bool) -> None:
    with sources({name: (origin, value)}) as (path, flags):
        try:
            Settings.load(path, **flags)
        except ConfigError as exc:
            # The else branch names the value a hypothesis run accepted: not pytest.raises.
            assert origin_name(name, origin, path) in str(exc)  # noqa: PT017
        else:
            raise AssertionError(f"{name} = {value} from {origin} was accepted as a number")
