"""Moved to `app.http_common.body` (the admin API decodes its bodies strictly too); kept so
that modules written against this name keep importing. Import from there."""

from app.http_common.body import StrictJSONBody, body_errors, not_json_reason

__all__ = ["StrictJSONBody", "body_errors", "not_json_reason"]
