"""The recorder's cadence without I/O: when it writes, what each write carries, how it retries.

Its clock and sleep are `FakeTime`'s, so the times below are the recorder's own decisions,
not measurements.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from app.jobs.lifecycle import JobStatus, Transition
from app.jobs.record.recorder import LifecycleRecorder
from tests.unit.in_memory import FakeTime, InMemoryConnection, every_job_took_effect

IDLE, BUSY = 0.002, 0.010


def started() -> Transition:
    return Transition(uuid4(), "t", JobStatus.RUNNING, 1, worker_id="w1")


def recorder_on(
    connection: InMemoryConnection, time: FakeTime, **options: Any
) -> LifecycleRecorder:
    return LifecycleRecorder(
        connection,
        flush_interval=IDLE,
        busy_flush_interval=BUSY,
        clock=time.clock,
        sleep=time.sleep,
        **options,
    )


def batch_sizes(connection: InMemoryConnection) -> list[int]:
    return [len(e.parameters["job_ids"]) for e in connection.executed]


async def test_after_a_quiet_period_the_first_event_is_written_after_the_idle_interval() -> None:
    time, connection = FakeTime(), InMemoryConnection()
    recorder = recorder_on(connection, time)
    recorder.record(started())
    await recorder.flushed()
    assert time.waits == [IDLE]
    assert batch_sizes(connection) == [1]

    time.now += 60  # quiet for a minute: the next event is again written after IDLE
    written_before = time.now
    recorder.record(started())
    await recorder.flushed()
    assert time.waits == [IDLE, IDLE]
    assert time.now == written_before + IDLE
    await recorder.close()


async def test_events_recorded_together_are_written_together() -> None:
    time, connection = FakeTime(), InMemoryConnection()
    recorder = recorder_on(connection, time)
    for _ in range(7):
        recorder.record(started())
    await recorder.flushed()
    assert batch_sizes(connection) == [7]
    await recorder.close()


async def test_under_load_it_writes_once_per_busy_interval_and_batches_grow() -> None:
    time = FakeTime()
    written_at: list[float] = []
    recorder: LifecycleRecorder | None = None

    def answer(statement: str, parameters: dict[str, Any]) -> Any:
        written_at.append(round(time.now, 6))
        if len(written_at) < 4:  # while this write runs, five more events come in
            assert recorder is not None
            for _ in range(5):
                recorder.record(started())
        return every_job_took_effect(statement, parameters)

    connection = InMemoryConnection(answer=answer)
    recorder = recorder_on(connection, time)
    recorder.record(started())
    await recorder.flushed()

    assert written_at == [round(IDLE + n * BUSY, 6) for n in range(4)]
    assert batch_sizes(connection) == [1, 5, 5, 5]
    await recorder.close()


async def test_a_batch_larger_than_the_limit_is_written_in_parts() -> None:
    time, connection = FakeTime(), InMemoryConnection()
    recorder = recorder_on(connection, time, max_batch=2)
    for _ in range(5):
        recorder.record(started())
    await recorder.flushed()
    assert batch_sizes(connection) == [2, 2, 1]
    await recorder.close()


async def test_a_failed_write_is_retried_with_growing_backoff_and_nothing_is_lost() -> None:
    time = FakeTime()
    connection = InMemoryConnection(failures=[OSError("down"), OSError("still down")])
    recorder = recorder_on(connection, time)
    transitions = [started(), started()]
    for transition in transitions:
        recorder.record(transition)
    await recorder.flushed()

    assert time.waits == [IDLE, 0.05, 0.1]
    assert batch_sizes(connection) == [2, 2, 2]  # the same batch, until it was written
    assert connection.executed[-1].parameters["job_ids"] == [t.job_id for t in transitions]
    assert recorder.pending == 0

    time.now += 1  # a later failure starts over
    connection.failures.append(OSError("down again"))
    recorder.record(started())
    await recorder.flushed()
    assert time.waits[3:] == [IDLE, 0.05]
    await recorder.close()


async def test_close_writes_what_is_pending_at_once_then_closes_the_connection() -> None:
    time, connection = FakeTime(), InMemoryConnection()
    recorder = recorder_on(connection, time)
    recorder.record(started())
    recorder.record(started())
    await recorder.close()
    assert batch_sizes(connection) == [2]
    assert time.waits == []  # no gathering once closing
    assert connection.closed == 1


async def test_close_without_anything_recorded_writes_nothing() -> None:
    connection = InMemoryConnection()
    recorder = recorder_on(connection, FakeTime())
    recorder.start()
    await recorder.close()
    assert connection.executed == []
    assert connection.closed == 1


async def test_the_end_of_a_job_with_dependents_is_written_without_the_idle_interval() -> None:
    """A chain is latency-bound: a parent's end (`urgent`, its job enqueued knowing it had
    children) is written at once, taking along what gathered; any other end waits IDLE."""
    time, connection = FakeTime(), InMemoryConnection()
    recorder = recorder_on(connection, time)
    ended = Transition(uuid4(), "t", JobStatus.COMPLETE, 1, urgent=True)
    recorder.record(started())
    recorder.record(ended)
    await recorder.flushed()
    assert time.waits == []
    assert batch_sizes(connection) == [2]
    recorder.record(Transition(uuid4(), "t", JobStatus.COMPLETE, 1))
    await recorder.flushed()
    assert time.waits[0] == IDLE  # (then the rest of the busy interval since the last write)
    await recorder.close()
