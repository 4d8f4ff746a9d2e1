from datetime import UTC, datetime

from app.jobs.lifecycle import describe_error, epoch_ms_to_datetime


def test_an_exception_is_described_by_its_type_and_message() -> None:
    assert describe_error(ValueError("bad row"), "Traceback ...") == "ValueError: bad row"
    assert describe_error(TimeoutError(), None) == "TimeoutError"


def test_without_an_exception_the_last_line_of_saqs_reason_is_used() -> None:
    assert describe_error(None, "swept").startswith("swept: the job's worker stopped")
    assert describe_error(None, "cancelled").startswith("re-queued: the worker shut down")
    assert describe_error(None, "stopped by an operator") == "stopped by an operator"
    assert describe_error(None, "Traceback (most recent call last):\n  ...\nKeyError: 'x'\n") == (
        "KeyError: 'x'"
    )
    assert describe_error(None, "Traceback ...\napp.worker.tasks.Boom: it broke\n") == (
        "Boom: it broke"
    )
    assert describe_error(None, None) is None


def test_saq_epoch_milliseconds_become_utc_datetimes() -> None:
    assert epoch_ms_to_datetime(1_700_000_000_123) == datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )
    assert epoch_ms_to_datetime(0) is None
