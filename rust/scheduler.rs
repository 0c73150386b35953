//! The scheduler: one thread per model that runs every active generation's next input in one
//! batched forward pass (continuous batching), so that N concurrent streams cost about one pass
//! over the weights per token instead of N.
//!
//! Requests join and leave between passes. A new request's prompt is computed in chunks
//! (`prefill_chunk` tokens while no stream is decoding, `prefill_chunk_busy` while some are, so
//! that running streams keep getting tokens) and the sequence then decodes with the others.
//! At most `n_parallel` sequences are active; up to `max_queue` more wait, and a request beyond
//! that fails at once with [`Error::QueueFull`] instead of hanging.
//!
//! Each stream's tokens are those it gets alone: every kernel gives a row the same result whatever
//! the batch, and attention runs per sequence.
//!
//! A consumer reads [`Event`]s from its [`Handle`]. Its control word says whether the scheduler
//! may run it: `RUNNING`, `PAUSED` (kept, with its cache, but not computed: a Ctrl-C in the
//! consumer) or `CANCELLED` (dropped before the next pass; a pass in progress is abandoned
//! within one layer and run again without it).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::generate::{forward_generations, Generation, Session, Step};
use crate::model::{BatchScratch, Llama};

/// The scheduler may run the sequence.
pub const RUNNING: u8 = 0;
/// The sequence keeps its place and cache but is not computed until resumed.
pub const PAUSED: u8 = 1;
/// The sequence is dropped before the next pass.
pub const CANCELLED: u8 = 2;

/// Limits of a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Sequences decoded together at most.
    pub n_parallel: usize,
    /// Requests waiting for a free sequence at most.
    pub max_queue: usize,
    /// Prompt tokens per pass while no other sequence is decoding.
    pub prefill_chunk: usize,
    /// Prompt tokens per pass while other sequences are decoding.
    pub prefill_chunk_busy: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            n_parallel: 4,
            max_queue: 64,
            prefill_chunk: crate::generate::DEFAULT_BATCH,
            prefill_chunk_busy: 64,
        }
    }
}

/// Token counts and timings of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Prompt tokens whose K/V were reused from a session's cache.
    pub prompt_tokens_reused: usize,
    /// Prompt tokens computed (the rest of the prompt).
    pub prompt_tokens_computed: usize,
    pub completion_tokens: usize,
    pub prompt_secs: f64,
    pub decode_secs: f64,
}

impl Usage {
    fn of(g: &Generation) -> Self {
        Usage {
            prompt_tokens: g.prompt_tokens(),
            prompt_tokens_reused: g.prompt_tokens_reused(),
            prompt_tokens_computed: g.prompt_tokens_computed(),
            completion_tokens: g.completion_tokens(),
            prompt_secs: g.prompt_secs,
            decode_secs: g.decode_secs,
        }
    }
}

/// What the scheduler sends a consumer.
#[derive(Debug)]
pub enum Event {
    Step(Step),
    Error(Error),
}

/// Shared between a consumer and the scheduler.
#[derive(Debug, Default)]
pub struct Control {
    state: AtomicU8,
    usage: Mutex<Usage>,
    /// True while the request waits for a sequence; it is then counted in `queue`.
    waiting: std::sync::atomic::AtomicBool,
    queue: Option<Arc<AtomicUsize>>,
}

impl Control {
    /// `RUNNING`, `PAUSED` or `CANCELLED`.
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Stop the sequence for good (idempotent, never blocks). A waiting request leaves the
    /// queue at once.
    pub fn cancel(&self) {
        self.state.store(CANCELLED, Ordering::Release);
        self.leave_queue();
    }

    /// No longer count the request as waiting (once).
    fn leave_queue(&self) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            if let Some(q) = &self.queue {
                q.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Keep the sequence but stop computing it (unless cancelled).
    pub fn pause(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, PAUSED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Let the scheduler run a paused sequence again (unless cancelled).
    pub fn resume(&self) {
        let _ = self
            .state
            .compare_exchange(PAUSED, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Counts and timings so far.
    pub fn usage(&self) -> Usage {
        *lock(&self.usage)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a persistent session lives while no generation uses it; the scheduler puts it back
/// when its generation ends (finished, failed or cancelled), before the last event is sent.
#[derive(Default)]
pub struct SessionSlot {
    state: Mutex<SlotState>,
    returned: Condvar,
}

#[derive(Default)]
struct SlotState {
    session: Option<Session>,
    /// The generation that has the session out.
    user: Option<Arc<Control>>,
}

impl SessionSlot {
    /// A slot holding `session`.
    pub fn new(session: Session) -> Self {
        SessionSlot {
            state: Mutex::new(SlotState {
                session: Some(session),
                user: None,
            }),
            returned: Condvar::new(),
        }
    }

    /// Run `f` on the session. When a cancelled generation still has it, wait (at most
    /// `wait`) for the scheduler to return it; a generation that is still running makes this an
    /// error (the session is busy).
    pub fn with<T>(
        &self,
        wait: Duration,
        f: impl FnOnce(&mut Option<Session>) -> Result<T>,
    ) -> Result<T> {
        let mut st = lock(&self.state);
        let deadline = std::time::Instant::now() + wait;
        while st.session.is_none() {
            let cancelled = st.user.as_ref().is_some_and(|u| u.state() == CANCELLED);
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !cancelled || left.is_zero() {
                return Err(Error::arg(
                    "session",
                    "is busy: a generation that uses it is still running; finish or cancel it first",
                ));
            }
            st = self
                .returned
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        f(&mut st.session)
    }

    fn put_back(&self, session: Session) {
        let mut st = lock(&self.state);
        st.session = Some(session);
        st.user = None;
        self.returned.notify_all();
    }
}

/// A consumer's end of one generation.
pub struct Handle {
    rx: Receiver<Event>,
    ctl: Arc<Control>,
}

impl Handle {
    /// The next event, waiting at most `timeout`: `Ok(None)` on timeout, `Err(())` once the
    /// generation has ended and every event was read.
    #[allow(clippy::result_unit_err)]
    pub fn next_timeout(&self, timeout: Duration) -> std::result::Result<Option<Event>, ()> {
        match self.rx.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
        }
    }

    /// The control word shared with the scheduler.
    pub fn control(&self) -> &Arc<Control> {
        &self.ctl
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.ctl.cancel();
    }
}

struct Request {
    gen: Generation,
    ctl: Arc<Control>,
    out: Sender<Event>,
    home: Option<Arc<SessionSlot>>,
}

impl Request {
    /// End the request: the session goes home first, then the last event (if any) is sent.
    fn retire(self, last: Option<Event>) {
        let Request { gen, out, home, .. } = self;
        if let Some(h) = home {
            h.put_back(gen.into_session());
        } else {
            drop(gen); // frees the KV cache now
        }
        if let Some(e) = last {
            let _ = out.send(e);
        }
    }
}

/// Counters of the work done (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Forward passes run.
    pub passes: u64,
    /// Sum over passes of the sequences in each.
    pub sequences: u64,
    /// Most sequences in one pass.
    pub max_batch: usize,
    /// Passes abandoned because a sequence in them was cancelled or paused.
    pub abandoned: u64,
    /// Tokens run through completed passes (prompt tokens computed plus decoded tokens fed).
    pub tokens: u64,
}

struct Shared {
    queued: Arc<AtomicUsize>,
    active: AtomicUsize,
    stats: Mutex<Stats>,
}

struct Worker {
    pid: u32,
    tx: Sender<Request>,
}

/// The scheduler of one model. Submitting from any thread is safe; the worker thread starts
/// with the first request (again in a child process after `fork`).
pub struct Scheduler {
    model: Arc<Llama>,
    cfg: SchedulerConfig,
    shared: Arc<Shared>,
    worker: Mutex<Option<Worker>>,
}

impl Scheduler {
    /// A scheduler for `model`; `cfg.n_parallel` and `cfg.prefill_chunk*` must be at least 1.
    pub fn new(model: Arc<Llama>, cfg: SchedulerConfig) -> Result<Self> {
        for (name, v) in [
            ("n_parallel", cfg.n_parallel),
            ("prefill_chunk", cfg.prefill_chunk),
            ("prefill_chunk_busy", cfg.prefill_chunk_busy),
        ] {
            if v == 0 {
                return Err(Error::arg(name, "must be at least 1"));
            }
        }
        Ok(Scheduler {
            model,
            cfg,
            shared: Arc::new(Shared {
                queued: Arc::new(AtomicUsize::new(0)),
                active: AtomicUsize::new(0),
                stats: Mutex::new(Stats::default()),
            }),
            worker: Mutex::new(None),
        })
    }

    /// The limits.
    pub fn config(&self) -> SchedulerConfig {
        self.cfg
    }

    /// Work counters so far.
    pub fn stats(&self) -> Stats {
        *lock(&self.shared.stats)
    }

    /// Requests waiting for a sequence, and sequences active.
    pub fn load(&self) -> (usize, usize) {
        (
            self.shared.queued.load(Ordering::Acquire),
            self.shared.active.load(Ordering::Acquire),
        )
    }

    fn spawn(&self, pid: u32) -> Result<Worker> {
        let (tx, rx) = mpsc::channel();
        let (model, cfg, shared) = (Arc::clone(&self.model), self.cfg, Arc::clone(&self.shared));
        std::thread::Builder::new()
            .name("med42-scheduler".into())
            .spawn(move || run(model, cfg, shared, rx))
            .map_err(|e| Error::Internal(format!("cannot start the scheduler thread: {e}")))?;
        Ok(Worker { pid, tx })
    }

    /// Queue `gen` (its model must be this scheduler's). `home`: the slot its session returns
    /// to when it ends.
    pub fn submit(&self, gen: Generation, home: Option<Arc<SessionSlot>>) -> Result<Handle> {
        let queued = &self.shared.queued;
        let bound = self.cfg.max_queue;
        // Requests beyond the free sequences wait; only those count against the queue bound.
        let free = self
            .cfg
            .n_parallel
            .saturating_sub(self.shared.active.load(Ordering::Acquire));
        if queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < bound + free).then_some(q + 1)
            })
            .is_err()
        {
            if let Some(h) = home {
                h.put_back(gen.into_session());
            }
            return Err(Error::QueueFull {
                max_queue: bound,
                n_parallel: self.cfg.n_parallel,
            });
        }
        let ctl = Arc::new(Control {
            waiting: std::sync::atomic::AtomicBool::new(true),
            queue: Some(Arc::clone(&self.shared.queued)),
            ..Default::default()
        });
        *lock(&ctl.usage) = Usage::of(&gen);
        if let Some(h) = &home {
            lock(&h.state).user = Some(Arc::clone(&ctl));
        }
        let (out, rx) = mpsc::channel();
        let req = Request {
            gen,
            ctl: Arc::clone(&ctl),
            out,
            home,
        };
        let mut w = lock(&self.worker);
        let pid = std::process::id();
        if w.as_ref().is_none_or(|w| w.pid != pid) {
            // first request, or a child process after fork (the parent's worker is not here)
            self.shared.queued.store(1, Ordering::Release);
            self.shared.active.store(0, Ordering::Release);
            *w = Some(self.spawn(pid)?);
        }
        let req = match w.as_ref().expect("started above").tx.send(req) {
            Ok(()) => return Ok(Handle { rx, ctl }),
            Err(mpsc::SendError(req)) => req,
        };
        // The worker is gone (a bug made it panic outside the per-request guards): start another,
        // so that the model stays usable.
        *w = Some(self.spawn(pid)?);
        if let Err(mpsc::SendError(req)) = w.as_ref().expect("just started").tx.send(req) {
            req.ctl.leave_queue();
            req.retire(None);
            return Err(Error::Internal("the scheduler thread has stopped".into()));
        }
        Ok(Handle { rx, ctl })
    }
}

/// Take request `i` out of the active set, keeping the count consumers read in step (before
/// the request's last event is sent).
fn retire_active(active: &mut Vec<Request>, i: usize, shared: &Shared) -> Request {
    let r = active.remove(i);
    shared.active.store(active.len(), Ordering::Release);
    r
}

/// The worker loop: admit, batch, run, sample, retire; until the scheduler is dropped and no
/// work is left.
fn run(model: Arc<Llama>, cfg: SchedulerConfig, shared: Arc<Shared>, rx: Receiver<Request>) {
    let mut waiting: VecDeque<Request> = VecDeque::new();
    let mut active: Vec<Request> = Vec::new();
    let mut scratch = BatchScratch::default();
    let mut open = true;
    loop {
        // 1. take new requests; block when idle
        if active.is_empty() && waiting.is_empty() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(r) => waiting.push_back(r),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(r) => waiting.push_back(r),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // 2. drop what was cancelled
        let mut i = 0;
        while i < waiting.len() {
            if waiting[i].ctl.state() == CANCELLED {
                waiting[i].ctl.leave_queue();
                waiting.remove(i).expect("in range").retire(None);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < active.len() {
            if active[i].ctl.state() == CANCELLED {
                retire_active(&mut active, i, &shared).retire(None);
            } else {
                i += 1;
            }
        }
        // 3. admit in arrival order
        while active.len() < cfg.n_parallel {
            let Some(r) = waiting.pop_front() else { break };
            r.ctl.leave_queue();
            active.push(r);
        }
        shared.active.store(active.len(), Ordering::Release);
        // 4. the batch: every running sequence's next input
        let decoding = active
            .iter()
            .any(|r| r.ctl.state() == RUNNING && !r.gen.in_prompt());
        let mut budget = if decoding {
            cfg.prefill_chunk_busy
        } else {
            cfg.prefill_chunk
        };
        let mut members: Vec<usize> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for (i, r) in active.iter().enumerate() {
            if r.ctl.state() != RUNNING {
                continue;
            }
            let n = if r.gen.in_prompt() {
                let n = r.gen.next_input(budget.max(1));
                if budget == 0 {
                    continue;
                }
                budget -= n;
                n
            } else {
                r.gen.next_input(1)
            };
            if n > 0 {
                members.push(i);
                counts.push(n);
            }
        }
        if members.is_empty() {
            // only paused sequences (or ones with logits to sample, below): wait a little for
            // a resume, a cancel or a new request
            if active.iter().all(|r| r.ctl.state() != RUNNING) {
                match rx.recv_timeout(Duration::from_millis(5)) {
                    Ok(r) => waiting.push_back(r),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
                continue;
            }
        } else {
            // 5. one pass for all of them
            let ctls: Vec<Arc<Control>> = members
                .iter()
                .map(|&i| Arc::clone(&active[i].ctl))
                .collect();
            let mut gens: Vec<&mut Generation> = Vec::with_capacity(members.len());
            {
                let mut rest: &mut [Request] = &mut active;
                let mut base = 0;
                for &i in &members {
                    let (_, tail) = rest.split_at_mut(i - base);
                    let (head, tail) = tail.split_at_mut(1);
                    gens.push(&mut head[0].gen);
                    rest = tail;
                    base = i + 1;
                }
            }
            let mut interrupted = || ctls.iter().any(|c| c.state() != RUNNING);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                forward_generations(&model, &mut gens, &counts, &mut scratch, &mut interrupted)
            }));
            drop(gens);
            {
                let mut st = lock(&shared.stats);
                match &r {
                    Ok(Err(Error::Cancelled)) => st.abandoned += 1,
                    _ => {
                        if matches!(r, Ok(Ok(()))) {
                            st.tokens += counts.iter().sum::<usize>() as u64;
                        }
                        st.passes += 1;
                        st.sequences += members.len() as u64;
                        st.max_batch = st.max_batch.max(members.len());
                    }
                }
            }
            match r {
                Ok(Ok(())) => {}
                Ok(Err(Error::Cancelled)) => continue, // run again without the interrupted ones
                Ok(Err(e)) => {
                    for &i in members.iter().rev() {
                        let req = retire_active(&mut active, i, &shared);
                        req.retire(Some(Event::Error(for_each_member(&e))));
                    }
                    continue;
                }
                Err(_) => {
                    for &i in members.iter().rev() {
                        let req = retire_active(&mut active, i, &shared);
                        req.retire(Some(Event::Error(Error::Internal(
                            "panic in the forward pass".into(),
                        ))));
                    }
                    continue;
                }
            }
        }
        // 6. sample every sequence that has logits; send its step; retire the finished
        let mut i = 0;
        while i < active.len() {
            let r = &mut active[i];
            if r.ctl.state() == CANCELLED || r.gen.next_input(1) > 0 || r.gen.is_finished() {
                i += 1;
                continue;
            }
            let step =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.gen.sample_step()));
            *lock(&r.ctl.usage) = Usage::of(&r.gen);
            match step {
                Ok(Ok(Some(step))) => {
                    if step.finish.is_some() || r.gen.is_finished() {
                        retire_active(&mut active, i, &shared).retire(Some(Event::Step(step)));
                        continue;
                    }
                    if r.out.send(Event::Step(step)).is_err() {
                        retire_active(&mut active, i, &shared).retire(None); // the consumer is gone
                        continue;
                    }
                }
                Ok(Ok(None)) => {
                    retire_active(&mut active, i, &shared).retire(None);
                    continue;
                }
                Ok(Err(e)) => {
                    retire_active(&mut active, i, &shared).retire(Some(Event::Error(e)));
                    continue;
                }
                Err(_) => {
                    retire_active(&mut active, i, &shared).retire(Some(Event::Error(
                        Error::Internal("panic while sampling".into()),
                    )));
                    continue;
                }
            }
            i += 1;
        }
        shared.active.store(active.len(), Ordering::Release);
        // usage of the sequences still in their prompt
        for r in &active {
            if r.gen.in_prompt() {
                *lock(&r.ctl.usage) = Usage::of(&r.gen);
            }
        }
    }
}

/// The error of a failed pass, for each of its sequences: a device out of memory stays that typed
/// error (the caller can retry with less); anything else is a bug report.
fn for_each_member(e: &Error) -> Error {
    match e {
        Error::DeviceOutOfMemory { device, detail } => Error::DeviceOutOfMemory {
            device: device.clone(),
            detail: detail.clone(),
        },
        e => Error::Internal(e.to_string()),
    }
}
