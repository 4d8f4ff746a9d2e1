"""Bodies of the operator's actions: retry one job, cancel or retry many (by ids or a filter)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import msgspec
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

from app.http_common.body import StrictJSONBody
from app.jobs.control.actions import BULK_LIMIT
from app.jobs.http.shared.schemas import TASK_NAME_MAX, WITHOUT_NUL
from app.jobs.lifecycle import JobStatus
from app.jobs.reads.search import JobSearch

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

UNSET = msgspec.UNSET
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=TASK_NAME_MAX, pattern=WITHOUT_NUL)]
_Moment = Annotated[datetime, msgspec.Meta(tz=True)]


class JobFilter(msgspec.Struct, forbid_unknown_fields=True):
    """The job list's filters (all given must match). The window ends at `created_before`,
    or at the moment the call is made: jobs created later are never part of it."""

    status: Annotated[list[JobStatus], msgspec.Meta(min_length=1)] | msgspec.UnsetType = UNSET
    task_name: _Text | msgspec.UnsetType = UNSET
    queue: _Text | msgspec.UnsetType = UNSET
    user_id: UUID | msgspec.UnsetType = UNSET
    project_id: UUID | msgspec.UnsetType = UNSET
    worker_id: _Text | msgspec.UnsetType = UNSET
    created_after: _Moment | msgspec.UnsetType = UNSET
    created_before: _Moment | msgspec.UnsetType = UNSET
    has_error: bool | msgspec.UnsetType = UNSET

    def search(self, *, until: datetime, project_id: UUID | None) -> JobSearch:
        """The list's search for this filter, its window closed at `until` at the latest."""

        def given(value: Any) -> tuple[Any, ...]:
            return () if value is UNSET else (value,)

        return JobSearch(
            statuses=None if self.status is UNSET else frozenset(self.status),
            task_names=given(self.task_name),
            queues=given(self.queue),
            worker_ids=given(self.worker_id),
            user_ids=given(self.user_id),
            project_ids=() if project_id is None else (project_id,),
            created_after=None if self.created_after is UNSET else self.created_after,
            created_before=until,
            has_error=None if self.has_error is UNSET else self.has_error,
        )

    def window_end(self, now: datetime) -> datetime:
        return now if self.created_before is UNSET else min(self.created_before, now)


class BulkRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /api/v1/jobs/bulk/cancel` and `/bulk/retry`: `job_ids` or `filter`."""

    job_ids: (
        Annotated[list[UUID], msgspec.Meta(min_length=1, max_length=BULK_LIMIT)] | msgspec.UnsetType
    ) = UNSET
    filter: JobFilter | msgspec.UnsetType = UNSET

    @staticmethod
    def refine_schema(schema: Schema) -> None:
        """Exactly one of the two."""
        schema.min_properties = 1
        schema.max_properties = 1


class BulkBody(StrictJSONBody[BulkRequest]):
    """`BulkRequest` decoded strictly; the filter's schema also refuses unknown keys."""

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        reference = super().create_openapi_schema(field_definition, handler_id, schema_creator)
        schema_creator.for_field_definition(FieldDefinition.from_annotation(JobFilter))
        registry = schema_creator.schema_registry
        registry.get_schema_for_field_definition(
            FieldDefinition.from_annotation(JobFilter)
        ).additional_properties = False
        return reference


BULK_BY_IDS_EXAMPLE = {"job_ids": ["0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f"]}
BULK_BY_FILTER_EXAMPLE = {
    "filter": {
        "status": ["failed"],
        "task_name": "trigger_test",
        "created_after": "2026-11-30T10:00:00Z",
    }
}


class JobRetryAccepted(msgspec.Struct):
    message: str
    job_id: UUID


class BulkResult(msgspec.Struct):
    """What a bulk call did. `job_ids` lists the jobs acted on."""

    action: str  # cancel or retry
    matched: int  # jobs named that exist, or that the filter matched (up to 1,000)
    acted_on: int
    skipped: int  # in a status the action does not apply to (or no longer on the queue)
    not_found: int  # job_ids with no job (always 0 for a filter)
    more_remain: bool  # a filter matched more than 1,000 jobs: call again for the next ones
    job_ids: list[UUID]
    # A filter's window end, fixed at the call: repeat the call with it to go on.
    created_before: datetime | None = None


BULK_RESULT_EXAMPLE = {
    "action": "retry",
    "matched": 2,
    "acted_on": 1,
    "skipped": 1,
    "not_found": 0,
    "more_remain": False,
    "job_ids": ["0193a1f2-5b7c-7d3e-9f10-2a3b4c5d6e7f"],
    "created_before": "2026-11-30T11:00:00Z",
}
