// Cache scenarios as Node applications run them with node-redis, connect-redis (express-session
// store), cache-manager over Keyv (@keyv/redis) and express-rate-limit with rate-limit-redis, all
// unchanged and pinned in package.json.
//
// Usage: node node_caches.js PORT [--db N]
// Every library connects to 127.0.0.1:PORT, database N (default 0), through its own option: the
// URL path `/N` or `database: N`. Each scenario prints "ok <name>" or "FAIL <name>: <reason>"; the
// exit status is the number of failures. The server is flushed (FLUSHALL, from a connection on
// database 0) before each scenario; each scenario opens and closes its own clients.
"use strict";
const assert = require("assert");
const { createClient, defineScript, WatchError, MultiErrorReply } = require("redis");
const { RedisStore: SessionStore } = require("connect-redis");
const { Cookie } = require("express-session");
const { createCache } = require("cache-manager");
const { createKeyv } = require("@keyv/redis");
const express = require("express");
const { rateLimit } = require("express-rate-limit");
const { RedisStore: RateLimitStore } = require("rate-limit-redis");

const port = Number(process.argv[2]);
const d = process.argv.indexOf("--db");
const db = d < 0 ? 0 : Number(process.argv[d + 1]);
const url = `redis://127.0.0.1:${port}/${db}`;
// Per scenario, so that a server that never answers fails that scenario and not the whole run.
const SCENARIO_TIMEOUT_MS = 5000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
let failures = 0;
let admin; // database 0, for FLUSHALL only
// The running scenario: what it opened (closed after it, whatever happens), and `fail`, which ends
// it at once with an error a client reported as an event (a refused handshake makes node-redis
// retry forever instead of rejecting).
let current = null;

// A node-redis client as the README connects it (the URL carries the database), closed after the
// scenario.
async function open(options = {}) {
  const ctx = current;
  const client = createClient({ url, ...options });
  client.on("error", (e) => ctx.fail(e));
  ctx.cleanups.push(() => client.destroy());
  await client.connect();
  if (ctx.over) {
    client.destroy();
    throw new Error("scenario already over");
  }
  return client;
}

// An HTTP server on an ephemeral loopback port, closed (keep-alive connections too) after the
// scenario.
function listen(app) {
  const ctx = current;
  return new Promise((resolve, reject) => {
    const server = app.listen(0, "127.0.0.1", () => resolve(server));
    server.on("error", reject);
    ctx.cleanups.push(() => { server.closeAllConnections(); server.close(); });
    if (ctx.over) { server.close(); reject(new Error("scenario already over")); }
  });
}

// Waits for `promise` to settle, `ms` at most.
function settled(promise, ms) {
  let timer;
  return Promise.race([
    promise.then(() => {}, () => {}),
    new Promise((resolve) => { timer = setTimeout(resolve, ms); }),
  ]).finally(() => clearTimeout(timer));
}

async function scenario(name, fn) {
  let timer;
  const ctx = { cleanups: [], over: false, fail: null };
  current = ctx;
  let body = null;
  try {
    await admin.flushAll();
    const aborted = new Promise((_, reject) => {
      ctx.fail = (e) => reject(new Error(`client error event: ${(e && e.message) || e}`));
      timer = setTimeout(() => reject(new Error(`no result within ${SCENARIO_TIMEOUT_MS} ms`)), SCENARIO_TIMEOUT_MS);
    });
    body = fn();
    await Promise.race([body, aborted]);
    console.log("ok", name);
  } catch (e) {
    failures++;
    console.log("FAIL", name + ":", String((e && e.message) || e).replace(/\s*\n\s*/g, " ").trim());
  } finally {
    clearTimeout(timer);
    // After an error event or the time-out, let the scenario run into its own failure (up to
    // 250 ms) so that it opens nothing after its clients are closed.
    if (body) await settled(body, 250);
    ctx.over = true;
    ctx.fail = () => {};
    for (const close of ctx.cleanups.splice(0)) {
      try { await close(); } catch (_) { /* already closed */ }
    }
  }
}

function inRange(value, low, high) {
  assert.ok(typeof value === "number" && value > low && value <= high, `${value} not in (${low}, ${high}]`);
}

async function main() {
  admin = createClient({ url: `redis://127.0.0.1:${port}` });
  admin.on("error", () => {});
  await admin.connect();

  // ---------------------------------------------------------------- node-redis
  await scenario("node_redis_strings_with_expiry", async () => {
    const c = await open();
    assert.strictEqual(await c.set("page:/home", "<html>home</html>", { expiration: { type: "EX", value: 100 } }), "OK");
    assert.strictEqual(await c.get("page:/home"), "<html>home</html>");
    inRange(await c.ttl("page:/home"), 0, 100);
    // SET NX as a cache-fill lock: the second filler loses.
    assert.strictEqual(await c.set("lock:page:/home", "w1", { NX: true, PX: 5000 }), "OK");
    assert.strictEqual(await c.set("lock:page:/home", "w2", { NX: true, PX: 5000 }), null);
    assert.deepStrictEqual(await c.mGet(["page:/home", "page:/missing"]), ["<html>home</html>", null]);
    assert.strictEqual(await c.incrBy("stats:views", 41), 41);
    assert.strictEqual(await c.incr("stats:views"), 42);
    // A short-lived entry is gone after its TTL.
    assert.strictEqual(await c.set("flash", "saved", { PX: 800 }), "OK");
    assert.strictEqual(await c.exists("flash"), 1);
    await sleep(1000);
    assert.strictEqual(await c.get("flash"), null);
    assert.strictEqual(await c.exists("flash"), 0);
  });

  await scenario("node_redis_multi_exec", async () => {
    const c = await open();
    assert.deepStrictEqual(await c.multi().set("a", "1").incr("a").get("a").exec(), ["OK", 2, "2"]);
    // An error inside the transaction is reported in place; the other commands ran.
    await c.set("text", "abc");
    let err = null;
    try {
      await c.multi().set("n", "1").incr("text").incr("n").exec();
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof MultiErrorReply, String(err));
    assert.deepStrictEqual(err.errorIndexes, [1]);
    assert.ok(/not an integer/.test(err.replies[1].message), String(err.replies[1]));
    assert.strictEqual(err.replies[2], 2);
    assert.strictEqual(await c.get("n"), "2");
    // A command refused while queueing aborts the whole transaction (EXECABORT); node-redis
    // rejects with the refusal itself.
    err = null;
    try {
      await c.multi().set("x", "1").addCommand(["NOSUCHCOMMAND"]).exec();
    } catch (e) {
      err = e;
    }
    assert.ok(err && /unknown command/i.test(err.message), String(err));
    assert.strictEqual(await c.exists("x"), 0);
  });

  await scenario("node_redis_watch_check_and_set", async () => {
    const c = await open();
    const other = await open();
    await c.set("stock:sku1", "10");
    // A concurrent write between WATCH and EXEC aborts the transaction.
    await c.watch("stock:sku1");
    const seen = Number(await c.get("stock:sku1"));
    await other.decr("stock:sku1");
    await assert.rejects(c.multi().set("stock:sku1", String(seen - 1)).exec(), WatchError);
    // The retry sees the new value and succeeds.
    await c.watch("stock:sku1");
    const now = Number(await c.get("stock:sku1"));
    assert.deepStrictEqual(await c.multi().set("stock:sku1", String(now - 1)).exec(), ["OK"]);
    assert.strictEqual(await c.get("stock:sku1"), "8");
    // The optimistic-locking loop from four connections at once.
    const clients = [c, other, await open(), await open()];
    await Promise.all(clients.map(async (k) => {
      for (let i = 0; i < 25; i++) {
        for (;;) {
          await k.watch("counter");
          const v = Number((await k.get("counter")) || 0);
          try {
            await k.multi().set("counter", String(v + 1)).exec();
            break;
          } catch (e) {
            if (!(e instanceof WatchError)) throw e;
          }
        }
      }
    }));
    assert.strictEqual(await c.get("counter"), "100");
  });

  await scenario("node_redis_scripts", async () => {
    const lua = "local n = redis.call('incr', KEYS[1]) if n == 1 then redis.call('pexpire', KEYS[1], ARGV[1]) end return n";
    const hits = defineScript({
      NUMBER_OF_KEYS: 1,
      SCRIPT: lua,
      parseCommand(parser, key, windowMs) {
        parser.pushKey(key);
        parser.push(String(windowMs));
      },
      transformReply(reply) {
        return reply;
      },
    });
    const c = await open({ scripts: { hits } });
    await c.scriptFlush();
    // EVALSHA first; on NOSCRIPT node-redis falls back to EVAL, which caches the script.
    assert.strictEqual(await c.hits("rl:user:1", 60000), 1);
    assert.deepStrictEqual(await c.scriptExists(hits.SHA1), [1]);
    assert.strictEqual(await c.hits("rl:user:1", 60000), 2);
    inRange(await c.pTTL("rl:user:1"), 0, 60000);
    // Inside MULTI (EVAL the first time, EVALSHA after).
    assert.deepStrictEqual(await c.multi().hits("rl:user:1", 60000).hits("rl:user:1", 60000).exec(), [3, 4]);
    // SCRIPT LOAD + EVALSHA by hand, through sendCommand as raw-command users do.
    const sha = await c.sendCommand(["SCRIPT", "LOAD", "return {KEYS[1], ARGV[1], redis.call('get', KEYS[1])}"]);
    assert.ok(/^[0-9a-f]{40}$/.test(sha), String(sha));
    assert.deepStrictEqual(await c.sendCommand(["EVALSHA", sha, "1", "rl:user:1", "x"]), ["rl:user:1", "x", "4"]);
    assert.deepStrictEqual(await c.evalSha(sha, { keys: ["missing"], arguments: ["y"] }), ["missing", "y", null]);
    // A script error rejects the call.
    await assert.rejects(c.eval("return redis.error_reply('MY failure')"), /failure/);
    await assert.rejects(c.evalSha("0".repeat(40)), /NOSCRIPT/);
  });

  await scenario("node_redis_pubsub", async () => {
    const ctx = current;
    const c = await open();
    // The subscriber is a duplicate of the client (same URL and database), as node-redis's
    // pub/sub guide sets it up.
    const sub = c.duplicate();
    sub.on("error", (e) => ctx.fail(e));
    ctx.cleanups.push(() => sub.destroy());
    await sub.connect();
    const got = [];
    let resolveTwo;
    const two = new Promise((resolve) => { resolveTwo = resolve; });
    const push = (entry) => { got.push(entry); if (got.length === 2) resolveTwo(); };
    await sub.subscribe("invalidate", (message, channel) => push(["message", channel, message]));
    await sub.pSubscribe("invalidate:*", (message, channel) => push(["pmessage", channel, message]));
    assert.strictEqual(await c.publish("invalidate", "user:1"), 1);
    assert.strictEqual(await c.publish("invalidate:users", "user:2"), 1);
    await two;
    assert.deepStrictEqual(got, [["message", "invalidate", "user:1"], ["pmessage", "invalidate:users", "user:2"]]);
    await sub.unsubscribe("invalidate");
    await sub.pUnsubscribe("invalidate:*");
    assert.strictEqual(await c.publish("invalidate", "user:3"), 0);
  });

  await scenario("node_redis_database_option", async () => {
    // The `database` option (no URL) and the URL path select the same database.
    const byOption = await open({ url: undefined, socket: { host: "127.0.0.1", port }, database: db });
    const byUrl = await open();
    assert.strictEqual(await byOption.set("tenant:cfg", "v1"), "OK");
    assert.strictEqual(await byUrl.get("tenant:cfg"), "v1");
    assert.strictEqual(await byUrl.dbSize(), 1);
    // Database 0 sees the key only when it is the database in use.
    assert.strictEqual(await admin.exists("tenant:cfg"), db === 0 ? 1 : 0);
    if (db !== 0) {
      await admin.set("tenant:cfg", "db0");
      assert.strictEqual(await byUrl.get("tenant:cfg"), "v1");
      // SELECT on a connection moves it; back again.
      await byUrl.select(0);
      assert.strictEqual(await byUrl.get("tenant:cfg"), "db0");
      await byUrl.select(db);
      assert.strictEqual(await byUrl.get("tenant:cfg"), "v1");
    }
  });

  // ---------------------------------------------------------------- connect-redis
  await scenario("connect_redis_session_store", async () => {
    const client = await open();
    const store = new SessionStore({ client, prefix: "myapp:" });
    // As express-session hands them over: a Cookie with maxAge, and the session data.
    const session = (maxAge, data) => ({ cookie: new Cookie({ maxAge, httpOnly: true, path: "/" }), ...data });
    await store.set("sid-1", session(60000, { user: { id: 42, name: "ada" }, views: 3 }));
    await store.set("sid-2", session(120000, { user: { id: 7, name: "bob" }, views: 1 }));
    await client.set("other:key", "not a session");
    // The TTL comes from cookie.maxAge.
    inRange(await client.ttl("myapp:sid-1"), 55, 60);
    inRange(await client.ttl("myapp:sid-2"), 115, 120);
    // express-session's calls use callbacks.
    const got = await new Promise((resolve, reject) => store.get("sid-1", (e, s) => (e ? reject(e) : resolve(s))));
    assert.deepStrictEqual(got.user, { id: 42, name: "ada" });
    assert.strictEqual(got.views, 3);
    inRange(got.cookie.originalMaxAge, 59000, 60000); // express-session's own rounding can give 59999
    assert.ok(Date.parse(got.cookie.expires) > Date.now(), String(got.cookie.expires));
    assert.strictEqual(await store.get("sid-unknown"), null);
    assert.strictEqual(await store.length(), 2);
    assert.deepStrictEqual((await store.ids()).sort(), ["sid-1", "sid-2"]);
    const all = (await store.all()).sort((a, b) => a.id.localeCompare(b.id));
    assert.deepStrictEqual(all.map((s) => [s.id, s.user.name]), [["sid-1", "ada"], ["sid-2", "bob"]]);
    // touch (resave: false) extends the TTL to the renewed cookie.
    await store.touch("sid-1", session(600000, {}));
    inRange(await client.ttl("myapp:sid-1"), 595, 600);
    assert.strictEqual((await store.get("sid-1")).views, 3, "touch keeps the data");
    // A session whose cookie already expired is removed, not saved.
    const stale = session(60000, { views: 9 });
    stale.cookie.expires = new Date(Date.now() - 1000);
    await store.set("sid-1", stale);
    assert.strictEqual(await store.get("sid-1"), null);
    // destroy (logout)
    await store.destroy("sid-2");
    assert.strictEqual(await store.get("sid-2"), null);
    assert.strictEqual(await store.length(), 0);
    // clear removes this app's sessions only.
    for (let i = 0; i < 250; i++) await store.set(`bulk-${i}`, session(60000, { i }));
    assert.strictEqual(await store.length(), 250);
    await store.clear();
    assert.strictEqual(await store.length(), 0);
    assert.strictEqual(await client.get("other:key"), "not a session");
  });

  await scenario("connect_redis_session_expires", async () => {
    const client = await open();
    const store = new SessionStore({ client });
    await store.set("short", { cookie: new Cookie({ maxAge: 1000 }), cart: ["book"] });
    assert.deepStrictEqual((await store.get("short")).cart, ["book"]);
    inRange(await client.pTTL("sess:short"), 0, 1000);
    await sleep(1100);
    assert.strictEqual(await store.get("short"), null);
    assert.strictEqual(await store.length(), 0);
  });

  // ---------------------------------------------------------------- cache-manager + Keyv
  // A cache-manager over one @keyv/redis store, as cache-manager's README builds it; errors that
  // cache-manager reports as events (it does not throw on a failed get) are collected.
  function keyvCache(errors, options = {}) {
    const ctx = current;
    const keyv = createKeyv(url, { namespace: "products", throwOnErrors: true });
    // Keyv relays the Redis client's error events (a refused connection, too).
    keyv.on("error", (e) => { errors.push(e); ctx.fail(e); });
    const cache = createCache({ stores: [keyv], ...options });
    for (const event of ["get", "mget", "ttl", "set", "del", "clear"]) {
      cache.on(event, (arg) => { const e = arg && (arg.error || (arg instanceof Error && arg)); if (e) errors.push(e); });
    }
    ctx.cleanups.push(async () => {
      const client = keyv.store.client;
      await Promise.race([cache.disconnect(), sleep(500)]);
      if (client.isOpen) client.destroy();
    });
    return cache;
  }
  const noErrors = (errors) => assert.strictEqual(errors.length, 0, errors.map((e) => e.message).join("; "));

  await scenario("cache_manager_keyv_get_set_del", async () => {
    const errors = [];
    const cache = keyvCache(errors, { ttl: 60000 });
    const raw = await open();
    const lamp = { id: 1, name: "lamp", price: 19.5, tags: ["home"] };
    assert.deepStrictEqual(await cache.set("product:1", lamp), lamp);
    assert.deepStrictEqual(await cache.get("product:1"), lamp);
    assert.strictEqual(await cache.get("product:404"), undefined);
    // Stored under the namespace with the default ttl as a Redis expiry.
    assert.deepStrictEqual(await raw.keys("products*"), ["products::product:1"]);
    inRange(await raw.pTTL("products::product:1"), 0, 60000);
    const expires = await cache.ttl("product:1");
    assert.ok(expires > Date.now() && expires <= Date.now() + 60000, String(expires));
    // mset / mget
    await cache.mset([
      { key: "product:2", value: { id: 2, name: "desk" } },
      { key: "product:3", value: "chair", ttl: 30000 },
    ]);
    assert.deepStrictEqual(await cache.mget(["product:1", "product:2", "product:3", "product:404"]),
      [lamp, { id: 2, name: "desk" }, "chair", undefined]);
    inRange(await raw.pTTL("products::product:3"), 0, 30000);
    // del / mdel
    assert.strictEqual(await cache.del("product:1"), true);
    assert.strictEqual(await cache.get("product:1"), undefined);
    assert.strictEqual(await raw.exists("products::product:1"), 0);
    assert.strictEqual(await cache.mdel(["product:2", "product:3"]), true);
    assert.deepStrictEqual(await cache.mget(["product:2", "product:3"]), [undefined, undefined]);
    assert.strictEqual(await raw.dbSize(), 0);
    noErrors(errors);
  });

  await scenario("cache_manager_keyv_wrap_and_ttl", async () => {
    const errors = [];
    const cache = keyvCache(errors);
    const raw = await open();
    let calls = 0;
    const loadReport = async () => { calls++; return { rows: [1, 2, 3], built: calls }; };
    // The first call computes and caches for 1 s; the second is served from Redis.
    assert.deepStrictEqual(await cache.wrap("report:daily", loadReport, 1000), { rows: [1, 2, 3], built: 1 });
    assert.deepStrictEqual(await cache.wrap("report:daily", loadReport, 1000), { rows: [1, 2, 3], built: 1 });
    assert.strictEqual(calls, 1);
    inRange(await raw.pTTL("products::report:daily"), 0, 1000);
    // A short set ttl too.
    await cache.set("banner", "sale", 1000);
    assert.strictEqual(await cache.get("banner"), "sale");
    await sleep(1100);
    // Redis itself expired them, and the next wrap recomputes.
    assert.strictEqual(await raw.exists(["products::report:daily", "products::banner"]), 0);
    assert.strictEqual(await cache.get("banner"), undefined);
    assert.deepStrictEqual(await cache.wrap("report:daily", loadReport, 1000), { rows: [1, 2, 3], built: 2 });
    assert.strictEqual(calls, 2);
    // A failing loader rejects and caches nothing.
    await assert.rejects(cache.wrap("report:broken", async () => { throw new Error("db down"); }, 1000), /db down/);
    assert.strictEqual(await raw.exists("products::report:broken"), 0);
    noErrors(errors);
  });

  await scenario("cache_manager_keyv_clear", async () => {
    const errors = [];
    const cache = keyvCache(errors, { ttl: 60000 });
    const raw = await open();
    await raw.set("sessions:other-app", "keep me");
    await cache.mset(Array.from({ length: 120 }, (_, i) => ({ key: `p:${i}`, value: { i } })));
    assert.strictEqual(await raw.dbSize(), 121);
    assert.deepStrictEqual(await cache.get("p:119"), { i: 119 });
    assert.strictEqual(await cache.clear(), true);
    assert.strictEqual(await cache.get("p:0"), undefined);
    assert.deepStrictEqual(await raw.keys("*"), ["sessions:other-app"]);
    noErrors(errors);
  });

  // ---------------------------------------------------------------- express-rate-limit + rate-limit-redis
  // A small express API behind the limiter, with rate-limit-redis on node-redis as its README wires it.
  async function limitedApi(client, options) {
    const app = express();
    const limiter = rateLimit({
      standardHeaders: "draft-6",
      legacyHeaders: false,
      store: new RateLimitStore({ sendCommand: (...args) => client.sendCommand(args) }),
      ...options,
    });
    app.use(limiter);
    app.get("/api/items", (req, res) => res.json({ items: [1, 2, 3] }));
    // A store error reaches here (passOnStoreError is off): report it in the body.
    app.use((err, req, res, next) => res.status(500).send(`store error: ${err.message}`));
    const server = await listen(app);
    const base = `http://127.0.0.1:${server.address().port}`;
    const get = async () => {
      const r = await fetch(`${base}/api/items`);
      const body = await r.text();
      return { status: r.status, headers: r.headers, body };
    };
    return { limiter, get };
  }
  const statusOf = (r) => `${r.status} ${r.body.slice(0, 200)}`;

  await scenario("rate_limit_redis_express", async () => {
    const client = await open();
    const { get } = await limitedApi(client, { windowMs: 60000, limit: 3 });
    for (let i = 1; i <= 3; i++) {
      const r = await get();
      assert.strictEqual(r.status, 200, statusOf(r));
      assert.deepStrictEqual(JSON.parse(r.body), { items: [1, 2, 3] });
      assert.strictEqual(r.headers.get("ratelimit-limit"), "3");
      assert.strictEqual(r.headers.get("ratelimit-remaining"), String(3 - i));
      inRange(Number(r.headers.get("ratelimit-reset")), 0, 60);
    }
    const r = await get();
    assert.strictEqual(r.status, 429, statusOf(r));
    assert.strictEqual(r.body, "Too many requests, please try again later.");
    assert.strictEqual(r.headers.get("ratelimit-remaining"), "0");
    inRange(Number(r.headers.get("retry-after")), 0, 60);
    // The counter lives in Redis, with the window as its expiry.
    const keys = await client.keys("rl:*");
    assert.strictEqual(keys.length, 1, JSON.stringify(keys));
    assert.strictEqual(await client.get(keys[0]), "4");
    inRange(await client.pTTL(keys[0]), 0, 60000);
  });

  await scenario("rate_limit_redis_window_and_reset", async () => {
    const client = await open();
    const { limiter, get } = await limitedApi(client, { windowMs: 1000, limit: 2 });
    const first = [await get(), await get(), await get()];
    assert.deepStrictEqual(first.map((r) => r.status), [200, 200, 429], first.map(statusOf).join(" / "));
    // The window ends with the Redis key's expiry.
    await sleep(1100);
    let r = await get();
    assert.strictEqual(r.status, 200, statusOf(r));
    assert.strictEqual(r.headers.get("ratelimit-remaining"), "1");
    // After a SCRIPT FLUSH (a restarted or failed-over server) the store reloads its scripts on NOSCRIPT.
    await client.scriptFlush();
    r = await get();
    assert.strictEqual(r.status, 200, statusOf(r));
    assert.strictEqual(r.headers.get("ratelimit-remaining"), "0");
    assert.strictEqual((await get()).status, 429);
    // resetKey lifts the limit for that client at once (DEL).
    const [key] = await client.keys("rl:*");
    await limiter.resetKey(key.slice("rl:".length));
    r = await get();
    assert.strictEqual(r.status, 200, statusOf(r));
  });

  admin.destroy();
  process.exitCode = failures;
  // Everything is closed, so the process ends by itself; a handle left open is a failure, not a hang.
  setTimeout(() => {
    console.log("FAIL teardown: handles still open 2 s after the last scenario");
    process.exit(failures + 1);
  }, 2000).unref();
}

main().catch((e) => {
  console.log("FAIL setup:", e && e.message);
  if (admin) admin.destroy();
  process.exitCode = 100;
});
