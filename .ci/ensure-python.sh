#!/usr/bin/env bash
# Make sure the interpreter can build a virtual environment: Debian and Ubuntu ship venv as a separate package.
set -euo pipefail
py="${1:-python3}"
if ! command -v "$py" >/dev/null; then
  echo "error: $py not found; install Python 3.11 or newer" >&2; exit 1
fi
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "error: Culprit needs Python 3.11 or newer ($py is $("$py" -V 2>&1))" >&2; exit 1; }
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "Installing python${ver}-venv (needed to create .venv)…"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${ver}-venv"
fi
