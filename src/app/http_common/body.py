"""Request bodies decoded strictly, with the types and limits the OpenAPI schema states (a leaf).

Litestar converts a JSON body leniently (`strict=False`): `"fail": 0` became `False` and
`"sleep_seconds": "2"` became `2.0`, values the schema calls invalid. `StrictJSONBody` is a
DTO that decodes the bytes straight into the struct with msgspec's strict rules: one pass,
cheaper than Litestar's two (JSON to a dict, then the dict to the struct).

PostgreSQL's text and jsonb cannot hold U+0000, so a body with a NUL in any string (a value
or a field name, at any depth) is refused here, once for every body, naming where it is:
before, each field had to refuse it itself, and one that did not (a key's `name`) made a 500.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import msgspec
from litestar import Request
from litestar.dto import MsgspecDTO
from litestar.exceptions import ValidationException
from litestar.openapi.spec import Operation, Reference, RequestBody, Schema
from litestar.params import BodyKwarg
from litestar.typing import FieldDefinition

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

Struct = TypeVar("Struct", bound=msgspec.Struct)

# A high surrogate escape not followed by a low one: msgspec calls it "truncated" input.
_UNPAIRED_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
# JSON can carry U+0000 only as this escape (a raw control character is not JSON).
_NUL_ESCAPE = b"\\u0000"
WITHOUT_NUL_MESSAGE = (
    "Expected `str` without NUL characters (\\u0000), which PostgreSQL cannot store"
)


def nul_at(value: Any, path: str = "") -> str | None:
    """Where the first string holding U+0000 is (a value, or a field name), as msgspec names
    a place (`auth.scopes[0]`); None if there is none."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here.replace("\x00", "\\u0000")
            if (found := nul_at(item, here)) is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_at(item, f"{path}[{index}]")) is not None:
                return found
    return None


def body_errors(exc: msgspec.ValidationError) -> list[dict[str, Any]]:
    """Litestar's validation `extra` for msgspec's one error: message, key, source."""
    message, _, where = str(exc).partition(" - at `$")
    error: dict[str, Any] = {"message": message, "source": "body"}
    if key := where.rstrip("`").lstrip("."):
        error["key"] = key
    return [error]


def not_json_reason(body: bytes, exc: msgspec.DecodeError) -> str:
    if match := _UNPAIRED_SURROGATE.search(body):
        escape = match.group().decode()
        return f"unpaired UTF-16 surrogate escape `{escape}` (a string must be valid Unicode)"
    return str(exc)


class StrictJSONBody(MsgspecDTO[Struct], Generic[Struct]):
    """`dto=StrictJSONBody[Model], return_dto=None` on a handler whose `data` is a `Model`."""

    _decoder: ClassVar[msgspec.json.Decoder[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "model_type" in cls.__dict__:  # StrictJSONBody[Model], not the generic class
            cls._decoder = msgspec.json.Decoder(cls.model_type)

    def decode_bytes(self, value: bytes) -> Struct:
        if _NUL_ESCAPE in value:  # rare: only then is the body read a second time
            self._refuse_nul(value)
        try:
            decoded: Struct = self._decoder.decode(value)
        except msgspec.ValidationError as exc:
            raise self._invalid(body_errors(exc)) from None
        except msgspec.DecodeError as exc:
            reason = not_json_reason(value, exc)
            raise ValidationException(detail=f"request body is not valid JSON: {reason}") from None
        except RecursionError:
            raise ValidationException(
                detail="request body is not valid JSON: it nests too deeply"
            ) from None
        return decoded

    def _refuse_nul(self, value: bytes) -> None:
        try:
            document = msgspec.json.decode(value)
        except (msgspec.DecodeError, RecursionError):
            return  # not JSON: the decoder says so
        try:
            where = nul_at(document)
        except RecursionError:
            return  # nested past any field: the decoder refuses it
        if where is not None:
            error: dict[str, Any] = {"message": WITHOUT_NUL_MESSAGE, "source": "body"}
            raise self._invalid([{**error, "key": where} if where else error])

    def _invalid(self, extra: list[dict[str, Any]]) -> ValidationException:
        request = self.asgi_connection
        method = request.method if isinstance(request, Request) else "websocket"
        return ValidationException(
            detail=f"Validation failed for {method} {request.url.path}", extra=extra
        )

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        """The model's own schema, `additionalProperties: false` when it forbids unknown fields,
        with the examples of the handler's `Body(examples=...)`."""
        model = FieldDefinition.from_annotation(cls.model_type)
        reference = schema_creator.for_field_definition(model)
        schema = schema_creator.schema_registry.get_schema_for_field_definition(model)
        info = msgspec.inspect.type_info(cls.model_type)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        # Rules between fields that the struct's types cannot state (e.g. `if`/`then`).
        refine = getattr(cls.model_type, "refine_schema", None)
        if callable(refine):
            refine(schema)
        body = field_definition.kwarg_definition
        if isinstance(body, BodyKwarg) and body.examples:
            schema.examples = [example.value for example in body.examples]
        return reference


@dataclass
class OptionalBody(Operation):
    """`operation_class=OptionalBody` on a handler whose body may be left out: Litestar marks
    every request body required in the schema."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False
