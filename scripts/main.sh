#!/usr/bin/env bash
# The main job: installs everything, then runs Floorwatch on the embedded default
# (SQLite store, local Prefect server with its UI on 127.0.0.1:4200, the sandbox
# platform in chaos mode and the example inventory). Ctrl-C stops it all.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec floorwatch run "$@"
