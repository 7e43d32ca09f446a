#!/usr/bin/env bash
# No tracked file over 1 MB, except real fixtures under tests/fixtures/ (the logs others wrote, kept as they came).
set -euo pipefail
cd "$(dirname "$0")/.."
big=$(git ls-files -z | grep -zv '^tests/fixtures/' | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk '$1 > 1048576 {print $2 " (" $1 " bytes)"}')
if [ -n "$big" ]; then
  echo "tracked files over 1 MB (keep data out of the repository, or put a real fixture under tests/fixtures/):" >&2
  echo "$big" >&2
  exit 1
fi
