"""Settings: the config file < the environment < command-line flags.

The config file (TOML, flat keys named like the settings) is chosen with ``--config`` or
``FEEDBACK_PIPELINE_CONFIG``; each setting can also come from ``FEEDBACK_PIPELINE_<NAME>``.
Credentials come from the environment only (``TWILIO_*``): never from a file or a flag, where
they would end up in shell history or version control.

Every number is bounded on both sides and finite: an ``inf`` rate or timeout, a timeout of
1e-300 s or a ``concurrency = true`` is not a setting anybody means, and would hang or stall
the run. Bad settings of any kind, from any source, end as
one :class:`ConfigError` line naming where the value came from, before anything is sent.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.config_layers import check_env_names, describe, origin_of, read_env, read_toml
from pipeline.errors import ConfigError
from pipeline.models import RECORD_FIELDS
from pipeline.urls import check_scope_url, is_loopback

ENV_PREFIX = "FEEDBACK_PIPELINE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
DEBUG_ENV = ENV_PREFIX + "DEBUG"
#: Variables with our prefix that are not settings; any other unknown one is a typo.
NON_SETTING_ENV = frozenset({CONFIG_ENV, DEBUG_ENV})
_FLAGS = {"columns": "--map", "progress": "--no-progress", "reconcile": "--no-reconcile"}


def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1 and 1 as true: `concurrency = true` became 1.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


def _bool_or_text(value: Any) -> Any:
    # A flag gives a bool, the environment text ("true", "0"); a number in a file is a mistake.
    if not isinstance(value, bool | str):
        raise ValueError("must be true or false")
    return value


#: Shared types: a count or a duration never accepts a bool (and, by the model's config,
#: never inf or nan); each field adds its own bounds.
Count = Annotated[int, BeforeValidator(_not_bool)]
Number = Annotated[float, BeforeValidator(_not_bool)]
Switch = Annotated[bool, BeforeValidator(_bool_or_text)]


class Settings(BaseSettings):
    """Everything a run can be told. Build it with :meth:`load`, which applies precedence."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, allow_inf_nan=False
    )

    # The bounds are what a run can work with, not what is typical: a timeout under 0.1 s
    # times every request out; a rate of a million per second is "no limit" in all but name.
    assistant_id: str | None = None
    ledger: str = "feedback-ledger.sqlite3"
    base_url: str = "https://assistants.twilio.com"
    concurrency: Count = Field(16, ge=1, le=1000)
    rate: Number = Field(50.0, ge=0, le=1_000_000)  # 0: no limit
    # redis://HOST:PORT/DB[?key=NAME]: --rate is then the total of every worker of the scope.
    rate_scope: str | None = None
    max_attempts: Count = Field(5, ge=1, le=100)
    timeout: Number = Field(30.0, ge=0.1, le=3600)
    grace: Number = Field(10.0, ge=0, le=3600)
    max_outage: Number = Field(600.0, ge=0.1, le=7 * 86400)
    reconcile: Switch = True
    settle: Number = Field(5.0, ge=0, le=600)
    # No flag of their own: the descriptions are what the reference shows (docs/hooks/).
    backoff: Number = Field(
        0.5,
        ge=0.001,
        le=60,
        description="Seconds of the first backoff "
        "before a retry; it doubles, with jitter, up to max_backoff.",
    )
    max_backoff: Number = Field(
        30.0,
        ge=0.001,
        le=600,
        description="Seconds a backoff grows to at most (a Retry-After is obeyed up to 300 s).",
    )
    format: Literal["csv", "jsonl"] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    # A column no record field is read from is an error (its values would not be sent)
    # unless this says to leave such columns out (pipeline.engine.columns).
    ignore_extra_columns: Switch = False
    # A run refuses to start on a ledger that does not exist (a scheduled job: a mistyped
    # ledger would send everything again); and what a new ledger does about records the API
    # already holds: stop (check), record them as sent (adopt), send them (send).
    ledger_must_exist: Switch = False
    new_ledger: Literal["check", "adopt", "send"] = "check"
    report: str | None = None
    progress: Switch = True
    batch_size: Count = Field(
        500,
        ge=1,
        le=10_000,
        description="Records claimed in the ledger per batch (one commit each).",
    )
    # Queue sources (ignored for files, which always end at their end).
    drain: Switch = False  # exit once the queue has no new and no pending entries
    # What a run shows and tells (docs/reference/observing.md). progress: the live display on a
    # terminal; quiet: none, a progress log line every log_every seconds instead (as off a
    # terminal, where the display never shows).
    quiet: Switch = False
    log_every: Number = Field(60.0, ge=0.01, le=86400)
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The lowest level logged: -v is debug, -qq warning, -qqq error."
    )
    log_format: Literal["text", "json"] = "text"
    metrics_port: Count | None = Field(None, ge=1, le=65535)  # serve /metrics while running
    metrics_address: str = "0.0.0.0"  # ... on this address (every interface by default)
    metrics_textfile: str | None = None  # write the metrics here at the end (atomically)
    # Exit 0 (not 1) with up to this many invalid / failed records: a nightly job that accepts
    # a known number of bad rows. 0: none accepted.
    max_invalid: Count = Field(0, ge=0, le=1_000_000_000)
    max_failed: Count = Field(0, ge=0, le=1_000_000_000)
    claim_idle: Number = Field(60.0, ge=0.01, le=86400)  # take over an entry left pending this long
    reconcile_every: Number = Field(15.0, ge=0.01, le=86400)  # settle unknowns, dead runs' records
    # A label shared by the workers of one backfill (a shared ledger keeps it with each run):
    # ``status --job`` counts that job's records alone, ``stop --job`` ends its workers.
    job: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@-]+$")

    # Where each setting that was given came from ("--rate", "FEEDBACK_PIPELINE_RATE",
    # "rate in FILE"), for start-up checks that name it (see :meth:`origin`).
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://assistants.twilio.com")
        if parts.username or parts.password:
            raise ValueError("must not contain credentials; set TWILIO_* variables instead")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        try:
            port = parts.port  # raises for a port beyond 65535 or not a number
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("has a port that is not a number from 1 to 65535")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("plain http is only allowed to a loopback host; use https")
        if re.search(r"/v1(/|$)", parts.path, re.IGNORECASE):
            # Every assistant would be "not found" (404) at .../v1/v1/Assistants/...
            raise ValueError(
                f"looks wrong: it has /v1 in its path ({parts.path}), which the tool adds "
                "itself "
                "(/v1/Assistants/ID/Feedbacks); give the base without it, such as "
                "https://assistants.twilio.com"
            )
        return value.rstrip("/")

    @field_validator("rate_scope")
    @classmethod
    def _check_rate_scope(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        check_scope_url(value)
        if info.data.get("rate") == 0:
            raise ValueError("needs a --rate above 0 (0 is no limit, and a budget needs one)")
        return value

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RECORD_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; fields are {', '.join(RECORD_FIELDS)}")
        return value

    def __init__(self, **values: Any) -> None:
        """What a program gives (keywords named like the settings) over the defaults; a bad
        value is a ConfigError naming the setting, as from the command line."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            nowhere: dict[str, dict[str, Any]] = {"file": {}, "env": {}, "flag": {}}
            # The cause stays: load() names the layer each bad value came from with it.
            raise ConfigError(describe(exc, nowhere, None, ENV_PREFIX, _FLAGS)) from exc

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """``Settings(...)`` is what it is given and the defaults, nothing else: a program
        that builds one (the Python API) reads no environment unless it asks (:meth:`load`)."""
        return (init_settings,)

    @classmethod
    def load(cls, config_file: str | None = None, **flags: Any) -> Settings:
        """Merge the sources (flags set to None are treated as not given) and validate: the
        config file (``config_file``, else ``$FEEDBACK_PIPELINE_CONFIG``) < the environment
        (``FEEDBACK_PIPELINE_*``) < ``flags``."""
        path = config_file or os.environ.get(CONFIG_ENV) or None
        check_env_names(cls.model_fields, ENV_PREFIX, NON_SETTING_ENV)
        layers = {
            "file": read_toml(path) if path else {},
            "env": read_env(cls, ENV_PREFIX),
            "flag": {k: v for k, v in flags.items() if v is not None},
        }
        merged = {**layers["file"], **layers["env"], **layers["flag"]}
        try:
            settings = cls.model_validate(merged)  # through __init__ (pydantic calls it)
        except ConfigError as exc:
            if not isinstance(exc.__cause__, ValidationError):
                raise
            raise ConfigError(describe(exc.__cause__, layers, path, ENV_PREFIX, _FLAGS)) from None
        for name in merged:
            settings._origins[name] = origin_of(name, layers, path, ENV_PREFIX, _FLAGS)
        return settings

    @classmethod
    def from_env(cls, config_file: str | None = None, **overrides: Any) -> Settings:
        """The settings as the command line builds them (:meth:`load`): for a program that
        wants the config file and the ``FEEDBACK_PIPELINE_*`` variables read."""
        return cls.load(config_file, **overrides)

    def source_of(self, name: str) -> str:
        """Where a setting's value came from, for a person: its flag, variable or file key,
        or "default"."""
        return self._origins.get(name, "default")

    def origin(self, name: str) -> str:
        """How to name the setting ``name`` in an error: its flag, variable or file key."""
        return self._origins.get(name, name)

    def check_report(self) -> None:
        """Fail at start-up if the report (or the metrics textfile) cannot be written, rather
        than after every record was sent. Both are written next to themselves first, then
        renamed, so their directory must be writable too."""
        for name in ("report", "metrics_textfile"):
            value = getattr(self, name)
            if value is not None:
                self._check_writable(name, value)

    def _check_writable(self, name: str, value: str) -> None:
        path = Path(value)
        parent = path.parent
        if not value or path.is_dir():
            problem = "is a directory, not a file"
        elif not parent.exists():
            problem = f"directory {parent} does not exist"
        elif not parent.is_dir():
            problem = f"{parent} is not a directory"
        elif not os.access(parent, os.W_OK | os.X_OK) or (
            path.exists() and not os.access(path, os.W_OK)
        ):
            problem = "permission denied"
        else:
            return
        raise ConfigError(
            f"configuration error: {self.origin(name)}: cannot write {value}: {problem}"
        )
