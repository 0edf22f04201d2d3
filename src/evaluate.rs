//! `vaezoo eval RUN`: the ELBO's parts on the test split, printed and written to `eval.json`.
//!
//! The negative ELBO uses one posterior sample per image (as the PyTorch reference does); the
//! samples come from `--seed`, so the numbers are reproducible.

use std::path::Path;

use serde::Serialize;
use vaezoo_core::axes::{Batch, Feature};
use vaezoo_core::plugin::{Ctx, Mode, Observation};
use vaezoo_core::rng::seeded;
use vaezoo_core::spec::DataSpec;
use vaezoo_core::Backend;

use crate::data::{load_split, Split};
use crate::device::{on_device, DeviceChoice};
use crate::run::write_json;
use crate::session::restore;
use crate::Result;

/// Options of `vaezoo eval`.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Seed of the posterior samples.
    pub seed: u64,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Where to compute.
    pub device: DeviceChoice,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            batch_size: 500,
            device: DeviceChoice::Cpu,
        }
    }
}

/// Test-split metrics, in nats per example.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    /// The checkpoint's step.
    pub step: u64,
    /// Test examples.
    pub examples: usize,
    /// −ELBO = rec + kl (one posterior sample).
    pub neg_elbo: f64,
    /// −log p(x | z).
    pub rec: f64,
    /// KL(q(z | x) ‖ p(z)), all terms summed.
    pub kl: f64,
    /// The seed of the posterior samples.
    pub seed: u64,
    /// The bottleneck's statistics, averaged over batches weighted by their size.
    pub stats: std::collections::BTreeMap<String, f64>,
}

/// Evaluates the latest checkpoint of the run at `root`; writes `eval.json` when it succeeds.
pub fn evaluate(root: &Path, opts: &EvalOptions) -> Result<EvalReport> {
    on_device!(opts.device, |dev| evaluate_on(dev, root, opts))
}

fn evaluate_on<D: Backend>(dev: &D, root: &Path, opts: &EvalOptions) -> Result<EvalReport> {
    let r = restore(dev, root)?;
    let DataSpec::Idx {
        dir,
        pixel_max,
        test_limit,
        ..
    } = &r.spec.data;
    let test = load_split(Path::new(dir), Split::Test, *pixel_max, *test_limit)?;
    let mut rng = seeded(opts.seed);
    let (mut rec_sum, mut kl_sum) = (0.0f64, 0.0f64);
    let mut stats = std::collections::BTreeMap::new();
    for start in (0..test.n).step_by(opts.batch_size.max(1)) {
        let end = (start + opts.batch_size.max(1)).min(test.n);
        let f = test.features();
        let x = test.images[start * f..end * f].to_vec();
        let obs = Observation {
            x: dev.tensor_from_vec(x, (Batch(end - start), Feature(f))),
            labels: Some(
                test.labels[start..end]
                    .iter()
                    .map(|&l| l as usize)
                    .collect(),
            ),
        };
        let mut ctx = Ctx {
            params: &r.params,
            mode: Mode::Train,
            rng: &mut rng,
        };
        let losses = r.model.losses(&mut ctx, &obs)?;
        rec_sum += sum(losses.rec.as_vec());
        for (name, value) in &losses.stats {
            *stats.entry(name.to_string()).or_insert(0.0) += value * (end - start) as f64;
        }
        for term in losses.kl {
            kl_sum += sum(term.value.as_vec());
        }
    }
    let n = test.n.max(1) as f64;
    let report = EvalReport {
        step: r.checkpoint.step,
        examples: test.n,
        neg_elbo: (rec_sum + kl_sum) / n,
        rec: rec_sum / n,
        kl: kl_sum / n,
        seed: opts.seed,
        stats: stats.into_iter().map(|(k, v)| (k, v / n)).collect(),
    };
    write_json(
        &r.run.eval_path(),
        &serde_json::to_value(&report).expect("reports serialise"),
    )?;
    Ok(report)
}

fn sum(v: Vec<f32>) -> f64 {
    v.into_iter().map(f64::from).sum()
}
