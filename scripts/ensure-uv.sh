#!/usr/bin/env bash
# Print the path of a usable uv, installing it with pip for this user when it is missing.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
for candidate in "$HOME/.local/bin/uv"; do
  [ -x "$candidate" ] && { echo "$candidate"; exit 0; }
done
echo "uv not found: installing it with pip" >&2
python3 -m pip install --quiet --user uv >&2 2>/dev/null \
  || python3 -m pip install --quiet --user --break-system-packages uv >&2 2>/dev/null \
  || python3 -m pip install --quiet uv >&2
command -v uv >/dev/null 2>&1 && { command -v uv; exit 0; }
[ -x "$HOME/.local/bin/uv" ] && { echo "$HOME/.local/bin/uv"; exit 0; }
echo "could not install uv: see https://docs.astral.sh/uv/ and rerun" >&2
exit 1
