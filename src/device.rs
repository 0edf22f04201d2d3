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
