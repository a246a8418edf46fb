//! `hypercache`: start a node. With no arguments it serves on 127.0.0.1:6379 with built-in
//! defaults; see `--help` and docs/configuration.md.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hypercache::config::{Config, LogFormat, PARAMS};
use hypercache::server;
use hypercache::state::Shared;
use tracing_subscriber::EnvFilter;

fn usage() -> String {
    let mut s = String::from(
        "hypercache: a Redis-compatible, Dynamo-style distributed cache\n\n\
         Usage: hypercache [--config FILE] [--SETTING VALUE ...]\n\n\
         Every setting can also come from the TOML file (same names) or from the environment as\n\
         HYPERCACHE_<NAME> (upper case, '-' as '_'). Flags win over the environment, which wins\n\
         over the file. Settings and defaults:\n",
    );
    let d = Config::default();
    for p in PARAMS.iter().filter(|p| {
        !matches!(
            p.name,
            "databases" | "appendonly" | "replicaof" | "slaveof" | "daemonize"
        )
    }) {
        s.push_str(&format!("  --{:<28} default: {}\n", p.name, (p.get)(&d)));
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "--version" || a == "-v") {
        println!(
            "hypercache {} (redis {})",
            env!("CARGO_PKG_VERSION"),
            hypercache::REDIS_VERSION
        );
        return ExitCode::SUCCESS;
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match Config::load(&args, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hypercache: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::new(&config.log_level);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if config.log_format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
    let threads = match config.threads {
        // One core is left to the kernel's network stack (softirq work for every packet) and
        // co-located clients: on the 2-core machines measured in docs/benchmarks.md a second
        // worker cost 5-10% more CPU per request and no throughput.
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
        n => n as usize,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Connections run in the order their input arrived, as in Redis's event loop: one poll of
    // the sockets wakes their tasks in the kernel's order, and tokio's LIFO slot would run the
    // last of them first (a PUBLISH sent after another client's UNSUBSCRIBE would still reach
    // that client). Needs `--cfg tokio_unstable`, which .cargo/config.toml sets.
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = match builder
        .worker_threads(threads)
        // Scripts run on the workers (a single node's) or on blocking threads (a cluster's),
        // and recurse with the data they convert (nested tables, JSON, MessagePack, each
        // bounded in depth): room for the deepest, even in a debug build, on both kinds of
        // thread. Only the pages touched are used.
        .thread_stack_size(16 * 1024 * 1024)
        // Replies wait for the worker's turn to end only while it is busy (`conn::busy_worker`).
        .on_thread_park(hypercache::conn::worker_parked)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hypercache: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // The plain-text and TLS client ports (`port 0` or `tls-port 0` turns one off).
        let mut listeners = [None, None];
        for (i, (port, what)) in [(config.port, "port"), (config.tls_port, "tls-port")].into_iter().enumerate() {
            if port == 0 {
                continue;
            }
            match tokio::net::TcpListener::bind((config.bind.as_str(), port)).await {
                Ok(l) => listeners[i] = Some(l),
                Err(e) => {
                    tracing::error!(component = "server", node_id = %config.node_id(), bind = %config.bind, port, setting = what, error = %e, "cannot listen");
                    return ExitCode::FAILURE;
                }
            }
        }
        let [listener, tls_listener] = listeners;
        // The HTTP listener (health, readiness, metrics) binds where clients do; a port that
        // cannot be had stops the start, as the client port does.
        let http_port = config.http_port();
        let http = if http_port == 0 {
            None
        } else {
            match tokio::net::TcpListener::bind((config.bind.as_str(), http_port)).await {
                Ok(l) => {
                    tracing::info!(component = "http", node_id = %config.node_id(), bind = %config.bind, port = http_port, "HTTP listener bound (/health, /ready, /metrics, /cluster/members)");
                    Some(l)
                }
                Err(e) => {
                    tracing::error!(component = "http", node_id = %config.node_id(), bind = %config.bind, port = http_port, error = %e, "cannot listen on the HTTP port (http-port 0 turns it off)");
                    return ExitCode::FAILURE;
                }
            }
        };
        let addr = listener.iter().chain(&tls_listener).filter_map(|l| l.local_addr().ok()).map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        let tls_wanted = hypercache::tls::wanted(&config);
        // The HTTP port as bound: it no longer follows `port` should that change at run time.
        let mut config = config;
        config.http_port = Some(http_port);
        let shared = Shared::new(config);
        if let Some(l) = &listener {
            shared.port.store(l.local_addr().map_or(0, |a| u64::from(a.port())), Ordering::Relaxed);
        }
        // A node with save points loads its snapshot file before it serves (hypercache::persist).
        if let Err(e) = hypercache::persist::load_at_start(&shared).await {
            tracing::error!(component = "persist", node_id = %shared.node_id, error = %e, "cannot load the snapshot file; move it away to start empty");
            return ExitCode::FAILURE;
        }
        let aclfile = shared.config.read().aclfile.clone();
        if !aclfile.is_empty() {
            // Users that do not load stop the start, as in Redis.
            if let Err(e) = shared.acl.load_file(&aclfile) {
                tracing::error!(component = "acl", node_id = %shared.node_id, path = %aclfile, error = %e, "cannot load the ACL file");
                return ExitCode::FAILURE;
            }
        }
        if tls_wanted {
            // Certificates that do not load stop the start, as in Redis.
            let c = shared.config.read().clone();
            if let Err(e) = shared.tls.configure(&c) {
                tracing::error!(component = "server", node_id = %shared.node_id, error = %e, "cannot configure TLS");
                return ExitCode::FAILURE;
            }
            shared.tasks.spawn(server::reload_tls_on_hangup(shared.clone()));
        }
        if let Some(cl) = shared.cluster.clone() {
            match hypercache::cluster::start(shared.clone(), cl.clone()).await {
                Ok(l) => {
                    shared.tasks.spawn(hypercache::cluster::link::accept_loop(l, shared.clone(), cl));
                }
                Err(e) => {
                    tracing::error!(component = "cluster", node_id = %cl.node_id, addr = %cl.cluster_addr, error = %e, "cannot listen on the cluster port");
                    return ExitCode::FAILURE;
                }
            }
        }
        if let Some(l) = http {
            shared.tasks.spawn(hypercache::http::serve(l, shared.clone()));
        }
        shared.tasks.spawn(server::expiry_task(shared.clone()));
        shared.tasks.spawn(server::signals(shared.clone()));
        let node_id = shared.config.read().node_id();
        tracing::info!(component = "server", node_id = %node_id, addr = %addr, version = env!("CARGO_PKG_VERSION"), "ready to accept connections");
        server::run(listener, tls_listener, shared.clone(), Duration::from_secs(5)).await;
        // Every background task ends on shutdown (or, for a request's replication, by its own
        // deadline): wait for them, within a bound.
        shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), shared.tasks.wait()).await.is_err() {
            tracing::warn!(component = "server", node_id = %node_id, left = shared.tasks.len(), "background tasks still running after 5 s; stopping anyway");
        }
        if let Some(t) = shared.telemetry.clone() {
            // Flushes the spans and metrics not exported yet (blocking: off the workers).
            let _ = tokio::time::timeout(Duration::from_secs(5), tokio::task::spawn_blocking(move || t.shutdown())).await;
        }
        tracing::info!(component = "server", node_id = %node_id, "stopped");
        ExitCode::SUCCESS
    })
}
