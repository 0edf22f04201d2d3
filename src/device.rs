//! Choosing the device a command runs on: the CPU always, a CUDA GPU when vaezoo is built with
//! the `cuda` feature.

use std::any::TypeId;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use vaezoo_core::Backend;

/// The device of `--device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The CPU (all cores, through dfdx's gemm and rayon).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

impl DeviceChoice {
    /// The name recorded in `env.json`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        }
    }
}

/// The CPU, with dfdx's buffer cache on: freed tensors' memory is reused by later steps
/// instead of being returned and faulted in again.
pub fn cpu() -> vaezoo_core::dfdx::prelude::Cpu {
    use vaezoo_core::dfdx::tensor::Cache;
    keep_freed_memory();
    let dev = vaezoo_core::dfdx::prelude::Cpu::default();
    dev.enable_cache();
    dev
}

/// Runs `op` on a worker thread of rayon's global pool, the calling thread waiting for it; the
/// commands and benchmarks run their whole work this way.
///
/// The CPU kernels' parallel passes then start on a worker, which shares them with the other
/// workers directly. Started from a thread outside the pool, every pass (thousands per training
/// step) is handed to the pool and the caller sleeps until it is done, a wake-up of tens of
/// microseconds each time: 10–15 % of a step of the MLP VAE and of the denoising attention on
/// the benchmark workloads, at 1 thread as at 2. The pool's threads get the main thread's 8 MiB
/// of stack.
pub fn on_compute_pool<R: Send>(op: impl FnOnce() -> R + Send) -> R {
    // The global pool reads RAYON_NUM_THREADS as before; it may already exist (a test, a
    // plugin), and then keeps its settings.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(8 << 20)
        .build_global();
    // `scope` called from outside the pool runs its body on one of the pool's threads.
    rayon::scope(|_| op())
}

/// How long a poller of [`with_pool_awake`] looks for work in vain before it stops: longer
/// than the serial stretches of a training step.
const POLL_IDLE_LIMIT: Duration = Duration::from_millis(1);

/// How long [`with_pool_awake`] waits for its pollers to start before it runs `op` anyway.
const POLL_START_LIMIT: Duration = Duration::from_micros(50);

/// Runs `op` on the calling worker of rayon's pool with the pool's other workers polling for
/// work all along, instead of falling asleep whenever `op` runs serial code for longer than
/// rayon's few dozen spins and being woken again (a futex call by `op`'s thread and tens of
/// microseconds before the sleeper runs) by the next parallel pass. A training step has dozens
/// of such passes: at 2 threads this takes about 12 % off a step of `vae_mlp_train`. The other
/// workers spin while `op` runs, as OpenMP's threads do between PyTorch's parallel regions, so
/// the commands use it around compute only (a training step, an evaluation), not around I/O.
///
/// A poller runs as a job of its worker. Started while its worker waits inside another job (one
/// of `op`'s passes that the worker stole first), it would hold that job until `op` ended, and
/// `op` could wait for the job forever: so `op` starts once the pollers have (or after
/// [`POLL_START_LIMIT`]), and a poller that finds no work for [`POLL_IDLE_LIMIT`] stops. One
/// call polls at a time in the process, and a call returns once its pollers have stopped. Off
/// the CPU backend `D`, outside a pool, with one thread, or while another call polls (a nested
/// one included), or with more threads than cores (where pollers would take the cores that
/// `op` needs), `op` just runs.
pub fn with_pool_awake<D: Backend, R>(op: impl FnOnce() -> R) -> R {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    /// Whether a call's pollers are running.
    static POLLING: AtomicBool = AtomicBool::new(false);
    /// Pause-instruction spins between two looks for work: a microsecond or so, not to contend
    /// for the queues' atomics with `op`'s thread.
    const IDLE_SPINS: usize = 32;
    /// One call's pollers: whether to go on, how many have started, how many have not stopped.
    struct Pollers {
        running: AtomicBool,
        started: AtomicUsize,
        left: AtomicUsize,
    }
    /// Stops the pollers when `op` returns or unwinds, and waits until they have.
    struct Stop(Arc<Pollers>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.running.store(false, Ordering::Release);
            while self.0.left.load(Ordering::Acquire) > 0 {
                std::thread::yield_now();
            }
            POLLING.store(false, Ordering::Release);
        }
    }

    let on_cpu = TypeId::of::<D>() == TypeId::of::<vaezoo_core::dfdx::prelude::Cpu>();
    let Some(caller) = rayon::current_thread_index() else {
        return op();
    };
    // `available_parallelism` reads the cgroup's CPU quota files: once per process, not per
    // step.
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    let threads = rayon::current_num_threads();
    let others = threads - 1;
    let claimed = || {
        POLLING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    };
    if !on_cpu || others == 0 || threads > cores || !claimed() {
        return op();
    }
    let pollers = Arc::new(Pollers {
        running: AtomicBool::new(true),
        started: AtomicUsize::new(0),
        left: AtomicUsize::new(others),
    });
    let shared = Arc::clone(&pollers);
    rayon::spawn_broadcast(move |worker| {
        if worker.index() == caller {
            return;
        }
        shared.started.fetch_add(1, Ordering::AcqRel);
        let mut idle_since = Instant::now();
        while shared.running.load(Ordering::Acquire) {
            if rayon::yield_now() == Some(rayon::Yield::Executed) {
                idle_since = Instant::now();
            } else if idle_since.elapsed() > POLL_IDLE_LIMIT {
                break;
            } else {
                (0..IDLE_SPINS).for_each(|_| std::hint::spin_loop());
            }
        }
        shared.left.fetch_sub(1, Ordering::AcqRel);
    });
    let _stop = Stop(Arc::clone(&pollers));
    let since = Instant::now();
    while pollers.started.load(Ordering::Acquire) < others && since.elapsed() < POLL_START_LIMIT {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
    op()
}

/// Keeps freed heap memory in the process for the next allocation (glibc).
///
/// dfdx's cache reuses a buffer only for a tensor of the same size, so with batches of varying
/// shapes (length-bucketed text) most buffers are new. glibc serves large ones with `mmap` and
/// unmaps them when freed, so every step faulted tens of megabytes of zeroed pages back in
/// (16 % of a text training step at 2 threads, with the threads contending on the page-table
/// lock). With the thresholds raised, freed blocks stay in the heap and are reused; the peak
/// resident memory is unchanged (measured on the `nvae_text_train` benchmark).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only changes allocator parameters; both are valid options, and a
            // rejected value leaves the defaults in place.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
                libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            }
        });
    }
}

/// The first CUDA device, with dfdx's buffer cache on.
#[cfg(feature = "cuda")]
pub fn cuda() -> crate::Result<vaezoo_core::dfdx::prelude::Cuda> {
    use vaezoo_core::dfdx::tensor::Cache;
    let dev = vaezoo_core::dfdx::prelude::Cuda::try_build(0, 0)
        .map_err(|e| crate::Error::Usage(format!("no usable CUDA device: {e:?}")))?;
    dev.enable_cache();
    Ok(dev)
}

/// Evaluates `$body` with `$dev` bound to a reference to the chosen device.
macro_rules! on_device {
    ($choice:expr, |$dev:ident| $body:expr) => {
        match $choice {
            $crate::device::DeviceChoice::Cpu => {
                let $dev = &$crate::device::cpu();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceChoice::Cuda => {
                let $dev = &$crate::device::cuda()?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::DeviceChoice::Cuda => Err($crate::Error::Usage(
                "this vaezoo was built without CUDA; rebuild with `--features cuda`".into(),
            )),
        }
    };
}
pub(crate) use on_device;

#[cfg(test)]
mod tests {
    use super::*;
    use vaezoo_core::dfdx::prelude::Cpu;

    fn pool() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    #[test]
    fn work_in_an_awake_pool_runs_and_returns_its_value_nested_too() {
        let sum = pool().install(|| {
            with_pool_awake::<Cpu, _>(|| {
                let (a, b) = rayon::join(
                    || with_pool_awake::<Cpu, _>(|| (1..=1000u64).sum::<u64>()),
                    || (1..=10u64).product::<u64>(),
                );
                a + b
            })
        });
        assert_eq!(sum, 500_500 + 3_628_800);
    }

    /// Back-to-back calls, each with nested parallel passes of the size of a step's (where a
    /// poller left over from one call could start inside a job of the next and hold it), on
    /// two and three threads: all of them finish.
    #[test]
    fn back_to_back_calls_with_nested_parallel_work_all_finish() {
        use rayon::prelude::*;
        const CALLS: u64 = 20_000;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for threads in [2, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let total: u64 = pool.install(|| {
                    (0..CALLS)
                        .map(|call| {
                            with_pool_awake::<Cpu, _>(|| {
                                (0..64u64)
                                    .into_par_iter()
                                    .map(|i| {
                                        (0..64u64)
                                            .into_par_iter()
                                            .map(|j| i * j + call)
                                            .sum::<u64>()
                                    })
                                    .sum::<u64>()
                            })
                        })
                        .sum()
                });
                let per_call = |call: u64| (0..64u64).map(|i| i * 2016 + 64 * call).sum::<u64>();
                assert_eq!(total, (0..CALLS).map(per_call).sum::<u64>());
            }
            done.send(()).unwrap();
        });
        let waited = finished.recv_timeout(std::time::Duration::from_secs(120));
        assert!(
            waited.is_ok(),
            "calls still running after two minutes: a deadlock"
        );
    }

    /// CPU seconds the threads `tids` of this process have used (user + system), from
    /// `/proc/self/task/TID/stat`.
    #[cfg(target_os = "linux")]
    fn cpu_seconds(tids: &[i32]) -> f64 {
        let ticks = |tid: &i32| -> f64 {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            // utime and stime: fields 14 and 15 of the file, 12 and 13 after the name.
            fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()
        };
        tids.iter().map(ticks).sum::<f64>() / 100.0
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_workers_stop_polling_when_the_work_returns_or_panics() {
        let pool = pool();
        // SAFETY: gettid has no preconditions.
        let workers = pool.broadcast(|_| unsafe { libc::gettid() });
        pool.install(|| with_pool_awake::<Cpu, _>(|| rayon::join(|| 1, || 2)));
        let unwound = pool.install(|| {
            std::panic::catch_unwind(|| with_pool_awake::<Cpu, _>(|| panic!("a failed step")))
        });
        assert!(unwound.is_err());
        // A worker still polling would burn a whole core over the next half second.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let before = cpu_seconds(&workers);
        std::thread::sleep(std::time::Duration::from_millis(500));
        let used = cpu_seconds(&workers) - before;
        assert!(used < 0.2, "{used} CPU seconds in half a second of idling");
    }
}
