//! The PFGM++/diffusion denoiser `D_θ(x, σ)`: an MLP from the zoo (`[model]`'s keys) wrapped in
//! EDM's preconditioning (Karras et al. 2022, Table 1, "EDM" column):
//!
//! `D_θ(x, σ) = c_skip(σ)·x + c_out(σ)·F_θ([c_in(σ)·x, emb(c_noise(σ))])`, with
//! `c_skip = σ_d²/(σ² + σ_d²)`, `c_out = σ·σ_d/√(σ² + σ_d²)`, `c_in = 1/√(σ² + σ_d²)`,
//! `c_noise = ln(σ)/4`.
//!
//! The loss is EDM's `λ(σ)·‖D_θ − y‖²` with `λ = 1/c_out²`, which is exactly the squared error
//! of the network against its effective target: `‖F_θ − (y − c_skip·x)/c_out‖²` (mean over
//! rows and coordinates). PFGM++ trains the same objective on its own kernel's perturbations
//! (Xu et al. 2023, Algorithm 1 with σ = r/√D).
//!
//! The noise embedding has no trained parameters; its frequencies are kept as a fixed
//! parameter (`embed.freqs`) so exported weights say everything the network computes.

use std::any::Any;

use crate::engine::{Float, Rng};
use crate::nn::loss::{self, LossValue};
use crate::nn::norm::Mode;
use crate::spec::denoiser::{DenoiserSpec, NoiseEmbedding};
use crate::spec::{LossKind, MlpSpec};

use super::{Batch, Mlp, Model, Param, Role};

pub struct Denoiser<F> {
    /// `F_θ`: input `[c_in·x, emb]` (`dim + embed_dim`), output `dim`.
    pub net: Mlp<F>,
    pub dim: usize,
    pub sigma_data: f64,
    pub embedding: NoiseEmbedding,
    /// Index of `embed.freqs` in `net.params`.
    freqs: usize,
    /// The network's input `[rows, dim + embed_dim]`: `c_in·x` then the noise features.
    pub input: Vec<F>,
    /// `(y − c_skip·x)/c_out`, the network's target `[rows, dim]`.
    pub target: Vec<F>,
    /// `D_θ(x, σ)` `[rows, dim]`.
    pub denoised: Vec<F>,
    /// Per row: `c_skip`, `c_out`.
    c_skip: Vec<F>,
    c_out: Vec<F>,
    pub rows: usize,
}

/// EDM's preconditioning at `sigma`: `(c_skip, c_out, c_in, c_noise)`.
pub fn precondition(sigma: f64, sigma_data: f64) -> (f64, f64, f64, f64) {
    let (s2, d2) = (sigma * sigma, sigma_data * sigma_data);
    (
        d2 / (s2 + d2),
        sigma * sigma_data / (s2 + d2).sqrt(),
        1.0 / (s2 + d2).sqrt(),
        sigma.ln() / 4.0,
    )
}

impl<F: Float> Denoiser<F> {
    /// Builds the denoiser for `dim`-dimensional data: the network from `net` (its init from
    /// `rng`), then the embedding's frequencies (Fourier: drawn from `rng` after the weights).
    pub fn new(
        net: &MlpSpec,
        spec: &DenoiserSpec,
        dim: usize,
        capacity: usize,
        rng: &mut Rng,
    ) -> Self {
        let e = spec.embed_dim;
        let mut mlp = Mlp::new(net, dim + e, dim, capacity, rng).with_loss(LossKind::Mse);
        let half = e / 2;
        let freqs: Vec<F> = match spec.embedding {
            NoiseEmbedding::Fourier => (0..half)
                .map(|_| F::of(spec.fourier_scale * rng.normal()))
                .collect(),
            // EDM's PositionalEmbedding(endpoint = True): (1/10000)^(k/(half − 1)).
            NoiseEmbedding::Positional => (0..half)
                .map(|k| {
                    let f = if half == 1 {
                        0.0
                    } else {
                        k as f64 / (half - 1) as f64
                    };
                    F::of((1.0f64 / 10_000.0).powf(f))
                })
                .collect(),
        };
        let layer = net.depth;
        mlp.params.push(Param::new(
            "embed.freqs".into(),
            vec![half],
            freqs,
            layer,
            Role::Fixed,
            false,
        ));
        let freqs = mlp.params.len() - 1;
        Denoiser {
            net: mlp,
            dim,
            sigma_data: spec.sigma_data,
            embedding: spec.embedding,
            freqs,
            input: vec![F::zero(); capacity * (dim + e)],
            target: vec![F::zero(); capacity * dim],
            denoised: vec![F::zero(); capacity * dim],
            c_skip: vec![F::zero(); capacity],
            c_out: vec![F::zero(); capacity],
            rows: 0,
        }
    }

    /// Width of the noise features.
    pub fn embed_dim(&self) -> usize {
        2 * self.net.params[self.freqs].value.len()
    }

    /// `x: [rows, dim]` noisy points at levels `sigma: [rows]` → [`Self::denoised`]
    /// `[rows, dim]` (and the network's buffers).
    pub fn forward_rows(&mut self, x: &[F], sigma: &[F], rows: usize, mode: Mode) {
        let (n, e) = (self.dim, self.embed_dim());
        let w = n + e;
        let half = e / 2;
        let two_pi = match self.embedding {
            NoiseEmbedding::Fourier => 2.0 * std::f64::consts::PI,
            NoiseEmbedding::Positional => 1.0,
        };
        let freqs = &self.net.params[self.freqs].value;
        let mut c_in = F::zero();
        for r in 0..rows {
            let row = r * w..(r + 1) * w;
            // A row at the previous row's level (every row, when sampling) copies its constants
            // and features rather than recomputing 2·K sines and cosines.
            if r > 0 && sigma[r] == sigma[r - 1] {
                self.c_skip[r] = self.c_skip[r - 1];
                self.c_out[r] = self.c_out[r - 1];
                self.input
                    .copy_within(row.start - e..row.start, row.start + n);
            } else {
                let (c_skip, c_out, ci, c_noise) = precondition(sigma[r].f64(), self.sigma_data);
                self.c_skip[r] = F::of(c_skip);
                self.c_out[r] = F::of(c_out);
                c_in = F::of(ci);
                let emb = &mut self.input[row.start + n..row.end];
                for (k, f) in freqs.iter().enumerate() {
                    let a = two_pi * f.f64() * c_noise;
                    emb[k] = F::of(a.cos());
                    emb[half + k] = F::of(a.sin());
                }
            }
            for (o, &v) in self.input[row.start..row.start + n]
                .iter_mut()
                .zip(&x[r * n..(r + 1) * n])
            {
                *o = c_in * v;
            }
        }
        self.net.forward(&self.input[..rows * w], rows, mode);
        let out = &self.net.output;
        for r in 0..rows {
            let (cs, co) = (self.c_skip[r], self.c_out[r]);
            for i in r * n..(r + 1) * n {
                self.denoised[i] = cs * x[i] + co * out[i];
            }
        }
        self.rows = rows;
    }

    /// `D_θ(x, σ)` in f64 for any number of rows at one level (eval mode, in chunks of the
    /// capacity): what the sampler calls. The state stays in f64 (`c_in·x` is rounded to the
    /// network's precision on the way in, `c_skip·x + c_out·F` is formed in f64 on the way
    /// out), and the level's constants and noise features are computed once per call.
    pub fn denoise(&mut self, x: &[f64], sigma: f64, out: &mut [f64]) {
        use crate::engine::par;
        let (n, e) = (self.dim, self.embed_dim());
        let w = n + e;
        let cap = self.c_skip.len();
        let rows = x.len() / n;
        let (c_skip, c_out, c_in, c_noise) = precondition(sigma, self.sigma_data);
        let two_pi = match self.embedding {
            NoiseEmbedding::Fourier => 2.0 * std::f64::consts::PI,
            NoiseEmbedding::Positional => 1.0,
        };
        let freqs = &self.net.params[self.freqs].value;
        let half = freqs.len();
        let mut emb = vec![F::zero(); e];
        for (k, f) in freqs.iter().enumerate() {
            let a = two_pi * f.f64() * c_noise;
            emb[k] = F::of(a.cos());
            emb[half + k] = F::of(a.sin());
        }
        let mut start = 0;
        while start < rows {
            let b = cap.min(rows - start);
            let xs = &x[start * n..(start + b) * n];
            par::for_row_blocks(b, par::rows(&mut self.input[..b * w], w), |_, r, inp| {
                for (row, i) in inp.chunks_exact_mut(w).zip(r) {
                    let (a, f) = row.split_at_mut(n);
                    for (o, &v) in a.iter_mut().zip(&xs[i * n..(i + 1) * n]) {
                        *o = F::of(c_in * v);
                    }
                    f.copy_from_slice(&emb);
                }
            });
            self.net.forward(&self.input[..b * w], b, Mode::Eval);
            let net_out = &self.net.output[..b * n];
            let dst = &mut out[start * n..(start + b) * n];
            par::for_row_blocks(b, par::rows(dst, n), |_, r, o| {
                let span = r.start * n..r.end * n;
                for ((o, &xv), &f) in o.iter_mut().zip(&xs[span.clone()]).zip(&net_out[span]) {
                    *o = c_skip * xv + c_out * f.f64();
                }
            });
            start += b;
        }
        self.rows = 0;
    }
}

impl<F: Float> Model<F> for Denoiser<F> {
    fn params(&self) -> &[Param<F>] {
        &self.net.params
    }
    fn params_mut(&mut self) -> &mut [Param<F>] {
        &mut self.net.params
    }
    fn capacity(&self) -> usize {
        self.c_skip.len()
    }
    /// `Denoise { x: [rows, dim], sigma: [rows], .. }` → [`Denoiser::denoised`] `[rows, dim]`.
    fn forward(&mut self, batch: &Batch<'_, F>, mode: Mode) {
        let Batch::Denoise { x, sigma, rows, .. } = *batch else {
            unreachable!("model::build pairs a denoiser with noisy points")
        };
        self.forward_rows(x, sigma, rows, mode);
    }
    /// EDM's weighted loss: the network's squared error against `(y − c_skip·x)/c_out`.
    fn loss(&mut self, batch: &Batch<'_, F>, grad: bool) -> LossValue {
        let Batch::Denoise { x, y, rows, .. } = *batch else {
            unreachable!("model::build pairs a denoiser with noisy points")
        };
        let n = self.dim;
        for r in 0..rows {
            let (cs, inv) = (self.c_skip[r], F::one() / self.c_out[r]);
            for i in r * n..(r + 1) * n {
                self.target[i] = (y[i] - cs * x[i]) * inv;
            }
        }
        let g = grad.then_some(&mut self.net.d_output[..rows * n]);
        loss::loss(
            LossKind::Mse,
            &self.net.output[..rows * n],
            &self.target[..rows * n],
            rows,
            n,
            g,
        )
    }
    fn backward(&mut self, _batch: &Batch<'_, F>) {
        let w = self.dim + self.embed_dim();
        self.net.backward(&self.input[..self.rows * w]);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn denoise(&mut self, x: &[f64], sigma: f64, out: &mut [f64]) -> bool {
        Denoiser::denoise(self, x, sigma, out);
        true
    }
}

/// `(parameters, buffer values)` of the denoiser [`Denoiser::new`] builds.
pub(super) fn elements(
    net: &MlpSpec,
    spec: &DenoiserSpec,
    dim: usize,
    capacity: usize,
) -> (u64, u64) {
    let e = spec.embed_dim;
    let (p, b) = super::mlp::elements(net, dim + e, dim, capacity);
    let own = (capacity as u64).saturating_mul((dim + e + 3 * dim + 2) as u64);
    (p.saturating_add(e as u64 / 2), b.saturating_add(own))
}
