#!/usr/bin/env bash
# Runs N more seeds of the randomized cluster simulation (5 nodes, RF 3, kills, restarts,
# isolation, drops, delays; see cluster/src/simnode.rs), starting after the 200 the suite runs.
#   scripts/sim.sh 1000            # seeds 200..1199
#   SIM_FROM=4242 scripts/sim.sh 1 # replay one seed
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000}"
export SIM_SEEDS="$n" SIM_FROM="${SIM_FROM:-200}"
exec cargo test --release -p hypercache-cluster --lib randomized_runs_keep_every_acknowledged_write -- --nocapture
