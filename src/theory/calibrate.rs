//! Self-normalizing calibration of an activation under `z ~ N(0, 1)`.
//!
//! - Shift and scale: `g(x) = λ·(f(x) − μ)` with `μ = E[f(z)]`, `λ = 1/std f(z)` has
//!   `E[g(z)] = 0`, `E[g(z)²] = 1`. `γ = 1/std f(z)` is the NF-Net gain (Brock et al. 2021,
//!   "Characterizing signal propagation to close the performance gap in unnormalized ResNets",
//!   §4.1, where it is called `γ`; relu's is exactly `1/√(1/2 − 1/(2π)) = 1.712858550449…`; the
//!   NF-Net code's `1.7139588594436646` is a sampled estimate, 6e-4 above).
//! - SELU (Klambauer et al. 2017, "Self-Normalizing Neural Networks", §3 and eq. 14): the
//!   `(α, λ)` for which `λ·elu_α` maps `N(0, 1)` to mean 0, second moment 1. Writing
//!   `elu_α(x) = x` for `x > 0` and `α(eˣ − 1)` for `x ≤ 0`, both moments are linear in the four
//!   constants `P = E[z 1{z>0}] = 1/√(2π)`, `A = E[(e^z − 1)1{z<0}] = e^{1/2}Φ(−1) − 1/2`,
//!   `S = E[z² 1{z>0}] = 1/2`, `B = E[(e^z − 1)² 1{z<0}] = e²Φ(−2) − 2e^{1/2}Φ(−1) + 1/2`
//!   (from `E[e^{tz}1{z<0}] = e^{t²/2}Φ(−t)`):
//!   `E[λ elu_α(z)] = λ(P + αA)`, `E[(λ elu_α(z))²] = λ²(S + α²B)`. 2-D Newton on these two
//!   equations reproduces Klambauer's `α₀₁ = 1.6732632423543772`, `λ₀₁ = 1.0507009873554804`
//!   (tested to 1e-12; the constants also follow in closed form, `α = −P/A`,
//!   `λ = (S + α²B)^{−1/2}`, which the test uses as the independent check).

use crate::theory::gauss::{normal_cdf, Piecewise, INV_SQRT_2PI};
use crate::theory::meanfield::Phi;
use crate::Error;

/// Shift and scale that make `φ` self-normalizing under `N(0, 1)`.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// `μ = E[φ(z)]`.
    pub mean: f64,
    /// `std φ(z)`.
    pub std: f64,
    /// `λ = 1/std`.
    pub lambda: f64,
    /// NF-Net gain `γ = 1/std` (the same number; NF-Nets apply it without the shift).
    pub gamma: f64,
}

/// `μ`, `λ`, `γ` of `φ` under `z ~ N(0, 1)`; the variance is computed as `E[(φ − μ)²]` (a second
/// pass) to avoid the cancellation of `E[φ²] − μ²`. Errors on a constant `φ` (zero variance).
pub fn self_normalize(phi: Phi) -> Result<Calibration, Error> {
    let rule = Piecewise::default();
    let breaks: Vec<f64> = phi.kink().into_iter().collect();
    let mean = rule.expect(|z| phi.value(z), &breaks);
    let var = rule.expect(|z| (phi.value(z) - mean).powi(2), &breaks);
    let std = var.sqrt();
    if std.is_nan() || std <= 1e-300 || !std.is_finite() {
        return Err(Error::Invalid {
            what: phi.act.name().into(),
            message: format!("φ(z) has standard deviation {std} under N(0, 1): nothing to scale"),
            hint: "a = 0 makes φ constant; use a nonzero a".into(),
        });
    }
    Ok(Calibration {
        mean,
        std,
        lambda: 1.0 / std,
        gamma: 1.0 / std,
    })
}

/// The four Gaussian constants `(P, A, S, B)` of the ELU family (module docs), in closed form.
pub fn elu_constants_closed() -> [f64; 4] {
    let e_half = 0.5f64.exp();
    let (phi1, phi2) = (normal_cdf(-1.0), normal_cdf(-2.0));
    [
        INV_SQRT_2PI,
        e_half * phi1 - 0.5,
        0.5,
        (2.0f64).exp() * phi2 - 2.0 * e_half * phi1 + 0.5,
    ]
}

/// The same four constants by quadrature (split at the kink), for cross-checking.
pub fn elu_constants_quadrature() -> [f64; 4] {
    let r = Piecewise::default();
    let pos = |z: f64| if z > 0.0 { z } else { 0.0 };
    let neg = |z: f64| if z < 0.0 { z.exp_m1() } else { 0.0 };
    [
        r.expect(pos, &[0.0]),
        r.expect(neg, &[0.0]),
        r.expect(|z| pos(z).powi(2), &[0.0]),
        r.expect(|z| neg(z).powi(2), &[0.0]),
    ]
}

/// `(α, λ)` of SELU: 2-D Newton on `λ(P + αA) = 0`, `λ²(S + α²B) = 1` from `(α, λ) = (1, 1)`.
/// Converges quadratically (≤ 10 steps); errors if it does not.
pub fn selu_alpha_lambda(consts: [f64; 4]) -> Result<(f64, f64), Error> {
    let [p, a, s, b] = consts;
    let (mut al, mut la) = (1.0f64, 1.0f64);
    for _ in 0..100 {
        let r1 = la * (p + al * a);
        let r2 = la * la * (s + al * al * b) - 1.0;
        // Jacobian [[∂r1/∂α, ∂r1/∂λ], [∂r2/∂α, ∂r2/∂λ]].
        let (j11, j12) = (la * a, p + al * a);
        let (j21, j22) = (2.0 * la * la * al * b, 2.0 * la * (s + al * al * b));
        let det = j11 * j22 - j12 * j21;
        if det == 0.0 || !det.is_finite() {
            break;
        }
        let da = (r1 * j22 - r2 * j12) / det;
        let dl = (j11 * r2 - j21 * r1) / det;
        al -= da;
        la -= dl;
        if da.abs() <= 1e-16 * al.abs() && dl.abs() <= 1e-16 * la.abs() {
            return Ok((al, la));
        }
        if r1 == 0.0 && r2 == 0.0 {
            return Ok((al, la));
        }
    }
    // Newton can stall one ulp short of its stopping rule; accept a tiny residual.
    let r1 = la * (p + al * a);
    let r2 = la * la * (s + al * al * b) - 1.0;
    if r1.abs() < 1e-14 && r2.abs() < 1e-14 {
        return Ok((al, la));
    }
    Err(Error::Invalid {
        what: "selu".into(),
        message: format!("Newton did not converge (α = {al}, λ = {la})"),
        hint: "the ELU constants must be finite".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::activation::{Activation, SELU_ALPHA, SELU_LAMBDA};
    use std::f64::consts::PI;

    /// Klambauer et al. 2017's constants (also `torch.nn.SELU`'s), to 1e-12, by Newton on the
    /// closed-form constants and on the quadrature ones; and the closed form `α = −P/A`.
    #[test]
    fn selu_constants_are_reproduced() {
        let closed = elu_constants_closed();
        let quad = elu_constants_quadrature();
        for (c, q) in closed.iter().zip(&quad) {
            assert!((c - q).abs() < 1e-14, "closed {c} vs quadrature {q}");
        }
        for consts in [closed, quad] {
            let (al, la) = selu_alpha_lambda(consts).unwrap();
            assert!((al - 1.6732632423543772).abs() < 1e-12, "α = {al}");
            assert!((la - 1.0507009873554804).abs() < 1e-12, "λ = {la}");
        }
        let [p, a, s, b] = closed;
        let al = -p / a;
        assert!((al - SELU_ALPHA).abs() < 1e-12);
        assert!(((s + al * al * b).powf(-0.5) - SELU_LAMBDA).abs() < 1e-12);
    }

    /// SELU itself is self-normalizing: mean 0, std 1 under N(0, 1), so λ = 1 and μ = 0.
    #[test]
    fn selu_is_already_calibrated() {
        let c = self_normalize(Phi::plain(Activation::Selu)).unwrap();
        assert!(c.mean.abs() < 1e-12, "μ {}", c.mean);
        assert!((c.lambda - 1.0).abs() < 1e-12, "λ {}", c.lambda);
    }

    /// Relu: μ = 1/√(2π), std² = 1/2 − 1/(2π) (half-normal moments), γ = 1/std. (The NF-Net
    /// code's sampled γ = 1.7139588594436646 is 1.1e-3 above the exact 1.7128585504….)
    #[test]
    fn relu_calibration_closed_form() {
        let c = self_normalize(Phi::plain(Activation::Relu)).unwrap();
        assert!((c.mean - 1.0 / (2.0 * PI).sqrt()).abs() < 1e-13);
        assert!((c.std.powi(2) - (0.5 - 0.5 / PI)).abs() < 1e-13);
        assert!(
            (c.gamma - (0.5 - 0.5 / PI).powf(-0.5)).abs() < 1e-12,
            "γ {}",
            c.gamma
        );
        // tanh is odd: μ = 0.
        let t = self_normalize(Phi::plain(Activation::Tanh)).unwrap();
        assert!(t.mean.abs() < 1e-15);
        // a = 0 makes φ constant: an error, not a NaN.
        let mut p = Phi::plain(Activation::Tanh);
        p.a = 0.0;
        assert!(self_normalize(p).is_err());
    }
}
