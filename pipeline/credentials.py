"""Twilio credentials: from the environment (``TWILIO_*``) for the command line, or given by a
program (:meth:`Credentials.of`). Secrets are ``SecretStr``: never in a repr, a log or an
error message; they go into the Authorization header and nowhere else."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipeline.errors import ConfigError


class Credentials(BaseSettings):
    """Twilio credentials from the environment: an auth token, or an API key and secret."""

    model_config = SettingsConfigDict(env_prefix="TWILIO_", extra="ignore", frozen=True)

    account_sid: str | None = None
    auth_token: SecretStr | None = None
    api_key: str | None = None
    api_secret: SecretStr | None = None

    @classmethod
    def of(
        cls,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
    ) -> Credentials:
        """Credentials given by a program, the environment not read (``Credentials()`` reads
        ``TWILIO_*``). The secrets are kept as ``SecretStr``: never in a repr or a log."""
        given = {"account_sid": account_sid, "auth_token": auth_token}
        given |= {"api_key": api_key, "api_secret": api_secret}
        return _Given.model_validate({k: v for k, v in given.items() if v is not None})

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


class _Given(Credentials):
    """Credentials as given, nothing read from the environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
