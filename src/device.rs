//! Choosing the device a command runs on: the CPU always, a CUDA GPU when vaezoo is built with
//! the `cuda` feature.

use clap::ValueEnum;

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
