<?php
/*
 * phpredis (the `redis` PHP extension, Debian's php-redis 5.3.7 on PHP 8.2) as applications use it,
 * unchanged, against a Redis-protocol server: strings, counters and expiry, MULTI/EXEC and
 * pipelines, WATCH, Lua scripts (EVAL, EVALSHA, SCRIPT LOAD and the NOSCRIPT fallback), SCAN,
 * Pub/Sub, the PHP and igbinary serializers and OPT_PREFIX, and the extension's `redis` session
 * save handler (with and without session locking).
 *
 * Usage: php php_redis.php PORT [--db N]
 *
 * Every client connects to 127.0.0.1:PORT and selects database N (default 0); the session handler
 * gets it through `session.save_path = "tcp://127.0.0.1:PORT?database=N"`. With N other than 0 the
 * scenarios also check, through a plain client, that the keys are not in database 0 and are there
 * after SELECT N. Each scenario prints "ok <name>" or "FAIL <name>: <reason>"; the exit status is
 * the number of failures. The server is flushed (FLUSHALL, from a connection on database 0) before
 * each scenario.
 *
 * A PHP process can change the session settings and start a session only before it has written
 * any output, so every session "request" runs in a child process of this script
 * (`--child session ACTION ...`), which prints one JSON line; the scenario checks what the
 * handler left in the server with a plain client between requests, as an application's next
 * request would see it.
 */

const HOST = '127.0.0.1';
$port = (int)$argv[1];
$i = array_search('--db', $argv, true);
$db = $i === false ? 0 : (int)$argv[$i + 1];
$SAVE_PATH = sprintf('tcp://%s:%d?database=%d&timeout=5', HOST, $port, $db);
const GC_MAXLIFETIME = 1440;

// Warnings and notices are errors: a scenario fails on the first one, and a child reports them.
set_error_handler(function (int $no, string $msg, string $file, int $line) {
    throw new ErrorException($msg, 0, $no, $file, $line);
});

/** A client on the scenarios' database, as an application connects one. */
function client(): Redis
{
    global $port, $db;
    $r = new Redis();
    $r->connect(HOST, $port, 5.0);
    if ($db !== 0 && $r->select($db) !== true) {
        throw new RuntimeException("SELECT $db refused: " . $r->getLastError());
    }
    return $r;
}

/** Database 0, for FLUSHALL before each scenario and to look for keys that must not be there. */
function r0(): Redis
{
    global $port;
    static $r0 = null;
    if ($r0 === null) {
        $r0 = new Redis();
        $r0->connect(HOST, $port, 5.0);
    }
    return $r0;
}

function check(bool $cond, string $what): void
{
    if (!$cond) {
        throw new RuntimeException($what);
    }
}

function eq($actual, $expected, string $what): void
{
    if ($actual !== $expected) {
        throw new RuntimeException(sprintf('%s: got %s, expected %s', $what,
            str_replace("\n", ' ', var_export($actual, true)),
            str_replace("\n", ' ', var_export($expected, true))));
    }
}

/**
 * The keys are in the scenarios' database, and (with --db N, N > 0) not in database 0, where a
 * client sees them only after SELECT N.
 */
function in_own_db(string ...$keys): void
{
    global $port, $db;
    $r = client();
    foreach ($keys as $k) {
        eq($r->exists($k), 1, "EXISTS $k in db $db");
    }
    $r->close();
    if ($db === 0) {
        return;
    }
    foreach ($keys as $k) {
        eq(r0()->exists($k), 0, "EXISTS $k in db 0");
    }
    $c = new Redis();
    $c->connect(HOST, $port, 5.0);
    eq($c->select($db), true, "SELECT $db");
    foreach ($keys as $k) {
        eq($c->exists($k), 1, "EXISTS $k after SELECT $db");
    }
    $c->close();
}

/**
 * The connection's last error reply. phpredis 5.3.7 keeps some of them with a trailing NUL byte
 * (it copies one byte too many from its read buffer), which applications do not see: they
 * print it or look for a prefix.
 */
function last_error(Redis $r): string
{
    return rtrim((string)$r->getLastError(), "\0");
}

$failures = 0;

function scenario(string $name, callable $fn): void
{
    global $failures;
    r0()->flushAll();
    try {
        $fn();
        echo "ok $name\n";
    } catch (Throwable $e) {
        $failures++;
        $msg = preg_replace('/\s+/', ' ', $e->getMessage());
        echo "FAIL $name: " . get_class($e) . ": $msg (line {$e->getLine()})\n";
    }
}

// --- Child processes: session requests and a publisher --------------------------------------

/** Runs this script as a child: `--child ARGS...`; returns [exit status, stdout, stderr]. */
function run_child(array $args, array $ini = [], ?callable $whileRunning = null): array
{
    global $port, $db;
    $cmd = [PHP_BINARY];
    foreach ($ini as $k => $v) {
        $cmd[] = '-d';
        $cmd[] = "$k=$v";
    }
    array_push($cmd, __FILE__, (string)$port, '--db', (string)$db, '--child', ...$args);
    $proc = proc_open($cmd, [0 => ['pipe', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
    if (!is_resource($proc)) {
        throw new RuntimeException('cannot start a child php');
    }
    if ($whileRunning !== null) {
        $whileRunning($pipes);
    }
    if (is_resource($pipes[0])) {
        fclose($pipes[0]);
    }
    $out = stream_get_contents($pipes[1]);
    $err = stream_get_contents($pipes[2]);
    fclose($pipes[1]);
    fclose($pipes[2]);
    $status = proc_close($proc);
    return [$status, $out, $err];
}

/** One session request in a child; returns what it printed (a JSON object). */
function session_request(array $args, array $ini = []): array
{
    [$status, $out, $err] = run_child(array_merge(['session'], $args), $ini);
    $res = json_decode(trim($out), true);
    if ($status !== 0 || !is_array($res)) {
        throw new RuntimeException("session child " . implode(' ', $args) . " exited $status: "
            . trim($out) . ' ' . trim($err));
    }
    return $res;
}

const LOCKING = [
    'redis.session.locking_enabled' => 1,
    'redis.session.lock_expire' => 10,      // seconds: SET key_LOCK secret NX PX 10000
    'redis.session.lock_wait_time' => 20000, // microseconds between attempts
    'redis.session.lock_retries' => 5,
];

/**
 * A child's session request. Configures the `redis` save handler as an application's php.ini
 * would (before any output), runs ACTION and prints one JSON line.
 */
function child_session(array $args): int
{
    global $SAVE_PATH;
    ini_set('session.save_handler', 'redis');
    ini_set('session.save_path', $SAVE_PATH);
    ini_set('session.use_cookies', '0');
    ini_set('session.use_only_cookies', '0');
    ini_set('session.cache_limiter', '');
    ini_set('session.gc_maxlifetime', (string)GC_MAXLIFETIME);
    $action = array_shift($args);
    $id = array_shift($args);
    $res = [];
    $notices = [];
    // A contended lock is reported as an E_NOTICE and a refused write as an E_WARNING: record
    // them instead of failing, the scenario decides.
    set_error_handler(function (int $no, string $msg) use (&$notices) {
        $notices[] = $msg;
        return true;
    });
    if ($action === 'strict') {
        ini_set('session.use_strict_mode', '1');
    }
    session_id($id);
    $res['started'] = session_start();
    $res['read'] = $_SESSION;
    switch ($action) {
        case 'write': // merge the JSON object given into the session
            foreach (json_decode($args[0], true) as $k => $v) {
                $_SESSION[$k] = $v;
            }
            break;
        case 'read': // read only: with lazy_write the handler refreshes the TTL (EXPIRE)
        case 'strict': // use_strict_mode: an id the server does not know is replaced (EXISTS)
            break;
        case 'regenerate': // as after a login: new id, old session deleted
            $res['regenerated'] = session_regenerate_id(true);
            $_SESSION['after_regenerate'] = true;
            break;
        case 'destroy':
            $res['destroyed'] = session_destroy();
            break;
        case 'hold': // locking: say "locked", then keep the session open until stdin closes
            fwrite(STDOUT, json_encode(['locked' => true, 'pid' => getmypid(),
                    'host' => gethostname()]) . "\n");
            fflush(STDOUT);
            stream_get_contents(STDIN);
            $_SESSION['held'] = true;
            break;
        default:
            throw new RuntimeException("unknown session action $action");
    }
    $res['id'] = session_id();
    if (session_status() === PHP_SESSION_ACTIVE) {
        $res['closed'] = session_write_close();
    }
    $res['notices'] = $notices;
    restore_error_handler();
    echo json_encode($res), "\n";
    return 0;
}

/** Waits until CHANNEL has a subscriber, then publishes the messages, one PUBLISH each. */
function child_publish(array $args): int
{
    $channel = array_shift($args);
    $r = client();
    for ($t = 0; $t < 500 && ($r->pubsub('numsub', [$channel])[$channel] ?? 0) < 1; $t++) {
        usleep(10000);
    }
    $got = [];
    foreach ($args as $m) {
        $got[] = $r->publish($channel, $m);
    }
    echo json_encode($got), "\n";
    return 0;
}

$c = array_search('--child', $argv, true);
if ($c !== false) {
    $kind = $argv[$c + 1];
    $rest = array_slice($argv, $c + 2);
    exit($kind === 'session' ? child_session($rest) : child_publish($rest));
}

// --- A subscriber on a raw socket, so that Pub/Sub needs no second process ---------------------

function resp_command(array $args): string
{
    $s = '*' . count($args) . "\r\n";
    foreach ($args as $a) {
        $s .= '$' . strlen($a) . "\r\n$a\r\n";
    }
    return $s;
}

function resp_read($sock)
{
    $line = fgets($sock);
    if ($line === false) {
        throw new RuntimeException('subscriber: connection closed or timed out');
    }
    $line = rtrim($line, "\r\n");
    $t = $line[0];
    $rest = substr($line, 1);
    switch ($t) {
        case '+':
            return $rest;
        case '-':
            throw new RuntimeException("subscriber: $rest");
        case ':':
            return (int)$rest;
        case '$':
            if ((int)$rest < 0) {
                return null;
            }
            $data = '';
            while (strlen($data) < (int)$rest + 2) {
                $data .= fread($sock, (int)$rest + 2 - strlen($data));
            }
            return substr($data, 0, (int)$rest);
        case '*':
            $a = [];
            for ($k = 0; $k < (int)$rest; $k++) {
                $a[] = resp_read($sock);
            }
            return $a;
    }
    throw new RuntimeException("subscriber: unexpected reply $line");
}

// --- Scenarios ---------------------------------------------------------------------------------

scenario('strings_get_set_options', function () {
    $r = client();
    eq($r->set('user:1:name', 'Ada'), true, 'SET');
    eq($r->get('user:1:name'), 'Ada', 'GET');
    eq($r->get('missing'), false, 'GET of a missing key');
    // SET with options: NX EX only writes an absent key.
    eq($r->set('lock:job', 'w1', ['nx', 'ex' => 10]), true, 'SET NX EX on an absent key');
    eq($r->set('lock:job', 'w2', ['nx', 'ex' => 10]), false, 'SET NX EX on a present key');
    eq($r->get('lock:job'), 'w1', 'value after the refused SET NX');
    $ttl = $r->ttl('lock:job');
    check($ttl > 0 && $ttl <= 10, "TTL after SET EX 10: $ttl");
    // XX PX only overwrites a present key.
    eq($r->set('lock:job', 'w3', ['xx', 'px' => 5000]), true, 'SET XX PX on a present key');
    eq($r->set('absent', 'x', ['xx', 'px' => 5000]), false, 'SET XX PX on an absent key');
    eq($r->exists('absent'), 0, 'EXISTS after refused SET XX');
    $pttl = $r->pttl('lock:job');
    check($pttl > 4000 && $pttl <= 5000, "PTTL after SET PX 5000: $pttl");
    eq($r->get('lock:job'), 'w3', 'value after SET XX');
    // SET with a plain timeout argument, SETEX, PSETEX, SETNX.
    eq($r->set('page:home', '<html>', 60), true, 'SET k v 60 (SETEX)');
    $ttl = $r->ttl('page:home');
    check($ttl > 55 && $ttl <= 60, "TTL after set(k, v, 60): $ttl");
    eq($r->setex('token', 30, 'abc'), true, 'SETEX');
    $ttl = $r->ttl('token');
    check($ttl > 25 && $ttl <= 30, "TTL after SETEX 30: $ttl");
    eq($r->psetex('flash', 1500, 'hi'), true, 'PSETEX');
    $pttl = $r->pttl('flash');
    check($pttl > 1000 && $pttl <= 1500, "PTTL after PSETEX 1500: $pttl");
    eq($r->setnx('user:1:name', 'Grace'), false, 'SETNX on a present key');
    eq($r->setnx('user:2:name', 'Grace'), true, 'SETNX on an absent key');
    eq($r->getSet('user:2:name', 'Linus'), 'Grace', 'GETSET');
    eq($r->append('user:2:name', '!'), 6, 'APPEND');
    eq($r->strlen('user:2:name'), 6, 'STRLEN');
    eq($r->getRange('user:2:name', 0, 2), 'Lin', 'GETRANGE');
    // Binary values come back byte for byte.
    $bin = "\x00\xff\r\n" . random_bytes(64);
    eq($r->set('bin', $bin), true, 'SET binary');
    eq($r->get('bin'), $bin, 'GET binary');
    in_own_db('user:1:name', 'lock:job', 'page:home', 'bin');
});

scenario('mget_mset_counters', function () {
    $r = client();
    eq($r->mset(['a' => '1', 'b' => 'two', 'c' => '3']), true, 'MSET');
    eq($r->mGet(['a', 'missing', 'b', 'c']), ['1', false, 'two', '3'], 'MGET with a missing key');
    eq($r->msetnx(['c' => 'x', 'd' => 'y']), false, 'MSETNX with one present key');
    eq($r->exists('d'), 0, 'MSETNX wrote nothing');
    eq($r->msetnx(['d' => 'y', 'e' => 'z']), true, 'MSETNX of absent keys');
    eq($r->mGet(['d', 'e']), ['y', 'z'], 'MGET after MSETNX');
    // Counters.
    eq($r->incr('hits'), 1, 'INCR of a missing key');
    eq($r->incr('hits'), 2, 'INCR');
    eq($r->incrBy('hits', 10), 12, 'INCRBY');
    eq($r->decr('hits'), 11, 'DECR');
    eq($r->decrBy('hits', 5), 6, 'DECRBY');
    eq($r->incrBy('hits', -10), -4, 'INCRBY negative');
    eq($r->get('hits'), '-4', 'GET of a counter');
    eq($r->incrByFloat('price', 10.5), 10.5, 'INCRBYFLOAT of a missing key');
    eq($r->incrByFloat('price', 0.25), 10.75, 'INCRBYFLOAT');
    eq($r->get('price'), '10.75', 'GET after INCRBYFLOAT');
    eq($r->incrByFloat('price', -0.75), 10.0, 'INCRBYFLOAT negative');
    eq($r->get('price'), '10', 'INCRBYFLOAT prints 10, not 10.0');
    // A counter over a non-integer: phpredis returns false and keeps the error text.
    eq($r->incr('b'), false, 'INCR of a non-integer');
    eq(last_error($r), 'ERR value is not an integer or out of range', 'INCR error text');
    $r->clearLastError();
    eq($r->incrByFloat('b', 1.0), false, 'INCRBYFLOAT of a non-number');
    eq(last_error($r), 'ERR value is not a valid float', 'INCRBYFLOAT error text');
    eq($r->get('b'), 'two', 'the value is unchanged');
    in_own_db('a', 'd', 'hits', 'price');
});

scenario('expire_ttl_persist', function () {
    $r = client();
    $r->set('session', 'x');
    eq($r->ttl('session'), -1, 'TTL without expiry');
    eq($r->ttl('missing'), -2, 'TTL of a missing key');
    eq($r->pttl('missing'), -2, 'PTTL of a missing key');
    eq($r->expire('session', 100), true, 'EXPIRE');
    $ttl = $r->ttl('session');
    check($ttl > 95 && $ttl <= 100, "TTL after EXPIRE 100: $ttl");
    eq($r->pexpire('session', 50000), true, 'PEXPIRE');
    $pttl = $r->pttl('session');
    check($pttl > 45000 && $pttl <= 50000, "PTTL after PEXPIRE 50000: $pttl");
    eq($r->persist('session'), true, 'PERSIST');
    eq($r->persist('session'), false, 'PERSIST of a key without expiry');
    eq($r->ttl('session'), -1, 'TTL after PERSIST');
    eq($r->expire('missing', 10), false, 'EXPIRE of a missing key');
    eq($r->expireAt('session', time() + 200), true, 'EXPIREAT');
    $ttl = $r->ttl('session');
    check($ttl > 190 && $ttl <= 200, "TTL after EXPIREAT now+200: $ttl");
    eq($r->pexpireAt('session', (int)(microtime(true) * 1000) + 300000), true, 'PEXPIREAT');
    $ttl = $r->ttl('session');
    check($ttl > 290 && $ttl <= 300, "TTL after PEXPIREAT now+300s: $ttl");
    // A short expiry: the key is gone once it passed.
    $r->set('short', 'y', ['px' => 200]);
    $r->set('long', 'z', ['ex' => 60]);
    eq($r->get('short'), 'y', 'GET before expiry');
    usleep(400000);
    eq($r->get('short'), false, 'GET after expiry');
    eq($r->exists('short'), 0, 'EXISTS after expiry');
    eq($r->get('long'), 'z', 'a longer expiry is still there');
    // A plain SET clears the TTL; EXPIRE 0 deletes.
    $r->set('long', 'zz');
    eq($r->ttl('long'), -1, 'TTL after overwrite');
    eq($r->expire('long', 0), true, 'EXPIRE 0');
    eq($r->exists('long'), 0, 'EXISTS after EXPIRE 0');
    in_own_db('session');
});

scenario('del_unlink_exists', function () {
    $r = client();
    $r->mset(['k1' => '1', 'k2' => '2', 'k3' => '3', 'k4' => '4', 'k5' => '5']);
    eq($r->exists('k1', 'k2', 'missing'), 2, 'EXISTS of three keys');
    eq($r->exists(['k1', 'k1', 'k3']), 3, 'EXISTS counts a key named twice twice');
    eq($r->del('k1', 'k2', 'missing'), 2, 'DEL of three keys');
    eq($r->del(['k3']), 1, 'DEL of an array');
    eq($r->del('k3'), 0, 'DEL of a deleted key');
    eq($r->unlink('k4', 'k5', 'missing'), 2, 'UNLINK of three keys');
    eq($r->exists('k1', 'k2', 'k3', 'k4', 'k5'), 0, 'EXISTS after DEL and UNLINK');
    eq($r->mGet(['k1', 'k4']), [false, false], 'MGET after DEL and UNLINK');
    $r->set('kept', 'v');
    eq($r->dbSize(), 1, 'DBSIZE');
    eq($r->type('kept'), Redis::REDIS_STRING, 'TYPE');
    eq($r->type('k1'), Redis::REDIS_NOT_FOUND, 'TYPE of a missing key');
    eq($r->rename('kept', 'renamed'), true, 'RENAME');
    eq($r->get('renamed'), 'v', 'GET after RENAME');
    eq($r->exists('kept'), 0, 'old name after RENAME');
    in_own_db('renamed');
});

scenario('multi_exec', function () {
    $r = client();
    $r->set('stock', '10');
    $replies = $r->multi()
        ->set('order:1', 'pending')
        ->decrBy('stock', 3)
        ->get('order:1')
        ->expire('order:1', 60)
        ->incr('order:1') // fails at run time: its reply is false in the array
        ->exists('order:1', 'stock', 'missing')
        ->exec();
    eq($replies, [true, 7, 'pending', true, false, 2], 'EXEC replies');
    eq($r->get('stock'), '7', 'stock after EXEC');
    $ttl = $r->ttl('order:1');
    check($ttl > 55 && $ttl <= 60, "TTL set in the transaction: $ttl");
    // One statement at a time (not chained), as code with conditions in between writes it.
    $m = $r->multi(Redis::MULTI);
    $m->incr('counter');
    $m->incr('counter');
    $m->set('flag', 'on', ['nx', 'ex' => 30]);
    eq($m->exec(), [1, 2, true], 'EXEC of unchained commands');
    // DISCARD: nothing runs.
    $r->multi();
    $r->set('stock', '0');
    $r->del('order:1');
    eq($r->discard(), true, 'DISCARD');
    eq($r->get('stock'), '7', 'stock after DISCARD');
    eq($r->exists('order:1'), 1, 'order after DISCARD');
    // The connection works as before after a transaction.
    eq($r->get('counter'), '2', 'GET after EXEC');
    in_own_db('stock', 'order:1', 'counter', 'flag');
});

scenario('pipeline', function () {
    $r = client();
    $p = $r->multi(Redis::PIPELINE);
    for ($k = 0; $k < 200; $k++) {
        $p->set("item:$k", "value-$k", 300);
    }
    for ($k = 0; $k < 200; $k++) {
        $p->get("item:$k");
    }
    $p->incr('item:0');  // an error reply in the middle of a pipeline
    $p->mGet(['item:1', 'nope', 'item:2']);
    $p->ttl('item:199');
    $p->del('item:198', 'item:199');
    $replies = $p->exec();
    eq(count($replies), 404, 'number of pipeline replies');
    eq(array_slice($replies, 0, 200), array_fill(0, 200, true), 'SET replies');
    $expected = [];
    for ($k = 0; $k < 200; $k++) {
        $expected[] = "value-$k";
    }
    eq(array_slice($replies, 200, 200), $expected, 'GET replies');
    eq($replies[400], false, 'INCR of a non-integer in a pipeline');
    eq($replies[401], ['value-1', false, 'value-2'], 'MGET in a pipeline');
    check($replies[402] > 295 && $replies[402] <= 300, "TTL in a pipeline: {$replies[402]}");
    eq($replies[403], 2, 'DEL in a pipeline');
    // pipeline() and multi(PIPELINE) are the same thing.
    eq($r->pipeline()->get('item:5')->exists('item:199')->exec(), ['value-5', 0], 'pipeline()');
    eq($r->dbSize(), 198, 'DBSIZE after the pipeline');
    in_own_db('item:0', 'item:197');
});

scenario('watch_optimistic_lock', function () {
    $r = client();
    $other = client();
    $r->set('balance', '100');
    // Nobody touches the watched key: EXEC runs.
    eq($r->watch('balance'), true, 'WATCH');
    $balance = (int)$r->get('balance');
    eq($r->multi()->set('balance', (string)($balance - 30))->exec(), [true], 'EXEC, key unchanged');
    eq($r->get('balance'), '70', 'balance after EXEC');
    // Another client writes the watched key between WATCH and EXEC: EXEC returns false.
    $r->watch('balance');
    $balance = (int)$r->get('balance');
    eq($other->incrBy('balance', 5), 75, 'the other client writes the watched key');
    eq($r->multi()->set('balance', (string)($balance - 30))->exec(), false, 'EXEC after a watched key changed');
    eq($r->get('balance'), '75', "the other client's write stands");
    // The application's retry loop: read again, try again, succeed.
    for ($attempt = 1; $attempt <= 5; $attempt++) {
        $r->watch('balance');
        $balance = (int)$r->get('balance');
        if ($attempt === 1) {
            $other->del('balance'); // a delete aborts too
        }
        $res = $r->multi()->set('balance', (string)($balance - 30))->exec();
        if ($res !== false) {
            break;
        }
    }
    eq($attempt, 2, 'attempts until EXEC succeeded');
    eq($res, [true], 'EXEC of the retry');
    eq($r->get('balance'), '-30', 'balance after the retry (read as missing, 0 - 30)');
    // UNWATCH: a later change no longer aborts.
    $r->watch('balance');
    eq($r->unwatch(), true, 'UNWATCH');
    $other->set('balance', '1');
    eq($r->multi()->incr('balance')->exec(), [2], 'EXEC after UNWATCH');
    // An expiry of the watched key aborts.
    $r->set('ticket', 't', ['px' => 100]);
    $r->watch('ticket');
    usleep(300000);
    eq($r->multi()->set('ticket', 'renewed')->exec(), false, 'EXEC after the watched key expired');
    eq($r->get('ticket'), false, 'the expired key stays gone');
    in_own_db('balance');
});

scenario('lua_eval_evalsha_noscript', function () {
    $r = client();
    // A rate limiter script: KEYS share a {hash tag}, as an application written for a cluster does.
    $lua = <<<'LUA'
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
redis.call('SET', KEYS[2], ARGV[3])
return {n, redis.call('TTL', KEYS[1]), redis.call('GET', KEYS[2]), 'ok'}
LUA;
    $keys = ['{rl:42}:count', '{rl:42}:last'];
    eq($r->eval($lua, array_merge($keys, ['2', '60', 'GET /']), 2), [2, 60, 'GET /', 'ok'], 'EVAL');
    eq($r->eval($lua, array_merge($keys, ['3', '60', 'POST /']), 2), [5, 60, 'POST /', 'ok'], 'EVAL again');
    eq($r->get('{rl:42}:count'), '5', 'GET of the counter the script wrote');
    // SCRIPT LOAD, then EVALSHA.
    $sha = $r->script('load', $lua);
    eq($sha, sha1($lua), 'SCRIPT LOAD returns the SHA1');
    eq($r->script('exists', $sha, str_repeat('0', 40)), [1, 0], 'SCRIPT EXISTS');
    eq($r->evalSha($sha, array_merge($keys, ['1', '60', 'PUT /']), 2), [6, 60, 'PUT /', 'ok'], 'EVALSHA');
    // Return types: integers, nil as false, status and error replies.
    eq($r->eval("return {1, 'two', false, 3.9, nil, 5}"), [1, 'two', false, 3], 'EVAL: false is nil, numbers truncated, a table ends at nil');
    eq($r->eval("return redis.status_reply('FINE')"), true, 'status reply');
    eq($r->eval("return redis.call('GET', KEYS[1])", ['nope'], 1), false, 'nil reply');
    // phpredis returns false for errors that start with ERR, NOSCRIPT or WRONGTYPE and throws
    // RedisException for any other.
    eq($r->eval("return redis.error_reply('ERR my error')"), false, 'ERR error reply');
    eq(last_error($r), 'ERR my error', 'ERR error reply text');
    $r->clearLastError();
    try {
        $r->eval("return redis.error_reply('LIMITED too many requests')");
        check(false, 'an error reply without ERR did not throw');
    } catch (RedisException $e) {
        eq($e->getMessage(), 'LIMITED too many requests', 'RedisException message');
    }
    eq($r->ping(), true, 'PING after the exception');
    // NOSCRIPT: EVALSHA of an unknown script fails with NOSCRIPT; the application falls back to EVAL.
    $script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    eq($r->script('flush'), true, 'SCRIPT FLUSH');
    eq($r->script('exists', $sha), [0], 'SCRIPT EXISTS after FLUSH');
    $res = $r->evalSha(sha1($script), ['visits'], 1);
    eq($res, false, 'EVALSHA of an unknown script');
    $err = last_error($r);
    check(strpos($err, 'NOSCRIPT') === 0, "EVALSHA error is NOSCRIPT: $err");
    $r->clearLastError();
    eq($r->eval($script, ['visits', '7'], 1), 7, 'EVAL fallback');
    eq($r->evalSha(sha1($script), ['visits', '3'], 1), 10, 'EVALSHA once EVAL cached it');
    // A runtime error in a script.
    $r->set('text', 'abc');
    eq($r->eval("return redis.call('INCR', KEYS[1])", ['text'], 1), false, 'script error');
    $err = last_error($r);
    check(strpos($err, 'ERR value is not an integer or out of range') !== false, "script error text: $err");
    in_own_db('{rl:42}:count', '{rl:42}:last', 'visits');
});

scenario('scan_iterator', function () {
    $r = client();
    $want = [];
    $mset = [];
    for ($k = 0; $k < 300; $k++) {
        $mset["user:$k"] = "u$k";
        $want[] = "user:$k";
        $mset["order:$k"] = "o$k";
    }
    $r->mset($mset);
    sort($want);
    // SCAN_RETRY: scan() goes on until it has keys or the iteration ended.
    $r->setOption(Redis::OPT_SCAN, Redis::SCAN_RETRY);
    $seen = [];
    $it = null;
    while ($keys = $r->scan($it, 'user:*', 50)) {
        foreach ($keys as $key) {
            $seen[$key] = true;
        }
    }
    eq($it, 0, 'iterator at the end');
    $got = array_keys($seen);
    sort($got);
    eq($got, $want, 'keys SCAN MATCH user:* found (SCAN_RETRY)');
    // SCAN_NORETRY: empty pages come back as empty arrays; loop until false.
    $r->setOption(Redis::OPT_SCAN, Redis::SCAN_NORETRY);
    $seen = [];
    $it = null;
    $calls = 0;
    while (($keys = $r->scan($it, 'user:*', 100)) !== false) {
        $calls++;
        foreach ($keys as $key) {
            $seen[$key] = true;
        }
        check($calls < 100000, 'SCAN does not end');
    }
    $got = array_keys($seen);
    sort($got);
    eq($got, $want, 'keys SCAN MATCH user:* found (SCAN_NORETRY)');
    // No pattern: every key.
    $r->setOption(Redis::OPT_SCAN, Redis::SCAN_RETRY);
    $all = 0;
    $it = null;
    while ($keys = $r->scan($it)) {
        $all += count($keys);
    }
    eq($all, 600, 'keys SCAN without MATCH counted');
    eq(count($r->keys('order:1*')), 111, 'KEYS order:1*');
    in_own_db('user:0', 'order:299');
});

scenario('serializer_and_prefix', function () {
    $r = client();
    $r->setOption(Redis::OPT_SERIALIZER, Redis::SERIALIZER_PHP);
    $r->setOption(Redis::OPT_PREFIX, 'app:');
    eq($r->getOption(Redis::OPT_PREFIX), 'app:', 'OPT_PREFIX');
    $user = ['id' => 7, 'name' => 'Ada', 'roles' => ['admin'], 'score' => 1.5, 'active' => true];
    eq($r->set('user:7', $user, 60), true, 'SET of an array');
    eq($r->get('user:7'), $user, 'GET of an array');
    eq($r->get('missing'), false, 'GET of a missing key with a serializer');
    eq($r->mset(['n' => 42, 's' => 'str', 'null' => null]), true, 'MSET of PHP values');
    eq($r->mGet(['n', 's', 'missing', 'null']), [42, 'str', false, null], 'MGET of PHP values');
    eq($r->exists('user:7', 'n'), 2, 'EXISTS with the prefix');
    // What is stored: the prefixed key, PHP's serialize() of the value.
    $plain = client();
    eq($plain->get('app:user:7'), serialize($user), 'raw value of app:user:7');
    eq($plain->get('app:n'), serialize(42), 'raw value of app:n');
    eq($plain->exists('user:7'), 0, 'no unprefixed key');
    check($plain->ttl('app:user:7') > 55, 'TTL of the prefixed key');
    // Counters are not serialized (INCR works on them), and the prefix applies to them too.
    eq($r->incr('visits'), 1, 'INCR with serializer and prefix');
    eq($plain->get('app:visits'), '1', 'raw counter');
    // Scripts: phpredis prefixes KEYS (not ARGV), and does not serialize.
    eq($r->eval("return redis.call('GET', KEYS[1])", ['visits'], 1), '1', 'EVAL with a prefixed key');
    eq($r->del('user:7', 'n'), 2, 'DEL with the prefix');
    eq($plain->exists('app:user:7', 'app:n'), 0, 'raw keys gone after DEL');
    // SCAN's pattern is not prefixed by default; SCAN_PREFIX adds it.
    $r->setOption(Redis::OPT_SCAN, Redis::SCAN_RETRY);
    $found = [];
    $it = null;
    while ($keys = $r->scan($it, 'app:*')) {
        $found = array_merge($found, $keys);
    }
    sort($found);
    eq($found, ['app:null', 'app:s', 'app:visits'], 'SCAN MATCH app:*');
    // The igbinary serializer: values round-trip, the raw value is igbinary_serialize()'s.
    $r->setOption(Redis::OPT_SERIALIZER, Redis::SERIALIZER_IGBINARY);
    $r->set('cart', ['sku' => 'X1', 'qty' => 3]);
    eq($r->get('cart'), ['sku' => 'X1', 'qty' => 3], 'GET of an igbinary value');
    eq($plain->get('app:cart'), igbinary_serialize(['sku' => 'X1', 'qty' => 3]), 'raw igbinary value');
    // Serializer off: strings stored as given.
    $r->setOption(Redis::OPT_SERIALIZER, Redis::SERIALIZER_NONE);
    $r->setOption(Redis::OPT_PREFIX, '');
    eq($r->get('app:s'), serialize('str'), 'GET without the serializer or prefix');
    in_own_db('app:visits', 'app:s', 'app:cart');
});

scenario('pubsub_publish_counts', function () {
    global $port;
    $r = client();
    eq($r->publish('news', 'nobody'), 0, 'PUBLISH without subscribers');
    eq($r->pubsub('numsub', ['news']), ['news' => 0], 'PUBSUB NUMSUB without subscribers');
    // A subscriber (raw socket) on two channels and a pattern.
    $sub = stream_socket_client('tcp://' . HOST . ":$port", $errno, $errstr, 5);
    check($sub !== false, "subscriber connect: $errstr");
    stream_set_timeout($sub, 5);
    fwrite($sub, resp_command(['SUBSCRIBE', 'news', 'alerts']));
    eq(resp_read($sub), ['subscribe', 'news', 1], 'SUBSCRIBE news');
    eq(resp_read($sub), ['subscribe', 'alerts', 2], 'SUBSCRIBE alerts');
    fwrite($sub, resp_command(['PSUBSCRIBE', 'news.*']));
    eq(resp_read($sub), ['psubscribe', 'news.*', 3], 'PSUBSCRIBE');
    $channels = $r->pubsub('channels', '*');
    sort($channels);
    eq($channels, ['alerts', 'news'], 'PUBSUB CHANNELS *');
    eq($r->pubsub('channels', 'n*'), ['news'], 'PUBSUB CHANNELS n*');
    eq($r->pubsub('numsub', ['news', 'alerts', 'other']), ['news' => 1, 'alerts' => 1, 'other' => 0],
        'PUBSUB NUMSUB');
    eq($r->pubsub('numpat'), 1, 'PUBSUB NUMPAT');
    eq($r->publish('news', 'hello'), 1, 'PUBLISH news');
    eq($r->publish('news.sport', 'goal'), 1, 'PUBLISH news.sport (pattern)');
    eq($r->publish('other', 'x'), 0, 'PUBLISH other');
    eq(resp_read($sub), ['message', 'news', 'hello'], 'message received');
    eq(resp_read($sub), ['pmessage', 'news.*', 'news.sport', 'goal'], 'pmessage received');
    fclose($sub);
    for ($t = 0; $t < 100 && $r->pubsub('numsub', ['news'])['news'] !== 0; $t++) {
        usleep(10000);
    }
    eq($r->pubsub('numsub', ['news']), ['news' => 0], 'NUMSUB after the subscriber left');
    eq($r->pubsub('numpat'), 0, 'NUMPAT after the subscriber left');
});

scenario('subscribe_callback', function () {
    // phpredis's own subscribe(): it blocks, so a child process publishes (once it sees the
    // subscriber through PUBSUB NUMSUB); the loop ends at the read timeout after the last message.
    $r = client();
    $r->setOption(Redis::OPT_READ_TIMEOUT, 1.0);
    $got = [];
    [$status, $out, $err] = run_child(['publish', 'events', 'one', 'two', 'three'], [],
        function ($pipes) use ($r, &$got) {
            try {
                $r->subscribe(['events'], function ($redis, $channel, $message) use (&$got) {
                    $got[] = [$channel, $message];
                });
            } catch (RedisException $e) {
                // the read timeout once the publisher is done
            }
        });
    eq($status, 0, "publisher exit status ($err)");
    eq(trim($out), '[1,1,1]', 'PUBLISH replies in the publisher');
    eq($got, [['events', 'one'], ['events', 'two'], ['events', 'three']], 'messages received');
});

/** The session's key, its TTL in the scenarios' database. */
function session_key(string $id): string
{
    return "PHPREDIS_SESSION:$id";
}

scenario('session_write_read', function () {
    $id = 'sess' . bin2hex(random_bytes(10));
    $key = session_key($id);
    $res = session_request(['write', $id, json_encode(['user_id' => 42, 'cart' => ['a', 'b']])]);
    eq([$res['started'], $res['id'], $res['read'], $res['closed'], $res['notices']],
        [true, $id, [], true, []], 'first request');
    $r = client();
    // SETEX PHPREDIS_SESSION:<id> gc_maxlifetime <php-serialized session>.
    eq($r->get($key), 'user_id|i:42;cart|a:2:{i:0;s:1:"a";i:1;s:1:"b";}', 'raw session data');
    $ttl = $r->ttl($key);
    check($ttl > GC_MAXLIFETIME - 10 && $ttl <= GC_MAXLIFETIME, "session TTL: $ttl");
    in_own_db($key);
    // The next request reads it back and adds to it.
    $res = session_request(['write', $id, json_encode(['seen' => 2])]);
    eq($res['read'], ['user_id' => 42, 'cart' => ['a', 'b']], 'second request reads the session');
    eq($res['notices'], [], 'no warnings');
    $res = session_request(['read', $id]);
    eq($res['read'], ['user_id' => 42, 'cart' => ['a', 'b'], 'seen' => 2], 'third request reads both writes');
    // A request that changes nothing (lazy_write) only refreshes the TTL: EXPIRE.
    eq($r->expire($key, 100), true, 'EXPIRE the session to 100 s');
    $res = session_request(['read', $id]);
    eq($res['closed'], true, 'read-only request closed');
    $ttl = $r->ttl($key);
    check($ttl > GC_MAXLIFETIME - 10, "TTL refreshed by the unchanged request: $ttl");
    // An unknown id (GET answers nil): an empty session, which PHP then writes (SETEX of "").
    $res = session_request(['read', 'sessunknown000']);
    eq($res['read'], [], 'an unknown id reads as an empty session');
    eq($r->get(session_key('sessunknown000')), '', 'the new empty session is stored empty');
    check($r->ttl(session_key('sessunknown000')) > GC_MAXLIFETIME - 10, 'TTL of the empty session');
    // use_strict_mode: the handler checks the id with EXISTS; an id the server does not know
    // is replaced, a known one kept.
    $res = session_request(['strict', 'sessforged0000000000']);
    check($res['id'] !== 'sessforged0000000000', 'strict mode replaced an unknown id');
    eq($res['read'], [], 'strict mode: empty session for the forged id');
    eq($r->exists(session_key('sessforged0000000000')), 0, 'no key for the forged id');
    $res = session_request(['strict', $id]);
    eq([$res['id'], $res['read']['user_id'] ?? null], [$id, 42], 'strict mode keeps a known id');
});

scenario('session_regenerate_destroy', function () {
    $id = 'sess' . bin2hex(random_bytes(10));
    $r = client();
    session_request(['write', $id, json_encode(['user_id' => 7])]);
    eq($r->exists(session_key($id)), 1, 'session key after the first request');
    // Login: session_regenerate_id(true) writes the data under a new id and deletes the old key.
    $res = session_request(['regenerate', $id]);
    eq($res['regenerated'], true, 'session_regenerate_id(true)');
    $new = $res['id'];
    check($new !== $id && $new !== '', "a new id: $new");
    eq($res['notices'], [], 'no warnings');
    eq($r->exists(session_key($id)), 0, 'old session key deleted');
    eq($r->get(session_key($new)), 'user_id|i:7;after_regenerate|b:1;', 'new session key holds the data');
    $ttl = $r->ttl(session_key($new));
    check($ttl > GC_MAXLIFETIME - 10 && $ttl <= GC_MAXLIFETIME, "new session TTL: $ttl");
    in_own_db(session_key($new));
    $res = session_request(['read', $new]);
    eq($res['read'], ['user_id' => 7, 'after_regenerate' => true], 'the new id reads the data');
    // Logout: session_destroy() deletes the key.
    $res = session_request(['destroy', $new]);
    eq([$res['destroyed'], $res['notices']], [true, []], 'session_destroy()');
    eq($r->exists(session_key($new)), 0, 'session key gone after session_destroy()');
    eq($r->dbSize(), 0, 'nothing left in the database');
    $res = session_request(['read', $new]);
    eq($res['read'], [], 'a destroyed session reads as empty');
});

scenario('session_locking', function () {
    $id = 'sess' . bin2hex(random_bytes(10));
    $key = session_key($id);
    $lock = $key . '_LOCK';
    $r = client();
    // A round trip with locking on: SET <key>_LOCK secret NX PX 10000 at start, the release
    // script (EVALSHA, then EVAL after NOSCRIPT) at close.
    $res = session_request(['write', $id, json_encode(['n' => 1])], LOCKING);
    eq([$res['started'], $res['closed'], $res['notices']], [true, true, []], 'locked request');
    eq($r->get($key), 'n|i:1;', 'session written with locking on');
    eq($r->exists($lock), 0, 'lock key gone after session_write_close()');
    $res = session_request(['write', $id, json_encode(['n' => 2])], LOCKING);
    eq([$res['read'], $res['notices']], [['n' => 1], []], 'second locked request');
    eq($r->exists($lock), 0, 'lock key gone after the second request');
    // A request holds the session (and its lock) open; look at the lock, and let a concurrent
    // request find it taken.
    $concurrent = null;
    $holder = null;
    [$status, $out, $err] = run_child(['session', 'hold', $id], LOCKING,
        function ($pipes) use ($r, $lock, $id, &$concurrent, &$holder) {
            $line = fgets($pipes[1]);
            $holder = json_decode((string)$line, true);
            check(is_array($holder) && $holder['locked'] === true, "holder: $line");
            eq($r->get($lock), $holder['host'] . '|' . $holder['pid'], 'lock value (host|pid)');
            $pttl = $r->pttl($lock);
            check($pttl > 8000 && $pttl <= 10000, "lock PTTL: $pttl");
            in_own_db($lock);
            // The concurrent request gives up after its retries (a notice) and may not write.
            $concurrent = session_request(['write', $id, json_encode(['n' => 99])],
                ['redis.session.lock_retries' => 2] + LOCKING);
            eq($r->get($lock), $holder['host'] . '|' . $holder['pid'], 'lock still the holder\'s');
        });
    eq($status, 0, "holder exit ($err)");
    $res = json_decode(trim($out), true); // its first line ("locked") was read above
    eq([$res['closed'] ?? null, $res['notices'] ?? null], [true, []], "holder's close ($out)");
    eq($concurrent['read'], ['n' => 2], 'the concurrent request still reads the data');
    check(in_array('session_start(): Acquire of session lock was not successful',
        $concurrent['notices'], true), 'concurrent request notices: ' . json_encode($concurrent['notices']));
    eq($r->get($key), 'n|i:2;held|b:1;', "the holder's write, not the concurrent one");
    eq($r->exists($lock), 0, 'lock key gone after the holder closed');
    // A session destroyed with locking on releases the lock too.
    $res = session_request(['destroy', $id], LOCKING);
    eq([$res['destroyed'], $res['notices']], [true, []], 'session_destroy() with locking');
    eq($r->exists($key, $lock), 0, 'session and lock keys gone after destroy');
});

exit($failures);
