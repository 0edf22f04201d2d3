//! The example plugin loaded into this test process (a release host): the conformance kit
//! passes on it, and its gradients through the C boundary (states and every parameter) match
//! finite differences, with a loss that uses every output.

mod common;

use common::plugin_build::{laplace_dir, Profile};
use vaezoo::conformance::check_plugin;
use vaezoo_core::axes::{Batch, Model, Seq};
use vaezoo_core::backend::Reuse;
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::gradcheck::GradCheck;
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::plugin::{Ctx, EncoderStates, Mode};
use vaezoo_core::registry::{Origin, Registry};
use vaezoo_core::rng::{normal_vec, seeded};

fn registry() -> &'static Registry {
    vaezoo::init_registry(&[laplace_dir(Profile::Release)]).expect("the plugin loads")
}

#[test]
fn the_conformance_kit_passes_on_the_loaded_plugin() {
    let registry = registry();
    let entry = registry
        .entries()
        .find(|e| e.name == "laplace_vib")
        .unwrap();
    assert!(matches!(entry.origin, Origin::Dynamic { .. }));
    assert_eq!(entry.partners, ["none"]);
    let report = check_plugin(registry, "laplace_vib").unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.checks.len(), 6, "{report}");
}

#[test]
fn gradients_through_the_boundary_match_finite_differences() {
    const B: usize = 3;
    const S: usize = 2;
    const M: usize = 4;
    let registry = registry();
    let mut rng = seeded(4);
    let mut builder = ParamBuilder::new(&mut rng);
    let config = serde_json::json!({ "latent_dim": 3 });
    let built = registry
        .build_bottleneck("laplace_vib", &config, &mut builder, M)
        .unwrap();
    builder.set_prefix("input");
    let states = builder.declare("states", &[B, S, M], normal_vec(&mut seeded(5), B * S * M));
    let mut params = ParamStore::new(&Cpu::default(), builder.finish());
    let module = &*built.module;
    // Fixed weights per output, so that each output's cotangent is distinct.
    let loss = |p: &ParamStore<Cpu>| {
        let mut rng = seeded(9);
        let mut ctx = Ctx {
            params: p,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let input = EncoderStates {
            states: p.get(states, (Batch(B), Seq(S), Model(M))),
            mask: None,
        };
        let mut latent = vaezoo_core::Backend::bottleneck(module)
            .forward(&mut ctx, input)
            .unwrap();
        let kl = latent.kl.pop().expect("the plugin returns its KL").value;
        let dims = latent.dims();
        let n = dims.num_elements();
        let w_z = (0..n).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
        let w_mean = (0..n).map(|i| (i % 3) as f32 * 0.2 + 0.1).collect();
        let dev = p.device();
        let z_term = (latent.z.reuse() * dev.tensor_from_vec(w_z, dims)).sum::<(), _>();
        let mean_term = (latent.mean.reuse() * dev.tensor_from_vec(w_mean, dims)).sum::<(), _>();
        let (total, tape) = (z_term + mean_term + kl.sum::<(), _>() * 0.5).split_tape();
        total.put_tape(tape.merge(latent.into_tape()))
    };
    let check = GradCheck {
        per_param: 12,
        ..GradCheck::default()
    };
    let report = check
        .run(&mut params, loss)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.zero_gradient.is_empty(),
        "{:?}",
        report.zero_gradient
    );
    assert_eq!(
        params.len(),
        5,
        "location.{{weight,bias}}, log_scale.{{weight,bias}}, states"
    );
    assert!(report.checked >= 40, "{}", report.checked);
}
