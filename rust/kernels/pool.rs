//! A small fork-join pool for the CPU forward pass.
//!
//! `run(n, f)` calls `f(i)` once for every `i in 0..n` and returns when all calls have returned.
//! Indices are claimed, not assigned: the caller runs `f(0)` and then takes every index no worker
//! has started, so a worker the OS has not scheduled (other processes on the cores, a second model)
//! never holds a job up; the caller does that share itself.
//!
//! Waiting is spin-then-park on both sides. A worker spins for the next job during a short window
//! (the ops of one token follow each other within microseconds), then parks; the caller spins
//! briefly for workers still inside their call, then parks until the last one wakes it. Idle and
//! waiting threads cost no CPU, and nobody yields in a loop.
//!
//! Workers start on the first job that needs them, so a model loaded with `n_threads = 1` starts
//! none. One job runs at a time per pool; concurrent callers (several sessions on several Python
//! threads) take turns per op.
//!
//! Fork: in a child only the forking thread exists, and the parent's pool state may hold a lock
//! taken by a thread that is gone. A `pthread_atfork` child handler bumps the fork epoch; the next
//! job in the child sees the change and builds a fresh state (new lock, new workers), never
//! touching the inherited one. The parent is not affected.

use std::any::Any;
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a waiting thread spins before parking: a worker for the next job, the caller for
/// workers to finish. Bounded by time and by count (a spin costs ~10 to ~150 cycles across CPUs).
const SPIN_TIME: Duration = Duration::from_micros(100);
const SPIN_MAX: u32 = 1 << 16;
/// Spins between clock reads.
const SPIN_CHECK: u32 = 64;

/// The claim word: job generation, job size `n` and the next unclaimed index, one atomic.
const IDX_BITS: u32 = 12;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;
const GEN_SHIFT: u32 = 2 * IDX_BITS;
const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;
/// Most threads one job can use (workers + the caller).
const MAX_THREADS: usize = IDX_MASK as usize;

/// Bumped in a forked child (by the `pthread_atfork` handler): pool states of an older epoch
/// belong to the parent.
static FORK_EPOCH: AtomicUsize = AtomicUsize::new(0);
static ATFORK_REGISTERED: AtomicBool = AtomicBool::new(false);

const UNKNOWN: usize = usize::MAX;

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

#[repr(align(64))]
struct Padded<T>(T);

/// One pool's state for one process. Never freed: workers hold it for their lifetime, and a
/// forked child abandons its parent's copy.
struct State {
    epoch: usize,
    n_workers: usize,
    name: &'static str,
    /// `gen << GEN_SHIFT | n << IDX_BITS | next`: taking an index is one compare-exchange, which
    /// also proves the job is still posted (its caller waits for every taken index).
    claim: Padded<AtomicU64>,
    /// Indices >= 1 of the current job that have finished.
    done: Padded<AtomicUsize>,
    // The job's closure; written before `claim` is published (Release), read after a successful
    // claim (Acquire).
    job_ptr: AtomicUsize,
    job_meta: AtomicUsize,
    /// Set while the caller is parked waiting for `done`; the worker finishing last wakes it.
    caller_parked: AtomicBool,
    caller: Mutex<Option<Thread>>,
    panicked: Mutex<Option<String>>,
    /// Held by the caller for the whole job: one job at a time.
    post: Mutex<Posting>,
    exit: AtomicBool,
}

struct Posting {
    gen: u64,
    threads: Vec<Thread>,
    spawn_failed: bool,
}

/// A fork-join pool; [`pool`] is the process-wide one.
pub struct Pool {
    state: AtomicPtr<State>,
    n_workers: AtomicUsize,
    name: &'static str,
    /// [`FORK_EPOCH`]; tests give a pool its own.
    fork_epoch: &'static AtomicUsize,
}

fn fat_to_parts<'a>(f: *const (dyn Fn(usize) + Sync + 'a)) -> (usize, usize) {
    // SAFETY: a fat pointer is two words (data, vtable); this is its only use and the parts are
    // put back together by `parts_to_fat` with the same layout.
    unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + 'a), (usize, usize)>(f) }
}

fn parts_to_fat(p: (usize, usize)) -> *const (dyn Fn(usize) + Sync) {
    // SAFETY: inverse of `fat_to_parts`.
    unsafe { std::mem::transmute::<(usize, usize), *const (dyn Fn(usize) + Sync)>(p) }
}

/// Spins until `ready()` or the spin window ends; true when ready.
#[inline]
fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    let mut start: Option<Instant> = None;
    let mut i = 0u32;
    loop {
        if ready() {
            return true;
        }
        i += 1;
        if i.is_multiple_of(SPIN_CHECK) {
            let t0 = *start.get_or_insert_with(Instant::now);
            if i >= SPIN_MAX || t0.elapsed() >= SPIN_TIME {
                return false;
            }
        }
        std::hint::spin_loop();
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl State {
    fn new(epoch: usize, n_workers: usize, name: &'static str) -> Self {
        State {
            epoch,
            n_workers,
            name,
            claim: Padded(AtomicU64::new(0)),
            done: Padded(AtomicUsize::new(0)),
            job_ptr: AtomicUsize::new(0),
            job_meta: AtomicUsize::new(0),
            caller_parked: AtomicBool::new(false),
            caller: Mutex::new(None),
            panicked: Mutex::new(None),
            post: Mutex::new(Posting {
                gen: 0,
                threads: Vec::new(),
                spawn_failed: false,
            }),
            exit: AtomicBool::new(false),
        }
    }

    /// Starts workers until `want` exist (or the pool's size is reached). A worker that cannot be
    /// started is not an error: the caller takes the indices nobody else does.
    fn spawn_workers(&'static self, post: &mut Posting, want: usize) {
        while post.threads.len() < want.min(self.n_workers) && !post.spawn_failed {
            let seen = post.gen;
            let spawned = thread::Builder::new()
                .name(format!("{}-{}", self.name, post.threads.len() + 1))
                .spawn(move || worker(self, seen));
            match spawned {
                Ok(h) => post.threads.push(h.thread().clone()),
                Err(_) => post.spawn_failed = true,
            }
        }
    }

    /// Takes indices of job `gen` one at a time and runs them until none is left (or the job is
    /// over). Panics are handed to `on_panic`; each finished index is counted in `done`.
    fn take_indices(&self, gen: u64, mut on_panic: impl FnMut(Box<dyn Any + Send>)) {
        let mut c = self.claim.0.load(Ordering::Acquire);
        loop {
            let (n, next) = ((c >> IDX_BITS) & IDX_MASK, c & IDX_MASK);
            if c >> GEN_SHIFT != gen || next >= n {
                return;
            }
            match self
                .claim
                .0
                .compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let f = parts_to_fat((
                        self.job_ptr.load(Ordering::Relaxed),
                        self.job_meta.load(Ordering::Relaxed),
                    ));
                    // SAFETY: index `next` of job `gen` was taken, so the job is still posted:
                    // its caller keeps the closure alive until `done` counts this index, and the
                    // closure was published before the claim word (Release/Acquire).
                    let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*f)(next as usize) }));
                    if let Err(p) = r {
                        on_panic(p);
                    }
                    self.finish(n as usize - 1);
                    c = self.claim.0.load(Ordering::Acquire);
                }
                Err(now) => c = now,
            }
        }
    }

    fn finish(&self, target: usize) {
        // SeqCst with the caller's `caller_parked` store and `done` load: one of the two sides
        // sees the other, so the last finisher cannot miss a parked caller.
        if self.done.0.fetch_add(1, Ordering::SeqCst) + 1 == target
            && self.caller_parked.load(Ordering::SeqCst)
        {
            if let Some(t) = &*self.caller.lock().unwrap_or_else(PoisonError::into_inner) {
                t.unpark();
            }
        }
    }

    /// Waits for `target` finished indices: spins, then parks until the last finisher wakes it.
    fn wait_done(&self, target: usize) {
        if spin_until(|| self.done.0.load(Ordering::Acquire) == target) {
            return;
        }
        *self.caller.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread::current());
        self.caller_parked.store(true, Ordering::SeqCst);
        while self.done.0.load(Ordering::SeqCst) != target {
            thread::park();
        }
        self.caller_parked.store(false, Ordering::Relaxed);
    }
}

fn worker(state: &'static State, mut seen: u64) {
    IN_WORKER.with(|w| w.set(true));
    loop {
        let mut c = state.claim.0.load(Ordering::Acquire);
        if c >> GEN_SHIFT == seen {
            let arrived = spin_until(|| {
                c = state.claim.0.load(Ordering::Acquire);
                c >> GEN_SHIFT != seen
            });
            if !arrived {
                loop {
                    if state.exit.load(Ordering::Acquire) {
                        return;
                    }
                    // the poster unparks after publishing, so a job posted before this call
                    // makes it return at once
                    thread::park();
                    c = state.claim.0.load(Ordering::Acquire);
                    if c >> GEN_SHIFT != seen {
                        break;
                    }
                }
            }
        }
        seen = c >> GEN_SHIFT;
        state.take_indices(seen, |p| {
            *state
                .panicked
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(panic_message(&*p));
        });
    }
}

impl Pool {
    const fn with_workers(
        n_workers: usize,
        name: &'static str,
        fork_epoch: &'static AtomicUsize,
    ) -> Self {
        Pool {
            state: AtomicPtr::new(std::ptr::null_mut()),
            n_workers: AtomicUsize::new(n_workers),
            name,
            fork_epoch,
        }
    }

    fn n_workers(&self) -> usize {
        let n = self.n_workers.load(Ordering::Relaxed);
        if n != UNKNOWN {
            return n;
        }
        // two threads may both compute it: same value
        let n = available_threads().saturating_sub(1).min(MAX_THREADS - 1);
        self.n_workers.store(n, Ordering::Relaxed);
        n
    }

    /// Most threads a job can use (workers + the caller). Starts no thread.
    pub fn max_threads(&self) -> usize {
        self.n_workers() + 1
    }

    /// This process's state, made on first use and again after a fork.
    fn state(&self) -> &'static State {
        loop {
            let p = self.state.load(Ordering::Acquire);
            // SAFETY: a published state is never freed (see `State`).
            if let Some(s) = unsafe { p.as_ref() } {
                if s.epoch == self.fork_epoch.load(Ordering::Relaxed) {
                    return s;
                }
            }
            self.renew(p);
        }
    }

    #[cold]
    fn renew(&self, old: *mut State) {
        register_atfork();
        let epoch = self.fork_epoch.load(Ordering::Acquire);
        let fresh = Box::into_raw(Box::new(State::new(epoch, self.n_workers(), self.name)));
        // The old state is left as it is: in a forked child its workers do not exist and its lock
        // may be held by a thread that is gone.
        if self
            .state
            .compare_exchange(old, fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: `fresh` was never published; another thread's state won.
            drop(unsafe { Box::from_raw(fresh) });
        }
    }

    /// Call `f(i)` for every `i in 0..n` concurrently, `n` capped at `max_threads()`; returns when
    /// all calls have returned. A panic in any call is re-raised here after all calls finished.
    pub fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let n = n.clamp(1, self.max_threads());
        if n == 1 || IN_WORKER.with(|w| w.get()) {
            for i in 0..n {
                f(i);
            }
            return;
        }
        let state = self.state();
        let mut post = state.post.lock().unwrap_or_else(PoisonError::into_inner);
        state.spawn_workers(&mut post, n - 1);
        let gen = post.gen.wrapping_add(1) & GEN_MASK;
        post.gen = gen;
        let (data, vtable) = fat_to_parts(f as *const _);
        state.job_ptr.store(data, Ordering::Relaxed);
        state.job_meta.store(vtable, Ordering::Relaxed);
        state.done.0.store(0, Ordering::Relaxed);
        state.claim.0.store(
            gen << GEN_SHIFT | (n as u64) << IDX_BITS | 1,
            Ordering::Release,
        );
        for t in post.threads.iter().take(n - 1) {
            t.unpark();
        }
        let mut first_panic = catch_unwind(AssertUnwindSafe(|| f(0))).err();
        state.take_indices(gen, |p| {
            first_panic.get_or_insert(p);
        });
        state.wait_done(n - 1);
        drop(post);
        if let Some(p) = first_panic {
            std::panic::resume_unwind(p);
        }
        if let Some(msg) = state
            .panicked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            panic!("a worker thread panicked: {msg}");
        }
    }

    /// Split `0..n_items` into chunks of `chunk` and process them on `n_threads` threads, with
    /// dynamic assignment so a slow thread does not hold the others back.
    pub fn for_chunks(
        &self,
        n_threads: usize,
        n_items: usize,
        chunk: usize,
        f: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) {
        if n_items == 0 {
            return;
        }
        let chunk = chunk.max(1);
        let cursor = AtomicUsize::new(0);
        let threads = n_threads.min(n_items.div_ceil(chunk));
        self.run(threads, &|_| loop {
            let start = cursor.fetch_add(chunk, Ordering::Relaxed);
            if start >= n_items {
                break;
            }
            f(start..(start + chunk).min(n_items));
        });
    }
}

impl Drop for Pool {
    /// Stops the workers (pools other than the process-wide one: tests).
    fn drop(&mut self) {
        // SAFETY: a published state is never freed.
        let Some(s) = (unsafe { self.state.get_mut().as_ref() }) else {
            return;
        };
        // a state from before a fork has no workers here and may have its lock held
        if s.epoch == self.fork_epoch.load(Ordering::Relaxed) {
            s.exit.store(true, Ordering::Release);
            for t in &s
                .post
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .threads
            {
                t.unpark();
            }
        }
    }
}

extern "C" fn after_fork_in_child() {
    // async-signal-safe: one atomic add
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
}

#[cfg(unix)]
fn register_atfork() {
    extern "C" {
        fn pthread_atfork(
            prepare: Option<extern "C" fn()>,
            parent: Option<extern "C" fn()>,
            child: Option<extern "C" fn()>,
        ) -> std::ffi::c_int;
    }
    if !ATFORK_REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a handler without preconditions; it only increments an atomic. It
        // fails only without memory for the entry (ENOMEM), and then a child's pool would keep the
        // parent's state, as it did before this existed.
        unsafe { pthread_atfork(None, None, Some(after_fork_in_child)) };
    }
}

#[cfg(not(unix))]
fn register_atfork() {}

static POOL: Pool = Pool::with_workers(UNKNOWN, "med42-worker", &FORK_EPOCH);

/// The process-wide pool, sized to the CPUs this process may use. Its workers start on the first
/// job that needs them.
pub fn pool() -> &'static Pool {
    &POOL
}

/// CPUs available to this process (affinity mask / cgroup aware).
pub fn available_threads() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests;
