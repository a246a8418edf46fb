#!/usr/bin/env bash
# Question: what does telemetry cost? Three A/B comparisons of a 3-node cluster
# (scripts/bench-cluster-ab.sh: SET and GET, -P 1 and -P 16, alternating rounds, medians):
#   1. telemetry compiled out (--no-default-features) vs. the default build with no endpoint
#      (goal: under 2%);
#   2. no endpoint vs. export on at otlp-sampling-ratio 0.01 (goal: under 5%);
#   3. no endpoint vs. export on at ratio 1.0 (every operation traced).
# The export goes to a sink on loopback that accepts every OTLP post (python3), so the cost
# measured is the node's: spans, context on the wire, the exporter thread.
#
# Usage: scripts/bench-telemetry.sh   (builds both binaries in release mode under target/, or
# CARGO_TARGET_DIR)
# Environment: as bench-cluster-ab.sh (ROUNDS, REQUESTS, WORKLOADS, ...). Reports go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cargo build --release --quiet
cargo build --release --quiet --no-default-features --target-dir "$TARGET/no-telemetry"
WITH="$TARGET/release/hypercache"
WITHOUT="$TARGET/no-telemetry/release/hypercache"

SINK_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$SINK_PORT" <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT
ENDPOINT="http://127.0.0.1:$SINK_PORT"

echo "### 1. compiled out (A) vs. built in, no endpoint (B)" >&2
HC_A=$WITHOUT HC_B=$WITH scripts/bench-cluster-ab.sh
echo "### 2. no endpoint (A) vs. export at ratio 0.01 (B)" >&2
HC_A=$WITH HC_B=$WITH HC_B_ARGS="--otlp-endpoint $ENDPOINT --otlp-sampling-ratio 0.01" scripts/bench-cluster-ab.sh
echo "### 3. no endpoint (A) vs. export at ratio 1.0 (B)" >&2
HC_A=$WITH HC_B=$WITH HC_B_ARGS="--otlp-endpoint $ENDPOINT --otlp-sampling-ratio 1" scripts/bench-cluster-ab.sh
