#!/usr/bin/env bash
# Print the path of a working Python 3.10 interpreter, or explain and fail.
# Lava (lava-nc 0.10.0, lava-dl 0.6.0) installs and runs only on Python 3.10.
# Order: $PYTHON310 if set, python3.10 on PATH (if it actually runs), then
# pyenv's versions/3.10.* (newest first).
set -u
try() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; }
if [ -n "${PYTHON310:-}" ]; then
  if try "$PYTHON310"; then echo "$PYTHON310"; exit 0; fi
  echo "error: PYTHON310=$PYTHON310 is not a working Python 3.10" >&2; exit 1
fi
if command -v python3.10 >/dev/null 2>&1 && try python3.10; then command -v python3.10; exit 0; fi
root=""
if command -v pyenv >/dev/null 2>&1; then root=$(pyenv root 2>/dev/null); fi
[ -n "$root" ] || root="${PYENV_ROOT:-$HOME/.pyenv}"
for py in $(ls -d "$root"/versions/3.10.*/bin/python 2>/dev/null | sort -V -r); do
  if try "$py"; then echo "$py"; exit 0; fi
done
cat >&2 <<MSG
error: no Python 3.10 found (Lava 0.10 / lava-dl 0.6 support only Python 3.10).
Looked for: \$PYTHON310, python3.10 on PATH, $root/versions/3.10.*/bin/python.
Install one, e.g.  pyenv install 3.10  (or apt/brew python3.10), or point
PYTHON310=/path/to/python3.10 at it, then run the command again.
MSG
exit 1
