"""The operations settings: retention windows and the scrape token."""

from __future__ import annotations

import hashlib

import pytest

from app.config import Settings, SettingsError


def test_defaults_keep_jobs_30_days_the_audit_log_for_ever_and_metrics_guarded() -> None:
    settings = Settings.from_env({})
    assert (settings.job_retention_days, settings.audit_retention_days) == (30, 0)
    assert settings.retention_interval == 3600
    assert (settings.metrics_token_digest, settings.metrics_public) == (None, False)


def test_values_are_read_and_the_token_is_kept_as_its_digest_only() -> None:
    token = "scrape-token-3f9a7c2e41b8d06f5e9a7c3b1d2e4f60"  # noqa: S105 - a test value
    settings = Settings.from_env(
        {
            "JOB_RETENTION_DAYS": "0",
            "AUDIT_RETENTION_DAYS": "365",
            "RETENTION_INTERVAL": "60",
            "METRICS_TOKEN": token,
            "METRICS_PUBLIC": "true",
        }
    )
    assert (settings.job_retention_days, settings.audit_retention_days) == (0, 365)
    assert settings.retention_interval == 60
    assert settings.metrics_token_digest == hashlib.sha256(token.encode()).hexdigest()
    assert settings.metrics_public
    assert token not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("JOB_RETENTION_DAYS", "-1", "must be >= 0"),
        ("JOB_RETENTION_DAYS", "a month", "must be a number"),
        ("JOB_PARTITION_MINUTES", "0", "must be >= 1"),
        ("JOB_PARTITIONS_AHEAD", "0", "must be >= 1"),
        ("RETENTION_INTERVAL", "0", "must be >= 1"),
        ("METRICS_TOKEN", "short", "at least 32 characters"),
        ("METRICS_PUBLIC", "sometimes", "boolean"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)
