"""Client-side caching as an application turns it on with redis-py 5.2 (RESP3 and
`cache_config=CacheConfig()`), unchanged: cached reads are served from the client's memory, and
a write by another client (or through another node of a cluster) is never missed.

Usage: redis_py_csc.py PORT [OTHER_PORT]

Needs redis-py 5.2.1 on PYTHONPATH (scripts/test.sh installs it into tests/libs/pylib; Debian's
4.3.4 has no client-side caching). redis-py turns caching on only for a server whose HELLO says
7.4 or later: the node runs with `reported-redis-version 7.4.0`. OTHER_PORT (default PORT) is
where the other client writes. Prints "ok <name>" or "FAIL <name>: <reason>"; the exit status is
the number of failures.
"""
import sys
import time
import traceback

import redis
from redis.cache import CacheConfig

port = int(sys.argv[1])
other_port = int(sys.argv[2]) if len(sys.argv) > 2 else port
cached = redis.Redis(host="127.0.0.1", port=port, protocol=3, cache_config=CacheConfig())
writer = redis.Redis(host="127.0.0.1", port=other_port)
failures = 0


def scenario(fn):
    global failures
    writer.flushall()
    cached.get_cache().flush()
    try:
        fn()
        print("ok", fn.__name__)
    except Exception:
        failures += 1
        print("FAIL", fn.__name__ + ":", traceback.format_exc().strip().splitlines()[-1])
    return fn


def eventually(read, want, what):
    """The cached client sees `want` within 2 s (the invalidation travels one link hop)."""
    deadline = time.monotonic() + 2
    while True:
        got = read()
        if got == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {got!r}, want {want!r}")
        time.sleep(0.01)


@scenario
def reads_are_cached_and_invalidated():
    writer.set("page:home", "v1")
    assert cached.get("page:home") == b"v1"
    # Served from the client's cache: the cache holds the key now.
    assert cached.get_cache().size >= 1, "nothing cached"
    assert cached.get("page:home") == b"v1"
    writer.set("page:home", "v2")
    eventually(lambda: cached.get("page:home"), b"v2", "after another client's SET")
    writer.delete("page:home")
    eventually(lambda: cached.get("page:home"), None, "after another client's DEL")


@scenario
def many_keys_never_stale():
    for i in range(50):
        writer.set(f"item:{i}", "old")
    for i in range(50):
        assert cached.get(f"item:{i}") == b"old"
    writer.mset({f"item:{i}": "new" for i in range(50)})
    for i in range(50):
        eventually(lambda i=i: cached.get(f"item:{i}"), b"new", f"item:{i}")


@scenario
def own_writes_invalidate():
    cached.set("counter", 1)
    assert cached.get("counter") == b"1"
    cached.incr("counter")
    eventually(lambda: cached.get("counter"), b"2", "after its own INCR")


@scenario
def expiry_invalidates():
    writer.set("session", "alive", px=300)
    assert cached.get("session") == b"alive"
    eventually(lambda: cached.get("session"), None, "after the key expired")


@scenario
def flushall_invalidates_everything():
    writer.set("a", "1")
    writer.set("b", "2")
    assert cached.mget("a", "b") == [b"1", b"2"]
    assert cached.get("a") == b"1"
    writer.flushall()
    eventually(lambda: cached.get("a"), None, "after FLUSHALL")


sys.exit(failures)
