"""``config show``: the effective settings and where each came from, secrets masked.

The flags of ``config show`` are made from the settings model itself (one per setting, as
``--rate 20``), so that what a command line would give can be shown too, and a new setting
appears here without an edit. Credentials are shown as set or unset, never their values;
URLs with a password show ``***`` for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import click

from pipeline.cli.common import epilog, guarded
from pipeline.config import CONFIG_ENV, ENV_PREFIX, Settings
from pipeline.credentials import Credentials
from pipeline.urls import mask_url

#: Settings that cannot be given as one flag value here (a mapping: set it in the file).
_NOT_FLAGS = frozenset({"columns"})
_EXITS = (
    "\b\nExit codes: 0 shown, 2 a setting is invalid (one line naming it and where it came from)."
)


def source_of(settings: Settings, name: str) -> str:
    """``default``, ``file``, ``environment`` or ``flag``, from the setting's recorded origin."""
    origin = settings.origin(name)
    if origin == name:
        return "default"
    if origin.startswith("--"):
        return "flag"
    if origin.startswith(ENV_PREFIX):
        return "environment"
    return "file"


def effective(config_file: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    settings = Settings.load(config_file, **flags)
    shown: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, str):
            value = mask_url(value)
        shown[name] = {
            "value": value,
            "source": source_of(settings, name),
            "origin": settings.origin(name) if source_of(settings, name) != "default" else None,
        }
    credentials = Credentials()
    shown["credentials"] = {
        f"TWILIO_{field.upper()}": "set" if getattr(credentials, field) else "unset"
        for field in Credentials.model_fields
    }
    shown["config_file"] = config_file or os.environ.get(CONFIG_ENV)
    return shown


def _setting_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(list(Settings.model_fields)):
        if name in _NOT_FLAGS:
            continue
        default = Settings.model_fields[name].default
        fn = click.option(
            f"--{name.replace('_', '-')}",
            name,
            metavar="VALUE",
            help=f"[{default}]" if default is not None else None,
        )(fn)
    return fn


@click.group(epilog=epilog("feedback-pipeline config show --json", _EXITS))
def config() -> None:
    """Look at the settings (config file < environment < flags)."""


@config.command(
    epilog=epilog(
        "feedback-pipeline config show --concurrency 4  # flags as run takes them", _EXITS
    )
)
@click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_setting_options
@guarded
def show(config_file: str | None, as_json: bool, **flags: Any) -> None:
    """Show every setting's effective value and where it came from (default, file,
    environment or flag); credentials only as set or unset."""
    shown = effective(config_file, flags)
    if as_json:
        click.echo(json.dumps(shown, default=str))
        return
    click.echo(f"config file: {shown.pop('config_file') or 'none'}")
    credentials = shown.pop("credentials")
    # As wide as the longest name and value, and a gap: a fixed 16 ran
    # "metrics_textfile" into its value.
    width = max(len(name) for name in shown) + 2
    values = {name: json.dumps(item["value"]) for name, item in shown.items()}
    value_width = max(32, *(len(v) + 2 for v in values.values() if len(v) < 60))
    for name, item in shown.items():
        origin = f" ({item['origin']})" if item["origin"] else ""
        value = values[name]
        click.echo(f"  {name:<{width}}{value:<{value_width}} {item['source']}{origin}")
    click.echo(
        "credentials (environment only): " + ", ".join(f"{k} {v}" for k, v in credentials.items())
    )
