//! The cluster-wide commands: KEYS, SCAN, DBSIZE, RANDOMKEY and FLUSHALL.

use super::*;

/// Sends `body` to each member in `to` in parallel and feeds the outcomes to `on` (member, the
/// decoded response or `None` for a failure: link down, closed, malformed, or no answer by the
/// deadline) until it returns true (decided) or every target is accounted for. Returns whether
/// `on` decided.
async fn fan_out(
    cl: &Cluster,
    view: &View,
    to: &[MemberIdx],
    body: &[u8],
    deadline: Duration,
    mut on: impl FnMut(MemberIdx, Option<Response>) -> bool,
) -> bool {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sent = Vec::with_capacity(to.len());
    let mut decided = false;
    // Send to every target even once decided: the value must reach every live replica.
    for (tag, &m) in to.iter().enumerate() {
        let r = match cl.peer(view, m) {
            Some(peer) => peer.send_tagged(body, &tx, tag),
            None => Err(CallError::Down),
        };
        match r {
            Ok(id) => sent.push((tag, id)),
            Err(_) => {
                inc(&cl.metrics.dist.transport_errors);
                if !decided && on(m, None) {
                    decided = true;
                }
            }
        }
    }
    drop(tx);
    let started = Instant::now();
    let sleep = tokio::time::sleep(deadline);
    tokio::pin!(sleep);
    // Who answered: a bit per target up to 64 (a write's replicas; no allocation), a vector
    // beyond (a broadcast to a large cluster).
    let (mut small, mut big) = (0u64, vec![false; if to.len() > 64 { to.len() } else { 0 }]);
    let mut mark = |tag: usize| {
        if tag < 64 {
            small |= 1 << tag;
        } else {
            big[tag] = true;
        }
    };
    let mut left = sent.len();
    while !decided && left > 0 {
        tokio::select! {
            // Replies first: one that arrived with the deadline still counts.
            biased;
            got = rx.recv() => match got {
                Some((tag, reply)) => {
                    mark(tag);
                    left -= 1;
                    let m = to[tag];
                    let r = match reply.map(|b| wire::from_body::<Response>(&b)) {
                        Some(Ok(r)) => {
                            cl.metrics.dist.peer_latency.record(started.elapsed());
                            Some(r)
                        }
                        _ => {
                            inc(&cl.metrics.dist.transport_errors);
                            None
                        }
                    };
                    decided = on(m, r);
                }
                None => break,
            },
            _ = &mut sleep => {
                inc(&cl.metrics.dist.transport_timeouts);
                break;
            }
        }
    }
    // Targets that have not answered: stop waiting for them; undecided, they count as failures.
    for &(tag, id) in &sent {
        let answered = if tag < 64 {
            small & (1 << tag) != 0
        } else {
            big[tag]
        };
        if !answered {
            if let Some(peer) = cl.peer(view, to[tag]) {
                peer.forget(id);
            }
            if !decided {
                inc(&cl.metrics.dist.transport_errors);
                decided = on(to[tag], None);
            }
        }
    }
    decided
}

/// Asks each group's member for `make(slots)` (this node answers its own groups with
/// [`node::serve`], as it answers a peer) and collects the responses, in group order; `None` if
/// any is missing by the deadline.
async fn ask_groups<'p>(
    shared: &Shared,
    cl: &Cluster,
    view: &View,
    groups: &[(MemberIdx, Vec<u16>)],
    make: impl Fn(&[u16]) -> Request<'p>,
    timeout: Duration,
) -> Option<Vec<Response>> {
    let mut out: Vec<Option<Response>> = vec![None; groups.len()];
    let mut remote = Vec::new();
    let env = NodeEnv {
        shared,
        cl,
        view,
        ctx: Default::default(),
        timing: Timing {
            request_ms: timeout.as_millis() as u64,
        },
    };
    for (i, (m, slots)) in groups.iter().enumerate() {
        if *m == view.me {
            if let Served::Reply(r) = node::serve(&env, Some(*m), 0, make(slots)) {
                out[i] = Some(r);
            }
        } else {
            remote.push(i);
        }
    }
    // One request per member; members differ per group, so send each its own body.
    let mut ok = true;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sent = Vec::new();
    for &i in &remote {
        let body = wire::to_body(&make(&groups[i].1));
        match cl.peer(view, groups[i].0) {
            Some(peer) => match peer.send_tagged(&body, &tx, i) {
                Ok(id) => sent.push((i, id)),
                Err(_) => ok = false,
            },
            None => ok = false,
        }
    }
    drop(tx);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut left = sent.len();
    while ok && left > 0 {
        tokio::select! {
            biased;
            got = rx.recv() => match got {
                Some((i, body)) => {
                    left -= 1;
                    out[i] = body.and_then(|b| wire::from_body::<Response>(&b).ok());
                    ok = out[i].is_some();
                }
                None => break,
            },
            _ = &mut deadline => break,
        }
    }
    for (i, id) in sent {
        if out[i].is_none() {
            if let Some(peer) = cl.peer(view, groups[i].0) {
                peer.forget(id);
            }
        }
    }
    if !ok || out.iter().any(Option::is_none) {
        inc(&cl.metrics.dist.transport_errors);
        return None;
    }
    Some(out.into_iter().flatten().collect())
}

/// The slot owners from this node's view, counting a failure when a slot has none.
fn owners(
    shared: &Shared,
    cl: &Cluster,
    view: &View,
    slots: impl Iterator<Item = Slot>,
) -> Result<Vec<(MemberIdx, Vec<u16>)>, NoReplicas> {
    let env = NodeEnv {
        shared,
        cl,
        view,
        ctx: Default::default(),
        timing: Timing { request_ms: 0 },
    };
    node::slot_owners(&env, slots).inspect_err(|_| count_failure(cl, false))
}

/// Cluster-wide KEYS (each slot listed by its first live replica).
pub async fn keys(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    pattern: Bytes,
    timeout: Duration,
) -> Result<Vec<Bytes>, NoReplicas> {
    let (keys, _) = keys_in_slots(&shared, &cl, 0..SLOTS as Slot, Some(&pattern), timeout).await?;
    Ok(keys)
}

async fn keys_in_slots(
    shared: &Arc<Shared>,
    cl: &Arc<Cluster>,
    slots: impl Iterator<Item = Slot>,
    pattern: Option<&Bytes>,
    timeout: Duration,
) -> Result<(Vec<Bytes>, u64), NoReplicas> {
    inc(&cl.metrics.dist.broadcasts);
    let view = cl.view();
    let groups = owners(shared, cl, &view, slots)?;
    let pat = pattern.map(|p| &p[..]);
    let resp = ask_groups(
        shared,
        cl,
        &view,
        &groups,
        |slots| Request::Keys {
            slots: slots.to_vec(),
            pattern: pat,
        },
        timeout,
    )
    .await
    .ok_or(NoReplicas { write: false })?;
    let mut all: Vec<(Slot, Bytes)> = Vec::new();
    let mut seen = 0;
    for r in resp {
        if let Response::Keys { keys, examined } = r {
            all.extend(keys.into_iter().map(|k| (key_slot(&k), k)));
            seen += examined;
        }
    }
    // Slot order, as a single node lists them.
    all.sort_by_key(|(s, _)| *s);
    Ok((all.into_iter().map(|(_, k)| k).collect(), seen))
}

/// Cluster-wide SCAN step: the cursor is a slot number, as on a single node, so it means the same
/// on every node. Visits windows of slots, starting with one and growing fourfold while they hold
/// few keys, until about `count` keys were examined (COUNT measures work, as in Redis: with MATCH,
/// fewer keys may come back) or the end is reached. Whole slots, so a key present for the whole
/// iteration is returned exactly once.
pub async fn scan(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    cursor: u64,
    pattern: Option<Bytes>,
    count: usize,
    timeout: Duration,
) -> Result<(u64, Vec<Bytes>), NoReplicas> {
    let mut from = cursor.min(SLOTS as u64) as usize;
    let mut width = 1;
    let mut out = Vec::new();
    let mut examined = 0u64;
    while from < SLOTS && examined < count as u64 {
        let to = (from + width).min(SLOTS);
        let (mut keys, seen) = keys_in_slots(
            &shared,
            &cl,
            from as Slot..to as Slot,
            pattern.as_ref(),
            timeout,
        )
        .await?;
        out.append(&mut keys);
        examined += seen;
        from = to;
        width = (width * 4).min(SLOTS);
    }
    let next = if from >= SLOTS { 0 } else { from as u64 };
    Ok((next, out))
}

/// Cluster-wide DBSIZE: each slot counted by its first live replica.
pub async fn dbsize(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    timeout: Duration,
) -> Result<i64, NoReplicas> {
    inc(&cl.metrics.dist.broadcasts);
    let view = cl.view();
    let groups = owners(&shared, &cl, &view, 0..SLOTS as Slot)?;
    let resp = ask_groups(
        &shared,
        &cl,
        &view,
        &groups,
        |slots| Request::Count {
            slots: slots.to_vec(),
        },
        timeout,
    )
    .await
    .ok_or(NoReplicas { write: false })?;
    Ok(resp
        .iter()
        .map(|r| match r {
            Response::Count(n) => *n as i64,
            _ => 0,
        })
        .sum())
}

/// Cluster-wide RANDOMKEY: a random key of a random live member (every member holds copies of
/// its slots' keys, so any member's key is a key of the cluster).
pub async fn randomkey(shared: Arc<Shared>, cl: Arc<Cluster>, timeout: Duration) -> Option<Bytes> {
    inc(&cl.metrics.dist.broadcasts);
    let ctx = node_ctx(&shared);
    let live: Vec<usize> = (0..cl.peers.len())
        .filter(|&i| cl.peers[i].is_up())
        .collect();
    let start = rand::Rng::random_range(&mut *shared.rng.lock(), 0..=live.len());
    let body = wire::to_body(&Request::RandomKey);
    for k in 0..=live.len() {
        let pick = (start + k) % (live.len() + 1);
        let found = if pick == live.len() {
            shared.store.random_key(&mut *shared.rng.lock(), &ctx)
        } else {
            match cl.peers[live[pick]].call(&body, timeout).await {
                Ok(b) => match wire::from_body::<Response>(&b) {
                    Ok(Response::Key(k)) => k,
                    _ => None,
                },
                Err(_) => None,
            }
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Cluster-wide FLUSHALL: flushes here and on every live member at a new version (the horizon),
/// below which no write is accepted any more, so that a replica that missed the flush cannot bring
/// keys back through repair. Members that are down keep their keys until they are repaired or
/// flushed again (logged). A member that was live but did not confirm makes the command fail.
pub async fn flushall(
    shared: Arc<Shared>,
    cl: Arc<Cluster>,
    timeout: Duration,
) -> Result<(), NoReplicas> {
    inc(&cl.metrics.dist.broadcasts);
    let horizon = Version {
        hlc: shared.store.clock().tick(now_ms()),
        origin: 0,
    };
    let sh = shared.clone();
    let local = tokio::task::spawn_blocking(move || sh.store.flush_at(horizon));
    let body = wire::to_body(&Request::Flush { horizon });
    let view = cl.view();
    let members: Vec<MemberIdx> = (0..view.peer_of.len() as MemberIdx)
        .filter(|m| *m != view.me)
        .collect();
    let live: Vec<bool> = members.iter().map(|&m| view.live(&cl, m)).collect();
    let (mut down, mut failed) = (0, 0);
    fan_out(&cl, &view, &members, &body, timeout, |m, r| {
        if !matches!(r, Some(Response::Done)) {
            let i = members.iter().position(|x| *x == m).unwrap_or(0);
            if live[i] {
                failed += 1;
            } else {
                down += 1;
            }
        }
        false
    })
    .await;
    let _ = local.await;
    if down > 0 {
        tracing::warn!(component = "cluster", node_id = %cl.node_id, down, "FLUSHALL did not reach members that are down; they keep their keys until repaired");
    }
    if failed > 0 {
        count_failure(&cl, true);
        return Err(NoReplicas { write: true });
    }
    Ok(())
}
