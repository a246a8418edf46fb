//! Membership: who is in the cluster, who is alive, and which members own slots.
//!
//! [`Membership`] is a sans-IO machine that both drivers run. It wraps the `foca` crate's SWIM
//! (direct probes, `k` indirect probes, suspicion refuted by incarnation, dissemination
//! piggy-backed on probes and gossip) and keeps, beside it, the registry the rest of the node
//! works with: one [`MemberInfo`] per node id, and the **ring set**, the members that own slots,
//! with its epoch.
//!
//! ## Identities
//! A member's SWIM identity is an [`Ident`]: node id, cluster and client addresses, a generation
//! and flags. Its address (in foca's sense: what two identities of one member share) is its
//! cluster address. The generation grows with every identity the member takes: a restart starts
//! from the clock, a member declared down by mistake renews itself (`gen + 1`) and rejoins, and a
//! member that starts draining or leaves takes a new identity with the flag set. The identity
//! with the larger generation wins, so every member converges on the latest one, and a member
//! that joins later gets the flags with the membership itself.
//!
//! ## States
//! [`MemberState::Alive`], `Suspect` and `Down` are SWIM's; `Left` is a member declared down whose
//! identity carries [`LEAVING`] (it announced its departure). Suspect and Down members are not
//! live (no coordination, their writes become hints) but **keep their slots**: a transient
//! failure moves nothing.
//!
//! ## The ring set
//! A member is in the ring set unless it left, is draining, was forgotten (`HC.FORGET`), or has
//! been down for `remove-after`. This node is in it unless it is draining or leaving. When the
//! set changes the epoch moves past every epoch seen so far (a Lamport clock over ring changes):
//! a peer's message with a newer epoch tells this node that it missed a change, and it asks that
//! peer for the membership ([`Membership::saw_epoch`]). Both drivers stamp every inter-node
//! message with the sender's epoch.
//!
//! ## Seeds
//! While this node knows no live member it announces itself to every seed (and to the seeds'
//! last known identities) every `announce` interval: members can start in any order, and a node
//! cut off from everyone finds its way back.

use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Codec, Config, Foca, Identity, Member, Message, NoCustomBroadcast,
    OwnedNotification, PeriodicParams, PostcardCodec, State, Timer,
};
use rand_foca::rngs::SmallRng;
use rand_foca::SeedableRng;
use serde::{Deserialize, Serialize};

/// foca's timer, which the drivers hand back to [`Membership::on_timer`].
pub use foca::Timer as SwimTimer;

/// [`Ident::flags`]: the member is draining (it hands its slots to the others).
pub const DRAINING: u8 = 1;
/// [`Ident::flags`]: the member is leaving the cluster (SHUTDOWN, SIGTERM, or a finished drain).
pub const LEAVING: u8 = 2;

/// A member's SWIM identity (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ident {
    /// Node id (empty for a seed known only by its address).
    pub id: String,
    /// Cluster address (`host:port`): the inter-node TCP port and the membership UDP port.
    pub addr: String,
    /// Client address (`host:port`).
    pub client: String,
    /// Generation: the larger one wins.
    pub gen: u64,
    /// [`DRAINING`], [`LEAVING`].
    pub flags: u8,
}

impl Ident {
    /// A seed known only by its cluster address.
    pub fn seed(addr: &str) -> Ident {
        Ident {
            id: String::new(),
            addr: addr.to_string(),
            client: String::new(),
            gen: 0,
            flags: 0,
        }
    }

    /// Whether this is a placeholder for a seed ([`Ident::seed`]).
    pub fn is_seed(&self) -> bool {
        self.id.is_empty()
    }

    /// Whether the member is draining.
    pub fn draining(&self) -> bool {
        self.flags & DRAINING != 0
    }

    /// Whether the member is leaving.
    pub fn leaving(&self) -> bool {
        self.flags & LEAVING != 0
    }
}

impl Identity for Ident {
    type Addr = String;

    fn renew(&self) -> Option<Self> {
        Some(Ident {
            gen: self.gen + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.addr.clone()
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.gen, &self.id) > (adversary.gen, &adversary.id)
    }
}

/// Membership settings (`probe-interval`, `probe-timeout`, `indirect-probes`, `suspect-timeout`,
/// `remove-after`), all times in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSettings {
    /// Time between two probes of this node (each probes one member).
    pub probe_interval_ms: u64,
    /// How long a direct probe waits for its ack before asking others to probe.
    pub probe_timeout_ms: u64,
    /// How many members are asked to probe indirectly.
    pub indirect_probes: usize,
    /// How long a member stays suspect, unless it refutes, before it is down.
    pub suspect_timeout_ms: u64,
    /// How long a down member keeps its slots before the others take them over (0: until it
    /// is forgotten).
    pub remove_after_ms: u64,
    /// Announce interval to the seeds while no member is live.
    pub announce_ms: u64,
}

impl Default for MemberSettings {
    fn default() -> Self {
        MemberSettings {
            probe_interval_ms: 1000,
            probe_timeout_ms: 500,
            indirect_probes: 3,
            suspect_timeout_ms: 4000,
            remove_after_ms: 600_000,
            announce_ms: 1000,
        }
    }
}

impl MemberSettings {
    fn foca(&self) -> Config {
        let ms = Duration::from_millis;
        Config {
            probe_period: ms(self.probe_interval_ms.max(1)),
            probe_rtt: ms(self
                .probe_timeout_ms
                .clamp(1, self.probe_interval_ms.max(2) - 1)),
            num_indirect_probes: NonZeroUsize::new(self.indirect_probes.max(1))
                .unwrap_or(NonZeroUsize::MIN),
            max_transmissions: NonZeroU8::new(10).unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: ms(self.suspect_timeout_ms.max(1)),
            // Our registry keeps down members; foca keeps them long enough to announce to them
            // when a partition heals.
            remove_down_after: Some(ms(24 * 3600 * 1000)),
            max_packet_size: NonZeroUsize::new(MAX_DATAGRAM).unwrap_or(NonZeroUsize::MIN),
            // A member declared down is told so (TurnUndead) and rejoins under a new
            // generation; see `Membership::after` for the one case we hold back.
            notify_down_members: true,
            periodic_announce: Some(PeriodicParams {
                frequency: ms(30_000),
                num_members: NonZeroUsize::MIN,
            }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: ms(self.announce_ms.max(1) * 2),
                num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: ms(200),
                num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
            }),
        }
    }
}

/// How long a node with seeds waits for one of them to answer before it starts alone (the
/// others find it later), ms.
pub const JOIN_TIMEOUT_MS: u64 = 5_000;

/// Largest membership datagram, bytes.
pub const MAX_DATAGRAM: usize = 1400;

/// A member's state as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberState {
    /// Answers probes.
    Alive,
    /// Missed a probe cycle; down unless it refutes within `suspect-timeout`.
    Suspect,
    /// Declared down.
    Down,
    /// Announced its departure.
    Left,
}

impl MemberState {
    /// The name `HC.MEMBERS` shows.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }
}

/// What this node knows of another member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its latest identity.
    pub ident: Ident,
    /// Its state.
    pub state: MemberState,
    /// Its SWIM incarnation (grows when it refutes a suspicion).
    pub incarnation: u16,
    /// When this node last received a membership message from it (ms; 0: never).
    pub last_heard: u64,
    /// When its state last changed (ms).
    pub since: u64,
    /// Whether it is in the ring set.
    pub in_ring: bool,
}

/// Something that happened to the membership, for the log and the drivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member seen for the first time.
    Joined(String),
    /// A member missed a probe cycle.
    Suspect(String),
    /// A suspect member refuted the suspicion.
    Refuted(String),
    /// A member was declared down.
    Down(String),
    /// A member that was down (or had left) is alive again.
    Alive(String),
    /// A member announced its departure.
    Left(String),
    /// A member started draining.
    Draining(String),
    /// A member left the ring set: it left, drained, was forgotten, or stayed down for
    /// `remove-after`.
    Removed {
        /// The member.
        id: String,
        /// `left`, `drained`, `forgotten` or `remove-after`.
        why: &'static str,
    },
    /// The ring set changed.
    Ring {
        /// The new epoch.
        epoch: u64,
        /// The ring set, sorted.
        members: Vec<String>,
    },
    /// Others declared this node down; it took a new generation and rejoined.
    Renewed(u64),
}

/// Counters (`dist.heartbeat.*`, `dist.nodes.removed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounters {
    /// Direct probes answered (acks received).
    pub probe_success: u64,
    /// Probe cycles that ended with the member suspected (direct and indirect probes failed).
    pub probe_failure: u64,
    /// Indirect probes that reached their target (forwarded acks received).
    pub indirect_success: u64,
    /// Indirect probe rounds that did not (same events as `probe_failure`, counted only when
    /// there was another member to ask).
    pub indirect_failure: u64,
    /// Suspicions refuted.
    pub refuted: u64,
    /// Members removed from the ring set.
    pub removed: u64,
    /// Datagrams that did not decode.
    pub bad_datagrams: u64,
}

type Swim = Foca<Ident, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// The membership machine (see the module documentation).
pub struct Membership {
    swim: Swim,
    rt: AccumulatingRuntime<Ident>,
    settings: MemberSettings,
    seeds: Vec<String>,
    members: BTreeMap<String, MemberInfo>,
    /// Forgotten members: id -> the generation forgotten (older identities stay ignored).
    forgotten: BTreeMap<String, u64>,
    ring: BTreeSet<String>,
    epoch: u64,
    seen_epoch: u64,
    next_announce: u64,
    events: Vec<MemberEvent>,
    counters: MemberCounters,
    sends: Vec<(String, Bytes)>,
    timers: Vec<(u64, Timer<Ident>)>,
    left: bool,
    /// foca's current timer token (from the timers it schedules).
    token: u8,
    /// When this node started.
    started: u64,
    /// When it last asked a peer with a newer epoch for the membership.
    last_epoch_ask: Option<u64>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", self.swim.identity())
            .field("members", &self.members)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Membership {
    /// The membership of a node with identity `me` that joins through `seeds` (cluster
    /// addresses; its own is ignored), with SWIM's randomness seeded by `rng_seed`.
    pub fn new(
        me: Ident,
        seeds: &[String],
        settings: MemberSettings,
        rng_seed: u64,
        now: u64,
    ) -> Membership {
        let swim = Foca::new(
            me.clone(),
            settings.foca(),
            SmallRng::seed_from_u64(rng_seed),
            PostcardCodec,
        );
        let mut ring = BTreeSet::new();
        ring.insert(me.id.clone());
        let mut m = Membership {
            swim,
            rt: AccumulatingRuntime::new(),
            settings,
            seeds: seeds.iter().filter(|s| **s != me.addr).cloned().collect(),
            members: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            ring,
            epoch: 1,
            seen_epoch: 1,
            next_announce: now,
            events: Vec::new(),
            counters: MemberCounters::default(),
            sends: Vec::new(),
            timers: Vec::new(),
            left: false,
            token: 0,
            started: now,
            last_epoch_ask: None,
        };
        m.tick(now);
        m
    }

    /// This node's identity.
    pub fn me(&self) -> &Ident {
        self.swim.identity()
    }

    /// The settings.
    pub fn settings(&self) -> MemberSettings {
        self.settings
    }

    /// Changes the settings (the probe interval and timeout apply to new identities only, as
    /// foca allows).
    pub fn set_settings(&mut self, settings: MemberSettings) {
        let mut cfg = settings.foca();
        let old = self.settings.foca();
        cfg.probe_period = old.probe_period;
        cfg.probe_rtt = old.probe_rtt;
        if self.swim.set_config(cfg).is_ok() {
            let probe = (
                self.settings.probe_interval_ms,
                self.settings.probe_timeout_ms,
            );
            self.settings = MemberSettings {
                probe_interval_ms: probe.0,
                probe_timeout_ms: probe.1,
                ..settings
            };
        }
    }

    /// A datagram from a peer.
    pub fn on_datagram(&mut self, now: u64, data: &[u8]) {
        if self.left {
            return;
        }
        let src = match Codec::<Ident>::decode_header(&mut PostcardCodec, data) {
            Ok(h) => {
                match h.message {
                    Message::Ack(_) if h.dst == *self.swim.identity() => {
                        self.counters.probe_success += 1
                    }
                    Message::ForwardedAck { .. } if h.dst == *self.swim.identity() => {
                        self.counters.indirect_success += 1
                    }
                    _ => {}
                }
                if self
                    .forgotten
                    .get(&h.src.id)
                    .is_some_and(|g| h.src.gen <= *g)
                {
                    return;
                }
                h.src.id
            }
            Err(_) => {
                self.counters.bad_datagrams += 1;
                return;
            }
        };
        if self.swim.handle_data(data, &mut self.rt).is_err() {
            self.counters.bad_datagrams += 1;
        }
        self.after(now);
        if let Some(rec) = self.members.get_mut(&src) {
            rec.last_heard = now;
        }
    }

    /// A datagram that is not ours (another cluster, or garbage) was dropped by the driver.
    pub fn count_bad_datagram(&mut self) {
        self.counters.bad_datagrams += 1;
    }

    /// A timer this machine asked for ([`Membership::take_timers`]) has fired.
    pub fn on_timer(&mut self, now: u64, timer: Timer<Ident>) {
        if self.left {
            return;
        }
        let _ = self.swim.handle_timer(timer, &mut self.rt);
        self.after(now);
    }

    /// Periodic work, at least every [`MemberSettings::announce_ms`]: announcing to the seeds
    /// while alone, `remove-after`, and suspicions left without their timer. Returns when it
    /// wants to be called next.
    pub fn tick(&mut self, now: u64) -> u64 {
        // foca drops every timer it scheduled when this node takes a new identity (a drain, a
        // rejoin), a suspect member's timer to declare it down included, and a suspicion it
        // learned from others never had one here: such a member would stay suspect for ever.
        // A suspicion older than the suspect timeout (plus two probe intervals) ends as foca's
        // timer would have ended it: the member is declared down (a live one then rejoins).
        let stale = self.settings.suspect_timeout_ms + 2 * self.settings.probe_interval_ms;
        if !self.left {
            let due: Vec<Member<Ident>> = self
                .members
                .values()
                .filter(|r| r.state == MemberState::Suspect && now.saturating_sub(r.since) > stale)
                .map(|r| Member::new(r.ident.clone(), r.incarnation, State::Down))
                .collect();
            if !due.is_empty() {
                let _ = self.swim.apply_many(due.into_iter(), true, &mut self.rt);
            }
        }
        if !self.left && now >= self.next_announce {
            self.next_announce = now + self.settings.announce_ms.max(1);
            if self.swim.num_members() == 0 {
                let mut targets: Vec<Ident> = self.seeds.iter().map(|s| Ident::seed(s)).collect();
                for rec in self.members.values() {
                    if rec.state != MemberState::Left
                        && !targets.iter().any(|t| t.addr == rec.ident.addr)
                    {
                        targets.push(rec.ident.clone());
                    }
                }
                for t in targets {
                    let _ = self.swim.announce(t, &mut self.rt);
                }
            }
        }
        self.after(now);
        self.next_announce
    }

    /// This node's TCP link to member `id` failed (reset by a crash, or its heartbeat went
    /// unanswered): the member is suspected at once, without waiting for a probe to find it.
    /// The suspicion spreads like a probe's, and a member that is alive refutes it; one that
    /// stays silent is down after the suspect timeout.
    pub fn link_failed(&mut self, now: u64, id: &str) {
        let Some(rec) = self.members.get(id) else {
            return;
        };
        if rec.state != MemberState::Alive || self.left {
            return;
        }
        let (ident, inc) = (rec.ident.clone(), rec.incarnation);
        let suspect = Member::new(ident.clone(), inc, State::Suspect);
        let _ = self
            .swim
            .apply_many(std::iter::once(suspect), true, &mut self.rt);
        // foca starts the suspect timer only for its own probes: this one gets it here.
        self.timers.push((
            self.settings.suspect_timeout_ms,
            Timer::ChangeSuspectToDown {
                member_id: ident,
                incarnation: inc,
                token: self.token,
            },
        ));
        self.after(now);
    }

    /// This node starts draining: it leaves the ring set (its slots go to the others), and every
    /// member learns it with its identity.
    pub fn drain(&mut self, now: u64) {
        self.set_flags(now, self.me().flags | DRAINING);
    }

    /// This node leaves the cluster: it tells the others (who mark it left and take its slots)
    /// and stops taking part. Send the datagrams ([`Membership::take_sends`]) before exiting.
    pub fn leave(&mut self, now: u64) {
        if self.left {
            return;
        }
        self.set_flags(now, self.me().flags | LEAVING);
        let _ = self.swim.leave_cluster(&mut self.rt);
        self.left = true;
        self.after(now);
    }

    fn set_flags(&mut self, now: u64, flags: u8) {
        let me = self.me().clone();
        if me.flags == flags || self.left {
            return;
        }
        let new = Ident {
            gen: me.gen + 1,
            flags,
            ..me
        };
        let _ = self.swim.change_identity(new, &mut self.rt);
        self.after(now);
    }

    /// `HC.FORGET`: drops member `id` at once (its slots go to the others). Its current
    /// identity and older ones stay ignored; a restart (a newer generation) joins again.
    /// Returns whether the member was known.
    pub fn forget(&mut self, now: u64, id: &str) -> bool {
        let Some(rec) = self.members.remove(id) else {
            return false;
        };
        self.forgotten.insert(id.to_string(), rec.ident.gen);
        let down = Member::new(rec.ident.clone(), rec.incarnation, State::Down);
        let _ = self
            .swim
            .apply_many(std::iter::once(down), true, &mut self.rt);
        if rec.in_ring {
            self.counters.removed += 1;
            self.events.push(MemberEvent::Removed {
                id: id.to_string(),
                why: "forgotten",
            });
        }
        self.after(now);
        true
    }

    /// A peer at cluster address `from` sent a message carrying ring epoch `epoch`. A newer
    /// epoch than this node's means it missed a ring change: it adopts the number (epochs are
    /// counters; two nodes with one ring may have counted differently) and asks that peer for
    /// the membership, at most once a second. Returns whether it asked.
    pub fn saw_epoch(&mut self, now: u64, epoch: u64, from: &str) -> bool {
        self.seen_epoch = self.seen_epoch.max(epoch);
        if epoch <= self.epoch {
            return false;
        }
        self.epoch = epoch;
        if self.last_epoch_ask.is_some_and(|t| now < t + 1000) {
            return false;
        }
        self.last_epoch_ask = Some(now);
        self.announce_to(now, from);
        true
    }

    /// Asks the member at cluster address `addr` for the whole membership (it answers with all
    /// it knows).
    pub fn announce_to(&mut self, now: u64, addr: &str) {
        let target = self
            .members
            .values()
            .find(|r| r.ident.addr == addr)
            .map(|r| r.ident.clone())
            .unwrap_or_else(|| Ident::seed(addr));
        let _ = self.swim.announce(target, &mut self.rt);
        self.after(now);
    }

    /// Whether this node, which has not joined yet, should start alone: no member is alive and
    /// [`JOIN_TIMEOUT_MS`] passed since it started.
    pub fn join_timed_out(&self, now: u64) -> bool {
        now >= self.started + JOIN_TIMEOUT_MS
            && self.members.values().all(|r| r.state != MemberState::Alive)
    }

    /// The ring epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The ring set, sorted (this node included unless it is draining or leaving).
    pub fn ring(&self) -> Vec<String> {
        self.ring.iter().cloned().collect()
    }

    /// Every other member this node knows, by id.
    pub fn members(&self) -> &BTreeMap<String, MemberInfo> {
        &self.members
    }

    /// Member `id` (not this node).
    pub fn member(&self, id: &str) -> Option<&MemberInfo> {
        self.members.get(id)
    }

    /// Whether member `id` is alive (this node always is).
    pub fn alive(&self, id: &str) -> bool {
        id == self.me().id
            || self
                .members
                .get(id)
                .is_some_and(|r| r.state == MemberState::Alive)
    }

    /// Whether member `id` may still be coordinating requests: it is not known to be down or
    /// gone. A ring change waits for every such member to report the new ring.
    pub fn may_coordinate(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(|r| matches!(r.state, MemberState::Alive | MemberState::Suspect))
    }

    /// foca's own view, for diagnostics: (id, generation, incarnation, state).
    pub fn swim_view(&self) -> Vec<(String, u64, u16, String)> {
        self.swim
            .iter_membership_state()
            .map(|m| {
                (
                    m.id().id.clone(),
                    m.id().gen,
                    m.incarnation(),
                    format!("{:?}", m.state()),
                )
            })
            .collect()
    }

    /// Counters so far.
    pub fn counters(&self) -> MemberCounters {
        self.counters
    }

    /// How many members are in each state: alive (this node included), suspect, down (left
    /// members count as down).
    pub fn census(&self) -> (u64, u64, u64) {
        let mut c = (1, 0, 0);
        for r in self.members.values() {
            match r.state {
                MemberState::Alive => c.0 += 1,
                MemberState::Suspect => c.1 += 1,
                MemberState::Down | MemberState::Left => c.2 += 1,
            }
        }
        c
    }

    /// Datagrams to send: (cluster address, bytes).
    pub fn take_sends(&mut self) -> Vec<(String, Bytes)> {
        std::mem::take(&mut self.sends)
    }

    /// Timers to set: (after ms, timer) to hand back to [`Membership::on_timer`].
    pub fn take_timers(&mut self) -> Vec<(u64, Timer<Ident>)> {
        std::mem::take(&mut self.timers)
    }

    /// Events so far.
    pub fn take_events(&mut self) -> Vec<MemberEvent> {
        std::mem::take(&mut self.events)
    }

    /// Drains foca's runtime into our outboxes, then brings the registry and the ring set up to
    /// date with foca's view.
    fn after(&mut self, now: u64) {
        while let Some((to, data)) = self.rt.to_send() {
            // foca 2.0.0 also sends "you are down" (TurnUndead) when a suspect timer fires for
            // a member that refuted in time; a healthy member would then renew its identity for
            // nothing. Only a member foca holds as down is told.
            if self.spurious_turn_undead(&to, &data) {
                continue;
            }
            self.sends.push((to.addr, data));
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            if let Timer::ProbeRandomMember(t)
            | Timer::PeriodicAnnounce(t)
            | Timer::PeriodicAnnounceDown(t)
            | Timer::PeriodicGossip(t) = &timer
            {
                self.token = *t;
            }
            self.timers.push((after.as_millis() as u64, timer));
        }
        while let Some(n) = self.rt.to_notify() {
            if let OwnedNotification::Rejoin(id) = n {
                self.events.push(MemberEvent::Renewed(id.gen));
            }
        }
        let seen: Vec<(Ident, u16, State)> = self
            .swim
            .iter_membership_state()
            .map(|m| (m.id().clone(), m.incarnation(), m.state()))
            .collect();
        for (ident, inc, st) in seen {
            if ident.is_seed() || ident.id == self.me().id {
                continue;
            }
            if self
                .forgotten
                .get(&ident.id)
                .is_some_and(|g| ident.gen <= *g)
            {
                continue;
            }
            let state = match st {
                State::Alive => MemberState::Alive,
                State::Suspect => MemberState::Suspect,
                State::Down if ident.leaving() => MemberState::Left,
                State::Down => MemberState::Down,
            };
            let id = ident.id.clone();
            let Some(rec) = self.members.get_mut(&id) else {
                self.events.push(MemberEvent::Joined(id.clone()));
                if ident.draining() {
                    self.events.push(MemberEvent::Draining(id.clone()));
                }
                self.members.insert(
                    id,
                    MemberInfo {
                        ident,
                        state,
                        incarnation: inc,
                        last_heard: 0,
                        since: now,
                        in_ring: false,
                    },
                );
                continue;
            };
            if ident.gen < rec.ident.gen {
                continue;
            }
            if ident.draining() && !rec.ident.draining() {
                self.events.push(MemberEvent::Draining(id.clone()));
            }
            let renamed = ident.gen > rec.ident.gen;
            rec.ident = ident;
            if rec.state != state {
                match (rec.state, state) {
                    (MemberState::Alive, MemberState::Suspect) => {
                        self.counters.probe_failure += 1;
                        if self.swim.num_members() > 1 {
                            self.counters.indirect_failure += 1;
                        }
                        self.events.push(MemberEvent::Suspect(id.clone()));
                    }
                    (MemberState::Suspect, MemberState::Alive) if !renamed => {
                        self.counters.refuted += 1;
                        self.events.push(MemberEvent::Refuted(id.clone()));
                    }
                    (_, MemberState::Alive) => self.events.push(MemberEvent::Alive(id.clone())),
                    (_, MemberState::Down) => self.events.push(MemberEvent::Down(id.clone())),
                    (_, MemberState::Left) => self.events.push(MemberEvent::Left(id.clone())),
                    (_, MemberState::Suspect) => self.events.push(MemberEvent::Suspect(id.clone())),
                }
                rec.state = state;
                rec.since = now;
            }
            rec.incarnation = inc;
        }
        self.update_ring(now);
    }

    fn spurious_turn_undead(&self, to: &Ident, data: &[u8]) -> bool {
        if data.len() > 256 {
            return false;
        }
        let Ok(h) = Codec::<Ident>::decode_header(&mut PostcardCodec, data) else {
            return false;
        };
        h.message == Message::TurnUndead
            && self
                .swim
                .iter_membership_state()
                .any(|m| m.id() == to && m.state() != State::Down)
    }

    fn update_ring(&mut self, now: u64) {
        let me = self.me().clone();
        let mut ring = BTreeSet::new();
        if !me.draining() && !me.leaving() {
            ring.insert(me.id.clone());
        }
        let remove_after = self.settings.remove_after_ms;
        for (id, rec) in self.members.iter_mut() {
            let why = if rec.state == MemberState::Left {
                Some("left")
            } else if rec.ident.draining() {
                Some("drained")
            } else if rec.state == MemberState::Down
                && remove_after > 0
                && now.saturating_sub(rec.since) >= remove_after
            {
                Some("remove-after")
            } else {
                None
            };
            match why {
                None => {
                    rec.in_ring = true;
                    ring.insert(id.clone());
                }
                Some(why) => {
                    if rec.in_ring {
                        rec.in_ring = false;
                        self.counters.removed += 1;
                        self.events.push(MemberEvent::Removed {
                            id: id.clone(),
                            why,
                        });
                    }
                }
            }
        }
        if ring != self.ring {
            self.ring = ring;
            self.epoch = self.epoch.max(self.seen_epoch) + 1;
            self.seen_epoch = self.epoch;
            self.events.push(MemberEvent::Ring {
                epoch: self.epoch,
                members: self.ring.iter().cloned().collect(),
            });
        }
    }
}
