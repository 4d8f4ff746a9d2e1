"""Job ids made in SQL for rows the benchmarks write in bulk: a UUIDv7 that spells the row's
`created_at` to the microsecond, as the app makes them (app/jobs/ids.py), so that the
table's CHECK holds and lookups by id find the row's partition."""

from __future__ import annotations


def job_id_sql(at: str, unique: str) -> str:
    """SQL for the job id of a row created at `at` (a timestamptz expression); `unique` (an
    integer expression, < 16**15) tells apart rows of one microsecond."""
    micros = f"(extract(epoch FROM {at}) * 1000000)::int8"
    return (
        f"(lpad(to_hex({micros} / 1000), 12, '0') || '7' || lpad(to_hex({micros} % 1000), 3, '0')"
        f" || '8' || lpad(to_hex(({unique})::int8), 15, '0'))::uuid"
    )
