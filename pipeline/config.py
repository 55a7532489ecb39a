"""Settings: the config file < the environment < command-line flags.

The config file (TOML, flat keys named like the settings) is chosen with ``--config`` or
``FEEDBACK_PIPELINE_CONFIG``; each setting can also come from ``FEEDBACK_PIPELINE_<NAME>``.
Credentials come from the environment only (``TWILIO_*``): never from a file or a flag, where
they would end up in shell history or version control.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.models import RECORD_FIELDS

ENV_PREFIX = "FEEDBACK_PIPELINE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
_FLAGS = {"columns": "--map", "progress": "--no-progress", "reconcile": "--no-reconcile"}


class Settings(BaseSettings):
    """Everything a run can be told. Build it with :meth:`load`, which applies precedence."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    assistant_id: str | None = None
    ledger: str = "feedback-ledger.sqlite3"
    base_url: str = "https://assistants.twilio.com"
    concurrency: int = Field(16, ge=1, le=1000)
    rate: float = Field(50.0, ge=0)  # 0: no limit
    max_attempts: int = Field(5, ge=1, le=100)
    timeout: float = Field(30.0, gt=0)
    grace: float = Field(10.0, ge=0, le=3600)
    max_outage: float = Field(600.0, gt=0)
    reconcile: bool = True
    settle: float = Field(5.0, ge=0, le=600)
    backoff: float = Field(0.5, gt=0, le=60)
    max_backoff: float = Field(30.0, gt=0, le=600)
    format: Literal["csv", "jsonl"] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    report: str | None = None
    progress: bool = True
    batch_size: int = Field(500, ge=1, le=10_000)
    # Queue sources (ignored for files, which always end at their end).
    drain: bool = False  # exit once the queue has no new and no pending entries
    log_every: float = Field(60.0, gt=0)  # a following run logs a summary line this often
    claim_idle: float = Field(60.0, gt=0)  # take over another consumer's entry idle this long
    reconcile_every: float = Field(15.0, gt=0)  # a following run settles its unknowns this often

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
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError("plain http is only allowed to a loopback host; use https")
        return value.rstrip("/")

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RECORD_FIELDS))
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; fields are {', '.join(RECORD_FIELDS)}")
        return value

    @classmethod
    def load(cls, config_file: str | None = None, **flags: Any) -> Settings:
        """Merge the sources (flags set to None are treated as not given) and validate."""
        path = config_file or os.environ.get(CONFIG_ENV) or None
        layers = {
            "file": _read_toml(path) if path else {},
            "env": EnvSettingsSource(cls)(),
            "flag": {k: v for k, v in flags.items() if v is not None},
        }
        merged = {**layers["file"], **layers["env"], **layers["flag"]}
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, layers, path)) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config: cannot read {path}: {exc}") from None


def _describe(exc: ValidationError, layers: dict[str, dict[str, Any]], path: str | None) -> str:
    error = exc.errors(include_url=False)[0]
    name = str(error["loc"][0]) if error["loc"] else "settings"
    origin = {
        "flag": _FLAGS.get(name, f"--{name.replace('_', '-')}"),
        "env": ENV_PREFIX + name.upper(),
        "file": f"{name} in {path}",
    }
    where = next((origin[k] for k in ("flag", "env", "file") if name in layers[k]), name)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "is not a setting"
    more = len(exc.errors()) - 1
    return f"configuration error: {where}: {message}" + (f" (and {more} more)" if more else "")


class Credentials(BaseSettings):
    """Twilio credentials from the environment: an auth token, or an API key and secret."""

    model_config = SettingsConfigDict(env_prefix="TWILIO_", extra="ignore", frozen=True)

    account_sid: str | None = None
    auth_token: SecretStr | None = None
    api_key: str | None = None
    api_secret: SecretStr | None = None

    def basic_auth(self) -> tuple[str, str]:
        """The (user, password) pair for HTTP Basic auth, or a ConfigError naming what's missing."""
        if self.api_key or self.api_secret:
            if not (self.api_key and self.api_secret):
                raise ConfigError(
                    "configuration error: TWILIO_API_KEY and TWILIO_API_SECRET must both be set"
                )
            return self.api_key, self.api_secret.get_secret_value()
        if self.account_sid and self.auth_token:
            return self.account_sid, self.auth_token.get_secret_value()
        raise ConfigError(
            "configuration error: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN "
            "(or TWILIO_API_KEY and TWILIO_API_SECRET)"
        )
