//! Segmentation losses over logits `z: [n, k, plane]` (NCHW) and per-pixel class targets `y:
//! [n, plane]`, returning the loss and writing `∂L/∂z`:
//! - cross-entropy: softmax over the `k` channels, mean over the `n·plane` pixels
//!   (`torch.nn.functional.cross_entropy` on `[n, k, h, w]`);
//! - binary cross-entropy on one logit per pixel (foreground = class 1), mean over pixels
//!   (`binary_cross_entropy_with_logits`), in the stable form `max(z, 0) − z·y + ln(1 + e^−|z|)`;
//! - soft Dice (Milletari et al. 2016, V-Net): `1 − (2Σpy + 1)/(Σp + Σy + 1)` with sums over the
//!   whole batch and +1 smoothing (so an empty mask predicted empty costs nothing); binary with
//!   `p = σ(z)`, or with `k > 2` channels `p = softmax(z)` and the mean over the foreground
//!   classes `1..k`;
//! - their weighted sum `bce + w·dice`.
//!
//! The loss value counts its pixels (`counted = n·plane`) and the pixels the prediction gets
//! right (argmax, or `z > 0` for one logit), so evaluation reports pixel accuracy.

use crate::engine::Float;
use crate::nn::loss::LossValue;
use crate::spec::unet::SegLoss;

/// `(loss, correct pixels)` and, with `grad`, `∂L/∂z` (overwritten) for `loss` over `k`
/// channels.
#[allow(clippy::too_many_arguments)]
pub fn loss<F: Float>(
    kind: SegLoss,
    dice_weight: f64,
    (n, k, plane): (usize, usize, usize),
    z: &[F],
    y: &[F],
    mut grad: Option<&mut [F]>,
) -> LossValue {
    let pixels = n * plane;
    if let Some(g) = grad.as_deref_mut() {
        g[..n * k * plane].fill(F::zero());
    }
    let mut total = 0.0;
    match kind {
        SegLoss::CrossEntropy => {
            total += cross_entropy(n, k, plane, z, y, grad.as_deref_mut(), 1.0)
        }
        SegLoss::Bce => total += bce(n, plane, z, y, grad.as_deref_mut(), 1.0),
        SegLoss::Dice if k > 1 => {
            total += dice_softmax(n, k, plane, z, y, grad.as_deref_mut(), 1.0)
        }
        SegLoss::Dice => total += dice_binary(n, plane, z, y, grad.as_deref_mut(), 1.0),
        SegLoss::BceDice => {
            total += bce(n, plane, z, y, grad.as_deref_mut(), 1.0);
            total += dice_weight * dice_binary(n, plane, z, y, grad, dice_weight);
        }
    }
    LossValue {
        loss: total,
        correct: Some(correct(n, k, plane, z, y)),
        counted: pixels,
    }
}

/// The predicted class of pixel `p` of image `i`: argmax over channels (first on ties), or
/// `z > 0` for one logit.
pub fn predicted<F: Float>(k: usize, plane: usize, z: &[F], i: usize, p: usize) -> usize {
    if k == 1 {
        return usize::from(z[i * plane + p] > F::zero());
    }
    let mut best = 0;
    for c in 1..k {
        if z[(i * k + c) * plane + p] > z[(i * k + best) * plane + p] {
            best = c;
        }
    }
    best
}

fn correct<F: Float>(n: usize, k: usize, plane: usize, z: &[F], y: &[F]) -> usize {
    let mut c = 0;
    for i in 0..n {
        for p in 0..plane {
            c += usize::from(predicted(k, plane, z, i, p) == y[i * plane + p].f64() as usize);
        }
    }
    c
}

/// Mean softmax cross-entropy; adds `scale·∂/∂z` to `grad`.
fn cross_entropy<F: Float>(
    n: usize,
    k: usize,
    plane: usize,
    z: &[F],
    y: &[F],
    grad: Option<&mut [F]>,
    scale: f64,
) -> f64 {
    let inv = 1.0 / (n * plane) as f64;
    let mut sum = 0.0;
    let mut grad = grad;
    let mut e = vec![0.0; k];
    for i in 0..n {
        for p in 0..plane {
            let at = |c: usize| (i * k + c) * plane + p;
            let (m, s) = exp_shifted(z, (i, p), (k, plane), &mut e);
            let t = y[i * plane + p].f64() as usize;
            sum += m + s.ln() - z[at(t)].f64();
            if let Some(g) = grad.as_deref_mut() {
                for c in 0..k {
                    let d = e[c] / s - if c == t { 1.0 } else { 0.0 };
                    g[at(c)] += F::of(scale * d * inv);
                }
            }
        }
    }
    sum * inv
}

/// Pixel `p` of image `i`: `e[c] = exp(z_c − m)` over the `k` channels, with `m = max_c z_c`;
/// returns `(m, Σ_c e[c])` (so the softmax is `e/Σ` and the log-sum-exp `m + ln Σ`).
fn exp_shifted<F: Float>(
    z: &[F],
    (i, p): (usize, usize),
    (k, plane): (usize, usize),
    e: &mut [f64],
) -> (f64, f64) {
    let at = |c: usize| (i * k + c) * plane + p;
    let m = (0..k)
        .map(|c| z[at(c)].f64())
        .fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for (c, ec) in e.iter_mut().enumerate().take(k) {
        *ec = (z[at(c)].f64() - m).exp();
        s += *ec;
    }
    (m, s)
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Mean binary cross-entropy on logits; adds `scale·∂/∂z`.
fn bce<F: Float>(
    n: usize,
    plane: usize,
    z: &[F],
    y: &[F],
    grad: Option<&mut [F]>,
    scale: f64,
) -> f64 {
    let inv = 1.0 / (n * plane) as f64;
    let mut sum = 0.0;
    let mut grad = grad;
    for i in 0..n * plane {
        let (zv, t) = (z[i].f64(), if y[i].f64() >= 0.5 { 1.0 } else { 0.0 });
        sum += zv.max(0.0) - zv * t + (-zv.abs()).exp().ln_1p();
        if let Some(g) = grad.as_deref_mut() {
            g[i] += F::of(scale * (sigmoid(zv) - t) * inv);
        }
    }
    sum * inv
}

/// Binary soft Dice loss `1 − (2I + 1)/(S + 1)` with `p = σ(z)`; adds `scale·∂/∂z`.
fn dice_binary<F: Float>(
    n: usize,
    plane: usize,
    z: &[F],
    y: &[F],
    grad: Option<&mut [F]>,
    scale: f64,
) -> f64 {
    let len = n * plane;
    let (mut inter, mut s) = (0.0, 0.0);
    for i in 0..len {
        let (p, t) = (
            sigmoid(z[i].f64()),
            if y[i].f64() >= 0.5 { 1.0 } else { 0.0 },
        );
        inter += p * t;
        s += p + t;
    }
    let (num, den) = (2.0 * inter + 1.0, s + 1.0);
    if let Some(g) = grad {
        for i in 0..len {
            let (p, t) = (
                sigmoid(z[i].f64()),
                if y[i].f64() >= 0.5 { 1.0 } else { 0.0 },
            );
            let dp = -(2.0 * t * den - num) / (den * den);
            g[i] += F::of(scale * dp * p * (1.0 - p));
        }
    }
    1.0 - num / den
}

/// Multi-class soft Dice loss over the foreground classes with `p = softmax(z)`; adds
/// `scale·∂/∂z`.
fn dice_softmax<F: Float>(
    n: usize,
    k: usize,
    plane: usize,
    z: &[F],
    y: &[F],
    grad: Option<&mut [F]>,
    scale: f64,
) -> f64 {
    // Softmax per pixel, recomputed in the gradient pass rather than kept for the whole batch
    // (no batch-sized buffer per step).
    let mut e = vec![0.0; k];
    let fg = k - 1;
    let (mut inter, mut sum) = (vec![0.0; k], vec![0.0; k]);
    for i in 0..n {
        for p in 0..plane {
            let t = y[i * plane + p].f64() as usize;
            let (_, s) = exp_shifted(z, (i, p), (k, plane), &mut e);
            for c in 1..k {
                let pr = e[c] / s;
                let tc = if t == c { 1.0 } else { 0.0 };
                inter[c] += pr * tc;
                sum[c] += pr + tc;
            }
        }
    }
    let mean_dice: f64 = (1..k)
        .map(|c| (2.0 * inter[c] + 1.0) / (sum[c] + 1.0))
        .sum::<f64>()
        / fg as f64;
    if let Some(g) = grad {
        let mut dp = vec![0.0; k];
        for i in 0..n {
            for p in 0..plane {
                let t = y[i * plane + p].f64() as usize;
                let at = |c: usize| (i * k + c) * plane + p;
                for c in 1..k {
                    let (num, den) = (2.0 * inter[c] + 1.0, sum[c] + 1.0);
                    let tc = if t == c { 1.0 } else { 0.0 };
                    dp[c] = -(2.0 * tc * den - num) / (den * den) / fg as f64;
                }
                let (_, s) = exp_shifted(z, (i, p), (k, plane), &mut e);
                let dot: f64 = (1..k).map(|c| e[c] / s * dp[c]).sum();
                for c in 0..k {
                    g[at(c)] += F::of(scale * (e[c] / s) * (dp[c] - dot));
                }
            }
        }
    }
    1.0 - mean_dice
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    /// Every loss's gradient against central differences, binary and three-class.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(5);
        let (n, plane) = (2, 6);
        for (kind, k, classes) in [
            (SegLoss::CrossEntropy, 3, 3),
            (SegLoss::CrossEntropy, 2, 2),
            (SegLoss::Bce, 1, 2),
            (SegLoss::Dice, 1, 2),
            (SegLoss::Dice, 3, 3),
            (SegLoss::BceDice, 1, 2),
        ] {
            let z: Vec<f64> = (0..n * k * plane).map(|_| rng.normal()).collect();
            let y: Vec<f64> = (0..n * plane)
                .map(|_| rng.below(classes as u64) as f64)
                .collect();
            let mut g = vec![0.0; z.len()];
            loss(kind, 0.7, (n, k, plane), &z, &y, Some(&mut g));
            for i in 0..z.len() {
                let (mut a, mut b) = (z.clone(), z.clone());
                a[i] += 1e-6;
                b[i] -= 1e-6;
                let fd = (loss(kind, 0.7, (n, k, plane), &a, &y, None).loss
                    - loss(kind, 0.7, (n, k, plane), &b, &y, None).loss)
                    / 2e-6;
                assert!(
                    (fd - g[i]).abs() < 1e-7,
                    "{kind:?} k={k} [{i}]: {} vs {fd}",
                    g[i]
                );
            }
        }
    }

    /// Closed forms: cross-entropy of zero logits is ln k; BCE of zero logits ln 2; Dice of a
    /// perfect (saturated) prediction is 0, of an all-background prediction on a mask of m
    /// pixels 1 − 1/(m + 1).
    #[test]
    fn closed_forms() {
        let y = [1.0, 0.0, 1.0, 1.0];
        let z0 = vec![0.0; 12];
        assert!(
            (loss(SegLoss::CrossEntropy, 1.0, (1, 3, 4), &z0, &y, None).loss - 3f64.ln()).abs()
                < 1e-12
        );
        assert!(
            (loss(SegLoss::Bce, 1.0, (1, 1, 4), &z0[..4], &y, None).loss - 2f64.ln()).abs() < 1e-12
        );
        let perfect: Vec<f64> = y
            .iter()
            .map(|&t| if t == 1.0 { 40.0 } else { -40.0 })
            .collect();
        assert!(
            loss(SegLoss::Dice, 1.0, (1, 1, 4), &perfect, &y, None)
                .loss
                .abs()
                < 1e-12
        );
        let empty = vec![-40.0; 4];
        let l = loss(SegLoss::Dice, 1.0, (1, 1, 4), &empty, &y, None).loss;
        assert!((l - (1.0 - 1.0 / 4.0)).abs() < 1e-12, "{l}");
        assert_eq!(
            loss(SegLoss::Bce, 1.0, (1, 1, 4), &perfect, &y, None).correct,
            Some(4)
        );
    }
}
