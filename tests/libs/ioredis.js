// Cache scenarios as applications run them with ioredis, unchanged.
//
// Usage: node ioredis.js PORT [--tls CA CERT KEY]
// Each scenario prints "ok <name>" or "FAIL <name>: <reason>"; the exit status is the number of
// failures.
"use strict";
const assert = require("assert");
const fs = require("fs");
const Redis = require("ioredis");

const port = Number(process.argv[2]);
// --tls CA CERT KEY: over TLS, trusting CA and presenting CERT and KEY.
const t = process.argv.indexOf("--tls");
const tls = t < 0 ? {} : {
  tls: {
    ca: fs.readFileSync(process.argv[t + 1]),
    cert: fs.readFileSync(process.argv[t + 2]),
    key: fs.readFileSync(process.argv[t + 3]),
  },
};
const redis = new Redis({ host: "127.0.0.1", port, lazyConnect: false, maxRetriesPerRequest: 1, ...tls });
let failures = 0;

async function scenario(name, fn) {
  await redis.flushall();
  try {
    await fn();
    console.log("ok", name);
  } catch (e) {
    failures++;
    console.log("FAIL", name + ":", e && e.message);
  }
}

async function main() {
  await scenario("strings_and_expiry", async () => {
    assert.strictEqual(await redis.set("greeting", "hello", "EX", 100), "OK");
    assert.strictEqual(await redis.get("greeting"), "hello");
    const ttl = await redis.ttl("greeting");
    assert.ok(ttl > 0 && ttl <= 100, String(ttl));
    assert.deepStrictEqual(await redis.mget("greeting", "missing"), ["hello", null]);
    assert.strictEqual(await redis.incrby("n", 41), 41);
  });

  await scenario("multi_exec", async () => {
    const r = await redis.multi().set("a", 1).incr("a").get("a").exec();
    assert.deepStrictEqual(r, [[null, "OK"], [null, 2], [null, "2"]]);
  });

  await scenario("multi_reports_errors_in_place", async () => {
    await redis.set("text", "abc");
    const r = await redis.multi().set("n", 1).incr("text").incr("n").exec();
    assert.strictEqual(r[0][1], "OK");
    assert.ok(r[1][0] instanceof Error && /not an integer/.test(r[1][0].message), String(r[1][0]));
    assert.strictEqual(r[2][1], 2);
  });

  await scenario("multi_aborts_on_a_refused_command", async () => {
    let err = null;
    try {
      await redis.multi().set("x", 1).call("nosuchcommand").exec();
    } catch (e) {
      err = e;
    }
    assert.ok(err && /EXECABORT/.test(err.message), String(err));
    assert.strictEqual(await redis.exists("x"), 0);
  });

  await scenario("pipeline", async () => {
    const p = redis.pipeline();
    for (let i = 0; i < 100; i++) p.set(`key:${i}`, i);
    const r = await p.exec();
    assert.strictEqual(r.length, 100);
    assert.strictEqual(await redis.get("key:99"), "99");
  });

  await scenario("watch_increments", async () => {
    // The optimistic-locking loop from four connections at once.
    const clients = [0, 1, 2, 3].map(() => new Redis({ host: "127.0.0.1", port, ...tls }));
    await Promise.all(clients.map(async (c) => {
      for (let i = 0; i < 50; i++) {
        for (;;) {
          await c.watch("counter");
          const v = Number((await c.get("counter")) || 0);
          const r = await c.multi().set("counter", v + 1).exec();
          if (r !== null) break;
        }
      }
    }));
    clients.forEach((c) => c.disconnect());
    assert.strictEqual(await redis.get("counter"), "200");
  });

  await scenario("define_command", async () => {
    // EVALSHA first, EVAL when the script is not cached: ioredis's own fallback.
    await redis.script("FLUSH");
    redis.defineCommand("hits", {
      numberOfKeys: 1,
      lua: "local n = redis.call('incr', KEYS[1]) if n == 1 then redis.call('pexpire', KEYS[1], ARGV[1]) end return n",
    });
    assert.strictEqual(await redis.hits("rl:user", 60000), 1);
    assert.strictEqual(await redis.hits("rl:user", 60000), 2);
    const pttl = await redis.pttl("rl:user");
    assert.ok(pttl > 0 && pttl <= 60000, String(pttl));
  });

  await scenario("eval_errors_reject", async () => {
    let err = null;
    try {
      await redis.eval("return redis.error_reply('MY failure')", 0);
    } catch (e) {
      err = e;
    }
    assert.ok(err && /failure/.test(err.message), String(err));
  });

  await scenario("pubsub_messages", async () => {
    const sub = new Redis({ host: "127.0.0.1", port, ...tls });
    const got = [];
    const two = new Promise((resolve) => {
      sub.on("message", (ch, msg) => { got.push([ch, msg]); if (got.length === 2) resolve(); });
      sub.on("pmessage", (pat, ch, msg) => { got.push([pat, ch, msg]); if (got.length === 2) resolve(); });
    });
    assert.strictEqual(await sub.subscribe("invalidate"), 1);
    assert.strictEqual(await sub.psubscribe("invalidate:*"), 2);
    assert.strictEqual(await redis.publish("invalidate", "user:1"), 1);
    assert.strictEqual(await redis.publish("invalidate:users", "user:2"), 1);
    await two;
    assert.deepStrictEqual(got, [["invalidate", "user:1"], ["invalidate:*", "invalidate:users", "user:2"]]);
    sub.disconnect();
  });

  redis.disconnect();
  process.exit(failures);
}

main().catch((e) => {
  console.log("FAIL setup:", e && e.message);
  process.exit(100);
});
