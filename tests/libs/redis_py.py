"""Cache scenarios as applications run them with redis-py, unchanged.

Usage: redis_py.py PORT [--tls CA CERT KEY]

Each scenario prints "ok <name>" or "FAIL <name>: <reason>"; the exit status is the number of
failures. `--tls` connects over TLS, trusting CA and presenting CERT and KEY.
"""
import sys
import threading
import traceback

import redis

port = int(sys.argv[1])
tls = {}
if "--tls" in sys.argv:
    ca, cert, key = sys.argv[sys.argv.index("--tls") + 1 : sys.argv.index("--tls") + 4]
    tls = dict(ssl=True, ssl_ca_certs=ca, ssl_certfile=cert, ssl_keyfile=key)
r = redis.Redis(host="127.0.0.1", port=port, **tls)
failures = 0


def scenario(fn):
    global failures
    r.flushall()
    try:
        fn()
        print("ok", fn.__name__)
    except Exception:
        failures += 1
        print("FAIL", fn.__name__ + ":", traceback.format_exc().strip().splitlines()[-1])
    return fn


@scenario
def strings_and_expiry():
    assert r.set("greeting", "hello", ex=100)
    assert r.get("greeting") == b"hello"
    assert 0 < r.ttl("greeting") <= 100
    assert r.mset({"a": 1, "b": 2})
    assert r.mget("a", "b", "missing") == [b"1", b"2", None]
    assert r.incr("a", 41) == 42
    assert r.delete("a", "b", "missing") == 2
    assert r.set("nx", 1, nx=True) and r.set("nx", 2, nx=True) is None


@scenario
def pipeline_is_a_transaction():
    # pipeline() is MULTI/EXEC by default: what Django's set_many and dogpile's set_multi use.
    p = r.pipeline()
    p.set("k1", "v1", ex=60)
    p.set("k2", "v2", ex=60)
    p.incr("counter")
    p.get("k1")
    assert p.execute() == [True, True, 1, b"v1"]
    assert r.get("k2") == b"v2"


@scenario
def pipeline_reports_errors_in_place():
    r.set("text", "abc")
    p = r.pipeline()
    p.set("n", 1)
    p.incr("text")
    p.incr("n")
    results = p.execute(raise_on_error=False)
    assert results[0] is True and results[2] == 2, results
    assert isinstance(results[1], redis.exceptions.ResponseError), results


@scenario
def pipeline_without_transaction():
    p = r.pipeline(transaction=False)
    for i in range(100):
        p.set(f"key:{i}", i)
    assert all(p.execute())
    assert r.get("key:99") == b"99"


@scenario
def watch_increments():
    # The optimistic-locking loop of redis-py's docs, from four threads at once.
    def incr(pipe):
        current = int(pipe.get("counter") or 0)
        pipe.multi()
        pipe.set("counter", current + 1)

    errors = []

    def work():
        try:
            for _ in range(50):
                r.transaction(incr, "counter")
        except Exception as e:  # reported by the scenario, not lost in a thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert int(r.get("counter")) == 200, r.get("counter")


@scenario
def lock_acquire_extend_release():
    lock = r.lock("resource", timeout=5)
    assert lock.acquire(blocking=False)
    assert not r.lock("resource", timeout=5).acquire(blocking=False)
    assert lock.extend(5)
    assert 5 < r.pttl("resource") <= 10000
    lock.release()
    assert r.get("resource") is None
    # timeout=None: the lock has no expiry, so only a release frees it.
    forever = r.lock("forever")
    assert forever.acquire(blocking=False)
    assert r.ttl("forever") == -1
    forever.release()
    assert r.lock("forever").acquire(blocking=False)


@scenario
def lock_release_of_a_lost_lock_raises():
    lock = r.lock("res", timeout=5)
    assert lock.acquire(blocking=False)
    r.set("res", "someone else")
    try:
        lock.release()
    except redis.exceptions.LockNotOwnedError:
        pass
    else:
        raise AssertionError("released a lock it did not own")


@scenario
def register_script_loads_on_noscript():
    r.script_flush()
    incr = r.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
    assert incr(keys=["n"], args=[5]) == 5
    assert incr(keys=["n"], args=[5]) == 10
    assert r.script_exists(incr.sha) == [True]


@scenario
def eval_with_conversions():
    assert r.eval("return {1, 'two', {ok='three'}}", 0) == [1, b"two", b"three"]
    try:
        r.eval("return redis.error_reply('MY failure')", 0)
    except redis.exceptions.ResponseError as e:
        assert "failure" in str(e)
    else:
        raise AssertionError("no error")


@scenario
def functions_load_and_fcall():
    # A library as an application ships it: loaded (REPLACE on every deploy), called with keys,
    # read-only calls through FCALL_RO, deleted.
    r.function_flush()
    code = (
        "#!lua name=ratelimit\n"
        "redis.register_function('hit', function(keys, args)\n"
        "  local n = redis.call('incr', keys[1])\n"
        "  if n == 1 then redis.call('pexpire', keys[1], args[1]) end\n"
        "  return n\n"
        "end)\n"
        "redis.register_function{function_name='hits', flags={'no-writes'},\n"
        "  callback=function(keys) return tonumber(redis.call('get', keys[1]) or '0') end}\n"
    )
    assert r.function_load(code) == b"ratelimit"
    assert r.function_load(code, replace=True) == b"ratelimit"
    assert r.fcall("hit", 1, "rl:{u1}", 60000) == 1
    assert r.fcall("hit", 1, "rl:{u1}", 60000) == 2
    assert r.fcall_ro("hits", 1, "rl:{u1}") == 2
    assert 0 < r.pttl("rl:{u1}") <= 60000
    names = [lib[b"library_name"] if isinstance(lib, dict) else lib[1] for lib in r.function_list()]
    assert names == [b"ratelimit"], names
    assert r.function_delete("ratelimit")
    try:
        r.fcall("hit", 1, "rl:{u1}", 60000)
    except redis.exceptions.ResponseError as e:
        assert "Function not found" in str(e)
    else:
        raise AssertionError("the deleted function ran")


@scenario
def pubsub_messages():
    # Cache invalidation over Pub/Sub: a listener on a channel and a pattern.
    p = r.pubsub()
    p.subscribe("invalidate")
    p.psubscribe("invalidate:*")
    for _ in range(2):
        assert p.get_message(timeout=2)["type"] in ("subscribe", "psubscribe")
    assert r.publish("invalidate", "user:1") == 1
    assert r.publish("invalidate:users", "user:2") == 1
    m = p.get_message(timeout=2)
    assert (m["type"], m["channel"], m["data"]) == ("message", b"invalidate", b"user:1"), m
    m = p.get_message(timeout=2)
    assert (m["type"], m["pattern"], m["data"]) == ("pmessage", b"invalidate:*", b"user:2"), m
    assert r.pubsub_numsub("invalidate") == [(b"invalidate", 1)]
    p.unsubscribe("invalidate")
    assert p.get_message(timeout=2)["type"] == "unsubscribe"
    assert r.publish("invalidate", "user:3") == 0
    p.close()


sys.exit(failures)
