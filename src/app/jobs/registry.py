"""Tracked tasks: a task function carries its timeout and retry policy, declared beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

TaskFunction = Callable[..., Awaitable[Any]]
F = TypeVar("F", bound=TaskFunction)

_POLICY_ATTRIBUTE = "__tracked_task_policy__"


@dataclass(frozen=True)
class TaskPolicy:
    """How SAQ runs one task. `attempts` counts every run (SAQ's `retries`), so 1 = no retry."""

    timeout: int | None = None  # seconds; None takes JOB_TIMEOUT. 0 (never time out) is refused.
    attempts: int = 1
    retry_delay: float = 1.0  # base of the exponential backoff, seconds
    max_retry_delay: float = 60.0  # cap of the backoff; SAQ always adds jitter
    heartbeat: int = 0  # seconds between `await ctx["job"].update()` calls the task promises

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            # SAQ never sweeps a job with timeout=0 and no heartbeat: its row could stay running.
            raise ValueError("a tracked task needs a positive timeout")
        if self.attempts < 1:
            raise ValueError("attempts counts every run and must be at least 1")

    def job_settings(self, default_timeout: int) -> dict[str, Any]:
        """The SAQ `Job` fields this policy sets."""
        return {
            "timeout": self.timeout or default_timeout,
            "retries": self.attempts,
            "retry_delay": self.retry_delay,
            "retry_backoff": self.max_retry_delay,
            "heartbeat": self.heartbeat,
        }


def tracked_task(
    *,
    timeout: int | None = None,
    attempts: int = 1,
    retry_delay: float = 1.0,
    max_retry_delay: float = 60.0,
    heartbeat: int = 0,
) -> Callable[[F], F]:
    """Declare a task's policy next to its function: `@tracked_task(timeout=30, attempts=3)`."""
    policy = TaskPolicy(
        timeout=timeout,
        attempts=attempts,
        retry_delay=retry_delay,
        max_retry_delay=max_retry_delay,
        heartbeat=heartbeat,
    )

    def decorate(function: F) -> F:
        setattr(function, _POLICY_ATTRIBUTE, policy)
        return function

    return decorate


def policy_of(function: TaskFunction) -> TaskPolicy:
    return getattr(function, _POLICY_ATTRIBUTE, None) or TaskPolicy()


class UnknownTaskError(LookupError):
    """A task name that no worker would run."""


class TaskRegistry:
    """The tasks the worker runs and the API may enqueue, by name."""

    def __init__(self, functions: Iterable[TaskFunction]) -> None:
        self._functions: dict[str, TaskFunction] = {}
        for function in functions:
            name = function.__qualname__
            if name in self._functions:
                raise ValueError(f"task {name!r} is registered twice")
            self._functions[name] = function

    @property
    def functions(self) -> list[TaskFunction]:
        return list(self._functions.values())

    def name_of(self, task: TaskFunction | str) -> str:
        name = task if isinstance(task, str) else task.__qualname__
        if name not in self._functions:
            raise UnknownTaskError(f"task {name!r} is not registered with the worker")
        return name

    def policy(self, name: str) -> TaskPolicy:
        return policy_of(self._functions[self.name_of(name)])
