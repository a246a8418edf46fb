#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
# Installs what the tests need when it is missing (redis-server and redis-tools, the reference
# for the differential suite and the clients the process tests drive), then checks formatting and
# lints, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_install+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || need_install+=(redis-tools)
# The observability tests read /metrics with the Prometheus client's own parsers.
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need_install+=(python3-prometheus-client)
# Real client libraries, unchanged (tests/libraries.rs): redis-py from Debian.
/usr/bin/python3 -c 'import redis' >/dev/null 2>&1 || need_install+=(python3-redis)
# pip, to fetch the pinned redis-py 5.2.1 below (client-side caching).
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need_install+=(python3-pip)
if [ ${#need_install[@]} -gt 0 ]; then
    echo "installing ${need_install[*]} (the tests compare against a real Redis)"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq redis-server redis-tools python3-prometheus-client python3-redis python3-pip >/dev/null
fi
# ioredis, pinned in tests/libs/package.json (tests/libraries.rs).
if [ ! -d tests/libs/node_modules/ioredis ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm is needed for the ioredis tests" >&2; exit 1; }
    (cd tests/libs && npm ci --no-audit --no-fund --silent)
fi
# redis-py 5.2.1 from PyPI, pinned, for its client-side caching (tests/libraries.rs); into the
# tree (tests/libs/pylib, ignored by git), not the system's Python.
if [ ! -d tests/libs/pylib/redis ]; then
    /usr/bin/python3 -m pip install --quiet --disable-pip-version-check \
        --target tests/libs/pylib redis==5.2.1 async-timeout==5.0.1
fi
# Debian starts a redis-server service on install; the tests start their own on free ports.
redis-server --version

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The build with telemetry compiled out (the baseline of its cost benchmark) stays buildable.
cargo clippy -p hypercache --no-default-features -- -D warnings
cargo test --workspace
