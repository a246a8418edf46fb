# Rails' cache store (ActiveSupport::Cache::RedisCacheStore, activesupport 6.1) and the redis-rb
# client under it (redis 4.8), as applications use them, unchanged, against a Redis-protocol server.
#
# Usage: ruby rails_cache.rb PORT [--db N]
#
# Needs Debian's ruby-activesupport (6.1) and ruby-redis (4.8). The store is pointed at
# redis://127.0.0.1:PORT/N (default N = 0); with N other than 0 the scenarios also check, through
# plain redis-rb clients, that the keys are not in database 0 and are there after `SELECT N`.
# The store swallows server errors (it is "failsafe"); the error_handler an application would
# install to log them collects them here, and a scenario fails on any it did not expect.
# Each scenario prints "ok <name>" or "FAIL <name>: <reason>"; the exit status is the number of
# failures.
require "redis"
require "active_support"
require "active_support/cache"
require "active_support/cache/redis_cache_store"
require "digest/sha1"
require "zlib"

PORT = Integer(ARGV[0])
DB = (i = ARGV.index("--db")) ? Integer(ARGV[i + 1]) : 0
HOST = "127.0.0.1"
URL = "redis://#{HOST}:#{PORT}/#{DB}"
# db 0, for FLUSHALL before each scenario and to look for keys that must not be there.
R0 = Redis.new(host: HOST, port: PORT, db: 0)
# The store's database, to look at what it wrote.
RDB = Redis.new(host: HOST, port: PORT, db: DB)
STORE_ERRORS = []
ERROR_HANDLER = lambda do |method:, returning:, exception:|
  STORE_ERRORS << "#{method}: #{exception.class}: #{exception.message}"
end
$failures = 0

class Failed < StandardError; end

def check(cond, what = nil)
  return if cond
  line = caller_locations.find { |l| l.path == __FILE__ && !%w[check eq].include?(l.label) }&.lineno
  raise Failed, "line #{line}: #{what || 'assertion failed'}"
end

def eq(actual, expected, what = nil)
  check(actual == expected, "#{what ? what + ': ' : ''}expected #{expected.inspect[0, 200]}, got #{actual.inspect[0, 200]}")
end

def store(**options)
  ActiveSupport::Cache::RedisCacheStore.new(url: URL, error_handler: ERROR_HANDLER, **options)
end

def scenario(name)
  R0.flushall
  STORE_ERRORS.clear
  yield
  check(STORE_ERRORS.empty?, "store errors: #{STORE_ERRORS.join('; ')}")
  puts "ok #{name}"
rescue Exception => e # rubocop:disable Lint/RescueException
  raise if e.is_a?(Interrupt)
  $failures += 1
  where = e.is_a?(Failed) ? "" : " (#{e.backtrace&.find { |l| l.include?(__FILE__) }&.sub(/.*:(\d+):.*/, 'line \1')})"
  puts "FAIL #{name}: #{e.class}: #{e.message.lines.first&.strip}#{where}"
ensure
  $stdout.flush
end

# The keys are in the store's database, and (with --db N, N > 0) not in database 0, where a client
# sees them only after SELECT N.
def in_own_db(*keys)
  keys.each { |k| check(RDB.exists?(k), "#{k.inspect} missing from db #{DB}") }
  return if DB == 0
  keys.each { |k| check(!R0.exists?(k), "#{k.inspect} is visible in db 0") }
  c = Redis.new(host: HOST, port: PORT)
  begin
    eq(c.select(DB), "OK", "SELECT #{DB}")
    keys.each { |k| check(c.exists?(k), "#{k.inspect} not visible after SELECT #{DB}") }
  ensure
    c.close
  end
end

# --- ActiveSupport::Cache::RedisCacheStore ----------------------------------------------------

scenario("store_write_read_exist_delete") do
  c = store
  user = { "name" => "Ada", "roles" => [:admin], "since" => 1815 }
  check(c.write("user:1", user), "write returned false")
  eq(c.read("user:1"), user, "read")
  eq(c.read("missing"), nil, "read of a missing key")
  check(c.exist?("user:1") && !c.exist?("missing"), "exist?")
  # The entry is a Marshal-dumped ActiveSupport::Cache::Entry under the plain key, no expiry.
  raw = RDB.get("user:1")
  eq(Marshal.load(raw).value, user, "raw entry")
  eq(RDB.ttl("user:1"), -1, "TTL of an entry without expires_in")
  in_own_db("user:1")
  # raw: true stores the value's string itself.
  c.write("plain", "hello", raw: true)
  eq(RDB.get("plain"), "hello", "raw write")
  eq(c.read("plain", raw: true), "hello", "raw read")
  # Cache keys from arrays and versions (ActiveRecord-style cache_key / cache_version).
  c.write(["posts", 7, "comments"], [1, 2, 3], version: "v1")
  check(RDB.exists?("posts/7/comments"), "array key not stored as posts/7/comments")
  eq(c.read(["posts", 7, "comments"], version: "v1"), [1, 2, 3], "read with the same version")
  eq(c.read(["posts", 7, "comments"], version: "v2"), nil, "read with another version")
  # delete is DEL; the store hands back its reply: 1 when a key went, 0 after.
  eq(c.delete("user:1"), 1, "delete")
  eq(c.delete("user:1"), 0, "second delete")
  eq(c.read("user:1"), nil, "read after delete")
  check(!RDB.exists?("user:1"), "raw key still there after delete")
  c.write("a", 1)
  c.write("b", 2)
  eq(c.delete_multi(%w[a b missing]), 2, "delete_multi (DEL a b missing)")
  check(!c.exist?("a") && !c.exist?("b"), "exist? after delete_multi")
  # Keys over 1 kB are truncated with their SHA2 digest.
  long = "k" * 2000
  c.write(long, "long-key value")
  eq(c.read(long), "long-key value", "read of a 2000-byte key")
  stored = RDB.keys("k*")
  eq(stored.size, 1, "keys stored for the long key")
  eq(stored.first.bytesize, 1024, "truncated key length")
  check(stored.first.end_with?(":sha2:#{Digest::SHA2.hexdigest(long)}"), "truncated key suffix")
end

scenario("store_fetch_block_and_force") do
  c = store
  calls = 0
  compute = -> { calls += 1; { "rows" => [1, 2, 3], "n" => calls } }
  first = c.fetch("report") { compute.call }
  eq(first, { "rows" => [1, 2, 3], "n" => 1 }, "first fetch")
  eq(c.fetch("report") { compute.call }, first, "second fetch")
  eq(calls, 1, "block calls after two fetches")
  # force: true recomputes and overwrites.
  forced = c.fetch("report", force: true) { compute.call }
  eq(forced["n"], 2, "forced fetch")
  eq(c.read("report")["n"], 2, "read after force")
  eq(c.fetch("report"), forced, "fetch without a block reads")
  # skip_nil: a nil result is not cached.
  eq(c.fetch("nothing", skip_nil: true) { nil }, nil, "skip_nil fetch")
  check(!RDB.exists?("nothing"), "nil was cached despite skip_nil")
  c.fetch("nil-cached") { nil }
  check(RDB.exists?("nil-cached") && c.exist?("nil-cached"), "nil result not cached without skip_nil")
  # fetch with expires_in sets the TTL (SET ... PX).
  c.fetch("timed", expires_in: 60) { "t" }
  check((59_000..60_000).cover?(RDB.pttl("timed")), "PTTL of timed: #{RDB.pttl('timed')}")
  in_own_db("report", "nil-cached", "timed")
end

scenario("store_expires_in") do
  c = store(expires_in: 120) # a store-wide default
  c.write("default", "d")
  check((119..120).cover?(RDB.ttl("default")), "TTL with the store default: #{RDB.ttl('default')}")
  c.write("short", "s", expires_in: 1)
  c.write("forever", "f", expires_in: nil)
  check((1..1000).cover?(RDB.pttl("short")), "PTTL of short: #{RDB.pttl('short')}")
  eq(RDB.ttl("forever"), -1, "TTL with expires_in: nil")
  c.write("minutes", "m", expires_in: 5.minutes)
  check((299..300).cover?(RDB.ttl("minutes")), "TTL of 5.minutes: #{RDB.ttl('minutes')}")
  in_own_db("default", "short", "forever", "minutes")
  eq(c.read("short"), "s", "read before expiry")
  sleep 1.2
  eq(c.read("short"), nil, "read after expiry")
  check(!c.exist?("short"), "exist? after expiry")
  check(!RDB.exists?("short"), "raw key still there after expiry")
  eq(c.read("default"), "d", "default entry")
  eq(c.read("forever"), "f", "entry without expiry")
end

scenario("store_race_condition_ttl") do
  c = store
  other = store # a second process
  c.write("hot", "v1", expires_in: 1, race_condition_ttl: 10)
  # With race_condition_ttl the key lives 5 minutes past expires_in, so stale entries can be served.
  check((300_000..301_000).cover?(RDB.pttl("hot")), "PTTL with race_condition_ttl: #{RDB.pttl('hot')}")
  sleep 1.2
  check(RDB.exists?("hot"), "key gone at its logical expiry")
  seen_by_other = nil
  pttl_while_recomputing = nil
  fresh = c.fetch("hot", expires_in: 60, race_condition_ttl: 10) do
    # The first fetch put the stale entry back for race_condition_ttl (SET PX 20000) and is
    # recomputing: others get the stale value meanwhile, without recomputing.
    pttl_while_recomputing = RDB.pttl("hot")
    seen_by_other = other.fetch("hot", expires_in: 60, race_condition_ttl: 10) { "recomputed by other" }
    "v2"
  end
  eq(fresh, "v2", "recomputed value")
  eq(seen_by_other, "v1", "value served to the other process while recomputing")
  check((19_000..20_000).cover?(pttl_while_recomputing), "PTTL of the stale entry: #{pttl_while_recomputing}")
  eq(c.read("hot"), "v2", "read after recompute")
  check((359_000..360_000).cover?(RDB.pttl("hot")), "PTTL after recompute: #{RDB.pttl('hot')}")
  in_own_db("hot")
end

scenario("store_write_read_fetch_multi") do
  c = store
  # write_multi without expires_in is one MSET.
  check(c.write_multi("a" => 1, "b" => "two", "c" => [3]), "write_multi")
  eq(RDB.ttl("b"), -1, "TTL after MSET")
  # read_multi is one MGET.
  eq(c.read_multi("a", "b", "c", "missing"), { "a" => 1, "b" => "two", "c" => [3] }, "read_multi")
  in_own_db("a", "b", "c")
  # fetch_multi computes the missing ones only, and writes them.
  computed = []
  got = c.fetch_multi("a", "x", "b", "y") { |k| computed << k; k.upcase * 2 }
  eq(got, { "a" => 1, "x" => "XX", "b" => "two", "y" => "YY" }, "fetch_multi")
  eq(computed, %w[x y], "keys computed by fetch_multi")
  eq(c.read_multi("x", "y"), { "x" => "XX", "y" => "YY" }, "read_multi of fetched keys")
  eq(c.fetch_multi("x", "y") { |k| raise "recomputed #{k}" }, { "x" => "XX", "y" => "YY" }, "second fetch_multi")
  # With expires_in each entry is its own SET ... PX.
  c.write_multi({ "t1" => "one", "t2" => "two" }, expires_in: 30)
  %w[t1 t2].each { |k| check((29_000..30_000).cover?(RDB.pttl(k)), "PTTL of #{k}: #{RDB.pttl(k)}") }
  c.fetch_multi("t3", expires_in: 30) { "three" }
  check((29_000..30_000).cover?(RDB.pttl("t3")), "PTTL of t3: #{RDB.pttl('t3')}")
  # Namespaced and versioned keys through the multi calls.
  n = store(namespace: "ns")
  n.write_multi("p" => "P", "q" => "Q")
  eq(RDB.mget("ns:p", "ns:q").map { |v| Marshal.load(v).value }, %w[P Q], "namespaced MSET")
  eq(n.read_multi("p", "q", "a"), { "p" => "P", "q" => "Q" }, "namespaced read_multi")
  c.write("versioned", "old", version: 1)
  eq(c.read_multi("versioned", "a", version: 2), { "a" => 1 }, "read_multi with a mismatched version")
end

scenario("store_increment_decrement") do
  c = store
  # INCRBY on a missing key starts at 0.
  eq(c.increment("hits"), 1, "increment of a missing key")
  eq(c.increment("hits", 5), 6, "increment by 5")
  eq(c.decrement("hits", 2), 4, "decrement by 2")
  eq(c.decrement("fresh"), -1, "decrement of a missing key")
  eq(c.read("hits", raw: true), "4", "raw read of the counter")
  eq(RDB.ttl("hits"), -1, "TTL of a counter without expires_in")
  # A counter written raw, then incremented.
  c.write("visits", 10, raw: true)
  eq(c.increment("visits", 3), 13, "increment of a raw-written counter")
  # With expires_in the store asks TTL and sets EXPIRE only when there is none.
  eq(c.increment("rate", 1, expires_in: 60), 1, "increment with expires_in")
  check((59..60).cover?(RDB.ttl("rate")), "TTL after increment with expires_in: #{RDB.ttl('rate')}")
  RDB.expire("rate", 30)
  eq(c.increment("rate", 1, expires_in: 60), 2, "second increment with expires_in")
  check((29..30).cover?(RDB.ttl("rate")), "TTL was reset by the second increment: #{RDB.ttl('rate')}")
  eq(c.decrement("quota", 1, expires_in: 1), -1, "decrement with expires_in")
  check((0..1).cover?(RDB.ttl("quota")) && RDB.pttl("quota") > 0, "TTL after decrement with expires_in: #{RDB.pttl('quota')}")
  in_own_db("hits", "fresh", "visits", "rate", "quota")
  # A value that is not an integer: the failsafe store answers nil and reports Redis's error.
  c.write("object", { "a" => 1 })
  eq(c.increment("object"), nil, "increment of a Marshal entry")
  eq(STORE_ERRORS, ["increment: Redis::CommandError: ERR value is not an integer or out of range"], "reported error")
  STORE_ERRORS.clear
  sleep 1.2
  eq(c.read("quota", raw: true), nil, "counter after its expiry")
  eq(c.read("hits", raw: true), "4", "counter without expiry")
end

scenario("store_namespace_delete_matched") do
  app = store(namespace: "myapp")
  other = store(namespace: -> { "other" }) # a namespace may be a lambda
  plain = store
  # Enough keys that SCAN (COUNT 1000) takes several calls.
  2500.times { |i| app.write("user:#{i}", i) }
  app.write("post:1", "p")
  other.write("user:1", "theirs")
  plain.write("user:1", "no namespace")
  eq(app.read("user:7"), 7, "namespaced read")
  eq(other.read("user:1"), "theirs", "other namespace read")
  check(RDB.exists?("myapp:user:7") && RDB.exists?("other:user:1"), "namespaced raw keys")
  in_own_db("myapp:user:0", "myapp:post:1", "other:user:1", "user:1")
  app.delete_matched("user:*")
  eq(RDB.keys("myapp:user:*").size, 0, "myapp:user:* keys left after delete_matched")
  eq(app.read("user:7"), nil, "read after delete_matched")
  eq(app.read("post:1"), "p", "key outside the pattern")
  eq(other.read("user:1"), "theirs", "other namespace after delete_matched")
  eq(plain.read("user:1"), "no namespace", "key without namespace after delete_matched")
  # Glob classes and ?, as delete_matched documents.
  %w[hello hallo hxllo hllo heeello].each { |k| plain.write(k, k) }
  plain.delete_matched("h[ae]llo")
  eq(RDB.keys("h*").sort, %w[heeello hllo hxllo], "keys left after h[ae]llo")
  plain.delete_matched("h?llo")
  eq(RDB.keys("h*").sort, %w[heeello hllo], "keys left after h?llo")
  plain.delete_matched("h*llo")
  eq(RDB.keys("h*"), [], "keys left after h*llo")
end

scenario("store_clear_namespaced_and_flushdb") do
  app = store(namespace: "myapp")
  plain = store
  300.times { |i| app.write("k#{i}", i) }
  plain.write("shared", "s")
  RDB.set("not-rails", "kept")
  R0.set("db0-only", "stays") if DB != 0
  # With a namespace, clear deletes that namespace's keys only (SCAN MATCH myapp:* + DEL).
  app.clear
  eq(RDB.keys("myapp:*"), [], "namespaced keys after a namespaced clear")
  eq(plain.read("shared"), "s", "un-namespaced entry after a namespaced clear")
  eq(RDB.get("not-rails"), "kept", "foreign key after a namespaced clear")
  # Without a namespace, clear is FLUSHDB: this database only.
  eq(plain.clear, "OK", "clear (FLUSHDB)")
  eq(RDB.dbsize, 0, "DBSIZE after FLUSHDB")
  eq(plain.read("shared"), nil, "read after clear")
  eq(R0.get("db0-only"), "stays", "db 0 after FLUSHDB of db #{DB}") if DB != 0
end

scenario("store_compress_large_value") do
  c = store(compress: true) # the default, 1 kB threshold
  page = (1..4000).map { |i| "<li>item #{i % 50}</li>" }.join # ~70 kB, compressible
  c.write("page", page)
  raw = RDB.get("page")
  check(raw.bytesize < page.bytesize / 5, "stored #{raw.bytesize} bytes for a #{page.bytesize}-byte value")
  entry = Marshal.load(raw)
  check(entry.instance_variable_get(:@compressed), "entry not marked compressed")
  eq(Marshal.load(Zlib::Inflate.inflate(entry.instance_variable_get(:@value))), page, "inflated stored value")
  eq(c.read("page"), page, "read of the compressed value")
  # Not compressed: under the threshold, or with compress: false.
  c.write("small", "tiny")
  check(!Marshal.load(RDB.get("small")).instance_variable_get(:@compressed), "small value compressed")
  store(compress: false).write("page-plain", page)
  check(RDB.strlen("page-plain") > page.bytesize, "compress: false stored #{RDB.strlen('page-plain')} bytes")
  eq(store(compress: false).read("page-plain"), page, "read of the uncompressed value")
  # A large binary value round-trips byte for byte.
  blob = Random.new(42).bytes(300_000)
  c.write("blob", blob)
  eq(c.read("blob"), blob, "300 kB random blob")
  in_own_db("page", "small", "page-plain", "blob")
end

scenario("store_unless_exist") do
  c = store
  # unless_exist is SET ... NX: true when written, false when the key was there.
  eq(c.write("lock", "first", unless_exist: true), true, "first write unless_exist")
  eq(c.write("lock", "second", unless_exist: true), false, "second write unless_exist")
  eq(c.read("lock"), "first", "value after the refused write")
  eq(RDB.ttl("lock"), -1, "TTL without expires_in")
  # With expires_in: SET ... NX PX.
  eq(c.write("job", "a", unless_exist: true, expires_in: 1), true, "write unless_exist with expires_in")
  check((1..1000).cover?(RDB.pttl("job")), "PTTL of job: #{RDB.pttl('job')}")
  eq(c.write("job", "b", unless_exist: true, expires_in: 1), false, "second write unless_exist with expires_in")
  in_own_db("lock", "job")
  sleep 1.2
  eq(c.write("job", "c", unless_exist: true, expires_in: 1), true, "write unless_exist after expiry")
  eq(c.read("job"), "c", "value after expiry and rewrite")
end

# --- redis-rb, as applications use it next to the cache -----------------------------------

def plain_client
  Redis.new(url: URL)
end

scenario("redis_pipelined") do
  r = plain_client
  replies = r.pipelined do |p|
    p.set("counter", 10)
    p.incr("counter")
    p.incrby("counter", 5)
    p.get("counter")
    p.expire("counter", 60)
    p.ttl("counter")
    p.mset("m1", "a", "m2", "b")
    p.mget("m1", "m2", "missing")
    p.get("missing")
    p.del("m1", "missing")
    p.exists?("m1")
  end
  eq(replies, ["OK", 11, 16, "16", true, 60, "OK", ["a", "b", nil], nil, 1, false], "pipelined replies")
  # Futures resolve after the pipeline.
  futures = nil
  r.pipelined do |p|
    futures = [p.set("f", "v"), p.get("f"), p.strlen("f")]
  end
  eq(futures.map(&:value), ["OK", "v", 1], "future values")
  # An error inside a pipeline is raised after it ran; the other commands took effect.
  r.set("text", "abc")
  begin
    r.pipelined do |p|
      p.set("before", "1")
      p.incr("text")
      p.set("after", "2")
    end
    raise Failed, "no error from INCR of a string in a pipeline"
  rescue Redis::CommandError => e
    eq(e.message, "ERR value is not an integer or out of range", "pipeline error")
  end
  eq(r.mget("before", "after"), %w[1 2], "commands around the failed one")
  in_own_db("counter", "m2", "f", "before", "after")
  r.close
end

scenario("redis_multi_and_watch") do
  r = plain_client
  other = plain_client
  r.set("balance", 100)
  replies = r.multi do |tx|
    tx.decrby("balance", 30)
    tx.incrby("spent", 30)
    tx.get("balance")
    tx.set("audit", "paid", ex: 60)
  end
  eq(replies, [70, 30, "70", "OK"], "MULTI/EXEC replies")
  check((59..60).cover?(r.ttl("audit")), "TTL set inside MULTI: #{r.ttl('audit')}")
  # Optimistic locking: WATCH, read, MULTI/EXEC; EXEC aborts if the key changed meanwhile.
  result = r.watch("balance") do |rw|
    current = Integer(rw.get("balance"))
    rw.multi { |tx| tx.set("balance", current - 10) }
  end
  eq(result, ["OK"], "EXEC without a concurrent change")
  eq(r.get("balance"), "60", "balance after the transaction")
  result = r.watch("balance") do |rw|
    current = Integer(rw.get("balance"))
    other.incrby("balance", 1000) # another client changes it
    rw.multi { |tx| tx.set("balance", current - 10) }
  end
  eq(result, nil, "EXEC after a concurrent change")
  eq(r.get("balance"), "1060", "balance after the aborted transaction")
  # A change to the watched key by a key expiring / being deleted also aborts.
  result = r.watch("audit") do |rw|
    other.del("audit")
    rw.multi { |tx| tx.set("audit", "again") }
  end
  eq(result, nil, "EXEC after the watched key was deleted")
  # UNWATCH: nothing aborts.
  r.watch("balance")
  eq(r.unwatch, "OK", "UNWATCH")
  other.incr("balance")
  eq(r.multi { |tx| tx.get("balance") }, ["1061"], "EXEC after UNWATCH")
  # An error while queueing aborts the whole transaction (EXECABORT); nothing ran.
  begin
    r.multi do |tx|
      tx.set("never", "1")
      tx.call(:incr) # wrong number of arguments, refused at queue time
    end
    raise Failed, "no error from a transaction with a bad command"
  rescue Redis::CommandError => e
    check(e.message.start_with?("ERR wrong number of arguments for 'incr' command"), "queue-time error: #{e.message}")
  end
  check(!r.exists?("never"), "a command of an aborted transaction ran")
  in_own_db("balance", "spent")
  r.close
  other.close
end

scenario("redis_eval_and_evalsha") do
  r = plain_client
  # A compare-and-delete lock release, the usual small script.
  release = <<~LUA
    if redis.call("GET", KEYS[1]) == ARGV[1] then
      return redis.call("DEL", KEYS[1])
    else
      return 0
    end
  LUA
  eq(r.set("lock:job", "token-1", nx: true, px: 5000), true, "SET NX PX")
  eq(r.eval(release, keys: ["lock:job"], argv: ["wrong"]), 0, "release with a wrong token")
  check(r.exists?("lock:job"), "lock released with a wrong token")
  sha = r.script(:load, release)
  eq(sha, Digest::SHA1.hexdigest(release), "SCRIPT LOAD sha")
  eq(r.script(:exists, sha), true, "SCRIPT EXISTS")
  eq(r.script(:exists, [sha, "0" * 40]), [true, false], "SCRIPT EXISTS of two")
  eq(r.evalsha(sha, keys: ["lock:job"], argv: ["token-1"]), 1, "EVALSHA release")
  check(!r.exists?("lock:job"), "lock still there after release")
  # A rate limiter: INCR and EXPIRE on first hit, in one script; replies of several types.
  limiter = <<~LUA
    local n = redis.call("INCR", KEYS[1])
    if n == 1 then redis.call("EXPIRE", KEYS[1], ARGV[1]) end
    return {n, redis.call("TTL", KEYS[1]), "hits", tostring(n > tonumber(ARGV[2]))}
  LUA
  eq(r.eval(limiter, ["rl:alice"], [60, 2]), [1, 60, "hits", "false"], "limiter 1")
  eq(r.eval(limiter, ["rl:alice"], [60, 2]), [2, 60, "hits", "false"], "limiter 2")
  eq(r.eval(limiter, ["rl:alice"], [60, 2]), [3, 60, "hits", "true"], "limiter 3")
  in_own_db("rl:alice")
  begin
    r.evalsha("0" * 40, keys: ["k"])
    raise Failed, "no error for EVALSHA of an unknown script"
  rescue Redis::CommandError => e
    eq(e.message, "NOSCRIPT No matching script. Please use EVAL.", "unknown sha")
  end
  begin
    r.set("text", "x")
    r.eval("return redis.call('INCR', KEYS[1])", keys: ["text"])
    raise Failed, "no error from a script's failing call"
  rescue Redis::CommandError => e
    check(e.message.start_with?("ERR value is not an integer or out of range"), "script error: #{e.message}")
  end
  r.close
end

scenario("redis_set_options") do
  r = plain_client
  eq(r.set("session", "s1", ex: 30), "OK", "SET EX")
  check((29..30).cover?(r.ttl("session")), "TTL after SET EX: #{r.ttl('session')}")
  eq(r.set("session", "s2", nx: true, ex: 60), false, "SET NX EX on an existing key")
  eq(r.get("session"), "s1", "value after the refused SET NX")
  eq(r.set("new", "n", nx: true, ex: 60), true, "SET NX EX on a missing key")
  check((59..60).cover?(r.ttl("new")), "TTL after SET NX EX: #{r.ttl('new')}")
  eq(r.set("missing", "m", xx: true), false, "SET XX on a missing key")
  check(!r.exists?("missing"), "SET XX created the key")
  eq(r.set("session", "s3", xx: true, keepttl: true), true, "SET XX KEEPTTL")
  check((29..30).cover?(r.ttl("session")), "TTL after KEEPTTL: #{r.ttl('session')}")
  eq(r.set("session", "s4", get: true), "s3", "SET GET")
  eq(r.ttl("session"), -1, "TTL after SET without options")
  eq(r.set("short", "x", px: 1000), "OK", "SET PX")
  check((1..1000).cover?(r.pttl("short")), "PTTL after SET PX: #{r.pttl('short')}")
  eq(r.set("at", "x", exat: Time.now.to_i + 100), "OK", "SET EXAT")
  check((99..100).cover?(r.ttl("at")), "TTL after SET EXAT: #{r.ttl('at')}")
  eq(r.setex("sx", 20, "v"), "OK", "SETEX")
  check((19..20).cover?(r.ttl("sx")), "TTL after SETEX: #{r.ttl('sx')}")
  eq(r.setnx("sx", "w"), false, "SETNX on an existing key")
  begin
    r.set("bad", "v", ex: 0)
    raise Failed, "no error for SET EX 0"
  rescue Redis::CommandError => e
    eq(e.message, "ERR invalid expire time in 'set' command", "SET EX 0")
  end
  in_own_db("session", "new", "short", "at", "sx")
  sleep 1.2
  eq(r.get("short"), nil, "value after PX expiry")
  r.close
end

exit($failures)
