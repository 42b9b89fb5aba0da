#!/usr/bin/env bash
# Sets up the machine (scripts/setup.sh) and runs the demo: namespaces, einat
# in a router, real traffic, and its verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec tools/deno/node_modules/deno/deno run -A tests/demo.ts
