import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import structlog

from app.config import Settings, SettingsError
from app.logs import _IsoTimeStamper


def test_defaults_match_the_compose_services() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "postgresql+asyncpg://user:password@localhost:5432/app_db"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.migrations_path == Path(__file__).resolve().parents[2] / "db" / "migrations"


@pytest.mark.parametrize(
    "given",
    ["postgres://u:p@h:1/d", "postgresql://u:p@h:1/d", "postgresql+asyncpg://u:p@h:1/d"],
)
def test_database_url_spellings_all_use_asyncpg(given: str) -> None:
    assert Settings.from_env({"DATABASE_URL": given}).database_url == (
        "postgresql+asyncpg://u:p@h:1/d"
    )


def test_values_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "WORKER_CONCURRENCY": "3",
            "JOB_TIMEOUT": "5",
            "LOG_LEVEL": "debug",
            "LOG_JSON": "false",
            "SAQ_QUEUE_NAME": "reports",
            "SAQ_WEB_ENABLED": "no",
        }
    )
    assert (settings.worker_concurrency, settings.job_timeout) == (3, 5)
    assert (settings.log_level, settings.log_json) == ("DEBUG", False)
    assert (settings.queue_name, settings.saq_web_enabled) == ("reports", False)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WORKER_CONCURRENCY", "many", "must be an integer"),
        ("WORKER_CONCURRENCY", "0", "must be >= 1"),
        ("JOB_TIMEOUT", "0", "must be >= 1"),
        ("LOG_LEVEL", "LOUD", "logging level"),
        ("LOG_JSON", "maybe", "boolean"),
        ("DATABASE_URL", "mysql://x", "postgresql://"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)


def test_log_timestamps_read_as_structlogs_own() -> None:
    ours = _IsoTimeStamper()({}, "info", {})["timestamp"]
    theirs = structlog.processors.TimeStamper(fmt="iso")({}, "info", {})["timestamp"]
    iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.fullmatch(iso, ours)
    assert re.fullmatch(iso, theirs)
    assert abs(datetime.fromisoformat(ours) - datetime.fromisoformat(theirs)) < timedelta(seconds=1)
