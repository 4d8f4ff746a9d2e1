"""Moved to `app.http_common.responses` (the admin and operations routes need them too);
kept so that modules written against this name keep importing. Import from there."""

from app.http_common.responses import (
    ACCESS_DENIED,
    DATABASE_DOWN,
    ErrorBody,
    errors,
    string_only,
)

__all__ = ["ACCESS_DENIED", "DATABASE_DOWN", "ErrorBody", "errors", "string_only"]
