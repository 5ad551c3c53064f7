//! Optimizers (matching `torch.optim` update rules and defaults exactly), learning-rate schedules,
//! global-norm gradient clipping and the Omnigrok weight-norm constraint.

use serde::{Deserialize, Serialize};

use crate::engine::par;
use crate::engine::Float;
use crate::model::Param;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// `torch.optim.SGD(momentum=0)`.
    Sgd,
    /// `torch.optim.SGD(momentum=m, dampening=0)` (heavy ball).
    Momentum,
    /// `torch.optim.SGD(momentum=m, nesterov=True)`.
    Nesterov,
    /// `torch.optim.Adam` (L2 weight decay added to the gradient).
    Adam,
    /// `torch.optim.AdamW` (decoupled weight decay).
    Adamw,
}

impl Optimizer {
    /// torch's default weight decay for each optimizer.
    pub fn default_weight_decay(self) -> f64 {
        match self {
            Optimizer::Adamw => 0.01,
            _ => 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Linear warm-up, then cosine decay to `final_lr_fraction · lr` (Loshchilov & Hutter 2017).
    WarmupCosine,
    /// Linear warm-up, then linear decay to `final_lr_fraction · lr`.
    WarmupLinear,
}

/// The learning rate at `step` (0-based) of `total`.
pub fn lr_at(
    schedule: Schedule,
    lr: f64,
    warmup: u64,
    final_fraction: f64,
    step: u64,
    total: u64,
) -> f64 {
    if schedule == Schedule::Constant {
        return lr;
    }
    if step < warmup {
        // (step + 1)/warmup: the first step already moves, as in nanoGPT.
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    let decay = match schedule {
        Schedule::WarmupCosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Schedule::WarmupLinear => 1.0 - progress,
        Schedule::Constant => 1.0,
    };
    lr * (final_fraction + (1.0 - final_fraction) * decay)
}

/// Hyper-parameters of one optimizer step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub optimizer: Optimizer,
    pub momentum: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// Per-parameter optimizer state: momentum buffer or Adam's moments, preallocated.
#[derive(Clone, Debug)]
pub struct OptimState<F> {
    pub m: Vec<Vec<F>>,
    pub v: Vec<Vec<F>>,
    /// Steps taken (Adam's bias correction uses it; it is 1 during the first step).
    pub t: u64,
    /// The tensors an [`Update`] has updated so far (kept here so that a step allocates
    /// nothing once the first has sized it).
    done: Vec<bool>,
}

impl<F: Float> OptimState<F> {
    pub fn new<P: AsRef<[Param<F>]>>(params: P, optimizer: Optimizer) -> Self {
        let params = params.as_ref();
        let zeros = |p: &Param<F>| vec![F::zero(); p.value.len()];
        let m = match optimizer {
            Optimizer::Sgd => Vec::new(),
            _ => params.iter().map(zeros).collect(),
        };
        let v = match optimizer {
            Optimizer::Adam | Optimizer::Adamw => params.iter().map(zeros).collect(),
            _ => Vec::new(),
        };
        OptimState {
            m,
            v,
            t: 0,
            done: vec![false; params.len()],
        }
    }

    /// One update of every trainable parameter, in place. Weight decay applies to parameters
    /// with `decay = true` (linear weights and biases) — in torch terms, two param groups: the
    /// linear layers with the weight decay, norm and activation parameters with none.
    pub fn step(&mut self, params: &mut [Param<F>], h: &Hyper, lr: f64) {
        self.begin(h, lr, false).finish(params);
    }

    /// Starts a step taken tensor by tensor ([`Update`]); `eager` lets a model's backward update
    /// each tensor as soon as its gradient is final ([`crate::model::Model::backward_update`]).
    pub fn begin<'a>(&'a mut self, hyper: &'a Hyper, lr: f64, eager: bool) -> Update<'a, F> {
        self.t += 1;
        self.done.fill(false);
        Update {
            state: self,
            hyper,
            lr,
            eager,
            consts: None,
        }
    }

    /// One tensor's update (tensor `i` of the parameter list).
    fn update(&mut self, i: usize, p: &mut Param<F>, h: &Hyper, lr: f64) {
        let c = Coeffs::new(h, self.t, lr, p.lr_mult, p.decay);
        let (w, g) = (&mut p.value, &p.grad);
        match h.optimizer {
            Optimizer::Sgd => {
                for (w, &g) in w.iter_mut().zip(g) {
                    c.sgd(w, g);
                }
            }
            Optimizer::Momentum | Optimizer::Nesterov => {
                for ((w, &g), b) in w.iter_mut().zip(g).zip(self.m[i].iter_mut()) {
                    c.momentum(w, g, b);
                }
            }
            Optimizer::Adam | Optimizer::Adamw => {
                let (m, v) = (&mut self.m[i], &mut self.v[i]);
                // Elementwise, so blocks over the pool change nothing in the result.
                let blocks = g.len().div_ceil(ADAM_CHUNK);
                let parts = (
                    par::rows(w, ADAM_CHUNK),
                    par::rows(m, ADAM_CHUNK),
                    par::rows(v, ADAM_CHUNK),
                );
                par::for_row_blocks(blocks, parts, |_, r, (w, m, v)| {
                    let e = r.start * ADAM_CHUNK..(r.end * ADAM_CHUNK).min(g.len());
                    for (((w, &g), m), v) in w.iter_mut().zip(&g[e]).zip(m).zip(v) {
                        c.adam(w, g, m, v);
                    }
                });
            }
        }
    }
}

/// One optimizer step taken tensor by tensor: a model's backward may update each tensor as soon
/// as its gradient is final (in cache; a weight's in its GEMM's epilogue, [`Update::fused`]),
/// and [`Update::finish`] updates the rest. Each trainable tensor is updated once, from its own
/// gradient, moments and the step's constants only, so the order changes no bit.
pub struct Update<'a, F> {
    state: &'a mut OptimState<F>,
    hyper: &'a Hyper,
    lr: f64,
    eager: bool,
    /// The fused path's constants (kept here: the GEMM reads them through a pointer).
    consts: Option<crate::engine::lanes::AdamConsts>,
}

impl<F: Float> Update<'_, F> {
    fn is_done(&self, i: usize) -> bool {
        self.state.done.get(i).copied().unwrap_or(false)
    }

    fn mark_done(&mut self, i: usize) {
        let done = &mut self.state.done;
        if i >= done.len() {
            done.resize(i + 1, false);
        }
        done[i] = true;
    }

    /// Updates tensor `i` now, if eager and not done yet.
    pub fn tensor(&mut self, i: usize, p: &mut Param<F>) {
        if self.eager && !self.is_done(i) {
            if p.trainable {
                self.state.update(i, p, self.hyper, self.lr);
            }
            self.mark_done(i);
        }
    }

    /// Updates (if eager) every tensor of `params` that belongs to `layer`: a model calls this
    /// once nothing left in its backward reads that layer's parameters.
    pub fn layer(&mut self, params: &mut [Param<F>], layer: usize) {
        if !self.eager {
            return;
        }
        for (i, p) in params.iter_mut().enumerate() {
            if p.layer == layer {
                self.tensor(i, p);
            }
        }
    }

    /// Tensor `i`'s gradient and Adam step in one: `gemm(grad, tensor)` computes the gradient
    /// and updates `tensor` in the same pass ([`crate::engine::ops::gemm_adam`]), returning
    /// whether it could: `true` when it did, the tensor's `grad` then left unspecified (the
    /// GEMM's scratch, the gradient itself never stored; an eager step's caller reads no
    /// gradient); `false` (nothing done: compute the gradient the plain way) when the step is
    /// not eager, the optimizer is not Adam or AdamW, the tensor is frozen or done, or the
    /// engine declined.
    pub fn fused(
        &mut self,
        i: usize,
        p: &mut Param<F>,
        gemm: impl FnOnce(&mut [F], crate::engine::ops::AdamTensor<'_, F>) -> bool,
    ) -> bool {
        let adam = matches!(self.hyper.optimizer, Optimizer::Adam | Optimizer::Adamw);
        if !self.eager || !adam || !p.trainable || self.is_done(i) {
            return false;
        }
        let c = Coeffs::<F>::new(self.hyper, self.state.t, self.lr, p.lr_mult, p.decay);
        let consts = &*self
            .consts
            .insert(Coeffs::adam_consts(&[c; crate::engine::lanes::LANES]));
        let t = crate::engine::ops::AdamTensor {
            w: &mut p.value,
            m: &mut self.state.m[i],
            v: &mut self.state.v[i],
            consts,
        };
        let did = gemm(&mut p.grad, t);
        if did {
            self.mark_done(i);
        }
        did
    }

    /// Updates every trainable tensor not updated yet, in order.
    pub fn finish(self, params: &mut [Param<F>]) {
        for (i, p) in params.iter_mut().enumerate() {
            if p.trainable && !self.is_done(i) {
                self.state.update(i, p, self.hyper, self.lr);
            }
        }
        self.state.done.fill(false);
    }
}

/// One parameter tensor's update constants at one step, and the update of one element: shared
/// by [`OptimState::step`] and the lockstep lanes ([`crate::model::lanes`]), so both compute
/// the same bits.
#[derive(Clone, Copy, Debug)]
pub struct Coeffs<F> {
    lr: F,
    step_size: F,
    decay: F,
    mom: F,
    b1: F,
    b2: F,
    eps: F,
    inv_bc2_sqrt: F,
    /// torch initialises the momentum buffer with the first gradient (no dampening).
    first: bool,
    nesterov: bool,
    adamw: bool,
}

impl<F: Float> Coeffs<F> {
    /// The constants of step `t` (counted from 1) for a tensor with learning-rate factors
    /// `mult` that does (`decays`) or does not take weight decay.
    #[inline]
    pub fn new(h: &Hyper, t: u64, lr: f64, mult: crate::model::LrMult, decays: bool) -> Self {
        let t_i = t as i32;
        // torch.optim.Adam (non-fused): step_size = lr / bc1; denom = sqrt(v)/sqrt(bc2) + eps.
        // The division by sqrt(bc2) is a multiplication by its reciprocal here (≤ 1 ulp apart):
        // the update is bound by divider throughput, and this halves the divisions.
        let bc1 = 1.0 - h.beta1.powi(t_i);
        let inv_bc2_sqrt = F::of(1.0 / (1.0 - h.beta2.powi(t_i)).sqrt());
        // The parametrization's learning-rate factor, with weight decay divided by it (as
        // `mup`'s optimizers do): `lr·wd` per step stays what the spec says.
        let mult = match h.optimizer {
            Optimizer::Adam | Optimizer::Adamw => mult.adam,
            Optimizer::Sgd | Optimizer::Momentum | Optimizer::Nesterov => mult.sgd,
        };
        let (lr_f, step_size) = if mult == 1.0 {
            (F::of(lr), F::of(lr / bc1))
        } else {
            (F::of(lr * mult), F::of(lr * mult / bc1))
        };
        let decay = match (decays, mult == 1.0) {
            (false, _) => F::zero(),
            (true, true) => F::of(h.weight_decay),
            (true, false) => F::of(h.weight_decay / mult),
        };
        Coeffs {
            lr: lr_f,
            step_size,
            decay,
            mom: F::of(h.momentum),
            b1: F::of(h.beta1),
            b2: F::of(h.beta2),
            eps: F::of(h.eps),
            inv_bc2_sqrt,
            first: t == 1,
            nesterov: h.optimizer == Optimizer::Nesterov,
            adamw: h.optimizer == Optimizer::Adamw,
        }
    }

    /// The constants of [`Coeffs::adam`], one set per lane, for the lockstep lanes' vector
    /// copy of it (every lane Adam, or every lane AdamW: one group has one optimizer).
    pub fn adam_consts(
        cs: &[Self; crate::engine::lanes::LANES],
    ) -> crate::engine::lanes::AdamConsts {
        let f = |g: &dyn Fn(&Self) -> F| std::array::from_fn(|l| g(&cs[l]).f64() as f32);
        crate::engine::lanes::AdamConsts {
            adamw: cs[0].adamw,
            decay: f(&|c| c.decay),
            keep: f(&|c| F::one() - c.lr * c.decay),
            b1: f(&|c| c.b1),
            one_minus_b1: f(&|c| F::one() - c.b1),
            b2: f(&|c| c.b2),
            one_minus_b2: f(&|c| F::one() - c.b2),
            step_size: f(&|c| c.step_size),
            inv_bc2_sqrt: f(&|c| c.inv_bc2_sqrt),
            eps: f(&|c| c.eps),
        }
    }

    /// `torch.optim.SGD` without momentum.
    #[inline(always)]
    pub fn sgd(&self, w: &mut F, g: F) {
        *w -= self.lr * (g + self.decay * *w);
    }

    /// `torch.optim.SGD` with momentum (heavy ball, or Nesterov), buffer `b`.
    #[inline(always)]
    pub fn momentum(&self, w: &mut F, g: F, b: &mut F) {
        let d = g + self.decay * *w;
        *b = if self.first { d } else { self.mom * *b + d };
        let upd = if self.nesterov { d + self.mom * *b } else { *b };
        *w -= self.lr * upd;
    }

    /// `torch.optim.Adam` / `AdamW`, moments `m` and `v`.
    #[inline(always)]
    pub fn adam(&self, w: &mut F, g: F, m: &mut F, v: &mut F) {
        let g = if self.adamw {
            *w *= F::one() - self.lr * self.decay;
            g
        } else {
            g + self.decay * *w
        };
        *m = self.b1 * *m + (F::one() - self.b1) * g;
        *v = self.b2 * *v + (F::one() - self.b2) * g * g;
        *w -= self.step_size * *m / (v.sqrt() * self.inv_bc2_sqrt + self.eps);
    }
}

const ADAM_CHUNK: usize = 64;

/// The global L2 norm of all trainable gradients (accumulated in f64).
pub fn grad_norm<F: Float>(params: &[Param<F>]) -> f64 {
    params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| crate::engine::ops::sum_squares(&p.grad))
        .sum::<f64>()
        .sqrt()
}

/// `torch.nn.utils.clip_grad_norm_`: scales all gradients by `max/(norm + 1e-6)` when the norm
/// exceeds `max`. Returns the factor applied (1 when untouched).
pub fn clip_grad_norm<F: Float>(params: &mut [Param<F>], norm: f64, max: f64) -> f64 {
    let coef = max / (norm + 1e-6);
    if coef >= 1.0 {
        return 1.0;
    }
    let c = F::of(coef);
    for p in params.iter_mut().filter(|p| p.trainable) {
        crate::engine::ops::scale(&mut p.grad, c);
    }
    coef
}

/// The Omnigrok constraint: rescale the decayed parameters (linear weights and biases) so that
/// their total L2 norm equals `target`.
pub fn constrain_weight_norm<F: Float>(params: &mut [Param<F>], target: f64) {
    let norm = params
        .iter()
        .filter(|p| p.decay)
        .map(|p| crate::engine::ops::sum_squares(&p.value))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        let s = F::of(target / norm);
        for p in params.iter_mut().filter(|p| p.decay) {
            crate::engine::ops::scale(&mut p.value, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_hit_their_endpoints() {
        let lr = 0.1;
        assert_eq!(lr_at(Schedule::Constant, lr, 0, 0.0, 50, 100), lr);
        assert!((lr_at(Schedule::WarmupCosine, lr, 10, 0.0, 0, 100) - 0.01).abs() < 1e-15);
        assert!((lr_at(Schedule::WarmupCosine, lr, 10, 0.0, 10, 100) - lr).abs() < 1e-15);
        assert!((lr_at(Schedule::WarmupCosine, lr, 10, 0.1, 100, 100) - 0.01).abs() < 1e-15);
        assert!((lr_at(Schedule::WarmupCosine, lr, 10, 0.0, 55, 100) - 0.05).abs() < 1e-12);
        assert!((lr_at(Schedule::WarmupLinear, lr, 0, 0.0, 25, 100) - 0.075).abs() < 1e-15);
    }
}
