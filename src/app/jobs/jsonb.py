"""Values written to `jsonb` columns as JSON text."""

from __future__ import annotations

import re
from typing import Any

import msgspec

_JSON = msgspec.json.Encoder(enc_hook=str)  # what JSON cannot say (a UUID, a date) as text
# A NUL character, escaped (an even run of backslashes before it is not its escape).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def to_json(value: Any) -> str:
    encoded = _JSON.encode(value).decode()
    # jsonb cannot hold NUL; one such character must not block every write.
    return _JSON_NUL.sub(r"\1\\ufffd", encoded) if "\\u0000" in encoded else encoded
