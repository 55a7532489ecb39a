"""Settings precedence (file < environment < flags), error origins, and credentials."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from paths import ROOT

from pipeline.config import CONFIG_ENV, Settings
from pipeline.credentials import Credentials
from pipeline.errors import ConfigError

SECRET = "s3cr3t-auth-token-value"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing leaks in from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("FEEDBACK_PIPELINE_", "TWILIO_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_file(tmp_path: Path, text: str, name: str = "pipeline.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_error(config: str | None = None, **flags: Any) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.load(config, **flags)
    return str(info.value)


# --- precedence --------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings.load()
    assert settings.base_url == "https://assistants.twilio.com"
    assert settings.concurrency == 16
    assert settings.columns == {}
    assert settings.assistant_id is None


def test_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config_file(
        tmp_path,
        'concurrency = 3\nmax_attempts = 7\nassistant_id = "aia_asst_file"\nbatch_size = 42\n',
    )
    monkeypatch.setenv("FEEDBACK_PIPELINE_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("FEEDBACK_PIPELINE_ASSISTANT_ID", "aia_asst_env")

    settings = Settings.load(path, assistant_id="aia_asst_flag")

    assert settings.concurrency == 3  # file only
    assert settings.batch_size == 42  # file only
    assert settings.max_attempts == 9  # env beats file
    assert settings.assistant_id == "aia_asst_flag"  # flag beats env and file


def test_flag_beats_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, "concurrency = 3\n")
    assert Settings.load(path, concurrency=5).concurrency == 5


def test_none_flags_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config_file(tmp_path, "concurrency = 3\n")
    monkeypatch.setenv("FEEDBACK_PIPELINE_TIMEOUT", "12.5")

    settings = Settings.load(path, concurrency=None, timeout=None, assistant_id=None)

    assert settings.concurrency == 3
    assert settings.timeout == 12.5
    assert settings.assistant_id is None


def test_config_env_picks_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, config_file(tmp_path, "concurrency = 4\n"))
    assert CONFIG_ENV == "FEEDBACK_PIPELINE_CONFIG"
    assert Settings.load().concurrency == 4


def test_config_argument_beats_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, config_file(tmp_path, "concurrency = 4\n", "env.toml"))
    chosen = config_file(tmp_path, "concurrency = 6\n", "flag.toml")
    assert Settings.load(chosen).concurrency == 6


def test_columns_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config_file(tmp_path, '[columns]\nscore = "rating"\n')
    assert Settings.load(path).columns == {"score": "rating"}

    monkeypatch.setenv("FEEDBACK_PIPELINE_COLUMNS", '{"text": "comment"}')
    assert Settings.load(path).columns == {"text": "comment"}


def test_settings_are_frozen() -> None:
    settings = Settings.load()
    with pytest.raises(ValueError, match="frozen"):
        settings.concurrency = 2


# --- errors and their origin -------------------------------------------------------------------


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = config_file(tmp_path, "concurrency = 3\nconcurency = 4\n")

    message = load_error(path)

    assert "concurency" in message
    assert path in message
    assert "is not a setting" in message


def test_missing_config_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.toml")
    message = load_error(missing)
    assert missing in message
    assert "not found" in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = config_file(tmp_path, "concurrency = = 3\n")
    assert path in load_error(path)


def test_bad_flag_names_the_flag() -> None:
    message = load_error(concurrency=0)
    assert message.startswith("configuration error: --concurrency: ")


def test_bad_flag_with_underscore_names_the_dashed_flag() -> None:
    assert "--max-attempts: " in load_error(max_attempts=0)


def test_bad_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_RATE", "-1")
    assert "FEEDBACK_PIPELINE_RATE: " in load_error()


def test_bad_env_number_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_CONCURRENCY", "lots")
    assert "FEEDBACK_PIPELINE_CONCURRENCY: " in load_error()


def test_bad_file_value_names_the_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, "concurrency = 0\n")
    assert f"concurrency in {path}: " in load_error(path)


def test_origin_is_the_layer_that_won(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config_file(tmp_path, "concurrency = 3\n")
    monkeypatch.setenv("FEEDBACK_PIPELINE_CONCURRENCY", "5000")

    message = load_error(path)

    assert "FEEDBACK_PIPELINE_CONCURRENCY" in message
    assert path not in message


def test_a_good_flag_overrides_a_bad_file_value(tmp_path: Path) -> None:
    path = config_file(tmp_path, "concurrency = 0\n")
    assert Settings.load(path, concurrency=2).concurrency == 2


def test_bad_format_value() -> None:
    assert "--format: " in load_error(format="xml")


# --- base_url ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://assistants.twilio.com", "https://assistants.twilio.com"),
        ("https://assistants.twilio.com/", "https://assistants.twilio.com"),
        ("https://proxy.example/api/", "https://proxy.example/api"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://localhost:9000", "http://localhost:9000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_base_url_accepted(url: str, expected: str) -> None:
    assert Settings.load(base_url=url).base_url == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://assistants.twilio.com", "loopback"),
        ("http://10.0.0.1", "loopback"),
        ("http://localhost.evil.example", "loopback"),
        ("https://AC123:token@assistants.twilio.com", "credentials"),
        ("https://user@assistants.twilio.com", "credentials"),
        ("ftp://assistants.twilio.com", "http(s)"),
        ("assistants.twilio.com", "http(s)"),
        ("https://assistants.twilio.com/?x=1", "query"),
    ],
)
def test_base_url_refused(url: str, why: str) -> None:
    message = load_error(base_url=url)
    assert "--base-url: " in message
    assert why in message


def test_refused_base_url_does_not_echo_credentials() -> None:
    assert "token" not in load_error(base_url="https://AC123:token@assistants.twilio.com")


def test_base_url_from_env_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_BASE_URL", "http://example.com")
    assert "FEEDBACK_PIPELINE_BASE_URL: " in load_error()


# --- --map -------------------------------------------------------------------------------------


def test_map_known_fields() -> None:
    columns = {"score": "rating", "session_id": "conversation"}
    assert Settings.load(columns=columns).columns == columns


def test_map_unknown_field_is_refused() -> None:
    message = load_error(columns={"rating": "score"})
    assert "--map: " in message
    assert "'rating'" in message


def test_map_unknown_field_in_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, '[columns]\nstars = "rating"\n')
    assert f"columns in {path}: " in load_error(path)


# --- credentials -------------------------------------------------------------------------------


def test_basic_auth_with_auth_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    assert Credentials().basic_auth() == ("AC123", SECRET)


def test_basic_auth_with_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token-not-used")
    monkeypatch.setenv("TWILIO_API_KEY", "SK123")
    monkeypatch.setenv("TWILIO_API_SECRET", SECRET)
    assert Credentials().basic_auth() == ("SK123", SECRET)


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ConfigError) as info:
        Credentials().basic_auth()
    message = str(info.value)
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET"):
        assert name in message


def test_token_without_account_sid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID") as info:
        Credentials().basic_auth()
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("present", ["TWILIO_API_KEY", "TWILIO_API_SECRET"])
def test_half_an_api_key_is_refused(monkeypatch: pytest.MonkeyPatch, present: str) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    monkeypatch.setenv(present, SECRET)

    with pytest.raises(ConfigError) as info:
        Credentials().basic_auth()

    message = str(info.value)
    assert "TWILIO_API_KEY" in message
    assert "TWILIO_API_SECRET" in message
    assert SECRET not in message


def test_credentials_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", SECRET)
    monkeypatch.setenv("TWILIO_API_KEY", "SK123")
    monkeypatch.setenv("TWILIO_API_SECRET", SECRET + "-api")
    credentials = Credentials()

    shown = [repr(credentials), str(credentials), f"{credentials}", str(credentials.model_dump())]

    for text in shown:
        assert SECRET not in text
    assert "AC123" in repr(credentials)


def test_credentials_are_not_read_from_settings_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_file(tmp_path, f'auth_token = "{SECRET}"\n')
    message = load_error(path)
    assert "auth_token" in message
    assert SECRET not in message


# --- hardening: the sample file, origins ------------------------------------------------------


def test_the_sample_config_file_loads_to_the_defaults() -> None:
    sample = ROOT / "config" / "pipeline.toml"
    assert Settings.load(str(sample)).model_dump() == Settings.load().model_dump()


def test_origin_names_the_layer_that_won(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config_file(tmp_path, 'report = "r.json"\nrate = 3\ngrace = 1\n')
    monkeypatch.setenv("FEEDBACK_PIPELINE_RATE", "4")

    settings = Settings.load(path, grace=2)

    assert settings.origin("report") == f"report in {path}"
    assert settings.origin("rate") == "FEEDBACK_PIPELINE_RATE"
    assert settings.origin("grace") == "--grace"


def test_columns_env_that_is_not_json_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDBACK_PIPELINE_COLUMNS", "score=rating")
    message = load_error()
    assert message.startswith("configuration error: FEEDBACK_PIPELINE_COLUMNS: not valid JSON")
    assert "\n" not in message
