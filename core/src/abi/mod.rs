//! The stable C ABI between vaezoo and a separately built plugin library (`docs/plugin-abi.md`
//! is the full contract, written for a C author).
//!
//! A `cdylib` carries its own copy of every Rust static (so `inventory` submissions and dfdx's
//! gradient ids do not cross), and panics must not unwind across the boundary. So a library
//! exports exactly one symbol, [`HEADER_SYMBOL`], a function returning a [`PluginHeader`]:
//! magic and ABI version first (the host checks them before reading anything else), then the
//! plugin's name, version, description, config JSON Schema and example config as
//! NUL-terminated UTF-8, its [`capability`] bits, and the entry points (`create`,
//! `describe_param`, `forward`, `vjp`, `destroy`) as C function pointers.
//!
//! Every buffer is allocated and freed by the host and passed as a [`TensorView`] (pointer,
//! shape, dtype); the plugin reads its inputs and writes into the host's outputs, and returns a
//! [`status`] code with a message in the host's [`ErrorBuf`]. The host owns the parameters:
//! the plugin only declares them ([`ParamDecl`]: name, shape, initialisation), the host draws
//! the initial values from its seeded generator, stores, optimises and checkpoints them, and
//! passes them to every call. Randomness comes from a seed the host draws per call, so the
//! vector-Jacobian product can recompute the forward exactly.
//!
//! [`sdk`] generates all of this from an ordinary Rust [`crate::plugin::Bottleneck`]
//! (`export_bottleneck!`), and `register_bottleneck!` links the same source statically.

use std::ffi::{c_char, c_void};

mod macros;
mod marshal;
pub mod sdk;

/// The first 8 bytes of every header.
pub const MAGIC: [u8; 8] = *b"VAEZOO\0\0";
/// The ABI version this vaezoo speaks; the host loads only plugins of exactly this version.
pub const ABI_VERSION: u32 = 1;
/// The one symbol a plugin library exports: `extern "C" fn() -> *const PluginHeader`.
pub const HEADER_SYMBOL: &str = "vaezoo_plugin_header";

/// [`PluginHeader::kind`] of a bottleneck (the only kind of ABI version 1).
pub const KIND_BOTTLENECK: u32 = 1;

/// Bits of [`PluginHeader::capabilities`].
pub mod capability {
    /// The bottleneck returns its own per-example KL divergence (`kl`, shape `(B,)`), against a
    /// prior of its own; specs pair it with the `none` prior.
    pub const PROVIDES_KL: u64 = 1;
    /// The bottleneck returns component log-variances (`log_var`, shape `(B, S, L)`).
    pub const HAS_VARIANCE: u64 = 2;
    /// Every bit ABI version 1 defines.
    pub const ALL: u64 = PROVIDES_KL | HAS_VARIANCE;
}

/// What every entry point returns.
pub mod status {
    /// Success.
    pub const OK: i32 = 0;
    /// The config was rejected.
    pub const ERR_CONFIG: i32 = 1;
    /// An input has a shape or dtype the plugin cannot take.
    pub const ERR_SHAPE: i32 = 2;
    /// The plugin panicked (or hit an internal assertion); the message says where.
    pub const ERR_PANIC: i32 = 3;
    /// A numerical failure inside the plugin.
    pub const ERR_NUMERIC: i32 = 4;
    /// A null pointer or an argument out of range.
    pub const ERR_ARGUMENT: i32 = 5;
    /// Any other failure.
    pub const ERR_OTHER: i32 = 6;

    /// A short name for messages.
    pub fn name(code: i32) -> &'static str {
        match code {
            OK => "ok",
            ERR_CONFIG => "config error",
            ERR_SHAPE => "shape error",
            ERR_PANIC => "panic",
            ERR_NUMERIC => "numerical error",
            ERR_ARGUMENT => "bad argument",
            _ => "error",
        }
    }
}

/// [`TensorView::dtype`] codes.
pub mod dtype {
    /// 32-bit IEEE float, the only dtype of ABI version 1.
    pub const F32: u32 = 1;
}

/// [`ParamDecl::init`] codes: how the host draws a parameter's initial values.
pub mod init {
    /// All zeros.
    pub const ZEROS: u32 = 0;
    /// All equal to `a`.
    pub const CONSTANT: u32 = 1;
    /// Uniform in `[a, b)`.
    pub const UNIFORM: u32 = 2;
    /// Normal with mean `a` and standard deviation `b`.
    pub const NORMAL: u32 = 3;
}

/// The `mode` argument of `forward` and `vjp`.
pub mod mode {
    /// Stochastic: posterior samples.
    pub const TRAIN: u32 = 0;
    /// Deterministic: posterior means.
    pub const EVAL: u32 = 1;
}

/// A host-owned buffer for an error message: the plugin writes at most `capacity` bytes of
/// UTF-8 at `ptr` and sets `len`.
#[repr(C)]
pub struct ErrorBuf {
    /// Where to write.
    pub ptr: *mut u8,
    /// How many bytes fit.
    pub capacity: usize,
    /// How many bytes were written.
    pub len: usize,
}

/// A host-owned, contiguous, row-major tensor. `data` is null for an absent optional tensor.
#[repr(C)]
pub struct TensorView {
    /// The first element; read-only for inputs.
    pub data: *mut f32,
    /// `rank` sizes.
    pub shape: *const usize,
    /// Number of dimensions (0 for a scalar).
    pub rank: usize,
    /// A [`dtype`] code.
    pub dtype: u32,
}

/// What `create` reports about a new instance.
#[repr(C)]
pub struct InstanceInfo {
    /// `L`, the size of each latent vector.
    pub latent_dim: usize,
    /// How many parameters `describe_param` describes.
    pub num_params: usize,
}

/// One parameter, as `describe_param` reports it. The pointers are the plugin's and stay valid
/// until the instance is destroyed; the host copies them at once.
#[repr(C)]
pub struct ParamDecl {
    /// NUL-terminated UTF-8 name, unique within the plugin (e.g. `mean.weight`).
    pub name: *const c_char,
    /// `rank` sizes.
    pub shape: *const usize,
    /// Number of dimensions.
    pub rank: usize,
    /// An [`init`] code.
    pub init: u32,
    /// First argument of the init.
    pub a: f32,
    /// Second argument of the init.
    pub b: f32,
}

/// The inputs of `forward` and `vjp`, all read-only.
#[repr(C)]
pub struct ForwardInputs {
    /// Encoder states `(B, S, M)`.
    pub states: TensorView,
    /// `B × S` bytes, 1 where a position is real, 0 for padding; null when all are real.
    pub mask: *const u8,
    /// `num_params` views, in `describe_param` order, each of its declared shape.
    pub params: *const TensorView,
    /// How many parameters.
    pub num_params: usize,
}

/// The outputs of `forward`: host-allocated views the plugin fills.
#[repr(C)]
pub struct ForwardOutputs {
    /// The sample (train) or mean (eval), `(B, S, L)`.
    pub z: TensorView,
    /// Component means, `(B, S, L)`.
    pub mean: TensorView,
    /// Log-variances `(B, S, L)`; null data unless `HAS_VARIANCE`.
    pub log_var: TensorView,
    /// KL per example `(B,)`; null data unless `PROVIDES_KL`.
    pub kl: TensorView,
    /// The `(B, C, L)` the plugin produced. If it differs from `(B, S, L)` the plugin writes no
    /// data and the host reports the mismatch.
    pub produced: [usize; 3],
}

/// The gradient of the loss with respect to each output of `forward` (read-only; a view with
/// null data stands for an output the plugin does not have).
#[repr(C)]
pub struct Cotangents {
    /// d loss / d z, `(B, S, L)`.
    pub z: TensorView,
    /// d loss / d mean, `(B, S, L)`.
    pub mean: TensorView,
    /// d loss / d log_var, `(B, S, L)`.
    pub log_var: TensorView,
    /// d loss / d kl, `(B,)`.
    pub kl: TensorView,
}

/// Where `vjp` writes the gradients of the inputs (host-allocated, overwritten, not added to).
#[repr(C)]
pub struct InputGradients {
    /// d loss / d states, `(B, S, M)`.
    pub states: TensorView,
    /// `num_params` views, one per parameter, of its declared shape.
    pub params: *const TensorView,
    /// How many parameters.
    pub num_params: usize,
}

/// `create(config_json, model_dim, out_instance, out_info, err)`: builds an instance from a
/// NUL-terminated JSON config (already checked against the plugin's schema) for encoder states
/// of width `model_dim`.
pub type CreateFn = unsafe extern "C" fn(
    *const c_char,
    usize,
    *mut *mut c_void,
    *mut InstanceInfo,
    *mut ErrorBuf,
) -> i32;
/// `describe_param(instance, index, out, err)`.
pub type DescribeParamFn =
    unsafe extern "C" fn(*const c_void, usize, *mut ParamDecl, *mut ErrorBuf) -> i32;
/// `forward(instance, mode, seed, inputs, outputs, err)`.
pub type ForwardFn = unsafe extern "C" fn(
    *const c_void,
    u32,
    u64,
    *const ForwardInputs,
    *mut ForwardOutputs,
    *mut ErrorBuf,
) -> i32;
/// `vjp(instance, mode, seed, inputs, cotangents, gradients, err)`: the same `mode`, `seed`
/// and inputs as the forward whose outputs the cotangents belong to.
pub type VjpFn = unsafe extern "C" fn(
    *const c_void,
    u32,
    u64,
    *const ForwardInputs,
    *const Cotangents,
    *const InputGradients,
    *mut ErrorBuf,
) -> i32;
/// `destroy(instance)`: frees what `create` allocated.
pub type DestroyFn = unsafe extern "C" fn(*mut c_void);

/// What [`HEADER_SYMBOL`] returns: a pointer to this, valid while the library is loaded.
#[repr(C)]
pub struct PluginHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`ABI_VERSION`] of the vaezoo-core the plugin was built against.
    pub abi_version: u32,
    /// [`KIND_BOTTLENECK`].
    pub kind: u32,
    /// The name specs use as `kind` (letters, digits, `_`).
    pub name: *const c_char,
    /// The plugin's version.
    pub version: *const c_char,
    /// One line for `vaezoo plugins`.
    pub description: *const c_char,
    /// The JSON Schema of its config.
    pub config_schema: *const c_char,
    /// A small valid config (what the conformance kit builds).
    pub example_config: *const c_char,
    /// [`capability`] bits.
    pub capabilities: u64,
    /// Builds an instance.
    pub create: Option<CreateFn>,
    /// Describes one parameter of an instance.
    pub describe_param: Option<DescribeParamFn>,
    /// The forward pass.
    pub forward: Option<ForwardFn>,
    /// The vector-Jacobian product.
    pub vjp: Option<VjpFn>,
    /// Frees an instance.
    pub destroy: Option<DestroyFn>,
}

/// The header lives in the library's static memory and is never written after it is built.
unsafe impl Sync for PluginHeader {}
unsafe impl Send for PluginHeader {}

impl TensorView {
    /// An absent tensor (null data).
    pub fn absent() -> Self {
        Self {
            data: std::ptr::null_mut(),
            shape: std::ptr::null(),
            rank: 0,
            dtype: dtype::F32,
        }
    }

    /// A view of `data` with `shape` (both must outlive every use of the view).
    pub fn of(data: &[f32], shape: &[usize]) -> Self {
        Self {
            data: data.as_ptr().cast_mut(),
            shape: shape.as_ptr(),
            rank: shape.len(),
            dtype: dtype::F32,
        }
    }

    /// A writable view of `data` with `shape`.
    pub fn of_mut(data: &mut [f32], shape: &[usize]) -> Self {
        Self {
            data: data.as_mut_ptr(),
            shape: shape.as_ptr(),
            rank: shape.len(),
            dtype: dtype::F32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The offsets `docs/plugin-abi.md` documents (64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_header_layout_is_the_documented_one() {
        let offsets = [
            offset_of!(PluginHeader, magic),
            offset_of!(PluginHeader, abi_version),
            offset_of!(PluginHeader, kind),
            offset_of!(PluginHeader, name),
            offset_of!(PluginHeader, version),
            offset_of!(PluginHeader, description),
            offset_of!(PluginHeader, config_schema),
            offset_of!(PluginHeader, example_config),
            offset_of!(PluginHeader, capabilities),
            offset_of!(PluginHeader, create),
            offset_of!(PluginHeader, describe_param),
            offset_of!(PluginHeader, forward),
            offset_of!(PluginHeader, vjp),
            offset_of!(PluginHeader, destroy),
        ];
        assert_eq!(
            offsets,
            [0, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96]
        );
        assert_eq!(size_of::<PluginHeader>(), 104);
        assert_eq!(size_of::<TensorView>(), 32);
        assert_eq!(size_of::<ParamDecl>(), 40);
        assert_eq!(size_of::<ForwardOutputs>(), 4 * 32 + 24);
    }
}
