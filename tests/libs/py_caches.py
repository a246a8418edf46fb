"""Python cache libraries as applications use them, unchanged, against a Redis-protocol server:
Django's cache, Flask-Caching, dogpile.cache, aiocache and limits (rate limiting).

Usage: py_caches.py PORT [--db N] [--no-lists]

Needs the pinned libraries on PYTHONPATH (installed into tests/libs/pylib with
`pip install --target`, on top of redis-py 5.2.1). Every library is pointed at database N
(default 0); with N other than 0 the scenarios also check, through a plain redis-py client, that
the keys are not in database 0 and are there after `SELECT N`. Each scenario prints
"ok <name>" or "FAIL <name>: <reason>"; the exit status is the number of failures.
`--no-lists` leaves out limits' moving window, whose script keeps its hits in a Redis list
(LPUSH, LINDEX, LTRIM): HyperCache stores strings only (docs/commands.md).
"""
import asyncio
import sys
import threading
import time
import traceback

import redis

port = int(sys.argv[1])
db = int(sys.argv[sys.argv.index("--db") + 1]) if "--db" in sys.argv[2:] else 0
no_lists = "--no-lists" in sys.argv[2:]
HOST = "127.0.0.1"
URL = f"redis://{HOST}:{port}/{db}"
# db 0, for FLUSHALL before each scenario and to look for keys that must not be there.
r0 = redis.Redis(host=HOST, port=port)
# The libraries' database, to look at what they wrote.
rdb = redis.Redis(host=HOST, port=port, db=db)
failures = 0


def scenario(fn):
    global failures
    r0.flushall()
    try:
        fn()
        print("ok", fn.__name__)
    except Exception:
        failures += 1
        print("FAIL", fn.__name__ + ":", traceback.format_exc().strip().splitlines()[-1])
    return fn


def in_own_db(*keys):
    """The keys are in the libraries' database, and (with --db N, N > 0) not in database 0,
    where a client sees them only after SELECT N."""
    for key in keys:
        assert rdb.exists(key), f"{key!r} missing from db {db}"
    if db == 0:
        return
    for key in keys:
        assert not r0.exists(key), f"{key!r} is visible in db 0"
    c = redis.Redis(host=HOST, port=port, single_connection_client=True)
    try:
        assert c.select(db) is True
        for key in keys:
            assert c.exists(key), f"{key!r} not visible after SELECT {db}"
    finally:
        c.close()


# --- Django -------------------------------------------------------------------------------

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    CACHES={
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": URL,
            "TIMEOUT": 300,
        }
    },
    USE_TZ=True,
)
django.setup()
from django.core.cache import cache as django_cache  # noqa: E402


@scenario
def django_get_set_add_delete():
    c = django_cache
    c.set("user:1", {"name": "Ada", "roles": ["admin"]})
    assert c.get("user:1") == {"name": "Ada", "roles": ["admin"]}
    assert c.get("missing") is None and c.get("missing", "fallback") == "fallback"
    assert c.has_key("user:1") and not c.has_key("missing")
    # add only writes an absent key.
    assert not c.add("user:1", "other")
    assert c.add("user:2", "Grace")
    assert c.get("user:1")["name"] == "Ada" and c.get("user:2") == "Grace"
    # Integers are stored unpickled, so INCRBY works on them.
    c.set("visits", 1)
    assert rdb.get(":1:visits") == b"1"
    assert c.incr("visits") == 2 and c.incr("visits", 10) == 12 and c.decr("visits", 2) == 10
    assert c.get("visits") == 10
    try:
        c.incr("no-such-counter")
    except ValueError:
        pass
    else:
        raise AssertionError("incr of a missing key did not raise")
    calls = []

    def compute():
        calls.append(1)
        return "expensive"

    assert c.get_or_set("report", compute) == "expensive"
    assert c.get_or_set("report", compute) == "expensive"
    assert len(calls) == 1, calls
    in_own_db(":1:user:1", ":1:visits", ":1:report")
    assert c.delete("user:1") is True and c.delete("user:1") is False
    assert c.get("user:1") is None
    # Versions are separate keys.
    c.set("page", "v1", version=1)
    c.set("page", "v2", version=2)
    assert c.get("page", version=1) == "v1" and c.get("page", version=2) == "v2"


@scenario
def django_many_and_clear():
    c = django_cache
    # set_many: MSET then one EXPIRE per key, in a MULTI/EXEC pipeline.
    assert c.set_many({"a": 1, "b": "two", "c": [3]}, timeout=60) == []
    assert c.get_many(["a", "b", "c", "missing"]) == {"a": 1, "b": "two", "c": [3]}
    for key in ("a", "b", "c"):
        assert 0 < rdb.ttl(f":1:{key}") <= 60, (key, rdb.ttl(f":1:{key}"))
    in_own_db(":1:a", ":1:b", ":1:c")
    c.delete_many(["a", "b"])
    assert c.get_many(["a", "b", "c"]) == {"c": [3]}
    if db != 0:
        r0.set("db0-only", "stays")
    # clear() is FLUSHDB: everything of this database goes, other databases keep theirs.
    assert c.clear() is True
    assert c.get("c") is None and rdb.dbsize() == 0
    if db != 0:
        assert r0.get("db0-only") == b"stays"


@scenario
def django_timeouts():
    c = django_cache
    c.set("short", "x", timeout=1)
    c.set("touched", "y", timeout=60)
    assert c.touch("touched", 1)
    assert not c.touch("missing", 1)
    c.set("forever", "z", timeout=None)
    assert rdb.ttl(":1:forever") == -1
    c.set("persisted", "w", timeout=1)
    assert c.touch("persisted", None)  # PERSIST
    assert rdb.ttl(":1:persisted") == -1
    assert c.add("added", "v", timeout=1)
    c.set("default", "d")  # TIMEOUT 300
    assert 290 < rdb.ttl(":1:default") <= 300
    c.set("gone", "g", timeout=60)
    c.set("gone", "g", timeout=0)  # 0 deletes
    assert not c.has_key("gone")
    time.sleep(1.5)
    for key in ("short", "touched", "added"):
        assert c.get(key) is None, key
    assert c.get("forever") == "z" and c.get("persisted") == "w"


# --- Flask-Caching ------------------------------------------------------------------------

from flask import Flask  # noqa: E402
from flask_caching import Cache as FlaskCache  # noqa: E402

flask_app = Flask("py_caches")
flask_cache = FlaskCache(
    flask_app,
    config={
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_HOST": HOST,
        "CACHE_REDIS_PORT": port,
        "CACHE_REDIS_DB": db,
        "CACHE_DEFAULT_TIMEOUT": 60,
    },
)
report_renders = []


@flask_app.route("/report")
@flask_cache.cached(timeout=60)
def report_view():
    report_renders.append(1)
    return f"report #{len(report_renders)}"


@scenario
def flask_memoize_and_cached_view():
    calls = []

    @flask_cache.memoize(timeout=60)
    def price(item):
        calls.append(item)
        return {"item": item, "price": len(calls)}

    with flask_app.app_context():
        first = price("apple")
        assert price("apple") == first and calls == ["apple"], calls
        price("pear")
        assert calls == ["apple", "pear"], calls
        flask_cache.delete_memoized(price, "apple")
        assert price("apple") != first and calls == ["apple", "pear", "apple"], calls
        assert price("pear") and len(calls) == 3
        flask_cache.delete_memoized(price)  # every argument
        price("pear")
        assert len(calls) == 4, calls
    client = flask_app.test_client()
    report_renders.clear()
    assert client.get("/report").data == b"report #1"
    assert client.get("/report").data == b"report #1"
    assert len(report_renders) == 1
    key = "flask_cache_view//report"
    in_own_db(key)
    assert 0 < rdb.ttl(key) <= 60
    with flask_app.app_context():
        assert flask_cache.delete("view//report")
    assert client.get("/report").data == b"report #2"


@scenario
def flask_set_many_inc_and_timeouts():
    with flask_app.app_context():
        c = flask_cache
        assert c.set("user", {"id": 7})
        assert c.get("user") == {"id": 7}
        assert c.add("user", "other") is False and c.add("fresh", 1)
        assert c.has("user") and not c.has("missing")
        assert c.set_many({"a": "A", "b": ["B"], "c": 3}) == ["a", "b", "c"]
        assert c.get_many("a", "b", "c", "missing") == ["A", ["B"], 3, None]
        assert c.get_dict("a", "b") == {"a": "A", "b": ["B"]}
        assert c.delete_many("a", "b") == ["a", "b"]
        assert c.get("a") is None and c.get("c") == 3
        assert c.delete("c") and not c.delete("c")
        assert c.unlink("user") == 1 and c.get("user") is None
        # Counters: INCRBY on the backend.
        backend = c.cache
        assert backend.inc("hits") == 1 and backend.inc("hits", 4) == 5
        assert backend.dec("hits", 2) == 3 and c.get("hits") == 3
        in_own_db("flask_cache_hits", "flask_cache_fresh")
        c.set("short", "x", timeout=1)
        c.set_many({"s1": 1, "s2": 2}, timeout=1)
        c.set("forever", "y", timeout=0)  # 0: no expiry
        assert rdb.ttl("flask_cache_forever") == -1
        assert 0 < rdb.ttl("flask_cache_s1") <= 1
        time.sleep(1.5)
        assert c.get("short") is None and c.get_many("s1", "s2") == [None, None]
        assert c.get("forever") == "y"
        # clear() with a key prefix deletes the prefixed keys only (KEYS prefix*, DEL).
        rdb.set("not-flask", "kept")
        assert c.clear()
        assert c.get("forever") is None and c.get("hits") is None
        assert rdb.get("not-flask") == b"kept"


# --- dogpile.cache ------------------------------------------------------------------------

from dogpile.cache import make_region  # noqa: E402
from dogpile.cache.api import NO_VALUE  # noqa: E402


def dogpile_region(redis_expiration_time):
    return make_region().configure(
        "dogpile.cache.redis",
        expiration_time=60,
        arguments={
            "host": HOST,
            "port": port,
            "db": db,
            "distributed_lock": True,
            "thread_local_lock": False,
            "lock_timeout": 10,
            "redis_expiration_time": redis_expiration_time,
        },
    )


@scenario
def dogpile_get_or_create_with_distributed_lock():
    region = dogpile_region(60)
    calls = []
    lock = threading.Lock()

    def slow_creator():
        with lock:
            calls.append(1)
        time.sleep(0.3)
        return {"rows": [1, 2, 3]}

    assert region.get("report") is NO_VALUE
    results, errors = [], []

    def worker():
        try:
            results.append(region.get_or_create("report", slow_creator))
        except Exception as e:  # reported by the scenario, not lost in a thread
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # One creator ran; the others waited on the Redis lock and read its value.
    assert len(calls) == 1, calls
    assert results == [{"rows": [1, 2, 3]}] * 4, results
    assert region.get_or_create("report", slow_creator) == {"rows": [1, 2, 3]}
    assert len(calls) == 1
    assert not rdb.exists("_lockreport"), "the lock was not released"
    assert 0 < rdb.ttl("report") <= 60
    in_own_db("report")

    loads = []

    @region.cache_on_arguments()
    def load_user(user_id):
        loads.append(user_id)
        return {"id": user_id}

    assert load_user(1) == {"id": 1} and load_user(1) == {"id": 1} and loads == [1]
    load_user.invalidate(1)
    assert load_user(1) == {"id": 1} and loads == [1, 1]


@scenario
def dogpile_multi_and_redis_expiration():
    region = dogpile_region(1)
    region.set_multi({"a": 1, "b": "two", "c": [3]})  # SETEX each, in a MULTI/EXEC pipeline
    assert region.get_multi(["a", "b", "c", "missing"]) == [1, "two", [3], NO_VALUE]
    assert 0 < rdb.ttl("a") <= 1
    in_own_db("a", "b", "c")
    region.delete("a")
    assert region.get("a") is NO_VALUE
    region.delete_multi(["b"])
    assert region.get_multi(["b", "c"]) == [NO_VALUE, [3]]
    made = []
    region.set("session", "s1")
    assert region.get_or_create("session", lambda: made.append(1) or "new") == "s1"
    created = region.get_or_create_multi(["x", "y"], lambda *keys: [k.upper() for k in keys])
    assert created == ["X", "Y"] and region.get("y") == "Y"
    time.sleep(1.5)
    # Redis expired them (redis_expiration_time=1), well before dogpile's own 60 s.
    assert region.get_multi(["c", "session", "x", "y"]) == [NO_VALUE] * 4
    assert region.get_or_create("session", lambda: made.append(1) or "new") == "new"
    assert made == [1]


# --- aiocache -----------------------------------------------------------------------------

from aiocache import Cache as AioCache  # noqa: E402
from aiocache.lock import OptimisticLock, OptimisticLockError, RedLock  # noqa: E402


def aio_cache():
    return AioCache(AioCache.REDIS, endpoint=HOST, port=port, db=db, namespace="app")


@scenario
def aiocache_set_get_multi_ttl():
    async def run():
        c = aio_cache()
        try:
            assert await c.set("user", {"id": 1, "name": "Ada"})
            assert await c.get("user") == {"id": 1, "name": "Ada"}
            assert await c.get("missing") is None
            assert await c.get("missing", default="d") == "d"
            assert await c.add("new", "v")
            try:
                await c.add("new", "again")
            except ValueError:
                pass
            else:
                raise AssertionError("add over an existing key did not raise")
            assert await c.multi_set([("a", 1), ("b", [2]), ("c", "three")], ttl=1)
            assert await c.multi_get(["a", "b", "c", "missing"]) == [1, [2], "three", None]
            assert 0 < rdb.ttl("app:a") <= 1
            assert await c.exists("a") and not await c.exists("missing")
            assert await c.increment("hits") == 1 and await c.increment("hits", 5) == 6
            assert await c.increment("hits", -2) == 4 and await c.get("hits") == 4
            try:
                await c.increment("user")
            except TypeError:
                pass
            else:
                raise AssertionError("increment of a non-integer did not raise")
            in_own_db("app:user", "app:hits")
            assert await c.set("flash", "x", ttl=0.5)  # PSETEX
            assert 0 < rdb.pttl("app:flash") <= 500
            assert await c.set("session", "s", ttl=60)
            assert await c.expire("session", 1)
            assert await c.expire("hits", 60) and 0 < rdb.ttl("app:hits") <= 60
            assert await c.expire("hits", 0)  # PERSIST
            assert rdb.ttl("app:hits") == -1
            assert await c.delete("new") == 1 and await c.delete("new") == 0
            await asyncio.sleep(1.5)
            for key in ("a", "b", "c", "flash", "session"):
                assert not await c.exists(key), key
            assert await c.get("hits") == 4
            # clear() of a namespace: KEYS app:*, then DEL.
            rdb.set("other:key", "kept")
            assert await c.clear(namespace="app")
            assert not await c.exists("user") and rdb.get("other:key") == b"kept"
        finally:
            await c.close()

    asyncio.run(run())


@scenario
def aiocache_redlock_and_optimistic_lock():
    async def run():
        c = aio_cache()
        try:
            computed = []
            computing = asyncio.Event()

            async def cached_report():
                async with RedLock(c, "report", lease=5):
                    value = await c.get("report")
                    if value is not None:
                        return value
                    computed.append(1)
                    computing.set()
                    await asyncio.sleep(0.3)
                    await c.set("report", "fresh report")
                    return "fresh report"

            # The first request computes under the lock; two more come meanwhile and wait.
            # (They start once it holds the lock: aiocache lets a request that lost the SET NX
            # race before the winner's local event exists go ahead without waiting.)
            first = asyncio.ensure_future(cached_report())
            waiting = asyncio.ensure_future(computing.wait())
            await asyncio.wait([first, waiting], timeout=5, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if not computing.is_set():
                await first  # its error, if it failed
                raise AssertionError("the first request did not start computing")
            results = await asyncio.gather(first, cached_report(), cached_report())
            assert results == ["fresh report"] * 3, results
            assert computed == [1], computed
            assert not await c.exists("report-lock"), "the lock was not released"
            # A lock held by another process: wait out the lease, and never delete its lock.
            rdb.set("app:job-lock", "another-process", px=5000)
            started = time.monotonic()
            async with RedLock(c, "job", lease=0.3):
                pass
            assert time.monotonic() - started < 2
            assert rdb.get("app:job-lock") == b"another-process"
            # OptimisticLock: compare-and-set by a script.
            await c.set("balance", 100)
            async with OptimisticLock(c, "balance") as lock:
                assert await lock.cas(150)
            assert await c.get("balance") == 150
            try:
                async with OptimisticLock(c, "balance") as lock:
                    await c.set("balance", 999)  # someone else writes meanwhile
                    await lock.cas(200)
            except OptimisticLockError:
                pass
            else:
                raise AssertionError("cas over a changed value succeeded")
            assert await c.get("balance") == 999
            in_own_db("app:balance")
        finally:
            await c.close()

    asyncio.run(run())


# --- limits -------------------------------------------------------------------------------

from limits import parse  # noqa: E402
from limits.storage import storage_from_string  # noqa: E402
from limits.strategies import (  # noqa: E402
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)


@scenario
def limits_fixed_window():
    storage = storage_from_string(URL)
    limiter = FixedWindowRateLimiter(storage)
    per_minute = parse("3/minute")
    assert all(limiter.hit(per_minute, "user", "alice") for _ in range(3))
    assert not limiter.hit(per_minute, "user", "alice")
    assert not limiter.test(per_minute, "user", "alice")
    assert limiter.hit(per_minute, "user", "bob")  # a separate counter
    stats = limiter.get_window_stats(per_minute, "user", "alice")
    assert stats.remaining == 0 and time.time() < stats.reset_time <= time.time() + 61, stats
    assert limiter.get_window_stats(per_minute, "user", "bob").remaining == 2
    in_own_db(f"LIMITS:{per_minute.key_for('user', 'alice')}")
    limiter.clear(per_minute, "user", "alice")
    assert limiter.test(per_minute, "user", "alice")
    assert limiter.hit(per_minute, "user", "alice", cost=3)
    assert not limiter.hit(per_minute, "user", "alice")
    # The window ends with the key's expiry.
    per_second = parse("2/second")
    assert limiter.hit(per_second, "api") and limiter.hit(per_second, "api")
    assert not limiter.hit(per_second, "api")
    time.sleep(1.1)
    assert limiter.hit(per_second, "api")


def limits_moving_window():
    storage = storage_from_string(URL)
    limiter = MovingWindowRateLimiter(storage)
    per_minute = parse("3/minute")
    assert limiter.hit(per_minute, "login", "alice", cost=2)
    assert limiter.test(per_minute, "login", "alice")
    assert limiter.get_window_stats(per_minute, "login", "alice").remaining == 1
    assert limiter.hit(per_minute, "login", "alice")
    assert not limiter.hit(per_minute, "login", "alice")
    assert not limiter.test(per_minute, "login", "alice")
    stats = limiter.get_window_stats(per_minute, "login", "alice")
    assert stats.remaining == 0 and time.time() < stats.reset_time <= time.time() + 61, stats
    assert not limiter.hit(per_minute, "login", "bob", cost=4)  # more than the limit
    assert limiter.hit(per_minute, "login", "bob", cost=3)
    in_own_db(f"LIMITS:{per_minute.key_for('login', 'alice')}")
    limiter.clear(per_minute, "login", "alice")
    assert limiter.get_window_stats(per_minute, "login", "alice").remaining == 3
    assert limiter.hit(per_minute, "login", "alice")
    # reset(): a script deletes every LIMITS:* key (KEYS inside Lua).
    rdb.set("not-a-limit", 1)
    assert storage.reset() == 2
    assert rdb.keys("LIMITS:*") == [] and rdb.get("not-a-limit") == b"1"
    assert limiter.get_window_stats(per_minute, "login", "bob").remaining == 3


if not no_lists:
    scenario(limits_moving_window)


@scenario
def limits_sliding_window_counter():
    storage = storage_from_string(URL)
    limiter = SlidingWindowCounterRateLimiter(storage)
    per_minute = parse("3/minute")
    assert all(limiter.hit(per_minute, "search", "alice") for _ in range(3))
    assert not limiter.hit(per_minute, "search", "alice")
    assert not limiter.test(per_minute, "search", "alice")
    before = time.time()
    stats = limiter.get_window_stats(per_minute, "search", "alice")
    # (limits computes the reset as a remainder: right at a window's edge it is "now".)
    assert stats.remaining == 0 and before <= stats.reset_time <= time.time() + 61, stats
    key = per_minute.key_for("search", "alice")
    in_own_db(f"LIMITS:{{{key}}}")
    limiter.clear(per_minute, "search", "alice")
    assert limiter.get_window_stats(per_minute, "search", "alice").remaining == 3
    assert limiter.hit(per_minute, "search", "alice")
    # After a 1 s window the previous window still weighs: some hits pass, not all 3.
    per_second = parse("3/second")
    assert all(limiter.hit(per_second, "api") for _ in range(3))
    assert not limiter.hit(per_second, "api")
    time.sleep(1.1)
    allowed = sum(limiter.hit(per_second, "api") for _ in range(3))
    assert 1 <= allowed < 3, allowed


sys.exit(failures)
