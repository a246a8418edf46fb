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
# Rails' cache store, phpredis with its session handler and go-redis, from Debian
# (tests/libraries.rs).
ruby -e 'require "redis"; require "active_support"' >/dev/null 2>&1 || need_install+=(ruby-activesupport)
php -r 'exit(extension_loaded("redis") ? 0 : 1);' >/dev/null 2>&1 || need_install+=(php-redis)
{ command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/gopkg.in/redis.v5 ]; } || need_install+=(golang-go)
if [ ${#need_install[@]} -gt 0 ]; then
    echo "installing ${need_install[*]} (the tests compare against a real Redis)"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq redis-server redis-tools python3-prometheus-client python3-redis python3-pip \
        ruby ruby-redis ruby-activesupport php-cli php-redis golang-go golang-gopkg-redis.v5-dev >/dev/null
fi
# ioredis, pinned in tests/libs/package.json (tests/libraries.rs).
# The Node libraries (ioredis, node-redis, connect-redis, cache-manager with Keyv,
# rate-limit-redis with express-rate-limit), pinned in tests/libs/package-lock.json.
if [ ! -d tests/libs/node_modules/rate-limit-redis ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm is needed for the Node library tests" >&2; exit 1; }
    (cd tests/libs && npm ci --no-audit --no-fund --silent)
fi
# The Python libraries from PyPI, pinned (tests/libraries.rs): redis-py 5.2.1 for client-side
# caching, and Django's cache, Flask-Caching, dogpile.cache, aiocache and limits on top of it
# (Flask-Caching 2.4.1 with cachelib 0.14.0: later cachelib wants redis-py 6). Into the tree
# (tests/libs/pylib, ignored by git), not the system's Python.
if [ ! -d tests/libs/pylib/limits ]; then
    /usr/bin/python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --target tests/libs/pylib redis==5.2.1 async-timeout==5.0.1 \
        django==5.2.19 asgiref==3.13.0 sqlparse==0.6.1 \
        flask==3.1.3 werkzeug==3.1.9 jinja2==3.1.6 markupsafe==3.0.4 itsdangerous==2.2.0 \
        click==8.5.1 blinker==1.9.0 flask-caching==2.4.1 cachelib==0.14.0 \
        dogpile.cache==1.5.0 decorator==5.3.1 stevedore==5.10.0 aiocache==0.12.3 \
        limits==5.8.0 deprecated==1.3.1 wrapt==2.5.2 packaging==26.4 typing-extensions==4.16.0
fi
# Debian starts a redis-server service on install; the tests start their own on free ports.
redis-server --version

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The build with telemetry compiled out (the baseline of its cost benchmark) stays buildable.
cargo clippy -p hypercache --no-default-features -- -D warnings
cargo test --workspace
