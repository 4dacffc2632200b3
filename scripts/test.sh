#!/usr/bin/env bash
# The test command: installs everything, then runs lint, types and the whole suite
# (unit tests and integration tests against real servers on loopback).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
export DO_NOT_TRACK=1  # no client analytics calls from test runs on a closed network
ruff check .
mypy
exec pytest "$@"
