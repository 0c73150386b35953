//! Tests of the fork-join pool: correctness under many jobs and concurrent callers, the paths
//! where the caller does the work itself, a fresh state after a fork, and parking (idle and
//! waiting threads use no CPU, measured from procfs on Linux).

use super::*;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

static NO_FORKS: AtomicUsize = AtomicUsize::new(0);

fn test_pool(n_workers: usize, name: &'static str) -> Pool {
    Pool::with_workers(n_workers, name, &NO_FORKS)
}

/// CPU time (user + system) of one thread of this process, from procfs.
#[cfg(target_os = "linux")]
fn thread_cpu(task: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{task}/stat")).unwrap();
    // fields after the parenthesized name; utime and stime are fields 14 and 15 (clock ticks)
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    // USER_HZ is 100 on every Linux ABI
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// Thread ids of the pool's `n` workers: each index of one job reports the thread it runs
/// on and waits for the others, so `n` indices are on `n` workers while the caller is in
/// index 0.
#[cfg(target_os = "linux")]
fn worker_tasks(p: &Pool, n: usize) -> Vec<String> {
    let tasks = Mutex::new(Vec::new());
    let t0 = Instant::now();
    p.run(n + 1, &|i| {
        if i > 0 {
            tasks.lock().unwrap().push(this_thread());
        }
        while tasks.lock().unwrap().len() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "workers did not start"
            );
            thread::yield_now();
        }
    });
    let mut tasks = tasks.into_inner().unwrap();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), n);
    tasks
}

#[cfg(target_os = "linux")]
fn cpu_of(tasks: &[String]) -> Duration {
    tasks.iter().map(|t| thread_cpu(t)).sum()
}

#[cfg(target_os = "linux")]
fn this_thread() -> String {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    stat.split(' ').next().unwrap().to_string()
}

fn chunk_sum(p: &Pool, threads: usize, n: usize, chunk: usize) -> u64 {
    let sum = AtomicU64::new(0);
    p.for_chunks(threads, n, chunk, &|r| {
        sum.fetch_add(r.map(|x| x as u64).sum::<u64>(), Ordering::Relaxed);
    });
    sum.load(Ordering::Relaxed)
}

#[test]
fn every_index_runs_once_and_chunks_cover_the_range() {
    let p = test_pool(3, "m42t-once");
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
    assert_eq!(chunk_sum(&p, 4, 1000, 7), 999 * 1000 / 2);
}

#[test]
fn a_panicking_job_is_reported_and_the_pool_survives() {
    let p = test_pool(1, "m42t-panic");
    for _ in 0..20 {
        let r = catch_unwind(AssertUnwindSafe(|| {
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

#[test]
fn many_parallel_regions_in_a_row_stay_correct() {
    let p = test_pool(3, "m42t-many");
    for round in 0..20_000usize {
        let n = 1 + round % 4;
        let items = 1 + round % 97;
        let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
        p.for_chunks(n, items, 1 + round % 5, &|r| {
            for i in r {
                hits[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(
            hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
            "round {round}"
        );
    }
}

#[test]
fn concurrent_callers_each_get_their_own_results() {
    let p = Arc::new(test_pool(3, "m42t-conc"));
    let callers: Vec<_> = (0..4u64)
        .map(|c| {
            let p = Arc::clone(&p);
            thread::spawn(move || {
                for round in 0..2_000u64 {
                    let n = 10 + (c * 1000 + round) as usize % 300;
                    let sum = AtomicU64::new(0);
                    p.for_chunks(4, n, 3, &|r| {
                        let s: u64 = r.map(|x| x as u64 * (c + 1)).sum();
                        sum.fetch_add(s, Ordering::Relaxed);
                    });
                    let n = n as u64;
                    assert_eq!(sum.load(Ordering::Relaxed), (c + 1) * n * (n - 1) / 2);
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
}

#[test]
fn a_job_completes_when_no_worker_can_start() {
    // The caller takes every index nobody else claims: the path of a worker the OS does not
    // schedule, or of a process where threads cannot be created.
    let p = test_pool(3, "m42t-none");
    p.state().post.lock().unwrap().spawn_failed = true;
    let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
    p.run(4, &|i| {
        hits[i].fetch_add(1, Ordering::Relaxed);
    });
    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    assert!(p.state().post.lock().unwrap().threads.is_empty());
}

#[test]
fn workers_start_only_when_a_job_needs_them() {
    let p = test_pool(3, "m42t-lazy");
    assert_eq!(p.max_threads(), 4);
    p.run(1, &|_| {});
    assert!(p.state().post.lock().unwrap().threads.is_empty());
    p.run(2, &|_| {});
    assert_eq!(p.state().post.lock().unwrap().threads.len(), 1);
    p.run(4, &|_| {});
    assert_eq!(p.state().post.lock().unwrap().threads.len(), 3);
}

#[test]
fn a_fork_epoch_change_gives_a_fresh_state_that_works() {
    // What the atfork child handler does (bump the epoch), without forking: the next job
    // builds a new state with new workers and leaves the old one alone, here with its lock
    // held, as a parent thread inside `run` at the fork would leave it.
    static EPOCH: AtomicUsize = AtomicUsize::new(0);
    let p = Pool::with_workers(2, "m42t-fork", &EPOCH);
    assert_eq!(chunk_sum(&p, 3, 500, 4), 499 * 500 / 2);
    let old = p.state();
    let held = old.post.lock().unwrap();
    EPOCH.fetch_add(1, Ordering::Relaxed);
    let fresh = p.state();
    assert!(!std::ptr::eq(old, fresh));
    assert_eq!(chunk_sum(&p, 3, 500, 4), 499 * 500 / 2);
    assert_eq!(fresh.post.lock().unwrap().threads.len(), 2);
    drop(held);
}

#[cfg(target_os = "linux")]
#[test]
fn idle_workers_park_and_use_no_cpu() {
    let p = test_pool(2, "m42t-idle");
    for _ in 0..2_000 {
        assert_eq!(chunk_sum(&p, 3, 300, 2), 299 * 300 / 2);
    }
    let workers = worker_tasks(&p, 2);
    thread::sleep(Duration::from_millis(50)); // past the spin window
    let before = cpu_of(&workers);
    let t0 = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let used = cpu_of(&workers) - before;
    let wall = t0.elapsed();
    assert!(
        used <= Duration::from_millis(30),
        "idle workers used {used:?} CPU in {wall:?}"
    );

    // negative control: the same measurement sees a thread that spins
    let (tx, rx) = std::sync::mpsc::channel();
    let spinning = thread::spawn(move || {
        tx.send(this_thread()).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(600) {
            std::hint::spin_loop();
        }
    });
    let spinner = [rx.recv().unwrap()];
    let before = cpu_of(&spinner);
    thread::sleep(Duration::from_millis(500));
    let spun = cpu_of(&spinner) - before;
    spinning.join().unwrap();
    assert!(
        spun >= Duration::from_millis(60),
        "a spinning thread shows {spun:?}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_caller_parks_while_a_worker_finishes() {
    let p = test_pool(1, "m42t-wait");
    let started = AtomicBool::new(false);
    let me = this_thread();
    let before = thread_cpu(&me);
    let t0 = Instant::now();
    p.run(2, &|i| {
        if i == 0 {
            // index 1 is on the worker (the caller is here), so the caller ends up waiting
            while !started.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        } else {
            started.store(true, Ordering::Release);
            thread::sleep(Duration::from_millis(400));
        }
    });
    let wall = t0.elapsed();
    let used = thread_cpu(&me) - before;
    assert!(wall >= Duration::from_millis(400));
    assert!(
        used <= Duration::from_millis(60),
        "the waiting caller used {used:?} CPU in {wall:?}"
    );
}
