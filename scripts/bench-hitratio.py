#!/usr/bin/env python3
"""Question: with the same memory budget and eviction policy, does hypercache keep the keys that
matter as well as redis-server?

For each (policy, skew) configuration, starts a fresh redis-server and a fresh hypercache on free
loopback ports, both with the same --maxmemory and --maxmemory-policy (maxmemory-samples left at
its default), and replays the same cache-aside workload against each, one server after the other
(which one goes first alternates per configuration):

  for each op: GET key; on a miss, SET key <value>

Keys (16 bytes, key:%012d) are drawn from a Zipf distribution with the given skew over a key
space of about 10x what fits in the budget (10 * maxmemory / 150 keys by default: 100-byte values
cost about 150 bytes each in redis). The key sequence comes from a fixed seed and is the same for
both servers. Ops go over one raw socket, pipelined: a batch of GETs is sent, then the SETs for
that batch's misses are sent together with the next batch of GETs. A key that misses twice in one
batch is SET once (a sequential client would have hit the second time; both servers see the same
thing). The first 20% of ops warm the cache and are not counted.

Reports, per server: hit ratio = hits / counted GETs (from the replies), the same ratio from INFO
keyspace_hits/keyspace_misses over the counted part (a cross-check), evicted_keys and used_memory
at the end. Prints markdown tables.

Python 3 standard library only. Defaults: 2,000,000 ops, policies allkeys-lru and allkeys-lfu,
skews 0.8 and 1.0, maxmemory 64mb, 100-byte values.
"""
import argparse
import bisect
import itertools
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

READY_TRIES = 100  # x 0.1 s
KEY_MULT = 2654435761  # odd and not a multiple of 5: rank -> rank * KEY_MULT mod 10^12 is a bijection


def parse_size(text):
    """A redis memory size: 64mb = 64 * 2^20, 64m = 64 * 10^6, plain bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*(b|k|kb|m|mb|g|gb)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"bad memory size {text!r} (use e.g. 64mb, 1gb, 1000000)")
    unit = {None: 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
    return int(m.group(1)) * unit[m.group(2)]


def env_int(name, default):
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    if not re.fullmatch(r"[1-9][0-9]*", v):
        sys.exit(f"error: {name} must be a positive integer, got {v!r}")
    return int(v)


def parse_args():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Cache-aside Zipf workload, same budget and policy, "
        "redis-server vs hypercache; prints hit ratios as markdown.",
        epilog="Environment: OPS, HC_BIN, REDIS_SERVER, OUT are read as defaults for --ops, --hc-bin, "
        "--redis-server, --out. Example: scripts/bench-hitratio.py --quick --maxmemory 32mb",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--ops", type=int, default=env_int("OPS", 2_000_000), help="operations (GETs) per run")
    p.add_argument("--quick", action="store_true",
                   help="300,000 ops per run (overrides --ops) and, unless --maxmemory is given, an 8mb budget "
                        "(at 64mb, 300k ops never fill the budget, so nothing would be evicted)")
    p.add_argument("--maxmemory", type=parse_size, default=None,
                   help="memory budget for both servers, redis units (mb = 2^20 bytes, m = 10^6) "
                        "(default: 64mb; 8mb with --quick)")
    p.add_argument("--policies", default="allkeys-lru,allkeys-lfu", help="comma-separated maxmemory-policy list")
    p.add_argument("--skews", default="0.8,1.0", help="comma-separated Zipf skews (exponent s)")
    p.add_argument("--value-size", type=int, default=100, help="bytes per value")
    p.add_argument("--keyspace", type=int, default=0,
                   help="number of distinct keys (0: round(10 * maxmemory / 150))")
    p.add_argument("--seed", type=int, default=20240601, help="random seed for the key sequence")
    p.add_argument("--batch", type=int, default=64, help="GETs per pipelined batch")
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of ops not counted")
    p.add_argument("--hc-bin", default=os.environ.get("HC_BIN") or os.path.join(root, "target/release/hypercache"),
                   help="hypercache binary (never built by this script)")
    p.add_argument("--redis-server", default=os.environ.get("REDIS_SERVER") or "redis-server",
                   help="redis-server binary")
    p.add_argument("--out", default=os.environ.get("OUT") or "", help="also write the report to this file")
    p.add_argument("--run-timeout", type=float, default=900, help="seconds allowed per server run")
    a = p.parse_args()
    if a.quick:
        a.ops = 300_000
    if a.maxmemory is None:
        a.maxmemory = parse_size("8mb" if a.quick else "64mb")
    if a.ops < 1 or a.batch < 1 or a.value_size < 1 or a.keyspace < 0 or not 0 <= a.warmup < 1:
        p.error("--ops, --batch, --value-size must be positive, --keyspace >= 0, 0 <= --warmup < 1")
    a.policies = [x.strip() for x in a.policies.split(",") if x.strip()]
    try:
        a.skews = [float(x) for x in a.skews.split(",") if x.strip()]
    except ValueError:
        p.error("--skews must be comma-separated numbers")
    if not a.policies or not a.skews:
        p.error("--policies and --skews must not be empty")
    if a.keyspace == 0:
        a.keyspace = max(1, round(10 * a.maxmemory / 150))
    if a.keyspace > 10**12:
        p.error("key space too large for key:%012d")
    return a


# ---------------------------------------------------------------------------------------------
# servers

class Server:
    def __init__(self, name, argv, port, logdir):
        self.name, self.port = name, port
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        # Own session and process group (like setsid), so stop() ends exactly this server.
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def wait_ready(self):
        for _ in range(READY_TRIES):
            if not self.alive():
                raise SystemExit(f"error: {self.name} exited during startup; its log:\n{self.log_tail(50)}")
            r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "ping"],
                               capture_output=True, text=True, timeout=10)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise SystemExit(f"error: {self.name} not ready on port {self.port} after {READY_TRIES / 10:.0f} s; "
                         f"its log:\n{self.log_tail(50)}")

    def stop(self):
        if self.proc is None:
            return
        pid = self.proc.pid
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            self.proc.poll()
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        self.log.close()


def free_ports(n):
    ss = [socket.socket() for _ in range(n)]
    for s in ss:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in ss]
    for s in ss:
        s.close()
    return ports


# ---------------------------------------------------------------------------------------------
# RESP over a raw socket

class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.pos = 0

    def send(self, data):
        self.sock.sendall(data)

    def _more(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("connection closed by server")
        if self.pos:
            self.buf = self.buf[self.pos:] + data
            self.pos = 0
        else:
            self.buf += data

    def read_reply(self):
        """One reply: bytes for a bulk/simple string, None for a null bulk, int, list, or an
        Exception instance for an error reply."""
        while True:
            r = self._parse(self.pos)
            if r is not None:
                value, self.pos = r
                return value
            self._more()

    def _parse(self, i):
        buf = self.buf
        end = buf.find(b"\r\n", i)
        if end < 0:
            return None
        t, line = buf[i:i + 1], buf[i + 1:end]
        if t == b"$":
            n = int(line)
            if n < 0:
                return _NULL, end + 2
            if len(buf) < end + 2 + n + 2:
                return None
            return buf[end + 2:end + 2 + n], end + 4 + n
        if t == b"+":
            return line, end + 2
        if t == b"-":
            return RuntimeError(line.decode(errors="replace")), end + 2
        if t == b":":
            return int(line), end + 2
        if t == b"*":
            n = int(line)
            out, j = [], end + 2
            for _ in range(max(n, 0)):
                r = self._parse(j)
                if r is None:
                    return None
                out.append(r[0])
                j = r[1]
            return out, j
        raise ConnectionError(f"unexpected RESP from server: {buf[i:i + 40]!r}")

    def get_replies(self, n):
        """n GET replies: list of True (hit) / False (null bulk = miss); raises on error replies."""
        out = []
        for _ in range(n):
            v = self.read_reply()
            if v is _NULL:
                out.append(False)
            elif isinstance(v, bytes):
                out.append(True)
            else:
                raise RuntimeError(f"unexpected GET reply {v!r}")
        return out

    def command(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.send(b"".join(parts))
        return self.read_reply()

    def info(self, section):
        v = self.command("INFO", section)
        if not isinstance(v, bytes):
            raise RuntimeError(f"INFO {section}: unexpected reply {v!r}")
        d = {}
        for line in v.decode(errors="replace").splitlines():
            if ":" in line and not line.startswith("#"):
                k, _, val = line.partition(":")
                d[k] = val.strip()
        return d

    def close(self):
        self.sock.close()


class _Null:
    def __repr__(self):
        return "(nil)"


_NULL = _Null()


def info_int(d, field, who):
    v = d.get(field)
    if v is None or not re.fullmatch(r"-?\d+", v):
        raise SystemExit(f"error: {who}: INFO has no numeric {field} (got {v!r})")
    return int(v)


# ---------------------------------------------------------------------------------------------
# workload

def zipf_sequence(keyspace, skew, ops, seed):
    """ops ranks in [0, keyspace), P(rank k) proportional to 1 / (k+1)^skew; cumulative table + bisect."""
    cum = list(itertools.accumulate((k ** -skew for k in range(1, keyspace + 1))))
    total = cum[-1]
    rnd = random.Random(seed)
    r, b, last = rnd.random, bisect.bisect_right, keyspace - 1
    return [min(b(cum, r() * total), last) for _ in range(ops)]


def key_of(rank):
    return b"key:%012d" % (rank * KEY_MULT % 10**12)


def run_workload(name, port, ranks, warm, args, deadline):
    """Replay the cache-aside workload; returns a dict of results."""
    conn = Conn(port)
    get_pre = b"*2\r\n$3\r\nGET\r\n$16\r\n"
    set_pre = b"*3\r\n$3\r\nSET\r\n$16\r\n"
    set_post = b"\r\n$%d\r\n%s\r\n" % (args.value_size, b"v" * args.value_size)
    batch = args.batch
    hits = gets = set_sent = 0
    pending_sets = []  # keys to SET, sent ahead of the next GET batch
    info_before = None
    t0 = time.monotonic()

    def flush_sets():
        nonlocal pending_sets
        if pending_sets:
            conn.send(b"".join(set_pre + k + set_post for k in pending_sets))
            check_sets(len(pending_sets))
            pending_sets = []

    def check_sets(n):
        for _ in range(n):
            v = conn.read_reply()
            if v != b"OK":
                raise SystemExit(f"error: {name}: SET replied {v!r}")

    for region_start, region_end, counted in ((0, warm, False), (warm, len(ranks), True)):
        if counted:
            flush_sets()
            info_before = conn.info("stats")
            t_counted = time.monotonic()
        for start in range(region_start, region_end, batch):
            keys = [key_of(k) for k in ranks[start:min(start + batch, region_end)]]
            n_sets = len(pending_sets)
            out = [set_pre + k + set_post for k in pending_sets]
            out.extend(get_pre + k + b"\r\n" for k in keys)
            conn.send(b"".join(out))
            pending_sets = []
            check_sets(n_sets)
            set_sent += n_sets
            replies = conn.get_replies(len(keys))
            missed = set()
            for k, hit in zip(keys, replies):
                if not hit and k not in missed:
                    missed.add(k)
                    pending_sets.append(k)
            if counted:
                gets += len(keys)
                hits += sum(replies)
            if time.monotonic() > deadline:
                raise SystemExit(f"error: {name}: run exceeded --run-timeout {args.run_timeout:.0f} s")
    set_sent += len(pending_sets)
    flush_sets()
    elapsed = time.monotonic() - t0
    counted_elapsed = time.monotonic() - t_counted
    time.sleep(0.2)  # let redis' cron refresh used_memory_rss etc.
    stats, mem = conn.info("stats"), conn.info("memory")
    dbsize = conn.command("DBSIZE")
    conn.close()
    ih = info_int(stats, "keyspace_hits", name) - info_int(info_before, "keyspace_hits", name)
    im = info_int(stats, "keyspace_misses", name) - info_int(info_before, "keyspace_misses", name)
    return {
        "hits": hits, "gets": gets, "sets": set_sent,
        "evicted_warm": info_int(info_before, "evicted_keys", name),
        "info_hits": ih, "info_misses": im,
        "evicted": info_int(stats, "evicted_keys", name),
        "used_memory": info_int(mem, "used_memory", name),
        "rss": info_int(mem, "used_memory_rss", name),
        "maxmemory": info_int(mem, "maxmemory", name),
        "dbsize": dbsize, "elapsed": elapsed, "counted_elapsed": counted_elapsed,
    }


def check_config(name, port, args, policy):
    conn = Conn(port)
    mem = conn.info("memory")
    conn.close()
    mm = info_int(mem, "maxmemory", name)
    pol = mem.get("maxmemory_policy")
    if mm != args.maxmemory or pol != policy:
        raise SystemExit(f"error: {name} reports maxmemory {mm} policy {pol!r}, "
                         f"expected {args.maxmemory} {policy!r}")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main():
    args = parse_args()
    start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for tool in (args.redis_server, "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found")
    if not (os.path.isfile(args.hc_bin) and os.access(args.hc_bin, os.X_OK)):
        sys.exit(f"error: {args.hc_bin} is not an executable (build it with cargo build --release)")

    # SIGTERM -> SystemExit, so the finally blocks stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    warm = int(args.ops * args.warmup)
    print(f"seed {args.seed}; {args.ops} ops ({warm} warm-up) per run; key space {args.keyspace}; "
          f"maxmemory {args.maxmemory}; value {args.value_size} B; batch {args.batch}", file=sys.stderr)

    tmp = tempfile.mkdtemp(prefix="bench-hitratio.")
    results = []  # (policy, skew, {"redis": r, "hc": r})
    servers = []
    try:
        cfg_index = 0
        for skew in args.skews:
            t = time.monotonic()
            ranks = zipf_sequence(args.keyspace, skew, args.ops, args.seed)
            # First accesses in the counted part miss in any cache: 1 - cold / counted is the hit
            # ratio of an infinite cache, the ceiling for both servers.
            seen = set(ranks[:warm])
            cold = 0
            for k in ranks[warm:]:
                if k not in seen:
                    seen.add(k)
                    cold += 1
            ceiling = 1 - cold / (len(ranks) - warm) if len(ranks) > warm else float("nan")
            print(f"skew {skew}: key sequence in {time.monotonic() - t:.1f} s, {len(seen)} distinct keys, "
                  f"infinite-cache hit ratio {ceiling:.4f}", file=sys.stderr)
            del seen
            for policy in args.policies:
                redis_port, hc_port = free_ports(2)
                common = ["--maxmemory", str(args.maxmemory), "--maxmemory-policy", policy]
                redis = Server("redis", [args.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no"] + common, redis_port, tmp)
                servers.append(redis)
                hc = Server("hc", [args.hc_bin, "--bind", "127.0.0.1", "--port", str(hc_port),
                                   "--log-level", "warn"] + common, hc_port, tmp)
                servers.append(hc)
                redis.wait_ready()
                hc.wait_ready()
                check_config("redis", redis_port, args, policy)
                check_config("hc", hc_port, args, policy)
                order = [redis, hc] if cfg_index % 2 == 0 else [hc, redis]
                cfg_index += 1
                res = {}
                for srv in order:
                    print(f"  {policy} skew {skew}: {srv.name} (pid {srv.proc.pid}, port {srv.port})...",
                          file=sys.stderr)
                    try:
                        r = run_workload(srv.name, srv.port, ranks, warm, args,
                                         time.monotonic() + args.run_timeout)
                    except (OSError, ConnectionError, RuntimeError) as e:
                        raise SystemExit(f"error: {srv.name}: {e}; alive: {srv.alive()}; "
                                         f"end of its log:\n{srv.log_tail()}")
                    if not srv.alive():
                        raise SystemExit(f"error: {srv.name} exited during the run; end of its log:\n"
                                         f"{srv.log_tail()}")
                    res[srv.name] = r
                    hr = r["hits"] / r["gets"] if r["gets"] else float("nan")
                    print(f"    hit ratio {hr:.4f} ({r['hits']}/{r['gets']}); INFO hits {r['info_hits']} "
                          f"misses {r['info_misses']}; evicted {r['evicted']}; used_memory {r['used_memory']}; "
                          f"keys {r['dbsize']}; {r['elapsed']:.1f} s "
                          f"({r['gets'] / r['counted_elapsed'] if r['counted_elapsed'] else 0:,.0f} counted GETs/s)",
                          file=sys.stderr)
                redis.stop()
                hc.stop()
                res["ceiling"] = ceiling
                results.append((policy, skew, res))
            del ranks
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(r):
        return r["hits"] / r["gets"] if r["gets"] else float("nan")

    def info_ratio(r):
        n = r["info_hits"] + r["info_misses"]
        return r["info_hits"] / n if n else float("nan")

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    except OSError:
        pass
    git = sh(["git", "-C", root, "describe", "--always", "--dirty"]) or "no git"
    lines = [
        f"## eviction hit ratio: hypercache vs redis-server ({start})",
        "",
        f"- machine: {os.cpu_count()} CPUs, {cpu}, {platform.system()} {platform.release()}",
        f"- redis: {sh([args.redis_server, '--version'])}",
        f"- hypercache: {args.hc_bin} ({git})",
        f"- cache-aside (GET; SET on miss), {args.ops:,} ops per run, first {warm:,} not counted; "
        f"Zipf over {args.keyspace:,} keys (16-byte keys, {args.value_size}-byte values), seed {args.seed}; "
        f"maxmemory {args.maxmemory} bytes on both, maxmemory-samples default; pipelined batches of "
        f"{args.batch} GETs; fresh server pair per row, runs one after the other (first server alternates)",
        "",
        "| policy | skew | redis hit ratio | hc hit ratio | hc - redis | redis evicted | hc evicted |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for policy, skew, res in results:
        r, h = res["redis"], res["hc"]
        lines.append(f"| {policy} | {skew:g} | {ratio(r):.4f} | {ratio(h):.4f} | {ratio(h) - ratio(r):+.4f} "
                     f"| {r['evicted']:,} | {h['evicted']:,} |")
    lines += [
        "",
        "Cross-check and end state: INFO hit ratio = keyspace_hits / (hits + misses) over the counted ops; "
        "ceiling = hit ratio of an infinite cache (1 - first accesses / counted GETs); evicted in warm-up = "
        "evicted_keys when counting started (0: the budget was not yet full); used_memory and keys at the end.",
        "",
        "| policy | skew | ceiling | redis INFO hit ratio | hc INFO hit ratio | redis evicted in warm-up "
        "| hc evicted in warm-up | redis used_memory | hc used_memory | redis keys | hc keys | redis s | hc s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for policy, skew, res in results:
        r, h = res["redis"], res["hc"]
        lines.append(f"| {policy} | {skew:g} | {res['ceiling']:.4f} | {info_ratio(r):.4f} | {info_ratio(h):.4f} "
                     f"| {r['evicted_warm']:,} | {h['evicted_warm']:,} | {r['used_memory']:,} "
                     f"| {h['used_memory']:,} | {r['dbsize']:,} | {h['dbsize']:,} | {r['elapsed']:.1f} "
                     f"| {h['elapsed']:.1f} |")
    mismatch = [(p, s, n) for p, s, res in results for n in ("redis", "hc")
                if (res[n]["info_hits"], res[n]["info_misses"]) != (res[n]["hits"], res[n]["gets"] - res[n]["hits"])]
    if mismatch:
        lines += ["", "Note: INFO keyspace_hits/misses differ from the client's count for: " +
                  ", ".join(f"{n} ({p}, skew {s:g})" for p, s, n in mismatch)]
    cold_start = [(p, s) for p, s, res in results if res["redis"]["evicted_warm"] == 0]
    if cold_start:
        lines += ["", "Note: redis had evicted nothing when counting started for " +
                  ", ".join(f"{p} skew {s:g}" for p, s in cold_start) +
                  ": part of the counted ops ran before the budget was full, which dilutes the "
                  "difference eviction makes (more --ops, a larger --warmup or a smaller --maxmemory help)."]
    never = [(p, s) for p, s, res in results if res["redis"]["evicted"] == 0 and res["hc"]["evicted"] == 0]
    if never:
        lines += ["", "WARNING: neither server evicted anything for " + ", ".join(f"{p} skew {s:g}" for p, s in never)
                  + ": the budget never filled, so these rows say nothing about eviction."]
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
        print(f"report written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
