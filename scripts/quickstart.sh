#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a trained model: install the packages, build, and run
# experiments/quickstart.toml (about 10 minutes of training on 2 cores), recorded in results/workbench.db.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
./build/bin/workbench run experiments/quickstart.toml "$@"
echo
sqlite3 -header -column results/workbench.db < results/queries/runs.sql
