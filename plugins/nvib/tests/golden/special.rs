//! Golden cases of `gamma`, `dirichlet` and core's `schedule` (spec §A.3, §A.4, §C, §D), in f64:
//! `gamma_grad_grid`, `gamma_rsample_autograd`, `v1_reparameterize_dirichlet_train`,
//! `head_reparameterize_dirichlet_eval`, `head_reparameterize_dirichlet_train` and
//! `kl_annealing_schedule`. The official π layout is `[Nl, B, 1]`; ours is `(Batch, Comp)`,
//! and the official mask (1 = padded) is negated into `keep`.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp};
use vaezoo_core::schedule::{kl_annealing, Annealing};
use vaezoo_nvib::dirichlet::{pi_head_eval, pi_head_train, pi_v1_train};
use vaezoo_nvib::gamma::{gamma_from_samples, standard_gamma_grad, GammaGradRegime};
use vaezoo_nvib::num::Tr;

use crate::harness::{batch_to_seq, seq_to_batch, Golden, Produced};

type Bc = Tensor<(Batch, Comp), f64, Cpu>;

/// The port's outputs for the cases of this family.
pub fn run(g: &Golden) -> Option<Result<Produced, String>> {
    let result = match g.case.as_str() {
        "gamma_grad_grid" => gamma_grad_grid(g),
        "gamma_rsample_autograd" => gamma_rsample_autograd(g),
        "v1_reparameterize_dirichlet_train" => v1_train(g),
        "head_reparameterize_dirichlet_eval" => head_eval(g),
        "head_reparameterize_dirichlet_train" => head_train(g),
        "kl_annealing_schedule" => annealing(g),
        _ => return None,
    };
    Some(result)
}

fn gamma_grad_grid(g: &Golden) -> Result<Produced, String> {
    let (alpha, x) = (g.input("alpha")?.f64s(), g.input("x")?.f64s());
    let grad: Vec<f64> = alpha
        .iter()
        .zip(&x)
        .map(|(&a, &x)| standard_gamma_grad(a, x))
        .collect();
    let regime = alpha
        .iter()
        .zip(&x)
        .map(|(&a, &x)| match GammaGradRegime::of(a, x) {
            GammaGradRegime::SmallX => 0.0,
            GammaGradRegime::SaddlePointCentre => 1.0,
            GammaGradRegime::SaddlePoint => 2.0,
            GammaGradRegime::Rational => 3.0,
        })
        .collect();
    Ok(Produced::new()
        .with("grad_torch", grad.clone())
        .with("grad_exact", grad)
        .with("regime", regime))
}

fn gamma_rsample_autograd(g: &Golden) -> Result<Produced, String> {
    let alpha = g.input("alpha")?;
    let dev = Cpu::default();
    let alpha: Tensor<(usize,), f64, _> = dev.tensor_from_vec(alpha.f64s(), (alpha.data.len(),));
    // torch's random stream cannot be reproduced: its draw is our supplied sample.
    let samples = g.output("sample")?.f64s();
    let grads = gamma_from_samples(alpha.leaky_trace(), samples)
        .sum()
        .backward();
    let grad = grads.get(&alpha).as_vec();
    Ok(Produced::new()
        .with("grad", grad.clone())
        .with("grad_exact", grad)
        .skip(
            "sample",
            "torch's RNG stream cannot be reproduced; the official sample is the supplied draw",
        ))
}

/// α `(Batch, Comp)`, `keep`, and a reader of further `[Nl, B, 1]` inputs in our layout.
struct Case {
    alpha: Bc,
    keep: Vec<bool>,
    nl: usize,
    b: usize,
}

impl Case {
    fn load(g: &Golden) -> Result<Self, String> {
        let alpha = g.input("alpha")?;
        let (nl, b) = match alpha.shape[..] {
            [nl, b, 1] => (nl, b),
            ref s => return Err(format!("alpha shape {s:?}, want [Nl, B, 1]")),
        };
        let data = seq_to_batch(&alpha.f64s(), nl, b, 1);
        let alpha = Cpu::default().tensor_from_vec(data, (Batch(b), Comp(nl)));
        let mut case = Self {
            alpha,
            keep: Vec::new(),
            nl,
            b,
        };
        let mask = case.per_comp(g, "mask")?;
        case.keep = mask.into_iter().map(|m| m == 0.0).collect();
        Ok(case)
    }

    /// Input `name` (`[Nl, B, 1]`) batch-first.
    fn per_comp(&self, g: &Golden, name: &str) -> Result<Vec<f64>, String> {
        let a = g.input(name)?;
        if a.shape != [self.nl, self.b, 1] {
            return Err(format!("{name} shape {:?}", a.shape));
        }
        Ok(seq_to_batch(&a.f64s(), self.nl, self.b, 1))
    }

    /// A batch-first tensor back in the official layout.
    fn official(&self, t: Vec<f64>) -> Vec<f64> {
        batch_to_seq(&t, self.b, self.nl, 1)
    }

    /// π and dL/dα for L = Σ w·π, with π built from a traced α.
    fn pi_and_grad(
        &self,
        g: &Golden,
        pi: impl FnOnce(Tr<(Batch, Comp), f64, Cpu>) -> Tr<(Batch, Comp), f64, Cpu>,
    ) -> Result<Produced, String> {
        let w = self
            .alpha
            .device()
            .tensor_from_vec(self.per_comp(g, "w")?, *self.alpha.shape());
        let pi = pi(self.alpha.leaky_trace());
        let values = pi.as_vec();
        let grads = (pi * w).sum().backward();
        Ok(Produced::new()
            .with("pi", self.official(values))
            .with("grad_alpha", self.official(grads.get(&self.alpha).as_vec())))
    }
}

fn v1_train(g: &Golden) -> Result<Produced, String> {
    let case = Case::load(g)?;
    let (eps, u) = (case.per_comp(g, "eps")?, case.per_comp(g, "u")?);
    case.pi_and_grad(g, |alpha| pi_v1_train(alpha, &case.keep, eps, u))
}

fn head_eval(g: &Golden) -> Result<Produced, String> {
    let case = Case::load(g)?;
    let pi = pi_head_eval(case.alpha.clone(), &case.keep).as_vec();
    Ok(Produced::new().with("pi", case.official(pi)))
}

fn head_train(g: &Golden) -> Result<Produced, String> {
    let case = Case::load(g)?;
    let samples = case.per_comp(g, "gamma_samples")?;
    let grads = gamma_from_samples(case.alpha.leaky_trace(), samples.clone())
        .sum()
        .backward();
    let dgamma = case.official(grads.get(&case.alpha).as_vec());
    let produced = case.pi_and_grad(g, |alpha| {
        let gamma = gamma_from_samples(alpha.retaped(), samples);
        pi_head_train(alpha, &case.keep, gamma)
    })?;
    Ok(produced.with("dgamma_dalpha", dgamma))
}

fn annealing(g: &Golden) -> Result<Produced, String> {
    let mut produced = Produced::new();
    for n in g.input("n_epochs")?.f64s().into_iter().map(|n| n as usize) {
        for (name, kind) in [
            ("constant", Annealing::Constant),
            ("monotonic", Annealing::Monotonic),
            ("cyclic", Annealing::Cyclic),
        ] {
            produced = produced.with(&format!("{name}_{n}"), kl_annealing(kind, n));
        }
    }
    Ok(produced)
}
