"""The comparison of the two sides' snapshots, job by job, and the allowances it may use.

Each job is looked at whole (its record, its abort key, its place on the queued and active
lists and in the incomplete set, the messages on its channel): a job whose view differs is a
difference unless an allowance explains it, and an explained job is then left out of the
lists and the set, so the order of the other jobs is still compared. Every other key is
compared as it is. See `allowed.py` for the allowances.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tests.differential.keyspace import Key, Snapshot


@dataclass(frozen=True)
class JobView:
    """Everything of one job a side's Redis holds."""

    record: Key | None  # `saq:job:<queue>:<key>`
    abort: Key | None  # `saq:abort:<key>`
    messages: tuple[str, ...]  # published on its channel, in order
    queued: int  # times its id is on the queued list
    active: int  # ... on the active list
    incomplete: Any  # its score in the incomplete set, None when not in it

    @property
    def status(self) -> str | None:
        return self.record.value.get("status") if self.record else None


@dataclass(frozen=True)
class Allowance:
    """A difference between SAQ's Redis and the project's that is intended, and why."""

    name: str
    why: str
    # Applied to every job record of the project's side (and what a scenario observed).
    record: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # True when it explains why this job's views differ.
    job: Callable[[str, JobView, JobView], bool] | None = None
    # True when it explains why this key (not a job's) differs.
    key: Callable[[str, Key | None, Key | None], bool] | None = None


@dataclass
class Comparison:
    differences: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # the allowances that explained something


class Layout:
    """SAQ's key names for one queue (queue/redis.py, job.py)."""

    def __init__(self, queue: str) -> None:
        self.job_prefix = f"saq:job:{queue}:"
        self.queued, self.active = f"saq:{queue}:queued", f"saq:{queue}:active"
        self.incomplete = f"saq:{queue}:incomplete"

    def abort_of(self, job_id: str) -> str:
        return f"saq:abort:{job_id.removeprefix(self.job_prefix)}"

    def job_ids(self, snapshot: Snapshot) -> set[str]:
        ids = {
            name
            for name in (*snapshot.keys, *snapshot.channels)
            if name.startswith(self.job_prefix)
        }
        for name in (self.queued, self.active, self.incomplete):
            key = snapshot.keys.get(name)
            ids.update(key.value if key else ())
        abort_prefix = "saq:abort:"
        ids.update(
            self.job_prefix + name.removeprefix(abort_prefix)
            for name in snapshot.keys
            if name.startswith(abort_prefix)
        )
        return ids

    def view(self, snapshot: Snapshot, job_id: str) -> JobView:
        def members(name: str) -> Any:
            key = snapshot.keys.get(name)
            return key.value if key else ()

        return JobView(
            record=snapshot.keys.get(job_id),
            abort=snapshot.keys.get(self.abort_of(job_id)),
            messages=tuple(snapshot.channels.get(job_id, ())),
            queued=list(members(self.queued)).count(job_id),
            active=list(members(self.active)).count(job_id),
            incomplete=dict(members(self.incomplete)).get(job_id),
        )

    def owns(self, name: str, job_ids: set[str]) -> bool:
        """A key or channel that belongs to a job's view."""
        return name in job_ids or (
            name.startswith("saq:abort:") and self.job_prefix + name[len("saq:abort:") :] in job_ids
        )


def _normalised(snapshot: Snapshot, allowances: list[Allowance], used: set[str]) -> Snapshot:
    def fix(value: Any) -> Any:
        if isinstance(value, dict) and "function" in value and "queue" in value:
            for allowance in allowances:
                if allowance.record is not None:
                    fixed = allowance.record(value)
                    if fixed != value:
                        used.add(allowance.name)
                        value = fixed
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    keys = {
        name: replace(key, value=fix(key.value)) if isinstance(key.value, dict) else key
        for name, key in snapshot.keys.items()
    }
    return Snapshot(keys, snapshot.channels, fix(snapshot.observed))


def _without(value: Any, excused: set[str]) -> Any:
    """`value` with the excused jobs' ids and keys left out of its lists and sets."""
    keys = excused | {job_id.rsplit(":", 1)[-1] for job_id in excused}
    if isinstance(value, list):
        return [_without(v, excused) for v in value if not (isinstance(v, str) and v in keys)]
    if isinstance(value, dict):
        return {k: _without(v, excused) for k, v in value.items() if k not in keys}
    return value


def _excusing(key: Key | None, excused: set[str]) -> Key | None:
    """A list or set without the excused jobs; absent once empty, as Redis has it."""
    if key is None or key.type not in ("list", "zset"):
        return key
    value = _without(key.value, excused)
    return replace(key, value=value) if value else None


def compare(
    queue: str, saq: Snapshot, tracked: Snapshot, allowances: list[Allowance]
) -> Comparison:
    result = Comparison()
    tracked = _normalised(tracked, allowances, result.used)
    layout = Layout(queue)
    job_ids = layout.job_ids(saq) | layout.job_ids(tracked)
    excused: set[str] = set()
    for job_id in sorted(job_ids):
        ours, theirs = layout.view(saq, job_id), layout.view(tracked, job_id)
        if ours == theirs:
            continue
        explaining = [a for a in allowances if a.job is not None and a.job(job_id, ours, theirs)]
        if explaining:
            result.used.update(a.name for a in explaining)
            excused.add(job_id)
        else:
            result.differences.append(f"job {job_id}:\n  SAQ:     {ours}\n  tracked: {theirs}")

    for name in sorted(set(saq.keys) | set(tracked.keys)):
        if layout.owns(name, job_ids):
            continue
        ours_key, theirs_key = saq.keys.get(name), tracked.keys.get(name)
        ours_key, theirs_key = _excusing(ours_key, excused), _excusing(theirs_key, excused)
        if ours_key == theirs_key:
            continue
        explaining = [
            a for a in allowances if a.key is not None and a.key(name, ours_key, theirs_key)
        ]
        if explaining:
            result.used.update(a.name for a in explaining)
        else:
            result.differences.append(
                f"key {name}:\n  SAQ:     {ours_key}\n  tracked: {theirs_key}"
            )

    for name in sorted(set(saq.channels) | set(tracked.channels)):
        if not layout.owns(name, job_ids) and saq.channels.get(name) != tracked.channels.get(name):
            result.differences.append(
                f"channel {name}: SAQ {saq.channels.get(name)} tracked {tracked.channels.get(name)}"
            )

    for label in sorted(set(saq.observed) | set(tracked.observed)):
        ours_seen = _without(saq.observed.get(label), excused)
        theirs_seen = _without(tracked.observed.get(label), excused)
        if ours_seen != theirs_seen:
            result.differences.append(
                f"observed {label}: SAQ {ours_seen!r} tracked {theirs_seen!r}"
            )
    return result
