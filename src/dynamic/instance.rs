//! One instance of a loaded plugin: `create`, `forward` and `vjp` over host-allocated buffers,
//! and the host's checks of what comes back (status, shape, finiteness).

use std::ffi::{c_void, CStr, CString};
use std::sync::Mutex;

use serde_json::Value;
use vaezoo_core::abi::{
    capability, init, mode, status, Cotangents, ErrorBuf, ForwardInputs, ForwardOutputs,
    InputGradients, InstanceInfo, ParamDecl, TensorView,
};
use vaezoo_core::params::ParamInit;
use vaezoo_core::plugin::Mode;
use vaezoo_core::{Error as CoreError, Result};

use super::library::PluginLibrary;

/// How many bytes of error message a plugin may write.
const ERROR_CAPACITY: usize = 4096;

/// A parameter the plugin declared.
pub struct DeclaredParam {
    /// Its name within the plugin.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How the host draws its initial values.
    pub init: ParamInit,
}

/// A plugin instance. Calls into it are serialised by a lock; `destroy` runs on drop.
pub struct PluginInstance {
    library: &'static PluginLibrary,
    handle: *mut c_void,
    lock: Mutex<()>,
    /// `L`.
    pub latent_dim: usize,
    /// The parameters, in the plugin's order.
    pub params: Vec<DeclaredParam>,
}

// The plugin contract (docs/plugin-abi.md) lets one instance be called from any thread as
// long as calls do not overlap, which `lock` ensures.
unsafe impl Send for PluginInstance {}
unsafe impl Sync for PluginInstance {}

impl Drop for PluginInstance {
    fn drop(&mut self) {
        unsafe { (self.library.destroy)(self.handle) };
    }
}

/// The outputs of one forward, checked.
pub struct Outputs {
    /// `(B, S, L)`.
    pub z: Vec<f32>,
    /// `(B, S, L)`.
    pub mean: Vec<f32>,
    /// `(B, S, L)`, when the plugin has `HAS_VARIANCE`.
    pub log_var: Option<Vec<f32>>,
    /// `(B,)`, when the plugin has `PROVIDES_KL`.
    pub kl: Option<Vec<f32>>,
}

/// The inputs of one call, as host slices.
pub struct Inputs<'a> {
    /// Forward mode.
    pub mode: Mode,
    /// The seed of the plugin's randomness.
    pub seed: u64,
    /// `(B, S, M)` row-major.
    pub states: &'a [f32],
    /// `[B, S, M]`.
    pub shape: [usize; 3],
    /// `B × S`, when some positions are padding.
    pub mask: Option<&'a [bool]>,
    /// One slice per parameter.
    pub params: &'a [Vec<f32>],
}

/// Calls `f` with an error buffer; a status other than OK becomes a one-line error.
fn call(library: &PluginLibrary, what: &str, f: impl FnOnce(*mut ErrorBuf) -> i32) -> Result<()> {
    let mut message = vec![0u8; ERROR_CAPACITY];
    let mut err = ErrorBuf {
        ptr: message.as_mut_ptr(),
        capacity: message.len(),
        len: 0,
    };
    let code = f(&mut err);
    if code == status::OK {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&message[..err.len.min(ERROR_CAPACITY)]).into_owned();
    Err(library.error(format!("{what} failed ({}): {text}", status::name(code))))
}

impl PluginInstance {
    /// `create` with `config`, for states of width `model_dim`; reads every parameter.
    pub fn create(
        library: &'static PluginLibrary,
        config: &Value,
        model_dim: usize,
    ) -> Result<Self> {
        let config = CString::new(config.to_string()).map_err(|e| library.error(e.to_string()))?;
        let mut handle = std::ptr::null_mut();
        let mut info = InstanceInfo {
            latent_dim: 0,
            num_params: 0,
        };
        call(library, "create", |err| unsafe {
            (library.create)(config.as_ptr(), model_dim, &mut handle, &mut info, err)
        })?;
        if handle.is_null() {
            return Err(library.error("create returned a null instance"));
        }
        let mut instance = Self {
            library,
            handle,
            lock: Mutex::new(()),
            latent_dim: info.latent_dim,
            params: Vec::with_capacity(info.num_params),
        };
        if info.latent_dim == 0 {
            return Err(library.error("create reported a latent size of 0"));
        }
        for i in 0..info.num_params {
            let param = instance.describe(i)?;
            instance.params.push(param);
        }
        Ok(instance)
    }

    fn describe(&self, index: usize) -> Result<DeclaredParam> {
        let mut decl = ParamDecl {
            name: std::ptr::null(),
            shape: std::ptr::null(),
            rank: 0,
            init: init::ZEROS,
            a: 0.0,
            b: 0.0,
        };
        call(self.library, "describe_param", |err| unsafe {
            (self.library.describe_param)(self.handle, index, &mut decl, err)
        })?;
        if decl.name.is_null() || (decl.rank > 0 && decl.shape.is_null()) {
            return Err(self
                .library
                .error(format!("parameter {index}: null name or shape")));
        }
        let name = unsafe { CStr::from_ptr(decl.name) }
            .to_string_lossy()
            .into_owned();
        let shape = match decl.rank {
            // A null pointer is allowed for a scalar, and `from_raw_parts` never is with null.
            0 => Vec::new(),
            rank => unsafe { std::slice::from_raw_parts(decl.shape, rank) }.to_vec(),
        };
        let init = match decl.init {
            init::ZEROS => ParamInit::Constant(0.0),
            init::CONSTANT => ParamInit::Constant(decl.a),
            init::UNIFORM if decl.a < decl.b => ParamInit::Uniform {
                low: decl.a,
                high: decl.b,
            },
            init::NORMAL if decl.b >= 0.0 => ParamInit::Normal {
                mean: decl.a,
                std: decl.b,
            },
            code => {
                let (a, b) = (decl.a, decl.b);
                let message = format!("parameter `{name}`: invalid init {code} ({a}, {b})");
                return Err(self.library.error(message));
            }
        };
        Ok(DeclaredParam { name, shape, init })
    }

    fn has(&self, bit: u64) -> bool {
        self.library.capabilities & bit != 0
    }

    /// The plugin's forward, checked: the latent it produced must be `(B, S, L)`, every
    /// value finite.
    pub fn forward(&self, inputs: &Inputs) -> Result<Outputs> {
        let [b, s, _] = inputs.shape;
        let latent_shape = [b, s, self.latent_dim];
        let n = b * s * self.latent_dim;
        let mut z = vec![0.0; n];
        let mut mean = vec![0.0; n];
        let mut log_var = self.has(capability::HAS_VARIANCE).then(|| vec![0.0; n]);
        let mut kl = self.has(capability::PROVIDES_KL).then(|| vec![0.0; b]);
        let kl_shape = [b];
        let optional = |v: &mut Option<Vec<f32>>, shape: &[usize]| match v {
            Some(v) => TensorView::of_mut(v, shape),
            None => TensorView::absent(),
        };
        let mut outputs = ForwardOutputs {
            z: TensorView::of_mut(&mut z, &latent_shape),
            mean: TensorView::of_mut(&mut mean, &latent_shape),
            log_var: optional(&mut log_var, &latent_shape),
            kl: optional(&mut kl, &kl_shape),
            produced: latent_shape,
        };
        self.with_inputs(inputs, "forward", |abi, err| unsafe {
            (self.library.forward)(
                self.handle,
                abi.mode,
                inputs.seed,
                &abi.raw,
                &mut outputs,
                err,
            )
        })?;
        if outputs.produced != latent_shape {
            return Err(self.library.error(format!(
                "forward returned a latent of shape {:?}, expected {latent_shape:?} (B, S, L)",
                outputs.produced
            )));
        }
        let named = [
            ("z", Some(&z)),
            ("mean", Some(&mean)),
            ("log_var", log_var.as_ref()),
            ("kl", kl.as_ref()),
        ];
        for (name, values) in named {
            if let Some(bad) = values.and_then(|v| v.iter().find(|x| !x.is_finite())) {
                return Err(self.library.error(format!(
                    "forward returned the non-finite value {bad} in `{name}`"
                )));
            }
        }
        Ok(Outputs {
            z,
            mean,
            log_var,
            kl,
        })
    }

    /// The plugin's VJP: the gradients of the states and of each parameter, given the
    /// gradients of the outputs of the forward with the same inputs.
    pub fn vjp(&self, inputs: &Inputs, cotangents: &Outputs) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let [b, s, _] = inputs.shape;
        let latent_shape = [b, s, self.latent_dim];
        let kl_shape = [b];
        let optional = |v: &Option<Vec<f32>>, shape: &[usize]| match v {
            Some(v) => TensorView::of(v, shape),
            None => TensorView::absent(),
        };
        let cot = Cotangents {
            z: TensorView::of(&cotangents.z, &latent_shape),
            mean: TensorView::of(&cotangents.mean, &latent_shape),
            log_var: optional(&cotangents.log_var, &latent_shape),
            kl: optional(&cotangents.kl, &kl_shape),
        };
        let mut d_states = vec![0.0; inputs.states.len()];
        let mut d_params: Vec<Vec<f32>> =
            inputs.params.iter().map(|p| vec![0.0; p.len()]).collect();
        let views: Vec<TensorView> = d_params
            .iter_mut()
            .zip(&self.params)
            .map(|(g, p)| TensorView::of_mut(g, &p.shape))
            .collect();
        let grads = InputGradients {
            states: TensorView::of_mut(&mut d_states, &inputs.shape),
            params: views.as_ptr(),
            num_params: views.len(),
        };
        self.with_inputs(inputs, "vjp", |abi, err| unsafe {
            (self.library.vjp)(
                self.handle,
                abi.mode,
                inputs.seed,
                &abi.raw,
                &cot,
                &grads,
                err,
            )
        })?;
        drop(views);
        let all = d_states.iter().chain(d_params.iter().flatten());
        if let Some(bad) = all.into_iter().find(|x| !x.is_finite()) {
            return Err(self
                .library
                .error(format!("vjp returned the non-finite gradient {bad}")));
        }
        Ok((d_states, d_params))
    }

    /// Builds the ABI view of `inputs` and calls `f` with it under the instance's lock.
    fn with_inputs(
        &self,
        inputs: &Inputs,
        what: &str,
        f: impl FnOnce(&AbiInputs, *mut ErrorBuf) -> i32,
    ) -> Result<()> {
        if inputs.params.len() != self.params.len() {
            return Err(CoreError::Shape(format!(
                "{} parameters for a plugin that declared {}",
                inputs.params.len(),
                self.params.len()
            )));
        }
        let mask: Option<Vec<u8>> = inputs.mask.map(|m| m.iter().map(|&k| k as u8).collect());
        let params: Vec<TensorView> = (inputs.params.iter().zip(&self.params))
            .map(|(values, p)| TensorView::of(values, &p.shape))
            .collect();
        let abi = AbiInputs {
            mode: match inputs.mode {
                Mode::Train => mode::TRAIN,
                Mode::Eval => mode::EVAL,
            },
            raw: ForwardInputs {
                states: TensorView::of(inputs.states, &inputs.shape),
                mask: mask.as_ref().map_or(std::ptr::null(), |m| m.as_ptr()),
                params: params.as_ptr(),
                num_params: params.len(),
            },
        };
        let _serialised = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        call(self.library, what, |err| f(&abi, err))
    }
}

/// [`ForwardInputs`] and the mode code, borrowing the host's buffers.
struct AbiInputs {
    mode: u32,
    raw: ForwardInputs,
}
