//! The same source linked statically: `register_bottleneck!` puts `laplace_vib` in the
//! registry of the binary that links the crate, and its forward computes the documented KL.

use vaezoo_core::axes::{Batch, Model, Seq};
use vaezoo_core::dfdx::prelude::*;
use vaezoo_core::params::{ParamBuilder, ParamStore};
use vaezoo_core::plugin::{Ctx, EncoderStates, Mode};
use vaezoo_core::registry::{Origin, PluginKind, Registry};
use vaezoo_core::rng::{normal_vec, seeded};
use vaezoo_core::Backend;
use vaezoo_laplace_vib::laplace_kl;

const B: usize = 2;
const M: usize = 3;
const L: usize = 2;

#[test]
fn the_statically_linked_plugin_is_registered_and_computes_its_kl() {
    assert_eq!(vaezoo_laplace_vib::link(), ["laplace_vib"]);
    let registry = Registry::builtin().unwrap();
    let entry = registry.get(PluginKind::Bottleneck, "laplace_vib").unwrap();
    assert_eq!(
        (entry.origin.clone(), entry.partners.clone()),
        (Origin::Builtin, vec!["none".to_string()])
    );

    let mut rng = seeded(1);
    let mut builder = ParamBuilder::new(&mut rng);
    let config = vaezoo_core::serde_json::json!({ "latent_dim": L });
    let built = registry
        .build_bottleneck("laplace_vib", &config, &mut builder, M)
        .unwrap();
    assert_eq!(built.latent_dim, L);
    let params = ParamStore::new(&Cpu::default(), builder.finish());
    let names: Vec<&str> = (0..params.len()).map(|i| params.name(i)).collect();
    assert_eq!(
        names,
        [
            "bottleneck.location.weight",
            "bottleneck.location.bias",
            "bottleneck.log_scale.weight",
            "bottleneck.log_scale.bias"
        ]
    );

    let states = normal_vec(&mut seeded(2), B * M);
    let run = |mode| {
        let mut rng = seeded(3);
        let mut ctx = Ctx {
            params: &params,
            mode,
            rng: &mut rng,
        };
        let h = params
            .device()
            .tensor_from_vec(states.clone(), (Batch(B), Seq(1), Model(M)));
        let input = EncoderStates {
            states: h.put_tape(OwnedTape::default()),
            mask: None,
        };
        Cpu::bottleneck(&*built.module)
            .forward(&mut ctx, input)
            .unwrap()
    };
    let eval = run(Mode::Eval);
    let train = run(Mode::Train);
    assert_eq!(
        eval.z.as_vec(),
        eval.mean.as_vec(),
        "eval uses the location"
    );
    assert_ne!(train.z.as_vec(), train.mean.as_vec(), "training samples");

    // μ and log b by hand, in f64, and the closed-form KL summed over dimensions.
    let linear = |w: usize, b: usize, row: &[f32], o: usize| {
        let (w, b) = (params.host(w), params.host(b));
        b[o] as f64
            + (0..M)
                .map(|i| row[i] as f64 * w[i * L + o] as f64)
                .sum::<f64>()
    };
    let kl = eval.kl[0].value.as_vec();
    for (row, &got) in states.chunks(M).zip(&kl) {
        let want: f64 = (0..L)
            .map(|o| laplace_kl(linear(0, 1, row, o), linear(2, 3, row, o).exp()))
            .sum();
        assert!(
            (got as f64 - want).abs() < 1e-5 * want.max(1.0),
            "{got} vs {want}"
        );
    }
    assert_eq!(
        train.kl[0].value.as_vec(),
        kl,
        "the KL does not depend on the noise"
    );
}
