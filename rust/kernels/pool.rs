//! A small fork-join pool for the CPU forward pass.
//!
//! Workers spin briefly after each job (ops of one token follow each other within microseconds),
//! then park. `run(n, f)` calls `f(i)` for `i in 0..n` on `n` threads (the caller is thread 0) and
//! returns when all are done. One job runs at a time; concurrent callers (several sessions on
//! several Python threads) take turns per op. Only the workers a job needs are woken, so a model
//! loaded with `n_threads = 1` never touches the others.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};

/// How long a worker spins for the next job before parking (iterations of `spin_loop`).
const SPIN_LIMIT: u32 = 200_000;

#[repr(align(64))]
struct Slot {
    /// Generation of the last job posted to this worker.
    go: AtomicUsize,
    /// Generation of the last job this worker finished.
    done: AtomicUsize,
}

struct Shared {
    slots: Vec<Slot>,
    // Read by workers after observing their `go` generation (Acquire), written before (Release).
    job_ptr: AtomicUsize,
    job_meta: AtomicUsize,
    panicked: Mutex<Option<String>>,
}

/// The process-wide pool.
pub struct Pool {
    shared: &'static Shared,
    threads: Vec<Thread>,
    call: Mutex<usize>,
}

thread_local! {
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
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

impl Pool {
    fn new(n_workers: usize) -> Self {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            slots: (0..n_workers)
                .map(|_| Slot {
                    go: AtomicUsize::new(0),
                    done: AtomicUsize::new(0),
                })
                .collect(),
            job_ptr: AtomicUsize::new(0),
            job_meta: AtomicUsize::new(0),
            panicked: Mutex::new(None),
        }));
        let threads = (0..n_workers)
            .map(|w| {
                thread::Builder::new()
                    .name(format!("med42-worker-{}", w + 1))
                    .spawn(move || worker(shared, w))
                    .expect("spawn med42 worker thread")
                    .thread()
                    .clone()
            })
            .collect();
        Pool {
            shared,
            threads,
            call: Mutex::new(0),
        }
    }

    /// Most threads a job can use (workers + the caller).
    pub fn max_threads(&self) -> usize {
        self.threads.len() + 1
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
        let mut gen_guard = self.call.lock().unwrap_or_else(|e| e.into_inner());
        let gen = gen_guard.wrapping_add(1);
        *gen_guard = gen;
        let (data, vtable) = fat_to_parts(f as *const _);
        self.shared.job_ptr.store(data, Ordering::Relaxed);
        self.shared.job_meta.store(vtable, Ordering::Relaxed);
        for w in 0..n - 1 {
            self.shared.slots[w].go.store(gen, Ordering::Release);
            self.threads[w].unpark();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        for w in 0..n - 1 {
            let slot = &self.shared.slots[w];
            let mut spins = 0u32;
            while slot.done.load(Ordering::Acquire) != gen {
                spins = spins.wrapping_add(1);
                if spins < 1 << 16 {
                    std::hint::spin_loop();
                } else {
                    thread::yield_now();
                }
            }
        }
        drop(gen_guard);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if let Some(msg) = self
            .shared
            .panicked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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

fn worker(shared: &'static Shared, w: usize) {
    IN_WORKER.with(|c| c.set(true));
    let slot = &shared.slots[w];
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let gen = loop {
            let g = slot.go.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::park();
            }
        };
        seen = gen;
        let f = parts_to_fat((
            shared.job_ptr.load(Ordering::Relaxed),
            shared.job_meta.load(Ordering::Relaxed),
        ));
        // SAFETY: the poster published the job before bumping `go` (Release/Acquire) and blocks
        // until this worker stores `done`, so the closure is alive for the whole call.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { (*f)(w + 1) }));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            *shared.panicked.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
        }
        slot.done.store(gen, Ordering::Release);
    }
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// The process-wide pool, sized to the CPUs this process may use.
pub fn pool() -> &'static Pool {
    POOL.get_or_init(|| Pool::new(available_threads().saturating_sub(1)))
}

/// CPUs available to this process (affinity mask / cgroup aware).
pub fn available_threads() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_index_runs_once_and_chunks_cover_the_range() {
        let p = Pool::new(3);
        for n in [1, 2, 3, 4, 9] {
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            p.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            let expect = n.min(4);
            for (i, h) in hits.iter().enumerate() {
                assert_eq!(
                    h.load(Ordering::Relaxed),
                    usize::from(i < expect),
                    "n={n} i={i}"
                );
            }
        }
        let sum = AtomicU64::new(0);
        p.for_chunks(4, 1000, 7, &|r| {
            sum.fetch_add(r.map(|x| x as u64).sum::<u64>(), Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 999 * 1000 / 2);
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_pool_survives() {
        let p = Pool::new(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.run(2, &|i| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        p.run(2, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }
}
