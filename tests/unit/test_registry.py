from typing import Any

import pytest

from app.jobs.registry import TaskPolicy, TaskRegistry, UnknownTaskError, tracked_task
from app.worker.settings import REGISTRY
from app.worker.tasks import trigger_test


@tracked_task(timeout=30, attempts=4, retry_delay=0.5, max_retry_delay=20)
async def resize_image(ctx: dict[str, Any], *, path: str) -> str:
    return path


async def plain(ctx: dict[str, Any]) -> None:
    return None


def test_the_policy_declared_beside_a_task_becomes_its_saq_job_settings() -> None:
    registry = TaskRegistry([resize_image])
    assert registry.policy("resize_image").job_settings(default_timeout=60) == {
        "timeout": 30,
        "retries": 4,
        "retry_delay": 0.5,
        "retry_backoff": 20,
        "heartbeat": 0,
    }


def test_a_task_without_a_declared_policy_gets_the_default_timeout_and_one_attempt() -> None:
    settings = TaskRegistry([plain]).policy("plain").job_settings(default_timeout=45)
    assert settings["timeout"] == 45
    assert settings["retries"] == 1


def test_a_task_may_not_opt_out_of_timeouts() -> None:
    # SAQ never sweeps a job with timeout=0, so its row could stay `running` forever.
    with pytest.raises(ValueError, match="positive timeout"):
        TaskPolicy(timeout=0)
    with pytest.raises(ValueError, match="at least 1"):
        TaskPolicy(attempts=0)


def test_registry_knows_tasks_by_function_and_by_name() -> None:
    registry = TaskRegistry([resize_image, plain])
    assert registry.name_of(resize_image) == "resize_image"
    assert registry.name_of("plain") == "plain"
    with pytest.raises(UnknownTaskError):
        registry.name_of("nope")
    with pytest.raises(ValueError, match="twice"):
        TaskRegistry([plain, plain])


def test_the_worker_registers_the_seed_test_task() -> None:
    assert REGISTRY.name_of(trigger_test) == "trigger_test"
    assert REGISTRY.policy("trigger_test").timeout is not None
