// go-redis v5 (gopkg.in/redis.v5) as Go applications use it, unchanged, against a
// Redis-protocol server.
//
// Usage: go_redis PORT [--db N]
//
// Built in GOPATH mode against Debian's golang-gopkg-redis.v5-dev (go-redis 5.2.9), no module
// proxy needed:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/tmp/gocache go build -o go_redis tests/libs/go_redis.go
//
// The clients use database N (default 0); with N other than 0 a scenario also checks, through a
// db-0 client and a client that SELECTs N, that the keys are in database N and not in database 0.
// Before each scenario a db-0 client sends FLUSHALL. Each scenario prints "ok <name>" or
// "FAIL <name>: <reason>"; the exit status is the number of failures.
package main

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/redis.v5"
)

const host = "127.0.0.1"

var (
	addr string
	db   int
	// db 0: FLUSHALL before each scenario, and to look for keys that must not be there.
	r0 *redis.Client
	// The application's client, on database db.
	rc       *redis.Client
	failures int
)

func newClient(n int, poolSize int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:        addr,
		DB:          n,
		PoolSize:    poolSize,
		DialTimeout: 5 * time.Second,
		ReadTimeout: 5 * time.Second,
	})
}

// check turns a failed condition into the scenario's failure.
type failure struct{ msg string }

func check(cond bool, format string, args ...interface{}) {
	if !cond {
		panic(failure{fmt.Sprintf(format, args...)})
	}
}

// must fails the scenario on an error.
func must(err error, what string) {
	if err != nil {
		panic(failure{fmt.Sprintf("%s: %v", what, err)})
	}
}

func scenario(name string, fn func()) {
	if err := r0.FlushAll().Err(); err != nil {
		failures++
		fmt.Printf("FAIL %s: FLUSHALL: %v\n", name, err)
		return
	}
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				if f, ok := p.(failure); ok {
					err = errors.New(f.msg)
				} else {
					err = fmt.Errorf("panic: %v", p)
				}
			}
		}()
		fn()
		return nil
	}()
	if err != nil {
		failures++
		fmt.Printf("FAIL %s: %s\n", name, strings.ReplaceAll(err.Error(), "\n", " "))
	} else {
		fmt.Printf("ok %s\n", name)
	}
}

// inOwnDB: the keys are in the application's database, and (with --db N, N > 0) not in
// database 0, where a client sees them only after SELECT N.
func inOwnDB(keys ...string) {
	for _, k := range keys {
		n, err := rc.ExistsMulti(k).Result()
		must(err, "EXISTS "+k)
		check(n == 1, "%q missing from db %d", k, db)
	}
	if db == 0 {
		return
	}
	for _, k := range keys {
		n, err := r0.ExistsMulti(k).Result()
		must(err, "EXISTS (db 0) "+k)
		check(n == 0, "%q is visible in db 0", k)
	}
	// A client on db 0 that SELECTs N on its one connection (the Tx keeps it).
	c := newClient(0, 1)
	defer c.Close()
	err := c.Watch(func(tx *redis.Tx) error {
		if err := tx.Select(db).Err(); err != nil {
			return err
		}
		for _, k := range keys {
			n, err := tx.ExistsMulti(k).Result()
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("%q not visible after SELECT %d", k, db)
			}
		}
		return nil
	})
	must(err, "SELECT")
}

func ttlBetween(key string, lo, hi time.Duration) {
	ttl, err := rc.TTL(key).Result()
	must(err, "TTL "+key)
	check(ttl >= lo && ttl <= hi, "TTL %s = %v, want in [%v, %v]", key, ttl, lo, hi)
}

func getEq(c *redis.Client, key, want string) {
	got, err := c.Get(key).Result()
	must(err, "GET "+key)
	check(got == want, "GET %s = %q, want %q", key, got, want)
}

func strings_() {
	// Set with and without expiration, Get, missing key.
	must(rc.Set("user:1:name", "Ada", 0).Err(), "SET")
	must(rc.Set("session:abc", "token-1", 100*time.Second).Err(), "SET EX")
	must(rc.Set("otp:1", "424242", 1500*time.Millisecond).Err(), "SET PX")
	getEq(rc, "user:1:name", "Ada")
	getEq(rc, "session:abc", "token-1")
	_, err := rc.Get("no-such-key").Result()
	check(err == redis.Nil, "GET of a missing key: err = %v, want redis.Nil", err)
	ttlBetween("session:abc", 98*time.Second, 100*time.Second)
	pttl, err := rc.PTTL("otp:1").Result()
	must(err, "PTTL")
	check(pttl > 1000*time.Millisecond && pttl <= 1500*time.Millisecond, "PTTL otp:1 = %v", pttl)
	ttl, err := rc.TTL("user:1:name").Result()
	must(err, "TTL")
	check(ttl == -1*time.Second, "TTL of a key without expiry = %v, want -1s", ttl)
	ttl, err = rc.TTL("no-such-key").Result()
	must(err, "TTL missing")
	check(ttl == -2*time.Second, "TTL of a missing key = %v, want -2s", ttl)
	// Binary-safe values.
	bin := "a\x00b\r\nc\xff"
	must(rc.Set("bin", bin, 0).Err(), "SET bin")
	getEq(rc, "bin", bin)
	// The short-lived key is gone after its expiry.
	time.Sleep(1600 * time.Millisecond)
	_, err = rc.Get("otp:1").Result()
	check(err == redis.Nil, "GET of an expired key: err = %v, want redis.Nil", err)
	inOwnDB("user:1:name", "session:abc", "bin")
}

func setnxSetxx() {
	ok, err := rc.SetNX("lock:job", "worker-1", 0).Result()
	must(err, "SETNX")
	check(ok, "SETNX on an absent key returned false")
	ok, err = rc.SetNX("lock:job", "worker-2", 0).Result()
	must(err, "SETNX again")
	check(!ok, "SETNX on an existing key returned true")
	getEq(rc, "lock:job", "worker-1")
	// SET NX with expiration: a lease.
	ok, err = rc.SetNX("lease", "me", 30*time.Second).Result()
	must(err, "SET NX EX")
	check(ok, "SET NX EX on an absent key returned false")
	ok, err = rc.SetNX("lease", "you", 30*time.Second).Result()
	must(err, "SET NX EX again")
	check(!ok, "SET NX EX on an existing key returned true")
	getEq(rc, "lease", "me")
	ttlBetween("lease", 28*time.Second, 30*time.Second)
	ok, err = rc.SetNX("lease-ms", "me", 2500*time.Millisecond).Result()
	must(err, "SET NX PX")
	check(ok, "SET NX PX on an absent key returned false")
	pttl, err := rc.PTTL("lease-ms").Result()
	must(err, "PTTL")
	check(pttl > 2000*time.Millisecond && pttl <= 2500*time.Millisecond, "PTTL lease-ms = %v", pttl)
	// SET XX only updates.
	ok, err = rc.SetXX("absent", "x", 0).Result()
	must(err, "SET XX absent")
	check(!ok, "SET XX on an absent key returned true")
	_, err = rc.Get("absent").Result()
	check(err == redis.Nil, "SET XX created the key (err = %v)", err)
	ok, err = rc.SetXX("lock:job", "worker-3", 10*time.Second).Result()
	must(err, "SET XX EX")
	check(ok, "SET XX on an existing key returned false")
	getEq(rc, "lock:job", "worker-3")
	ttlBetween("lock:job", 8*time.Second, 10*time.Second)
	inOwnDB("lock:job", "lease", "lease-ms")
}

func counters() {
	n, err := rc.Incr("hits").Result()
	must(err, "INCR")
	check(n == 1, "INCR of an absent key = %d", n)
	n, err = rc.IncrBy("hits", 41).Result()
	must(err, "INCRBY")
	check(n == 42, "INCRBY = %d", n)
	n, err = rc.Decr("hits").Result()
	must(err, "DECR")
	check(n == 41, "DECR = %d", n)
	n, err = rc.DecrBy("hits", 50).Result()
	must(err, "DECRBY")
	check(n == -9, "DECRBY = %d", n)
	getEq(rc, "hits", "-9")
	f, err := rc.IncrByFloat("price", 10.5).Result()
	must(err, "INCRBYFLOAT")
	check(f == 10.5, "INCRBYFLOAT = %v", f)
	f, err = rc.IncrByFloat("price", 0.1).Result()
	must(err, "INCRBYFLOAT")
	check(f == 10.6, "INCRBYFLOAT = %v", f)
	getEq(rc, "price", "10.6")
	f, err = rc.IncrByFloat("price", -10.6).Result()
	must(err, "INCRBYFLOAT")
	check(f == 0, "INCRBYFLOAT to zero = %v", f)
	getEq(rc, "price", "0")
	// Errors an application sees.
	must(rc.Set("name", "Ada", 0).Err(), "SET")
	err = rc.Incr("name").Err()
	check(err != nil && strings.Contains(err.Error(), "not an integer"), "INCR of a non-number: err = %v", err)
	must(rc.Set("big", strconv.FormatInt(1<<62, 10), 0).Err(), "SET big")
	err = rc.IncrBy("big", 1<<62).Err()
	check(err != nil && strings.Contains(err.Error(), "overflow"), "INCRBY overflow: err = %v", err)
	// Counter is an integer to Get().Int64().
	v, err := rc.Get("hits").Int64()
	must(err, "GET Int64")
	check(v == -9, "Get().Int64() = %d", v)
	inOwnDB("hits", "price")
}

func multiKey() {
	must(rc.MSet("k:1", "one", "k:2", "two", "k:3", 3).Err(), "MSET")
	vals, err := rc.MGet("k:1", "k:missing", "k:2", "k:3").Result()
	must(err, "MGET")
	check(len(vals) == 4, "MGET returned %d values", len(vals))
	check(vals[0] == "one" && vals[1] == nil && vals[2] == "two" && vals[3] == "3", "MGET = %#v", vals)
	n, err := rc.ExistsMulti("k:1", "k:2", "k:missing", "k:1").Result()
	must(err, "EXISTS multi")
	check(n == 3, "EXISTS k:1 k:2 k:missing k:1 = %d, want 3", n)
	e, err := rc.Exists("k:3").Result()
	must(err, "EXISTS")
	check(e, "EXISTS k:3 = false")
	d, err := rc.Del("k:1", "k:3", "k:missing").Result()
	must(err, "DEL")
	check(d == 2, "DEL = %d, want 2", d)
	e, err = rc.Exists("k:1").Result()
	must(err, "EXISTS after DEL")
	check(!e, "k:1 still exists after DEL")
	vals, err = rc.MGet("k:1", "k:2", "k:3").Result()
	must(err, "MGET after DEL")
	check(vals[0] == nil && vals[1] == "two" && vals[2] == nil, "MGET after DEL = %#v", vals)
	ok, err := rc.MSetNX("k:2", "x", "k:4", "four").Result()
	must(err, "MSETNX")
	check(!ok, "MSETNX with one existing key returned true")
	_, err = rc.Get("k:4").Result()
	check(err == redis.Nil, "MSETNX wrote k:4 (err = %v)", err)
	// Append / GetRange / StrLen / GetSet.
	n, err = rc.Append("log", "line1;").Result()
	must(err, "APPEND")
	check(n == 6, "APPEND to an absent key = %d", n)
	n, err = rc.Append("log", "line2;").Result()
	must(err, "APPEND")
	check(n == 12, "APPEND = %d", n)
	s, err := rc.GetRange("log", 6, 10).Result()
	must(err, "GETRANGE")
	check(s == "line2", "GETRANGE 6 10 = %q", s)
	s, err = rc.GetRange("log", -6, -1).Result()
	must(err, "GETRANGE negative")
	check(s == "line2;", "GETRANGE -6 -1 = %q", s)
	s, err = rc.GetRange("log", 100, 200).Result()
	must(err, "GETRANGE out of range")
	check(s == "", "GETRANGE out of range = %q", s)
	n, err = rc.StrLen("log").Result()
	must(err, "STRLEN")
	check(n == 12, "STRLEN = %d", n)
	n, err = rc.StrLen("absent").Result()
	must(err, "STRLEN absent")
	check(n == 0, "STRLEN absent = %d", n)
	old, err := rc.GetSet("log", "reset").Result()
	must(err, "GETSET")
	check(old == "line1;line2;", "GETSET old = %q", old)
	getEq(rc, "log", "reset")
	_, err = rc.GetSet("fresh", "v").Result()
	check(err == redis.Nil, "GETSET of an absent key: err = %v, want redis.Nil", err)
	getEq(rc, "fresh", "v")
	inOwnDB("k:2", "log", "fresh")
}

func expiry() {
	must(rc.Set("cache:page", "<html>", 0).Err(), "SET")
	ok, err := rc.Expire("cache:page", 60*time.Second).Result()
	must(err, "EXPIRE")
	check(ok, "EXPIRE on an existing key returned false")
	ttlBetween("cache:page", 58*time.Second, 60*time.Second)
	ok, err = rc.Expire("absent", 60*time.Second).Result()
	must(err, "EXPIRE absent")
	check(!ok, "EXPIRE on an absent key returned true")
	ok, err = rc.PExpire("cache:page", 90500*time.Millisecond).Result()
	must(err, "PEXPIRE")
	check(ok, "PEXPIRE returned false")
	pttl, err := rc.PTTL("cache:page").Result()
	must(err, "PTTL")
	check(pttl > 88*time.Second && pttl <= 90500*time.Millisecond, "PTTL = %v", pttl)
	ok, err = rc.ExpireAt("cache:page", time.Now().Add(1*time.Hour)).Result()
	must(err, "EXPIREAT")
	check(ok, "EXPIREAT returned false")
	ttlBetween("cache:page", 3597*time.Second, 3601*time.Second)
	ok, err = rc.Persist("cache:page").Result()
	must(err, "PERSIST")
	check(ok, "PERSIST of a volatile key returned false")
	ttl, err := rc.TTL("cache:page").Result()
	must(err, "TTL after PERSIST")
	check(ttl == -1*time.Second, "TTL after PERSIST = %v", ttl)
	ok, err = rc.Persist("cache:page").Result()
	must(err, "PERSIST again")
	check(!ok, "PERSIST of a persistent key returned true")
	// A SET without expiration drops a TTL; an expiry in the past deletes.
	must(rc.Set("tmp", "1", time.Minute).Err(), "SET EX")
	must(rc.Set("tmp", "2", 0).Err(), "SET")
	ttl, err = rc.TTL("tmp").Result()
	must(err, "TTL tmp")
	check(ttl == -1*time.Second, "TTL after plain SET = %v", ttl)
	must(rc.Set("short", "x", 0).Err(), "SET short")
	ok, err = rc.PExpire("short", 300*time.Millisecond).Result()
	must(err, "PEXPIRE short")
	check(ok, "PEXPIRE short returned false")
	time.Sleep(450 * time.Millisecond)
	e, err := rc.Exists("short").Result()
	must(err, "EXISTS short")
	check(!e, "key still exists after its PEXPIRE")
	inOwnDB("cache:page", "tmp")
}

func pipelines() {
	// Pipelined: commands sent together, results per command.
	var incr *redis.IntCmd
	var get *redis.StringCmd
	var missing *redis.StringCmd
	var ttl *redis.DurationCmd
	cmds, err := rc.Pipelined(func(p *redis.Pipeline) error {
		p.Set("p:a", "1", 0)
		p.Set("p:b", "2", time.Minute)
		incr = p.Incr("p:a")
		get = p.Get("p:b")
		missing = p.Get("p:none")
		ttl = p.TTL("p:b")
		return nil
	})
	// A pipeline returns the first failed command's error: here the Get of a missing key.
	check(err == redis.Nil, "Pipelined err = %v, want redis.Nil (from the missing key)", err)
	check(len(cmds) == 6, "Pipelined returned %d commands", len(cmds))
	check(incr.Val() == 2, "pipelined INCR = %d", incr.Val())
	check(get.Val() == "2", "pipelined GET = %q", get.Val())
	check(missing.Err() == redis.Nil, "pipelined GET missing: %v", missing.Err())
	check(ttl.Val() > 58*time.Second && ttl.Val() <= time.Minute, "pipelined TTL = %v", ttl.Val())
	// Pipeline() / Exec, reused: a batch of 100 writes then 100 reads.
	pipe := rc.Pipeline()
	for i := 0; i < 100; i++ {
		pipe.Set(fmt.Sprintf("batch:%d", i), i*i, 0)
	}
	cmds, err = pipe.Exec()
	must(err, "pipeline Exec (SET)")
	check(len(cmds) == 100, "Exec returned %d commands", len(cmds))
	gets := make([]*redis.StringCmd, 100)
	for i := 0; i < 100; i++ {
		gets[i] = pipe.Get(fmt.Sprintf("batch:%d", i))
	}
	_, err = pipe.Exec()
	must(err, "pipeline Exec (GET)")
	must(pipe.Close(), "pipeline Close")
	for i, g := range gets {
		v, err := g.Int64()
		must(err, "batch GET")
		check(v == int64(i*i), "batch:%d = %d", i, v)
	}
	n, err := rc.DbSize().Result()
	must(err, "DBSIZE")
	check(n == 102, "DBSIZE after the batch = %d, want 102", n)
	// An error inside a pipeline leaves the other commands' results.
	cmds, err = rc.Pipelined(func(p *redis.Pipeline) error {
		p.Set("p:str", "abc", 0)
		p.Incr("p:str")
		p.Get("p:str")
		return nil
	})
	check(err != nil && strings.Contains(err.Error(), "not an integer"), "pipeline with a failing INCR: err = %v", err)
	check(cmds[2].(*redis.StringCmd).Val() == "abc", "GET after a failed INCR in a pipeline = %q", cmds[2].(*redis.StringCmd).Val())
	inOwnDB("p:a", "p:b", "batch:0", "batch:99")
}

func transactions() {
	// TxPipelined: MULTI ... EXEC.
	var incr *redis.IntCmd
	var get *redis.StringCmd
	cmds, err := rc.TxPipelined(func(p *redis.Pipeline) error {
		p.Set("acct:a", "100", 0)
		p.Set("acct:b", "50", 0)
		p.DecrBy("acct:a", 30)
		incr = p.IncrBy("acct:b", 30)
		get = p.Get("acct:a")
		return nil
	})
	must(err, "TxPipelined")
	check(len(cmds) == 5, "TxPipelined returned %d commands", len(cmds))
	check(incr.Val() == 80, "INCRBY in MULTI = %d", incr.Val())
	check(get.Val() == "70", "GET in MULTI = %q", get.Val())
	getEq(rc, "acct:a", "70")
	getEq(rc, "acct:b", "80")
	// TxPipeline() / Exec with expiry inside.
	tp := rc.TxPipeline()
	tp.Set("acct:c", "1", 0)
	tp.Expire("acct:c", time.Minute)
	ex := tp.Exists("acct:c")
	_, err = tp.Exec()
	must(err, "TxPipeline Exec")
	must(tp.Close(), "TxPipeline Close")
	check(ex.Val(), "EXISTS in MULTI = false")
	ttlBetween("acct:c", 58*time.Second, 60*time.Second)
	// A run-time error inside EXEC: other commands still run.
	cmds, err = rc.TxPipelined(func(p *redis.Pipeline) error {
		p.Set("t:s", "abc", 0)
		p.Incr("t:s")
		p.Set("t:after", "yes", 0)
		return nil
	})
	check(err != nil && strings.Contains(err.Error(), "not an integer"), "MULTI with a failing INCR: err = %v", err)
	check(len(cmds) == 3, "TxPipelined returned %d commands", len(cmds))
	getEq(rc, "t:after", "yes")
	inOwnDB("acct:a", "acct:b", "acct:c")
}

func watchConflict() {
	must(rc.Set("stock", "10", 0).Err(), "SET")
	other := newClient(db, 2)
	defer other.Close()
	// A watched key changed by another client between WATCH and EXEC: TxFailedErr.
	err := rc.Watch(func(tx *redis.Tx) error {
		n, err := tx.Get("stock").Int64()
		if err != nil {
			return err
		}
		if err := other.Set("stock", "3", 0).Err(); err != nil {
			return err
		}
		_, err = tx.Pipelined(func(p *redis.Pipeline) error {
			p.Set("stock", strconv.FormatInt(n-1, 10), 0)
			return nil
		})
		return err
	}, "stock")
	check(err == redis.TxFailedErr, "EXEC after another client's write: err = %v, want redis.TxFailedErr", err)
	getEq(rc, "stock", "3")
	// Deleted by the other client: also fails.
	err = rc.Watch(func(tx *redis.Tx) error {
		if err := other.Del("stock").Err(); err != nil {
			return err
		}
		_, err := tx.Pipelined(func(p *redis.Pipeline) error {
			p.Set("stock", "99", 0)
			return nil
		})
		return err
	}, "stock")
	check(err == redis.TxFailedErr, "EXEC after another client's DEL: err = %v, want redis.TxFailedErr", err)
	_, err = rc.Get("stock").Result()
	check(err == redis.Nil, "the failed transaction wrote stock (err = %v)", err)
	// Unchanged: the transaction commits.
	must(rc.Set("stock", "3", 0).Err(), "SET")
	var decr *redis.IntCmd
	err = rc.Watch(func(tx *redis.Tx) error {
		n, err := tx.Get("stock").Int64()
		if err != nil {
			return err
		}
		if n <= 0 {
			return errors.New("out of stock")
		}
		_, err = tx.Pipelined(func(p *redis.Pipeline) error {
			decr = p.Decr("stock")
			return nil
		})
		return err
	}, "stock")
	must(err, "watched transaction on an unchanged key")
	check(decr.Val() == 2, "DECR in the watched transaction = %d", decr.Val())
	getEq(rc, "stock", "2")
	// A key the client itself changed after WATCH (outside the transaction) also aborts it.
	err = rc.Watch(func(tx *redis.Tx) error {
		if err := tx.Set("stock", "1", 0).Err(); err != nil {
			return err
		}
		_, err := tx.Pipelined(func(p *redis.Pipeline) error {
			p.Set("stock", "0", 0)
			return nil
		})
		return err
	}, "stock")
	check(err == redis.TxFailedErr, "EXEC after own write since WATCH: err = %v, want redis.TxFailedErr", err)
	getEq(rc, "stock", "1")
	inOwnDB("stock")
}

func optimisticIncrements() {
	const workers, each = 4, 25
	c := newClient(db, workers+2)
	defer c.Close()
	key := "counter:optimistic"
	incr := func() error {
		for attempt := 0; attempt < 1000; attempt++ {
			err := c.Watch(func(tx *redis.Tx) error {
				n, err := tx.Get(key).Int64()
				if err != nil && err != redis.Nil {
					return err
				}
				_, err = tx.Pipelined(func(p *redis.Pipeline) error {
					p.Set(key, strconv.FormatInt(n+1, 10), 0)
					return nil
				})
				return err
			}, key)
			if err == redis.TxFailedErr {
				continue
			}
			return err
		}
		return errors.New("too many retries")
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := incr(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(err, "optimistic increment")
	}
	v, err := rc.Get(key).Int64()
	must(err, "GET counter")
	check(v == workers*each, "counter = %d, want %d", v, workers*each)
	inOwnDB(key)
}

const rateScript = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return {n, 0} end
return {n, 1}
`

func scripting() {
	// EVAL with keys and args, reply types.
	v, err := rc.Eval("return {KEYS[1], ARGV[1], 42, redis.call('SET', KEYS[1], ARGV[1])}", []string{"s:k"}, "v1").Result()
	must(err, "EVAL")
	arr, ok := v.([]interface{})
	check(ok && len(arr) == 4, "EVAL reply = %#v", v)
	check(arr[0] == "s:k" && arr[1] == "v1" && arr[2] == int64(42) && arr[3] == "OK", "EVAL reply = %#v", arr)
	getEq(rc, "s:k", "v1")
	v, err = rc.Eval("return redis.call('GET', KEYS[1])", []string{"s:none"}).Result()
	check(err == redis.Nil && v == nil, "EVAL returning a nil bulk: v = %#v err = %v", v, err)
	err = rc.Eval("return redis.error_reply('MYERR custom')", nil).Err()
	check(err != nil && err.Error() == "MYERR custom", "EVAL error_reply: err = %v", err)
	// SCRIPT LOAD / EXISTS / EVALSHA.
	src := "return redis.call('INCRBY', KEYS[1], ARGV[1])"
	sha, err := rc.ScriptLoad(src).Result()
	must(err, "SCRIPT LOAD")
	check(sha == fmt.Sprintf("%x", sha1.Sum([]byte(src))), "SCRIPT LOAD sha = %q, want the script's SHA1", sha)
	ex, err := rc.ScriptExists(sha, strings.Repeat("0", 40)).Result()
	must(err, "SCRIPT EXISTS")
	check(len(ex) == 2 && ex[0] && !ex[1], "SCRIPT EXISTS = %v", ex)
	n, err := rc.EvalSha(sha, []string{"s:n"}, 5).Result()
	must(err, "EVALSHA")
	check(n == int64(5), "EVALSHA = %#v", n)
	err = rc.EvalSha(strings.Repeat("0", 40), nil).Err()
	check(err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT "), "EVALSHA of an unknown sha: err = %v", err)
	// redis.NewScript(...).Run: EVALSHA, then EVAL on NOSCRIPT.
	must(rc.ScriptFlush().Err(), "SCRIPT FLUSH")
	limiter := redis.NewScript(rateScript)
	// v5's Script.Exists sends the source, not the SHA1 (always false): ask by SHA1.
	limiterSha := fmt.Sprintf("%x", sha1.Sum([]byte(rateScript)))
	ex, err = rc.ScriptExists(limiterSha).Result()
	must(err, "SCRIPT EXISTS")
	check(len(ex) == 1 && !ex[0], "the script exists before its first Run: %v", ex)
	for i := 1; i <= 4; i++ {
		v, err := limiter.Run(rc, []string{"rate:user:1"}, 10000, 3).Result()
		must(err, fmt.Sprintf("Script.Run #%d", i))
		arr, ok := v.([]interface{})
		check(ok && len(arr) == 2, "Run #%d = %#v", i, v)
		allowed := int64(1)
		if i > 3 {
			allowed = 0
		}
		check(arr[0] == int64(i) && arr[1] == allowed, "Run #%d = %#v", i, arr)
		if i == 1 {
			// The first Run loaded it through EVAL (NOSCRIPT), so EVALSHA works now.
			ex, err = rc.ScriptExists(limiterSha).Result()
			must(err, "SCRIPT EXISTS")
			check(len(ex) == 1 && ex[0], "the script is not cached after its first Run: %v", ex)
		}
	}
	pttl, err := rc.PTTL("rate:user:1").Result()
	must(err, "PTTL")
	check(pttl > 9*time.Second && pttl <= 10*time.Second, "PTTL set by the script = %v", pttl)
	// Script.Load then EvalSha through the Script.
	getter := redis.NewScript("return redis.call('GET', KEYS[1])")
	_, err = getter.Load(rc).Result()
	must(err, "Script.Load")
	s, err := getter.EvalSha(rc, []string{"s:k"}).Result()
	must(err, "Script.EvalSha")
	check(s == "v1", "Script.EvalSha = %#v", s)
	inOwnDB("s:k", "s:n", "rate:user:1")
}

func scanMatch() {
	pipe := rc.Pipeline()
	for i := 0; i < 150; i++ {
		pipe.Set(fmt.Sprintf("user:%d", i), i, 0)
	}
	for i := 0; i < 60; i++ {
		pipe.Set(fmt.Sprintf("order:%d", i), i, 0)
	}
	_, err := pipe.Exec()
	must(err, "pipeline")
	pipe.Close()
	seen := map[string]bool{}
	it := rc.Scan(0, "user:*", 20).Iterator()
	for it.Next() {
		k := it.Val()
		check(strings.HasPrefix(k, "user:"), "SCAN MATCH user:* returned %q", k)
		seen[k] = true
	}
	must(it.Err(), "SCAN iterator")
	check(len(seen) == 150, "SCAN MATCH user:* found %d distinct keys, want 150", len(seen))
	// Manual cursor loop.
	var cursor uint64
	var all []string
	for i := 0; ; i++ {
		check(i < 10000, "SCAN does not terminate")
		keys, next, err := rc.Scan(cursor, "order:1*", 50).Result()
		must(err, "SCAN")
		all = append(all, keys...)
		if next == 0 {
			break
		}
		cursor = next
	}
	sort.Strings(all)
	uniq := map[string]bool{}
	for _, k := range all {
		uniq[k] = true
	}
	// order:1, order:10..19
	check(len(uniq) == 11, "SCAN MATCH order:1* found %d keys: %v", len(uniq), all)
	keys, err := rc.Keys("order:5?").Result()
	must(err, "KEYS")
	check(len(keys) == 10, "KEYS order:5? = %d keys", len(keys))
	inOwnDB("user:0", "user:149", "order:59")
	if db != 0 {
		// Database 0 has none of them.
		it := r0.Scan(0, "*", 100).Iterator()
		found := 0
		for it.Next() {
			found++
		}
		must(it.Err(), "SCAN db 0")
		check(found == 0, "SCAN of db 0 found %d keys", found)
	}
}

func pubsub() {
	sub, err := rc.Subscribe("news", "alerts")
	must(err, "SUBSCRIBE")
	defer sub.Close()
	// Wait for both confirmations, as an application that must not miss the first message.
	for i := 0; i < 2; i++ {
		m, err := sub.ReceiveTimeout(3 * time.Second)
		must(err, "subscription confirmation")
		s, ok := m.(*redis.Subscription)
		check(ok && s.Kind == "subscribe" && s.Count == i+1, "confirmation #%d = %v", i+1, m)
	}
	psub, err := rc.PSubscribe("events.*")
	must(err, "PSUBSCRIBE")
	defer psub.Close()
	m, err := psub.ReceiveTimeout(3 * time.Second)
	must(err, "psubscribe confirmation")
	s, ok := m.(*redis.Subscription)
	check(ok && s.Kind == "psubscribe" && s.Channel == "events.*" && s.Count == 1, "psubscribe confirmation = %v", m)
	n, err := rc.Publish("news", "hello").Result()
	must(err, "PUBLISH")
	check(n == 1, "PUBLISH news reached %d subscribers, want 1", n)
	n, err = rc.Publish("alerts", "fire\r\nbinary\x00").Result()
	must(err, "PUBLISH")
	check(n == 1, "PUBLISH alerts reached %d subscribers, want 1", n)
	n, err = rc.Publish("nobody", "x").Result()
	must(err, "PUBLISH")
	check(n == 0, "PUBLISH to a channel with no subscriber = %d", n)
	n, err = rc.Publish("events.login", "user:1").Result()
	must(err, "PUBLISH")
	check(n == 1, "PUBLISH events.login reached %d subscribers, want 1", n)
	msg, err := sub.ReceiveMessage()
	must(err, "ReceiveMessage")
	check(msg.Channel == "news" && msg.Payload == "hello" && msg.Pattern == "", "message #1 = %v", msg)
	msg, err = sub.ReceiveMessage()
	must(err, "ReceiveMessage")
	check(msg.Channel == "alerts" && msg.Payload == "fire\r\nbinary\x00", "message #2 = %v", msg)
	pm, err := psub.ReceiveMessage()
	must(err, "ReceiveMessage (pattern)")
	check(pm.Pattern == "events.*" && pm.Channel == "events.login" && pm.Payload == "user:1", "pmessage = %v", pm)
	// Nothing else arrives: a timeout, not a message.
	m, err = sub.ReceiveTimeout(300 * time.Millisecond)
	check(err != nil, "an unexpected message: %v", m)
	// Ping on a subscribed connection, then unsubscribe from one channel.
	must(psub.Ping("hi"), "PubSub.Ping")
	m, err = psub.ReceiveTimeout(3 * time.Second)
	must(err, "pong")
	pong, ok := m.(*redis.Pong)
	check(ok && pong.Payload == "hi", "PING on a subscribed connection = %#v", m)
	must(sub.Unsubscribe("alerts"), "UNSUBSCRIBE")
	for {
		m, err = sub.ReceiveTimeout(3 * time.Second)
		must(err, "unsubscribe confirmation")
		if s, ok := m.(*redis.Subscription); ok {
			check(s.Kind == "unsubscribe" && s.Channel == "alerts" && s.Count == 1, "unsubscribe confirmation = %v", s)
			break
		}
	}
	n, err = rc.Publish("alerts", "gone").Result()
	must(err, "PUBLISH")
	check(n == 0, "PUBLISH after UNSUBSCRIBE reached %d", n)
	n, err = rc.Publish("news", "still").Result()
	must(err, "PUBLISH")
	check(n == 1, "PUBLISH news after unsubscribing alerts reached %d", n)
	msg, err = sub.ReceiveMessage()
	must(err, "ReceiveMessage")
	check(msg.Channel == "news" && msg.Payload == "still", "message after UNSUBSCRIBE = %v", msg)
}

func poolConcurrency() {
	const workers, each = 8, 50
	c := newClient(db, 4) // fewer connections than goroutines: they wait for one.
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				k := fmt.Sprintf("pool:%d:%d", w, i)
				v := fmt.Sprintf("value-%d-%d-%s", w, i, strings.Repeat("x", i*10))
				if err := c.Set(k, v, time.Hour).Err(); err != nil {
					errs <- fmt.Errorf("SET %s: %v", k, err)
					return
				}
				got, err := c.Get(k).Result()
				if err != nil || got != v {
					errs <- fmt.Errorf("GET %s = %q, %v", k, got, err)
					return
				}
				if _, err := c.Incr("pool:total").Result(); err != nil {
					errs <- fmt.Errorf("INCR: %v", err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(err, "worker")
	}
	st := c.PoolStats()
	check(st.TotalConns <= 4, "pool opened %d connections, PoolSize 4", st.TotalConns)
	total, err := rc.Get("pool:total").Int64()
	must(err, "GET total")
	check(total == workers*each, "pool:total = %d, want %d", total, workers*each)
	// Every key read back by another client.
	keys := make([]string, 0, workers*each)
	for w := 0; w < workers; w++ {
		for i := 0; i < each; i++ {
			keys = append(keys, fmt.Sprintf("pool:%d:%d", w, i))
		}
	}
	vals, err := rc.MGet(keys...).Result()
	must(err, "MGET")
	for j, v := range vals {
		w, i := j/each, j%each
		want := fmt.Sprintf("value-%d-%d-%s", w, i, strings.Repeat("x", i*10))
		check(v == want, "%s = %#v", keys[j], v)
	}
	n, err := rc.DbSize().Result()
	must(err, "DBSIZE")
	check(n == workers*each+1, "DBSIZE = %d, want %d", n, workers*each+1)
	inOwnDB("pool:0:0", "pool:7:49", "pool:total")
}

func server() {
	pong, err := rc.Ping().Result()
	must(err, "PING")
	check(pong == "PONG", "PING = %q", pong)
	echo, err := rc.Echo("hi there").Result()
	must(err, "ECHO")
	check(echo == "hi there", "ECHO = %q", echo)
	info, err := rc.Info().Result()
	must(err, "INFO")
	check(strings.Contains(info, "redis_version:"), "INFO has no redis_version")
	check(strings.Contains(info, "# Server"), "INFO has no # Server section")
	info, err = rc.Info("server").Result()
	must(err, "INFO server")
	check(strings.Contains(info, "redis_version:") && !strings.Contains(info, "# Memory"), "INFO server = %q", info)
	// DBSize / FlushDB per database.
	n, err := rc.DbSize().Result()
	must(err, "DBSIZE")
	check(n == 0, "DBSIZE after FLUSHALL = %d", n)
	must(rc.MSet("a", "1", "b", "2", "c", "3").Err(), "MSET")
	n, err = rc.DbSize().Result()
	must(err, "DBSIZE")
	check(n == 3, "DBSIZE = %d, want 3", n)
	if db != 0 {
		must(r0.Set("zero", "0", 0).Err(), "SET in db 0")
		n, err = r0.DbSize().Result()
		must(err, "DBSIZE db 0")
		check(n == 1, "DBSIZE of db 0 = %d, want 1", n)
		info, err = rc.Info("keyspace").Result()
		must(err, "INFO keyspace")
		check(strings.Contains(info, fmt.Sprintf("db%d:keys=3,", db)) && strings.Contains(info, "db0:keys=1,"), "INFO keyspace = %q", info)
	}
	inOwnDB("a", "b", "c")
	must(rc.FlushDb().Err(), "FLUSHDB")
	n, err = rc.DbSize().Result()
	must(err, "DBSIZE")
	check(n == 0, "DBSIZE after FLUSHDB = %d", n)
	if db != 0 {
		getEq(r0, "zero", "0") // FLUSHDB of db N leaves db 0 alone.
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go_redis PORT [--db N]")
		os.Exit(2)
	}
	port, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad port:", os.Args[1])
		os.Exit(2)
	}
	for i := 2; i < len(os.Args); i++ {
		if os.Args[i] == "--db" && i+1 < len(os.Args) {
			db, err = strconv.Atoi(os.Args[i+1])
			if err != nil || db < 0 {
				fmt.Fprintln(os.Stderr, "bad --db:", os.Args[i+1])
				os.Exit(2)
			}
			i++
		}
	}
	addr = fmt.Sprintf("%s:%d", host, port)
	r0 = newClient(0, 2)
	rc = newClient(db, 10)
	defer r0.Close()
	defer rc.Close()

	scenario("strings_set_get_expiration", strings_)
	scenario("setnx_setxx", setnxSetxx)
	scenario("counters", counters)
	scenario("mset_mget_del_exists_append_getrange_getset", multiKey)
	scenario("expire_ttl_pttl_persist", expiry)
	scenario("pipelines", pipelines)
	scenario("tx_pipelined_multi_exec", transactions)
	scenario("watch_tx_failed", watchConflict)
	scenario("watch_optimistic_increments", optimisticIncrements)
	scenario("scripting_eval_evalsha_newscript", scripting)
	scenario("scan_match", scanMatch)
	scenario("pubsub", pubsub)
	scenario("pool_concurrency", poolConcurrency)
	scenario("server_ping_info_dbsize_flushdb", server)
	os.Exit(failures)
}
