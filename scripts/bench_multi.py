"""Load generator for transactions (used by bench-scripting.sh and bench-cluster-ab.sh).

Usage: bench_multi.py PORT TRANSACTIONS CONNECTIONS PIPELINE [SHAPE]
SHAPE is `sets` (the default: MULTI, 10 SETs of 10 keys, EXEC), `one-key` (MULTI, SET k, EXPIRE
k 60, GET k, EXEC: a transaction on one key, which a cluster runs as one operation of the key),
`slot` (MULTI, SET {t}a, SET {t}b, GET {t}a, EXEC: two keys of one slot, one round in a cluster)
or `script` (EVAL of a script that sets {t}a and {t}b and returns {t}a: a script with two keys
of one slot, which a cluster runs at the slot's coordinator). Each connection has its own keys.
Each connection writes PIPELINE transactions at once (pre-encoded bytes) and reads exactly the
bytes their replies take; prints transactions per second. The replies are checked byte for byte.
"""
import socket
import sys
import threading
import time

port, total, conns, depth = (int(a) for a in sys.argv[1:5])
shape = sys.argv[5] if len(sys.argv) > 5 else "sets"
if shape not in ("sets", "one-key", "slot", "script"):
    sys.exit("SHAPE must be sets, one-key, slot or script")

SCRIPT = b"redis.call('set', KEYS[1], ARGV[1]) redis.call('set', KEYS[2], ARGV[1]) return redis.call('get', KEYS[1])"


def encode(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def transaction(c, i):
    if shape == "script":
        tag = b"{tx:%d:%d}" % (c, i % 10000)
        return encode(b"EVAL", SCRIPT, b"2", tag + b"a", tag + b"b", b"x" * 16)
    cmds = [encode(b"MULTI")]
    if shape == "slot":
        tag = b"{tx:%d:%d}" % (c, i % 10000)
        cmds += [encode(b"SET", tag + b"a", b"x" * 16), encode(b"SET", tag + b"b", b"x" * 16)]
        cmds.append(encode(b"GET", tag + b"a"))
    elif shape == "one-key":
        key = b"tx:%d:%d" % (c, i % 10000)
        cmds += [encode(b"SET", key, b"x" * 16), encode(b"EXPIRE", key, b"60"), encode(b"GET", key)]
    else:
        for j in range(10):
            cmds.append(encode(b"SET", b"tx:%d:%d" % (c, (i * 10 + j) % 10000), b"x" * 16))
    cmds.append(encode(b"EXEC"))
    return b"".join(cmds)


if shape == "one-key":
    REPLY = b"+OK\r\n" + b"+QUEUED\r\n" * 3 + b"*3\r\n+OK\r\n:1\r\n$16\r\n" + b"x" * 16 + b"\r\n"
elif shape == "slot":
    REPLY = b"+OK\r\n" + b"+QUEUED\r\n" * 3 + b"*3\r\n+OK\r\n+OK\r\n$16\r\n" + b"x" * 16 + b"\r\n"
elif shape == "script":
    REPLY = b"$16\r\n" + b"x" * 16 + b"\r\n"
else:
    REPLY = b"+OK\r\n" + b"+QUEUED\r\n" * 10 + b"*10\r\n" + b"+OK\r\n" * 10
per_conn = total // conns
errors = []


def work(c):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    batch = b"".join(transaction(c, i) for i in range(depth))
    want = REPLY * depth
    done = 0
    while done < per_conn:
        s.sendall(batch)
        got = bytearray()
        while len(got) < len(want):
            chunk = s.recv(1 << 20)
            if not chunk:
                errors.append("closed")
                return
            got += chunk
        if bytes(got) != want:
            errors.append("unexpected reply: %r" % bytes(got[:80]))
            return
        done += depth
    s.close()


threads = [threading.Thread(target=work, args=(c,)) for c in range(conns)]
start = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - start
if errors:
    print("error:", errors[0], file=sys.stderr)
    sys.exit(1)
print("%.0f" % (per_conn * conns / elapsed))
