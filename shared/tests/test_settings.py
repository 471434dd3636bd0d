import pytest
from kefu_shared.settings import ServiceSettings, SettingsError, load_settings
from pydantic import Field
from pydantic_settings import SettingsConfigDict


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="KEFU_DEMO_", extra="ignore", frozen=True)
    quiet_hours_start: int = Field(default=22, ge=0, le=23)


def test_shared_infrastructure_variables_are_read_without_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("MONGODB_URI", "mongodb://db:27017")
    monkeypatch.setenv("KEFU_DEMO_QUIET_HOURS_START", "21")
    settings = load_settings(DemoSettings)
    assert settings.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert settings.mongodb_uri == "mongodb://db:27017"
    assert settings.quiet_hours_start == 21


def test_missing_or_bad_values_stop_start_up_naming_each_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("MONGODB_URI", "mongodb://db:27017")
    monkeypatch.setenv("KEFU_DEMO_QUIET_HOURS_START", "25")
    with pytest.raises(SettingsError) as info:
        load_settings(DemoSettings)
    message = str(info.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in message
    assert "KEFU_DEMO_QUIET_HOURS_START" in message
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err
