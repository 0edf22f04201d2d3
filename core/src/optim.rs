//! Adam (PyTorch's formulation, optional L2 or decoupled weight decay) with saveable state, and
//! global-norm gradient clipping. The state lives on the host beside the parameters' host
//! mirror, so checkpoints hold it exactly and resume is bit for bit.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Adam's hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate.
    #[serde(default = "default_lr")]
    #[schemars(range(min = 0.0))]
    pub lr: f64,
    /// Exponential decay rates of the first and second moments, each in [0, 1).
    #[serde(default = "default_betas")]
    #[schemars(extend("items" = {"type": "number", "minimum": 0.0, "exclusiveMaximum": 1.0}))]
    pub betas: [f64; 2],
    /// Added to the denominator for numerical stability (> 0).
    #[serde(default = "default_eps")]
    #[schemars(extend("exclusiveMinimum" = 0.0))]
    pub eps: f64,
    /// Weight decay; 0 disables it.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub weight_decay: f64,
    /// Decouple the weight decay from the gradient (AdamW) instead of adding it as L2.
    #[serde(default)]
    pub decoupled: bool,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            betas: default_betas(),
            eps: default_eps(),
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

/// Adam's state: the step count and both moments of every parameter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdamState {
    /// Updates done so far.
    pub step: u64,
    /// First moments, one vector per parameter.
    pub m: Vec<Vec<f32>>,
    /// Second moments, one vector per parameter.
    pub v: Vec<Vec<f32>>,
}

/// The Adam optimiser.
pub struct Adam {
    cfg: AdamConfig,
    state: AdamState,
}

impl Adam {
    /// Fresh state for the parameters of `params`.
    pub fn new<D: Backend>(cfg: AdamConfig, params: &ParamStore<D>) -> Self {
        let zeros: Vec<Vec<f32>> = (0..params.len())
            .map(|i| vec![0.0; params.host(i).len()])
            .collect();
        Self {
            cfg,
            state: AdamState {
                step: 0,
                m: zeros.clone(),
                v: zeros,
            },
        }
    }

    /// The current state (for checkpoints).
    pub fn state(&self) -> &AdamState {
        &self.state
    }

    /// Adam resumed from a saved `state`, whose moments must have the sizes of `params`'
    /// values (taken over as they are, not copied).
    pub fn resumed<D: Backend>(
        cfg: AdamConfig,
        params: &ParamStore<D>,
        state: AdamState,
    ) -> Result<Self> {
        let sizes: Vec<usize> = (0..params.len()).map(|i| params.host(i).len()).collect();
        let fits = |moments: &[Vec<f32>]| moments.iter().map(Vec::len).eq(sizes.iter().copied());
        if !fits(&state.m) || !fits(&state.v) {
            return Err(Error::Shape(
                "optimiser state does not match the model's parameters".into(),
            ));
        }
        Ok(Self { cfg, state })
    }

    /// One update of every parameter from its gradient `grads[i]`.
    pub fn step<D: Backend>(&mut self, params: &mut ParamStore<D>, grads: &[Vec<f32>]) {
        self.state.step += 1;
        let t = self.state.step as i32;
        let [b1, b2] = self.cfg.betas;
        let bias1 = 1.0 - b1.powi(t);
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = (self.cfg.lr / bias1) as f32;
        let (b1, b2, eps) = (b1 as f32, b2 as f32, self.cfg.eps as f32);
        let (wd, lr) = (self.cfg.weight_decay as f32, self.cfg.lr as f32);
        let bias2_sqrt = bias2_sqrt as f32;
        let AdamState { m, v, .. } = &mut self.state;
        let decoupled = self.cfg.decoupled;
        let (decay, l2) = if decoupled {
            (1.0 - lr * wd, 0.0)
        } else {
            (1.0, wd)
        };
        // One pass per element, no branches (the loop vectorises); each element is updated on
        // its own, so the result does not depend on how the work is split between threads.
        let update = |(((x, m), v), g): Chunk| {
            for (((x, m), v), &g) in x.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                *x *= decay;
                let g = g + l2 * *x;
                *m = flush_subnormal(b1 * *m + (1.0 - b1) * g);
                *v = flush_subnormal(b2 * *v + (1.0 - b2) * g * g);
                *x -= step_size * *m / (v.sqrt() / bias2_sqrt + eps);
            }
        };
        let total: usize = grads.iter().map(Vec::len).sum();
        params.update_all(|hosts| {
            let chunks: Vec<Chunk> = hosts
                .iter_mut()
                .zip(m.iter_mut())
                .zip(v.iter_mut())
                .zip(grads)
                .flat_map(|(((x, m), v), g)| {
                    x.chunks_mut(CHUNK)
                        .zip(m.chunks_mut(CHUNK))
                        .zip(v.chunks_mut(CHUNK))
                        .zip(g.chunks(CHUNK))
                })
                .collect();
            over_chunks(chunks, total, update);
        });
    }
}

/// `x`, or 0 where `x` is subnormal (below `f32::MIN_POSITIVE` in magnitude).
///
/// The moments of a weight whose gradient stays zero decay geometrically (m by β₁ a step) and
/// turn subnormal after some hundreds of steps, and x86 CPUs take a slow microcode path for
/// every multiply that reads or makes a subnormal (some hundred cycles, against one): in the
/// `vae_mlp_train` bench, Adam took 29 % of a step's samples over 1,000 steps, 11 % with the
/// CPU's flush-to-zero mode on, 17 % with this flush. Such a moment moves its weight by less
/// than lr·10⁻³⁰ a step (the denominator is at least ε = 10⁻⁸), below the last bit of any
/// weight above about lr·10⁻²³, so storing 0 in its place changes nothing else.
#[inline(always)]
fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

/// A slice of one parameter with its moments and gradient: the unit of parallel work.
type Chunk<'a> = (((&'a mut [f32], &'a mut [f32]), &'a mut [f32]), &'a [f32]);

/// Elements per unit of parallel work in the optimiser and the gradient norm.
const CHUNK: usize = 1 << 14;

/// Below this many elements the optimiser stays on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 17;

/// `work` applied to each of `chunks` (slices of `total` values in all), results in the
/// chunks' order: on rayon's pool for large models, else on the calling thread.
fn over_chunks<T: Send, R: Send>(
    chunks: Vec<T>,
    total: usize,
    work: impl Fn(T) -> R + Sync + Send,
) -> Vec<R> {
    if total >= PARALLEL_MIN_ELEMENTS {
        chunks.into_par_iter().map(work).collect()
    } else {
        chunks.into_iter().map(work).collect()
    }
}

/// Scales every gradient by `max_norm / norm` when their global L2 norm exceeds `max_norm`
/// (each value on its own, in parallel chunks for large models); returns the norm before.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f32 {
    let norm = global_norm(grads);
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        let rescale = |c: &mut [f32]| c.iter_mut().for_each(|g| *g *= scale);
        let total: usize = grads.iter().map(Vec::len).sum();
        let chunks = grads.iter_mut().flat_map(|g| g.chunks_mut(CHUNK)).collect();
        over_chunks(chunks, total, rescale);
    }
    norm
}

/// The L2 norm of all gradients together.
pub fn global_norm(grads: &[Vec<f32>]) -> f32 {
    // Fixed chunks summed in a fixed order: the same value on any number of threads.
    let chunks: Vec<&[f32]> = grads.iter().flat_map(|g| g.chunks(CHUNK)).collect();
    let total: usize = grads.iter().map(Vec::len).sum();
    over_chunks(chunks, total, sum_of_squares)
        .iter()
        .sum::<f64>()
        .sqrt() as f32
}

/// Σ g² in f64, over eight interleaved partial sums (a vectorisable loop).
fn sum_of_squares(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut rows = values.chunks_exact(8);
    for row in &mut rows {
        for (lane, &g) in lanes.iter_mut().zip(row) {
            *lane += f64::from(g) * f64::from(g);
        }
    }
    let tail: f64 = rows
        .remainder()
        .iter()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{HostParam, ParamId};
    use dfdx::prelude::Cpu;

    fn store(values: Vec<f32>) -> ParamStore<Cpu> {
        let shape = vec![values.len()];
        ParamStore::new(
            &Cpu::default(),
            vec![HostParam {
                name: "p".into(),
                shape,
                values,
            }],
        )
    }

    #[test]
    fn adam_first_steps_match_the_closed_form() {
        // With a constant gradient g, every Adam step moves by lr * g / (|g| + eps').
        let mut p = store(vec![1.0, -2.0]);
        let mut adam = Adam::new(AdamConfig::default(), &p);
        for _ in 0..3 {
            adam.step(&mut p, &[vec![0.5, -4.0]]);
        }
        let got = p.host(0);
        assert!((got[0] - (1.0 - 3e-3)).abs() < 1e-6, "{got:?}");
        assert!((got[1] - (-2.0 + 3e-3)).abs() < 1e-6, "{got:?}");
        assert_eq!(adam.state().step, 3);
    }

    #[test]
    fn a_parameter_shared_with_a_live_view_is_updated_without_changing_the_view() {
        // Updated in place on the CPU, unless a view shares the storage: then the parameter
        // gets a storage of its own first.
        let mut p = store(vec![1.0, -2.0]);
        let mut adam = Adam::new(AdamConfig::default(), &p);
        adam.step(&mut p, &[vec![0.5, -4.0]]);
        let view = p.get(ParamId(0), (2usize,));
        let before = view.as_vec();
        adam.step(&mut p, &[vec![0.5, -4.0]]);
        assert_eq!(view.as_vec(), before);
        let after = p.get(ParamId(0), (2usize,)).as_vec();
        assert_eq!(after, p.host(0));
        assert!((after[0] - (1.0 - 2e-3)).abs() < 1e-6, "{after:?}");
        assert!((after[1] - (-2.0 + 2e-3)).abs() < 1e-6, "{after:?}");
    }

    #[test]
    fn moments_that_decay_below_the_normal_range_are_stored_as_zero() {
        // One gradient, then none: m decays by β₁ a step and would pass through the subnormal
        // range (each value costing x86 a slow microcode path) around step 800.
        let mut p = store(vec![1.0]);
        let mut adam = Adam::new(AdamConfig::default(), &p);
        adam.step(&mut p, &[vec![1e-4]]);
        for _ in 0..1000 {
            adam.step(&mut p, &[vec![0.0]]);
            let state = adam.state();
            for moment in [state.m[0][0], state.v[0][0]] {
                assert!(moment == 0.0 || moment.is_normal(), "{moment:e}");
            }
        }
        assert_eq!(adam.state().m[0][0], 0.0);
        assert!(flush_subnormal(f32::MIN_POSITIVE).is_normal());
        assert_eq!(flush_subnormal(-f32::MIN_POSITIVE / 2.0), 0.0);
    }

    #[test]
    fn clipping_rescales_to_the_max_norm() {
        let mut g = vec![vec![3.0], vec![4.0]];
        let before = clip_global_norm(&mut g, 1.0);
        assert!((before - 5.0).abs() < 1e-6);
        assert!((global_norm(&g) - 1.0).abs() < 1e-5);
        let mut small = vec![vec![0.3]];
        clip_global_norm(&mut small, 1.0);
        assert_eq!(small, vec![vec![0.3]]);
    }
}
