from saq.job import Status

from app.jobs.states import ALLOWED_SOURCES, TERMINAL_STATUSES, JobStatus, can_move, from_saq


def test_every_saq_status_has_a_table_word() -> None:
    assert {status.value: from_saq(status).value for status in Status} == {
        "new": "queued",
        "queued": "queued",
        "active": "running",
        "aborting": "running",
        "complete": "complete",
        "failed": "failed",
        "aborted": "aborted",
    }


def test_terminal_rows_never_move() -> None:
    for terminal in TERMINAL_STATUSES:
        for target in JobStatus:
            assert not can_move(terminal, target), (terminal, target)


def test_a_running_job_can_reach_every_outcome_and_go_back_to_queued_for_a_retry() -> None:
    for target in (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.ABORTED, JobStatus.QUEUED):
        assert can_move(JobStatus.RUNNING, target)


def test_every_status_is_a_target() -> None:
    assert set(ALLOWED_SOURCES) == set(JobStatus)
