//! Tests of `vaezoo_nvib::kl` on the CPU: gradients against central finite differences (f64),
//! the prior's own KL, masked rows holding garbage, κ scaling, KL_D against the general
//! Dirichlet KL, and KL_D's precision in f32.

use dfdx::prelude::*;
use vaezoo_core::axes::{Batch, Comp, Latent};
use vaezoo_core::rng::{seeded, uniform_vec};
use vaezoo_nvib::kl::{kl_dirichlet, kl_gaussian, DpPrior};
use vaezoo_nvib::special::{digamma_f64, lgamma_f64};

const B: usize = 2;
const NL: usize = 4;
const P: usize = 3;
/// Loss weights of the two batch elements, so that their gradients are told apart.
const W: [f64; B] = [1.0, 0.7];

/// Batch-first inputs with κ copies of NL rows; element 1 has its last component padded.
#[derive(Clone)]
struct Inputs {
    mu: Vec<f64>,
    logvar: Vec<f64>,
    alpha: Vec<f64>,
    keep: Vec<bool>,
    prior: DpPrior,
}

impl Inputs {
    fn new(kappa: usize, seed: u64) -> Self {
        let mut rng = seeded(seed);
        let rows = B * kappa * NL;
        let mut draw = |n, lo, hi| -> Vec<f64> {
            uniform_vec(&mut rng, n, lo, hi)
                .into_iter()
                .map(f64::from)
                .collect()
        };
        Self {
            mu: draw(rows * P, -1.5, 1.5),
            logvar: draw(rows * P, -1.0, 1.0),
            alpha: draw(rows, 0.2, 3.0),
            keep: (0..rows)
                .map(|r| !(r / (kappa * NL) == 1 && r % NL == NL - 1))
                .collect(),
            prior: DpPrior {
                mu: vec![0.2, -0.1, 0.0],
                var: vec![1.0, 0.5, 2.0],
                alpha: 1.3,
                delta: 0.3,
                kappa,
            },
        }
    }

    fn comp(&self) -> Comp {
        Comp(self.alpha.len() / B)
    }

    /// Σ_b W_b·KL_G,b and the gradients w.r.t. mu, logvar and alpha.
    fn gaussian(&self) -> (Vec<f64>, [Vec<f64>; 3]) {
        let dev = Cpu::default();
        let shape = (Batch(B), self.comp(), Latent(P));
        let mu = dev.tensor_from_vec(self.mu.clone(), shape);
        let logvar = dev.tensor_from_vec(self.logvar.clone(), shape);
        let alpha = dev.tensor_from_vec(self.alpha.clone(), (Batch(B), self.comp()));
        let kl = kl_gaussian(
            mu.leaky_trace(),
            logvar.leaky_trace(),
            alpha.leaky_trace(),
            &self.keep,
            &self.prior,
        );
        let values = kl.as_vec();
        let g = (kl * dev.tensor_from_vec(W.to_vec(), (Batch(B),)))
            .sum()
            .backward();
        let grads = [g.get(&mu), g.get(&logvar)].map(|t| t.as_vec());
        let [gm, gl] = grads;
        (values, [gm, gl, g.get(&alpha).as_vec()])
    }

    /// Σ_b W_b·KL_D,b and the gradient w.r.t. alpha.
    fn dirichlet(&self) -> (Vec<f64>, Vec<f64>) {
        let dev = Cpu::default();
        let alpha = dev.tensor_from_vec(self.alpha.clone(), (Batch(B), self.comp()));
        let kl = kl_dirichlet(alpha.leaky_trace(), &self.keep, &self.prior);
        let values = kl.as_vec();
        let g = (kl * dev.tensor_from_vec(W.to_vec(), (Batch(B),)))
            .sum()
            .backward();
        (values, g.get(&alpha).as_vec())
    }
}

fn weighted(kl: &[f64]) -> f64 {
    kl.iter().zip(W).map(|(k, w)| k * w).sum()
}

/// Central differences of `loss` w.r.t. every entry of the vector `pick` selects, against `grad`.
fn check_fd(
    x: &Inputs,
    pick: fn(&mut Inputs) -> &mut Vec<f64>,
    grad: &[f64],
    loss: fn(&Inputs) -> f64,
) {
    let h = 1e-6;
    let mut y = x.clone();
    for (i, &g) in grad.iter().enumerate() {
        let v = pick(&mut y)[i];
        pick(&mut y)[i] = v + h;
        let up = loss(&y);
        pick(&mut y)[i] = v - h;
        let down = loss(&y);
        pick(&mut y)[i] = v;
        let fd = (up - down) / (2.0 * h);
        assert!(
            (g - fd).abs() <= 1e-6 * fd.abs().max(1e-2),
            "[{i}] autograd {g}, fd {fd}"
        );
    }
}

#[test]
fn kl_gaussian_gradients_match_finite_differences() {
    for kappa in [1, 2] {
        let x = Inputs::new(kappa, 7 + kappa as u64);
        let (_, [gm, gl, ga]) = x.gaussian();
        let loss = |x: &Inputs| weighted(&x.gaussian().0);
        check_fd(&x, |x| &mut x.mu, &gm, loss);
        check_fd(&x, |x| &mut x.logvar, &gl, loss);
        check_fd(&x, |x| &mut x.alpha, &ga, loss);
    }
}

#[test]
fn kl_dirichlet_gradient_matches_finite_differences() {
    for kappa in [1, 2] {
        let x = Inputs::new(kappa, 11 + kappa as u64);
        let (_, ga) = x.dirichlet();
        check_fd(&x, |x| &mut x.alpha, &ga, |x| weighted(&x.dirichlet().0));
    }
}

#[test]
fn kl_dirichlet_depends_on_alpha_only_through_the_kept_sum() {
    let x = Inputs::new(2, 3);
    let (want, grad) = x.dirichlet();
    let mut y = x.clone();
    let comp = x.comp().0;
    // Move mass from one kept row of each element to two others, keeping the sum.
    for b in 0..B {
        let row = &mut y.alpha[b * comp..(b + 1) * comp];
        let moved = 0.9 * row[1];
        row[1] -= moved;
        row[2] += 0.25 * moved;
        row[NL + 2] += 0.75 * moved;
    }
    let (got, _) = y.dirichlet();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-12 * w.abs(), "{g} vs {w}");
    }
    // Every kept row of an element has the same gradient; padded rows have none.
    for b in 0..B {
        let rows = b * comp..(b + 1) * comp;
        let kept: Vec<f64> = rows
            .clone()
            .filter(|&r| x.keep[r])
            .map(|r| grad[r])
            .collect();
        assert!(kept.iter().all(|&g| g == kept[0]), "{kept:?}");
        assert!(rows.filter(|&r| !x.keep[r]).all(|r| grad[r] == 0.0));
    }
}

#[test]
fn kl_gaussian_is_zero_when_every_row_is_the_prior() {
    let mut x = Inputs::new(2, 5);
    let (mu, var) = x.prior.per_dim(P);
    for (i, (m, l)) in x.mu.iter_mut().zip(&mut x.logvar).enumerate() {
        (*m, *l) = (mu[i % P], var[i % P].ln());
    }
    let (kl, [gm, gl, ga]) = x.gaussian();
    assert!(kl.iter().all(|k| k.abs() < 1e-15), "{kl:?}");
    for g in gm.iter().chain(&gl).chain(&ga) {
        assert!(g.abs() < 1e-15, "gradient {g} at the minimum");
    }
}

#[test]
fn masked_rows_change_neither_kl_nor_any_gradient() {
    let clean = Inputs::new(2, 9);
    let mut dirty = clean.clone();
    let garbage = [f64::NAN, f64::INFINITY, -1e30, 7.0];
    for r in (0..clean.keep.len()).filter(|&r| !clean.keep[r]) {
        dirty.alpha[r] = garbage[r % 4];
        for p in 0..P {
            dirty.mu[r * P + p] = garbage[(r + p) % 4];
            dirty.logvar[r * P + p] = garbage[(r + p + 1) % 4];
        }
    }
    let (want, want_g) = clean.gaussian();
    let (got, got_g) = dirty.gaussian();
    assert_eq!(got, want);
    assert_eq!(got_g, want_g);
    assert_eq!(dirty.dirichlet(), clean.dirichlet());
    // The gradient at masked rows is exactly 0.
    for r in (0..clean.keep.len()).filter(|&r| !clean.keep[r]) {
        assert_eq!(want_g[2][r], 0.0);
        assert!((0..P).all(|p| want_g[0][r * P + p] == 0.0 && want_g[1][r * P + p] == 0.0));
    }
}

#[test]
fn kappa_copies_scale_kl_gaussian_by_kappa() {
    // κ identical copies of every row, each with α/κ (as the layer makes them), give κ·KL_G.
    let one = Inputs::new(1, 13);
    let mut two = Inputs::new(2, 13);
    for b in 0..B {
        for k in 0..2 {
            for i in 0..NL {
                let (src, dst) = (b * NL + i, (b * 2 + k) * NL + i);
                two.alpha[dst] = one.alpha[src] / 2.0;
                two.keep[dst] = one.keep[src];
                two.mu[dst * P..(dst + 1) * P].copy_from_slice(&one.mu[src * P..(src + 1) * P]);
                let lv = &one.logvar[src * P..(src + 1) * P];
                two.logvar[dst * P..(dst + 1) * P].copy_from_slice(lv);
            }
        }
    }
    let (kl1, _) = one.gaussian();
    let (kl2, _) = two.gaussian();
    for (a, b) in kl1.iter().zip(&kl2) {
        assert!((2.0 * a - b).abs() <= 1e-13 * b.abs(), "2·{a} vs {b}");
    }
}

/// KL(Dir(a) ‖ Dir(b)) by the general formula.
fn dirichlet_kl(a: &[f64], b: &[f64]) -> f64 {
    let (sa, sb): (f64, f64) = (a.iter().sum(), b.iter().sum());
    let mut kl = lgamma_f64(sa) - lgamma_f64(sb);
    for (&ai, &bi) in a.iter().zip(b) {
        kl += lgamma_f64(bi) - lgamma_f64(ai) + (ai - bi) * (digamma_f64(ai) - digamma_f64(sa));
    }
    kl
}

#[test]
fn kl_dirichlet_is_the_symmetric_dirichlet_kl_over_n() {
    for kappa in [1, 2] {
        let x = Inputs::new(kappa, 17);
        let (got, _) = x.dirichlet();
        let comp = x.comp().0;
        for (b, got) in got.iter().enumerate() {
            let rows = b * comp..(b + 1) * comp;
            let k0 = rows.clone().filter(|&r| x.keep[r]).count();
            let q: f64 = rows.filter(|&r| x.keep[r]).map(|r| x.alpha[r]).sum();
            let n = k0 as f64 / kappa as f64;
            let p = x.prior.alpha + x.prior.delta * (n - 1.0);
            let want = dirichlet_kl(&vec![q / k0 as f64; k0], &vec![p / k0 as f64; k0]) / n;
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "κ={kappa}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn kl_dirichlet_in_f32_keeps_f64_precision() {
    // A long sequence: lnΓ terms of size ~10³ cancel to a KL of size ~1.
    let (b, comp) = (Batch(1), Comp(300));
    let alpha32: Vec<f32> = uniform_vec(&mut seeded(1), comp.0, 0.0, 2.0);
    let alpha64: Vec<f64> = alpha32.iter().map(|&a| f64::from(a)).collect();
    let keep: Vec<bool> = (0..comp.0).map(|i| i < 280).collect();
    let prior = DpPrior {
        delta: 0.3,
        ..DpPrior::default()
    };
    let dev = Cpu::default();
    let kl32 = kl_dirichlet(
        dev.tensor_from_vec(alpha32, (b, comp)).leaky_trace(),
        &keep,
        &prior,
    );
    let kl64 = kl_dirichlet(
        dev.tensor_from_vec(alpha64, (b, comp)).leaky_trace(),
        &keep,
        &prior,
    );
    let (got, want) = (f64::from(kl32.as_vec()[0]), kl64.as_vec()[0]);
    assert!(
        (got - want).abs() <= 1e-7 * want.abs(),
        "f32 {got} vs f64 {want}"
    );
}
