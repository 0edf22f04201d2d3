//! The plugin SDK: the C ABI generated from an ordinary Rust [`Bottleneck`].
//!
//! A plugin author implements [`Bottleneck<D>`] for every [`Backend`] (as built-in plugins
//! do) and [`ExportBottleneck`] (name, config type, builder), then writes, at the crate root:
//!
//! ```ignore
//! vaezoo_core::export_bottleneck!(LaplaceVib);   // the C ABI, for a cdylib
//! vaezoo_core::register_bottleneck!(LaplaceVib); // an `inventory` entry, for static linking
//! ```
//!
//! Inside the library, each call builds the plugin's own dfdx tensors on its own `Cpu` from
//! the host's buffers, its own [`ParamStore`] from the host's parameters and a [`HostRng`]
//! seeded by the host's seed; `vjp` recomputes that forward with the same seed and
//! back-propagates the host's cotangents. Every entry point runs inside `catch_unwind`: a
//! panic (a dfdx assertion included) becomes [`status::ERR_PANIC`] with its message, and a
//! silent panic hook keeps the library from printing to the host's stderr.
//!
//! [`HostRng`]: crate::rng::HostRng
//! [`Backend`]: crate::Backend
//! [`ParamStore`]: crate::params::ParamStore

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

use dfdx::prelude::Cpu;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::marshal::{run_forward, run_vjp, Declared};
use super::{
    capability, init, status, Cotangents, ErrorBuf, ForwardInputs, ForwardOutputs, InputGradients,
    InstanceInfo, ParamDecl, PluginHeader, ABI_VERSION, KIND_BOTTLENECK, MAGIC,
};
use crate::error::{Error, Result};
use crate::params::{ParamBuilder, ParamInit};
use crate::plugin::{Bottleneck, DynBottleneck};
use crate::registry::{parse_config, schema_of, BuiltBottleneck};
use crate::rng::seeded;

/// What a bottleneck needs, beside [`Bottleneck<Cpu>`], to be exported through the C ABI or
/// registered statically.
pub trait ExportBottleneck: Bottleneck<Cpu> + Sized + 'static {
    /// Its config, with a JSON Schema (use `#[serde(deny_unknown_fields)]`).
    type Config: JsonSchema + DeserializeOwned;
    /// The name specs use as `kind`.
    const NAME: &'static str;
    /// Its version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// One line for `vaezoo plugins`.
    const DESCRIPTION: &'static str;
    /// [`capability`] bits: what its forward returns beside `z` and `mean`.
    const CAPABILITIES: u64;
    /// A small valid config.
    fn example() -> Value;
    /// Builds the module for encoder states of width `model_dim`, declaring its parameters
    /// (only [`ParamBuilder::uniform`], [`ParamBuilder::normal`] and
    /// [`ParamBuilder::constant`] cross the ABI: the host draws the values).
    fn build(config: &Self::Config, params: &mut ParamBuilder, model_dim: usize) -> Result<Self>;
    /// `L`, the size of each latent vector.
    fn latent_dim(&self) -> usize;
}

/// The JSON Schema of `T`'s config.
pub fn config_schema<T: ExportBottleneck>() -> Value {
    schema_of::<T::Config>()
}

/// The partners of a plugin with these capabilities: the `none` prior for one that provides
/// its own KL or has no variance (a prior's KL needs one); the conformance kit's default
/// partners (a standard normal prior) otherwise.
pub const fn partners(capabilities: u64) -> &'static [&'static str] {
    if capabilities & capability::PROVIDES_KL != 0 || capabilities & capability::HAS_VARIANCE == 0 {
        &["none"]
    } else {
        &[]
    }
}

/// The static builder `register_bottleneck!` registers.
pub fn build_static<T: ExportBottleneck + DynBottleneck>(
    config: &Value,
    params: &mut ParamBuilder,
    model_dim: usize,
) -> Result<BuiltBottleneck> {
    let config: T::Config = parse_config(T::NAME, config)?;
    let module = T::build(&config, params, model_dim)?;
    Ok(BuiltBottleneck {
        latent_dim: module.latent_dim(),
        shared: Default::default(),
        module: Box::new(module),
    })
}

/// A failed call: a [`status`] code and a message.
pub(super) struct Failure {
    pub status: i32,
    pub message: String,
}

impl Failure {
    pub fn new(status: i32, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match e {
            Error::Config { .. } => status::ERR_CONFIG,
            Error::Shape(_) => status::ERR_SHAPE,
            Error::Numeric(_) => status::ERR_NUMERIC,
            _ => status::ERR_OTHER,
        };
        Self::new(status, e.to_string())
    }
}

thread_local! {
    /// Whether this thread is inside an entry point (where panics are caught and reported).
    static IN_ENTRY_POINT: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic inside an entry point happened, recorded by the hook.
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, turning an error or a panic into a status and a message in `err`.
pub(super) fn guard(err: *mut ErrorBuf, f: impl FnOnce() -> Result<(), Failure>) -> i32 {
    let outer = IN_ENTRY_POINT.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_ENTRY_POINT.with(|flag| flag.set(outer));
    let failure = match result {
        Ok(Ok(())) => return status::OK,
        Ok(Err(failure)) => failure,
        Err(payload) => {
            let message = (payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
            Failure::new(status::ERR_PANIC, format!("panicked{at}: {message}"))
        }
    };
    // Writing the message must not panic either.
    let _ = catch_unwind(AssertUnwindSafe(|| write_error(err, &failure.message)));
    failure.status
}

/// Copies `message` (truncated at a character boundary) into the host's buffer.
fn write_error(err: *mut ErrorBuf, message: &str) {
    let Some(err) = (unsafe { err.as_mut() }) else {
        return;
    };
    if err.ptr.is_null() {
        return;
    }
    let mut n = message.len().min(err.capacity);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), err.ptr, n) };
    err.len = n;
}

/// The header of `T`, built once in `cell` (which `export_bottleneck!` declares, one per
/// library). Installs the panic hook: silent inside entry points (the panic becomes the
/// call's status and message), the previous hook elsewhere. Null if building it fails.
pub fn header<T: ExportBottleneck>(cell: &'static OnceLock<HeaderCell>) -> *const PluginHeader {
    static HOOK: Once = Once::new();
    let built = catch_unwind(|| {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !IN_ENTRY_POINT.with(Cell::get) {
                    return previous(info);
                }
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()));
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            }))
        });
        let cell = cell.get_or_init(HeaderCell::new::<T>);
        &cell.header as *const PluginHeader
    });
    built.unwrap_or(std::ptr::null())
}

/// A header with the strings it points to.
pub struct HeaderCell {
    header: PluginHeader,
    _strings: [CString; 5],
}

impl HeaderCell {
    fn new<T: ExportBottleneck>() -> Self {
        let c = |s: &str| CString::new(s.replace('\0', "")).expect("NULs removed");
        let strings = [
            c(T::NAME),
            c(T::VERSION),
            c(T::DESCRIPTION),
            c(&config_schema::<T>().to_string()),
            c(&T::example().to_string()),
        ];
        let header = PluginHeader {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            kind: KIND_BOTTLENECK,
            name: strings[0].as_ptr(),
            version: strings[1].as_ptr(),
            description: strings[2].as_ptr(),
            config_schema: strings[3].as_ptr(),
            example_config: strings[4].as_ptr(),
            capabilities: T::CAPABILITIES,
            create: Some(create::<T>),
            describe_param: Some(describe_param::<T>),
            forward: Some(forward::<T>),
            vjp: Some(vjp::<T>),
            destroy: Some(destroy::<T>),
        };
        Self {
            header,
            _strings: strings,
        }
    }
}

/// One plugin instance behind the `*mut c_void` handle.
pub(super) struct Instance<T> {
    pub module: T,
    pub model_dim: usize,
    pub params: Vec<Declared>,
}

unsafe extern "C" fn create<T: ExportBottleneck>(
    config: *const c_char,
    model_dim: usize,
    out_instance: *mut *mut c_void,
    out_info: *mut InstanceInfo,
    err: *mut ErrorBuf,
) -> i32 {
    guard(err, || {
        if config.is_null() || out_instance.is_null() || out_info.is_null() {
            return Err(Failure::new(status::ERR_ARGUMENT, "create: a null pointer"));
        }
        let text = unsafe { CStr::from_ptr(config) }
            .to_str()
            .map_err(|e| Failure::new(status::ERR_CONFIG, format!("config is not UTF-8: {e}")))?;
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Failure::new(status::ERR_CONFIG, format!("config: {e}")))?;
        let config: T::Config = parse_config(T::NAME, &value)?;
        // The values drawn here are thrown away: the host draws its own.
        let mut rng = seeded(0);
        let mut builder = ParamBuilder::new(&mut rng);
        let module = T::build(&config, &mut builder, model_dim)?;
        let params = builder
            .declarations()
            .map(|(p, init)| Declared::new(&p.name, &p.shape, init))
            .collect::<Result<Vec<_>, Failure>>()?;
        let info = InstanceInfo {
            latent_dim: module.latent_dim(),
            num_params: params.len(),
        };
        let instance = Instance {
            module,
            model_dim,
            params,
        };
        unsafe {
            *out_instance = Box::into_raw(Box::new(instance)).cast();
            *out_info = info;
        }
        Ok(())
    })
}

impl Declared {
    fn new(name: &str, shape: &[usize], init: ParamInit) -> Result<Self, Failure> {
        let (code, a, b) = match init {
            ParamInit::Uniform { low, high } => (init::UNIFORM, low, high),
            ParamInit::Normal { mean, std } => (init::NORMAL, mean, std),
            ParamInit::Constant(c) => (init::CONSTANT, c, 0.0),
            ParamInit::Given => {
                return Err(Failure::new(
                    status::ERR_CONFIG,
                    format!("parameter `{name}` has explicit initial values, which cannot cross the ABI; declare it with uniform, normal or constant"),
                ))
            }
        };
        let name = CString::new(name)
            .map_err(|_| Failure::new(status::ERR_CONFIG, "a parameter name contains NUL"))?;
        Ok(Self {
            name,
            shape: shape.to_vec(),
            init: code,
            a,
            b,
        })
    }
}

unsafe extern "C" fn describe_param<T: ExportBottleneck>(
    instance: *const c_void,
    index: usize,
    out: *mut ParamDecl,
    err: *mut ErrorBuf,
) -> i32 {
    guard(err, || {
        let instance = unsafe { instance.cast::<Instance<T>>().as_ref() };
        let (Some(instance), false) = (instance, out.is_null()) else {
            return Err(Failure::new(
                status::ERR_ARGUMENT,
                "describe_param: a null pointer",
            ));
        };
        let p = instance
            .params
            .get(index)
            .ok_or_else(|| Failure::new(status::ERR_ARGUMENT, format!("no parameter {index}")))?;
        unsafe {
            *out = ParamDecl {
                name: p.name.as_ptr(),
                shape: p.shape.as_ptr(),
                rank: p.shape.len(),
                init: p.init,
                a: p.a,
                b: p.b,
            };
        }
        Ok(())
    })
}

unsafe extern "C" fn forward<T: ExportBottleneck>(
    instance: *const c_void,
    mode: u32,
    seed: u64,
    inputs: *const ForwardInputs,
    outputs: *mut ForwardOutputs,
    err: *mut ErrorBuf,
) -> i32 {
    guard(err, || {
        let instance = unsafe { instance.cast::<Instance<T>>().as_ref() };
        match unsafe { (instance, inputs.as_ref(), outputs.as_mut()) } {
            (Some(i), Some(inputs), Some(outputs)) => run_forward(i, mode, seed, inputs, outputs),
            _ => Err(Failure::new(
                status::ERR_ARGUMENT,
                "forward: a null pointer",
            )),
        }
    })
}

unsafe extern "C" fn vjp<T: ExportBottleneck>(
    instance: *const c_void,
    mode: u32,
    seed: u64,
    inputs: *const ForwardInputs,
    cotangents: *const Cotangents,
    grads: *const InputGradients,
    err: *mut ErrorBuf,
) -> i32 {
    guard(err, || {
        let instance = unsafe { instance.cast::<Instance<T>>().as_ref() };
        match unsafe {
            (
                instance,
                inputs.as_ref(),
                cotangents.as_ref(),
                grads.as_ref(),
            )
        } {
            (Some(i), Some(inputs), Some(cot), Some(grads)) => {
                run_vjp(i, mode, seed, inputs, cot, grads)
            }
            _ => Err(Failure::new(status::ERR_ARGUMENT, "vjp: a null pointer")),
        }
    })
}

unsafe extern "C" fn destroy<T: ExportBottleneck>(instance: *mut c_void) {
    if !instance.is_null() {
        // A panic in the module's destructor must not unwind into the host.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            drop(unsafe { Box::from_raw(instance.cast::<Instance<T>>()) })
        }));
    }
}
