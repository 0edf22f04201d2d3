//! The SDK's generated glue, called through the header's function pointers as a host would,
//! without loading a library: header fields, config errors, parameter declarations, forward
//! and VJP values against a hand computation, panics and shape mismatches.

use std::ffi::{c_void, CStr, CString};
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use vaezoo_core::abi::sdk::{header, ExportBottleneck, HeaderCell};
use vaezoo_core::abi::{
    init, mode, status, Cotangents, ErrorBuf, ForwardInputs, ForwardOutputs, InputGradients,
    InstanceInfo, ParamDecl, PluginHeader, TensorView, ABI_VERSION, KIND_BOTTLENECK, MAGIC,
};
use vaezoo_core::axes::{Comp, Latent, Model};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::latent::Mixture;
use vaezoo_core::layers::Linear;
use vaezoo_core::params::ParamBuilder;
use vaezoo_core::plugin::{Bottleneck, Ctx, EncoderStates};
use vaezoo_core::Result;

/// `z = mean = h W + b`; panics in forward when `panic` is set.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LinearConfig {
    latent_dim: usize,
    #[serde(default)]
    panic: bool,
}

struct LinearBottleneck {
    head: Linear<Model, Latent>,
    panic: bool,
}

impl Bottleneck<Cpu> for LinearBottleneck {
    fn forward(&self, ctx: &mut Ctx<Cpu>, input: EncoderStates<Cpu>) -> Result<Mixture<Cpu>> {
        assert!(!self.panic, "deliberate");
        let (b, s, _) = *input.states.shape();
        let dims = (b, Comp(s.0), self.head.out_dim());
        let mean = self
            .head
            .forward_seq(ctx.params, input.states)
            .reshape_like(&dims);
        Ok(Mixture::gaussian(mean.retaped(), mean, None, input.mask))
    }
}

impl ExportBottleneck for LinearBottleneck {
    type Config = LinearConfig;
    const NAME: &'static str = "linear_test";
    const VERSION: &'static str = "9.9.9";
    const DESCRIPTION: &'static str = "a linear head";
    const CAPABILITIES: u64 = 0;
    fn example() -> Value {
        json!({ "latent_dim": 2 })
    }
    fn build(config: &LinearConfig, params: &mut ParamBuilder, model_dim: usize) -> Result<Self> {
        let head = Linear::new(params, "head", Model(model_dim), Latent(config.latent_dim));
        Ok(Self {
            head,
            panic: config.panic,
        })
    }
    fn latent_dim(&self) -> usize {
        self.head.out_dim().0
    }
}

fn the_header() -> &'static PluginHeader {
    static CELL: OnceLock<HeaderCell> = OnceLock::new();
    unsafe { &*header::<LinearBottleneck>(&CELL) }
}

/// A status and the message written into a fresh error buffer.
fn with_err(f: impl FnOnce(*mut ErrorBuf) -> i32) -> (i32, String) {
    let mut bytes = vec![0u8; 256];
    let mut err = ErrorBuf {
        ptr: bytes.as_mut_ptr(),
        capacity: bytes.len(),
        len: 0,
    };
    let code = f(&mut err);
    (code, String::from_utf8(bytes[..err.len].to_vec()).unwrap())
}

fn create(config: Value, model_dim: usize) -> (i32, String, *mut c_void, InstanceInfo) {
    let h = the_header();
    let config = CString::new(config.to_string()).unwrap();
    let mut instance = std::ptr::null_mut();
    let mut info = InstanceInfo {
        latent_dim: 0,
        num_params: 0,
    };
    let (code, message) = with_err(|err| unsafe {
        (h.create.unwrap())(config.as_ptr(), model_dim, &mut instance, &mut info, err)
    });
    (code, message, instance, info)
}

const B: usize = 2;
const M: usize = 3;
const L: usize = 2;
const STATES: [f32; B * M] = [0.5, -1.0, 2.0, 1.5, 0.25, -0.75];
const WEIGHT: [f32; M * L] = [0.1, -0.2, 0.3, 0.4, -0.5, 0.6];
const BIAS: [f32; L] = [0.05, -0.05];

/// Runs forward on `instance` with `z` and `mean` buffers of latent size `l`.
fn forward(instance: *mut c_void, l: usize) -> (i32, String, Vec<f32>, [usize; 3]) {
    let (states_shape, w_shape, b_shape, out_shape) = ([B, 1, M], [M, L], [L], [B, 1, l]);
    let params = [
        TensorView::of(&WEIGHT, &w_shape),
        TensorView::of(&BIAS, &b_shape),
    ];
    let inputs = ForwardInputs {
        states: TensorView::of(&STATES, &states_shape),
        mask: std::ptr::null(),
        params: params.as_ptr(),
        num_params: 2,
    };
    let (mut z, mut mean) = (vec![7.0; B * l], vec![7.0; B * l]);
    let mut outputs = ForwardOutputs {
        z: TensorView::of_mut(&mut z, &out_shape),
        mean: TensorView::of_mut(&mut mean, &out_shape),
        log_var: TensorView::absent(),
        kl: TensorView::absent(),
        produced: [0; 3],
    };
    let h = the_header();
    let (code, message) = with_err(|err| unsafe {
        (h.forward.unwrap())(instance, mode::TRAIN, 1, &inputs, &mut outputs, err)
    });
    let produced = outputs.produced;
    assert_eq!(z, mean);
    (code, message, z, produced)
}

#[test]
fn the_header_describes_the_plugin() {
    let h = the_header();
    assert_eq!(
        (h.magic, h.abi_version, h.kind),
        (MAGIC, ABI_VERSION, KIND_BOTTLENECK)
    );
    let text = |p| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
    assert_eq!(
        (text(h.name), text(h.version)),
        ("linear_test".into(), "9.9.9".into())
    );
    let schema: Value = serde_json::from_str(&text(h.config_schema)).unwrap();
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(text(h.example_config), r#"{"latent_dim":2}"#);
}

#[test]
fn a_bad_config_is_a_config_error_with_the_reason() {
    let (code, message, instance, _) = create(json!({ "latent_dim": 2, "nope": 1 }), M);
    assert_eq!(code, status::ERR_CONFIG, "{message}");
    assert!(message.contains("nope"), "{message}");
    assert!(instance.is_null());
}

#[test]
fn forward_and_vjp_compute_the_plugins_values_and_gradients() {
    let (code, message, instance, info) = create(json!({ "latent_dim": L }), M);
    assert_eq!(code, status::OK, "{message}");
    assert_eq!((info.latent_dim, info.num_params), (L, 2));
    let h = the_header();
    let mut decl = ParamDecl {
        name: std::ptr::null(),
        shape: std::ptr::null(),
        rank: 0,
        init: 9,
        a: 0.0,
        b: 0.0,
    };
    let (code, _) =
        with_err(|err| unsafe { (h.describe_param.unwrap())(instance, 0, &mut decl, err) });
    assert_eq!(code, status::OK);
    let name = unsafe { CStr::from_ptr(decl.name) }.to_str().unwrap();
    let shape = unsafe { std::slice::from_raw_parts(decl.shape, decl.rank) };
    let bound = 1.0 / (M as f32).sqrt();
    assert_eq!(
        (name, shape, decl.init, decl.a, decl.b),
        ("head.weight", &[M, L][..], init::UNIFORM, -bound, bound)
    );
    let (code, _) =
        with_err(|err| unsafe { (h.describe_param.unwrap())(instance, 2, &mut decl, err) });
    assert_eq!(code, status::ERR_ARGUMENT);

    let (code, message, z, produced) = forward(instance, L);
    assert_eq!((code, produced), (status::OK, [B, 1, L]), "{message}");
    for b in 0..B {
        for o in 0..L {
            let want = BIAS[o]
                + (0..M)
                    .map(|i| STATES[b * M + i] * WEIGHT[i * L + o])
                    .sum::<f32>();
            assert!((z[b * L + o] - want).abs() < 1e-6);
        }
    }

    // d/d(inputs) of Σ dz·z with dz = [[1, 2], [3, 4]] (and mean's cotangent 0).
    let dz = [1.0, 2.0, 3.0, 4.0];
    let zero = [0.0; B * L];
    let (states_shape, w_shape, b_shape, out_shape) = ([B, 1, M], [M, L], [L], [B, 1, L]);
    let params = [
        TensorView::of(&WEIGHT, &w_shape),
        TensorView::of(&BIAS, &b_shape),
    ];
    let inputs = ForwardInputs {
        states: TensorView::of(&STATES, &states_shape),
        mask: std::ptr::null(),
        params: params.as_ptr(),
        num_params: 2,
    };
    let cot = Cotangents {
        z: TensorView::of(&dz, &out_shape),
        mean: TensorView::of(&zero, &out_shape),
        log_var: TensorView::absent(),
        kl: TensorView::absent(),
    };
    let (mut d_states, mut d_w, mut d_b) = (vec![9.0; B * M], vec![9.0; M * L], vec![9.0; L]);
    let grad_params = [
        TensorView::of_mut(&mut d_w, &w_shape),
        TensorView::of_mut(&mut d_b, &b_shape),
    ];
    let grads = InputGradients {
        states: TensorView::of_mut(&mut d_states, &states_shape),
        params: grad_params.as_ptr(),
        num_params: 2,
    };
    let (code, message) = with_err(|err| unsafe {
        (h.vjp.unwrap())(instance, mode::TRAIN, 1, &inputs, &cot, &grads, err)
    });
    assert_eq!(code, status::OK, "{message}");
    for b in 0..B {
        for i in 0..M {
            let want: f32 = (0..L).map(|o| dz[b * L + o] * WEIGHT[i * L + o]).sum();
            assert!((d_states[b * M + i] - want).abs() < 1e-6, "d states");
            for o in 0..L {
                let want: f32 = (0..B).map(|b| STATES[b * M + i] * dz[b * L + o]).sum();
                assert!((d_w[i * L + o] - want).abs() < 1e-6, "d weight");
            }
        }
    }
    assert_eq!(d_b, [1.0 + 3.0, 2.0 + 4.0]);

    // Buffers of another latent size: nothing written, the produced shape reported.
    let (code, _, z, produced) = forward(instance, L + 1);
    assert_eq!((code, produced), (status::OK, [B, 1, L]));
    assert!(z.iter().all(|&v| v == 7.0));
    unsafe { (h.destroy.unwrap())(instance) };
}

#[test]
fn a_panic_in_forward_becomes_a_status_and_a_message() {
    let (code, _, instance, _) = create(json!({ "latent_dim": L, "panic": true }), M);
    assert_eq!(code, status::OK);
    let (code, message, _, _) = forward(instance, L);
    assert_eq!(code, status::ERR_PANIC, "{message}");
    assert!(
        message.starts_with("panicked at ") && message.ends_with(": deliberate"),
        "{message}"
    );
    unsafe { (the_header().destroy.unwrap())(instance) };
}
