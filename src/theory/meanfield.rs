//! Mean-field signal propagation through a deep random MLP at initialization (Poole et al. 2016,
//! "Exponential expressivity in deep neural networks through transient chaos"; Schoenholz et al.
//! 2017, "Deep Information Propagation").
//!
//! The network: `h^l = W^l φ(h^{l−1}) + b^l`, `W_ij ~ N(0, σ_w²/N)`, `b_i ~ N(0, σ_b²)`, with the
//! biased activation `φ(x) = a·f(x − b) + c` of the zoo. In the infinite-width limit:
//!
//! - length map (Poole eq. 3): `q^l = σ_w² E[φ(√q^{l−1} z)²] + σ_b²` — the second moment of `φ`,
//!   not its variance: a nonzero Gaussian mean of `φ` feeds `q` too;
//! - correlation map (Poole eq. 5): `c^l = (σ_w² E[φ(u₁)φ(u₂)] + σ_b²)/q*`,
//!   `u₁ = √q* z₁`, `u₂ = √q* (c z₁ + √(1−c²) z₂)`;
//! - `χ₁ = σ_w² E[φ′(√q* z)²]` (Poole eq. 7), the slope of the correlation map at `c = 1` and the
//!   mean squared singular value of the layer Jacobian: `χ₁ < 1` ordered, `> 1` chaotic;
//! - `χ_c = σ_w² E[φ′(u₁)φ′(u₂)]` at `c*` (Schoenholz eq. 5; Price's theorem makes it the exact
//!   slope of the correlation map, no finite difference), equal to `χ₁` at `c* = 1`;
//! - depth scales (Schoenholz eqs. 7–9): `ξ_q = −1/ln(∂q^l/∂q^{l−1} at q*)`,
//!   `ξ_c = −1/ln χ_c`, `ξ_∇ = −1/ln χ₁`.
//!
//! All integrals use [`Piecewise`] with the relu-family kink of `φ(√q z)` at `z = b/√q` as a
//! break (see `gauss.rs` for the accuracy).
//!
//! **Degenerate fixed points.** `q* = 0` (e.g. tanh at `σ_b² = 0`, `σ_w² ≤ 1`) and `q* = ∞`
//! (an unbounded `φ` that grows without limit, e.g. relu at `σ_w² > 2`) are reported as such;
//! the quantities at `q*` (`χ₁`, `c*`, `χ_c`) are then their limits `q → 0⁺` and `q → ∞`,
//! evaluated at `q = 1e-24` and `q = 1e12`. So relu at `σ_b² = 0` gets `χ₁ = σ_w²/2` on both
//! sides of its critical point, as it should (the relu maps are scale-free).
//!
//! **Depth scales at criticality.** A slope of exactly 1 gives `ξ = +∞`; a slope above 1 gives a
//! negative `ξ` (the quantity grows, `|ξ|` layers per e-fold); a slope ≤ 0 or NaN gives NaN.

use crate::nn::activation::Activation;
use crate::theory::gauss::Piecewise;
use crate::Error;

/// Where the `q → 0⁺` and `q → ∞` limits are evaluated (see the module docs).
pub const Q_FLOOR: f64 = 1e-24;
pub const Q_CEIL: f64 = 1e12;

/// `φ(x) = a·f(x − b) + c`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phi {
    pub act: Activation,
    pub a: f64,
    pub b: f64,
    pub c: f64,
}

impl Phi {
    pub fn plain(act: Activation) -> Self {
        Phi {
            act,
            a: 1.0,
            b: 0.0,
            c: 0.0,
        }
    }

    #[inline]
    pub fn value(&self, x: f64) -> f64 {
        self.a * self.act.eval(x - self.b) + self.c
    }

    #[inline]
    pub fn slope(&self, x: f64) -> f64 {
        self.a * self.act.slope(x - self.b)
    }

    /// The kink of the relu family sits at `x − b = 0`; smooth activations have none.
    pub fn kink(&self) -> Option<f64> {
        match self.act {
            Activation::Relu | Activation::LeakyRelu | Activation::Elu | Activation::Selu => {
                Some(self.b)
            }
            _ => None,
        }
    }
}

/// The mean-field maps of one `(φ, σ_w², σ_b²)`.
#[derive(Clone, Debug)]
pub struct MeanField {
    pub phi: Phi,
    pub sigma_w2: f64,
    pub sigma_b2: f64,
    rule: Piecewise,
}

/// Everything [`MeanField::analyze`] reports at the fixed point.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// `0`, finite, or `+∞` (see the module docs).
    pub q_star: f64,
    /// Slope of the length map at `q*`.
    pub q_slope: f64,
    pub c_star: f64,
    pub chi1: f64,
    pub chi_c: f64,
    pub xi_q: f64,
    pub xi_c: f64,
    pub xi_grad: f64,
    pub phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Ordered,
    Critical,
    Chaotic,
}

impl Phase {
    /// `|χ₁ − 1| ≤ 1e-9` counts as critical (the integrals are good to ~1e-13, the root-finding
    /// to ~1e-12).
    pub fn of(chi1: f64) -> Self {
        if (chi1 - 1.0).abs() <= 1e-9 {
            Phase::Critical
        } else if chi1 < 1.0 {
            Phase::Ordered
        } else {
            Phase::Chaotic
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Ordered => "ordered",
            Phase::Critical => "critical",
            Phase::Chaotic => "chaotic",
        }
    }
}

/// `ξ = −1/ln(χ)`, with `χ ≤ 0` or NaN → NaN, and `+∞` at criticality: `|χ − 1| ≤ 1e-9`, the
/// tolerance [`Phase::of`] calls critical (the integrals are good to ~1e-13, so a slope of
/// 1 ± 1e-16 is 1, and `−1/ln` of it, ±4.5e15, would be noise printed as a depth).
pub fn depth_scale(chi: f64) -> f64 {
    if chi.is_nan() || chi <= 0.0 {
        return f64::NAN;
    }
    if (chi - 1.0).abs() <= 1e-9 {
        return f64::INFINITY;
    }
    -1.0 / chi.ln()
}

fn check(what: &str, v: f64, nonneg: bool) -> Result<(), Error> {
    if !v.is_finite() || (nonneg && v < 0.0) {
        return Err(Error::Invalid {
            what: what.into(),
            message: format!(
                "must be a finite number{}, got {v}",
                if nonneg { " ≥ 0" } else { "" }
            ),
            hint: "σ_w² and σ_b² are variances (≥ 0); a, b, c are any finite numbers".into(),
        });
    }
    Ok(())
}

impl MeanField {
    /// Checks that every parameter is finite and the variances are ≥ 0.
    pub fn new(phi: Phi, sigma_w2: f64, sigma_b2: f64) -> Result<Self, Error> {
        check("a", phi.a, false)?;
        check("b", phi.b, false)?;
        check("c", phi.c, false)?;
        check("sigma_w2", sigma_w2, true)?;
        check("sigma_b2", sigma_b2, true)?;
        Ok(MeanField {
            phi,
            sigma_w2,
            sigma_b2,
            rule: Piecewise::default(),
        })
    }

    /// The kink of `φ(√q z)` in `z`, as a break list.
    fn breaks(&self, q: f64) -> Vec<f64> {
        match self.phi.kink() {
            Some(b) if q > 0.0 => vec![b / q.sqrt()],
            _ => vec![],
        }
    }

    /// `E[g(√q z)]`; at `q = 0` exactly, `g(0)`.
    fn gauss1(&self, q: f64, g: impl Fn(f64) -> f64) -> f64 {
        if q == 0.0 {
            return g(0.0);
        }
        let s = q.sqrt();
        self.rule.expect(|z| g(s * z), &self.breaks(q))
    }

    /// Length map `q ↦ σ_w² E[φ(√q z)²] + σ_b²` (Poole et al. 2016, eq. 3).
    pub fn length_map(&self, q: f64) -> f64 {
        self.sigma_w2 * self.gauss1(q, |u| self.phi.value(u).powi(2)) + self.sigma_b2
    }

    /// `d q^l / d q^{l−1}` at `q`, by Stein's lemma: `d/dq E[φ(√q z)²] = E[z φ(√q z) φ′(√q z)]/√q`
    /// (only `φ′` needed, so the relu family's delta-function `φ″` never appears). Evaluated at
    /// `max(q, Q_FLOOR)`, so `q = 0` gives the `q → 0⁺` limit.
    pub fn length_slope(&self, q: f64) -> f64 {
        let q = q.max(Q_FLOOR);
        let s = q.sqrt();
        let e = self.rule.expect(
            |z| {
                let u = s * z;
                z * self.phi.value(u) * self.phi.slope(u)
            },
            &self.breaks(q),
        );
        self.sigma_w2 * e / s
    }

    /// `[q0, L(q0), L(L(q0)), …]`, `depth + 1` entries.
    pub fn q_sequence(&self, q0: f64, depth: usize) -> Vec<f64> {
        let mut v = Vec::with_capacity(depth + 1);
        let mut q = q0;
        v.push(q);
        for _ in 0..depth {
            q = self.length_map(q);
            v.push(q);
        }
        v
    }

    /// The stable fixed point of the length map: `0`, finite, or `+∞`.
    ///
    /// `g(q) = L(q) − q` has `g(0) = σ_w² φ(0)² + σ_b² ≥ 0`. If `g(0) = 0` and the slope at
    /// `0⁺` is ≤ 1, `q* = 0`. Otherwise `q*` is the first downward zero crossing of `g` on a
    /// log grid `1e-16 … 1e16` (8 points a decade), refined by Brent; none means `L(q) > q`
    /// everywhere: `q* = +∞`. For the monotone maps of the zoo the stable fixed point is unique,
    /// so "first" loses nothing.
    pub fn q_star(&self) -> f64 {
        let g = |q: f64| self.length_map(q) - q;
        let g0 = g(0.0);
        if g0 == 0.0 && self.length_slope(0.0) <= 1.0 {
            return 0.0;
        }
        let mut prev = 0.0;
        for k in 0..=256 {
            let q = 1e-16 * 10f64.powf(k as f64 / 8.0);
            let gq = g(q);
            if gq == 0.0 {
                return q;
            }
            if gq < 0.0 {
                return brent(g, prev, q, 1e-15).unwrap_or(q);
            }
            prev = q;
        }
        f64::INFINITY
    }

    /// Where the quantities "at q*" are evaluated (see the module docs).
    fn q_eval(q_star: f64) -> f64 {
        q_star.clamp(Q_FLOOR, Q_CEIL)
    }

    /// `χ₁ = σ_w² E[φ′(√q z)²]` at `q` (Poole et al. 2016, eq. 7).
    pub fn chi1_at(&self, q: f64) -> f64 {
        self.sigma_w2 * self.gauss1(q.max(Q_FLOOR), |u| self.phi.slope(u).powi(2))
    }

    /// `E[g(u₁, u₂)]`, `u₁ = √q z₁`, `u₂ = √q (c z₁ + √(1−c²) z₂)`, split at the kinks of both
    /// factors: `z₁ = k` and `z₁ = k/c` (where the inner integral's smoothed kink sits as
    /// `c → 1`) outside, `z₂ = (k − c z₁)/√(1−c²)` inside, `k = b/√q`.
    fn gauss2(&self, q: f64, c: f64, g: impl Fn(f64, f64) -> f64) -> f64 {
        let s = q.sqrt();
        let c = c.clamp(-1.0, 1.0);
        let r = (1.0 - c * c).sqrt();
        let kink = self.phi.kink().map(|b| b / s);
        let mut outer = vec![];
        if let Some(k) = kink {
            outer.push(k);
            if c != 0.0 {
                // The inner integral smooths the kink of φ(u₂) over a width r/|c| around
                // z₁ = k/c; as c → ±1 that is a near-kink, so grade the panels towards it.
                let kc = k / c;
                outer.push(kc);
                let mut d = r / c.abs();
                while d > 0.0 && d < 1.0 {
                    outer.push(kc - d);
                    outer.push(kc + d);
                    d *= 2.0;
                }
            }
        }
        self.rule.expect2(
            |z1, z2| g(s * z1, s * (c * z1 + r * z2)),
            &outer,
            |z1| match kink {
                Some(k) if r > 0.0 => vec![(k - c * z1) / r],
                _ => vec![],
            },
        )
    }

    /// Correlation map `c ↦ (σ_w² E[φ(u₁)φ(u₂)] + σ_b²)/L(q)` at the length `q` (Poole et al.
    /// 2016, eq. 5; dividing by `L(q)` rather than `q` makes `c = 1` a fixed point even at the
    /// limit points `Q_FLOOR`, `Q_CEIL`; at a true fixed point `L(q*) = q*`).
    pub fn corr_map(&self, q: f64, c: f64) -> f64 {
        let q = Self::q_eval(q);
        let e = self.gauss2(q, c, |u1, u2| self.phi.value(u1) * self.phi.value(u2));
        (self.sigma_w2 * e + self.sigma_b2) / self.length_map(q)
    }

    /// Slope of the correlation map at `c`: `σ_w² q E[φ′(u₁)φ′(u₂)]/L(q)` (Price's theorem:
    /// `∂E[φ(u₁)φ(u₂)]/∂Cov(u₁,u₂) = E[φ′(u₁)φ′(u₂)]`); at `q = q*` this is Schoenholz et al.
    /// 2017 eq. 5's `χ_c`.
    pub fn corr_slope(&self, q: f64, c: f64) -> f64 {
        let q = Self::q_eval(q);
        let e = self.gauss2(q, c, |u1, u2| self.phi.slope(u1) * self.phi.slope(u2));
        self.sigma_w2 * q * e / self.length_map(q)
    }

    /// The stable fixed point of the correlation map at length `q*`, given the map's slope at
    /// `c = 1` (`χ₁` at a true fixed point `q*`; see [`Self::analyze`]).
    ///
    /// `M(c) = Σ_k a_k c^k` with `a_k ≥ 0` (Hermite expansion at equal lengths), so `M` is convex
    /// and increasing on `[0, 1]`, `M(1) = 1`, `M(0) ≥ 0`. Hence: if `χ₁ ≤ 1`, `c* = 1` is the
    /// only fixed point there and it is stable; if `χ₁ > 1`, `c = 1` is unstable and the one
    /// other fixed point in `[0, 1)` (Brent on `M(c) − c`) is stable.
    pub fn c_star(&self, q_star: f64, slope_at_one: f64) -> f64 {
        if slope_at_one <= 1.0 {
            return 1.0;
        }
        let h = |c: f64| self.corr_map(q_star, c) - c;
        let h0 = h(0.0);
        if h0 <= 0.0 {
            return 0.0;
        }
        // M(1 − δ) − (1 − δ) ≈ −δ(χ₁ − 1) < 0; if the integrals cannot resolve that sign,
        // c* is within ~δ of 1.
        let hi = 1.0 - 1e-6;
        if h(hi) >= 0.0 {
            return 1.0;
        }
        brent(h, 0.0, hi, 1e-14).unwrap_or(f64::NAN)
    }

    /// `q*`, `c*`, `χ₁`, `χ_c`, and the depth scales.
    pub fn analyze(&self) -> Analysis {
        let q_star = self.q_star();
        let q = Self::q_eval(q_star);
        let chi1 = self.chi1_at(q);
        let q_slope = self.length_slope(q);
        // The correlation map's slope at c = 1 equals χ₁ only at a true fixed point
        // L(q*) = q*. At a degenerate q* (0 or ∞) the limit maps differ: relu at σ_b² = 0,
        // σ_w² > 2 has the σ_w²-free arc-cosine map with slope 1 at c = 1, and tanh as q → 0
        // is linear (c ↦ c); there the slope is computed, not taken from χ₁.
        let degenerate = !q_star.is_finite() || q_star <= 0.0;
        let slope1 = if degenerate {
            self.corr_slope(q_star, 1.0)
        } else {
            chi1
        };
        let c_star = self.c_star(q_star, slope1);
        let chi_c = if c_star == 1.0 {
            slope1
        } else {
            self.corr_slope(q_star, c_star)
        };
        Analysis {
            q_star,
            q_slope,
            c_star,
            chi1,
            chi_c,
            xi_q: depth_scale(q_slope),
            xi_c: depth_scale(chi_c),
            xi_grad: depth_scale(chi1),
            phase: Phase::of(chi1),
        }
    }

    /// `χ₁` at this point's own `q*` (cheaper than [`Self::analyze`]: no correlation map).
    pub fn chi1(&self) -> f64 {
        self.chi1_at(Self::q_eval(self.q_star()))
    }
}

/// The critical `σ_w²` at `σ_b²`: the root of `χ₁(σ_w², σ_b²) = 1` (Brent), bracketed by the
/// first sign change on a log grid of `σ_w²` from 1e-3 to 1e3 (8 points a decade). `None` when
/// `χ₁ − 1` keeps one sign there.
pub fn critical_sigma_w2(phi: Phi, sigma_b2: f64) -> Result<Option<f64>, Error> {
    MeanField::new(phi, 1.0, sigma_b2)?;
    let f = |w2: f64| match MeanField::new(phi, w2, sigma_b2) {
        Ok(m) => m.chi1() - 1.0,
        Err(_) => f64::NAN,
    };
    let mut prev = (1e-3, f(1e-3));
    for k in 1..=48 {
        let w2 = 1e-3 * 10f64.powf(k as f64 / 8.0);
        let fw = f(w2);
        if fw == 0.0 {
            return Ok(Some(w2));
        }
        if fw.signum() != prev.1.signum() && prev.1.is_finite() && fw.is_finite() {
            return Ok(brent(f, prev.0, w2, 1e-13));
        }
        prev = (w2, fw);
    }
    Ok(None)
}

/// One cell of a phase diagram.
#[derive(Clone, Debug)]
pub struct PhaseRow {
    pub sigma_w2: f64,
    pub sigma_b2: f64,
    pub q_star: f64,
    pub chi1: f64,
    pub phase: Phase,
}

/// `χ₁` and the phase over the grid `sigma_w2s × sigma_b2s`, σ_b² varying fastest.
pub fn phase_diagram(
    phi: Phi,
    sigma_w2s: &[f64],
    sigma_b2s: &[f64],
) -> Result<Vec<PhaseRow>, Error> {
    let mut rows = Vec::with_capacity(sigma_w2s.len() * sigma_b2s.len());
    for &w2 in sigma_w2s {
        for &b2 in sigma_b2s {
            let m = MeanField::new(phi, w2, b2)?;
            let q_star = m.q_star();
            let chi1 = m.chi1_at(MeanField::q_eval(q_star));
            rows.push(PhaseRow {
                sigma_w2: w2,
                sigma_b2: b2,
                q_star,
                chi1,
                phase: Phase::of(chi1),
            });
        }
    }
    Ok(rows)
}

/// Brent's root finder (Brent 1973, ch. 4; the `zbrent` of *Numerical Recipes*): `None` unless
/// `f(a)` and `f(b)` bracket a root. `tol` is the absolute tolerance on the root.
pub fn brent(f: impl Fn(f64) -> f64, a: f64, b: f64, tol: f64) -> Option<f64> {
    let (mut a, mut b) = (a, b);
    let (mut fa, mut fb) = (f(a), f(b));
    if !(fa.is_finite() && fb.is_finite()) || fa * fb > 0.0 {
        return None;
    }
    if fa == 0.0 {
        return Some(a);
    }
    let (mut c, mut fc) = (b, fb);
    let (mut d, mut e) = (b - a, b - a);
    for _ in 0..200 {
        if (fb > 0.0) == (fc > 0.0) {
            c = a;
            fc = fa;
            d = b - a;
            e = d;
        }
        if fc.abs() < fb.abs() {
            a = b;
            b = c;
            c = a;
            fa = fb;
            fb = fc;
            fc = fa;
        }
        let tol1 = 2.0 * f64::EPSILON * b.abs() + 0.5 * tol;
        let xm = 0.5 * (c - b);
        if xm.abs() <= tol1 || fb == 0.0 {
            return Some(b);
        }
        if e.abs() >= tol1 && fa.abs() > fb.abs() {
            let s = fb / fa;
            let (mut p, mut q);
            if a == c {
                p = 2.0 * xm * s;
                q = 1.0 - s;
            } else {
                let qq = fa / fc;
                let r = fb / fc;
                p = s * (2.0 * xm * qq * (qq - r) - (b - a) * (r - 1.0));
                q = (qq - 1.0) * (r - 1.0) * (s - 1.0);
            }
            if p > 0.0 {
                q = -q;
            }
            p = p.abs();
            let min1 = 3.0 * xm * q - (tol1 * q).abs();
            let min2 = (e * q).abs();
            if 2.0 * p < min1.min(min2) {
                e = d;
                d = p / q;
            } else {
                d = xm;
                e = d;
            }
        } else {
            d = xm;
            e = d;
        }
        a = b;
        fa = fb;
        b += if d.abs() > tol1 { d } else { tol1.copysign(xm) };
        fb = f(b);
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::theory::gauss::{normal_cdf, normal_pdf};
    use std::f64::consts::PI;

    fn mf(act: Activation, w2: f64, b2: f64) -> MeanField {
        MeanField::new(Phi::plain(act), w2, b2).unwrap()
    }

    #[test]
    fn brent_finds_a_known_root() {
        let r = brent(|x| x * x - 2.0, 0.0, 2.0, 1e-15).unwrap();
        assert!((r - 2f64.sqrt()).abs() < 1e-14);
        assert!(brent(|x| x * x + 1.0, 0.0, 2.0, 1e-15).is_none());
    }

    /// Relu: `E[relu(√q z)²] = q/2`, so `L(q) = σ_w² q/2 + σ_b²`: `q* = σ_b²/(1 − σ_w²/2)`,
    /// `χ₁ = σ_w²·P(z > 0) = σ_w²/2`, length-map slope `σ_w²/2`.
    #[test]
    fn relu_closed_forms() {
        let m = mf(Activation::Relu, 1.5, 0.1);
        let a = m.analyze();
        let q_want = 0.1 / (1.0 - 0.75);
        assert!((a.q_star - q_want).abs() < 1e-12, "q* {}", a.q_star);
        assert!((a.chi1 - 0.75).abs() < 1e-13, "χ₁ {}", a.chi1);
        assert!((a.q_slope - 0.75).abs() < 1e-12, "slope {}", a.q_slope);
        assert_eq!(a.c_star, 1.0);
        assert_eq!(a.phase, Phase::Ordered);
        // Above the critical point with σ_b² = 0, q grows without bound; the correlation map is
        // then the σ_w²-free arc-cosine map, whose slope at c = 1 is (π − 0)/(2π)·2 = 1.
        let a = mf(Activation::Relu, 2.5, 0.0).analyze();
        assert_eq!(a.q_star, f64::INFINITY);
        assert!((a.chi1 - 1.25).abs() < 1e-13);
        assert_eq!(a.c_star, 1.0);
        assert!((a.chi_c - 1.0).abs() < 1e-12, "χ_c {}", a.chi_c);
        // Critical point σ_w² = 2 at σ_b² = 0 (and at every σ_b², relu's χ₁ is σ_w²/2).
        for b2 in [0.0, 0.3] {
            let w2 = critical_sigma_w2(Phi::plain(Activation::Relu), b2)
                .unwrap()
                .unwrap();
            assert!((w2 - 2.0).abs() < 1e-10, "σ_b²={b2}: critical σ_w² = {w2}");
        }
    }

    /// The relu correlation map is the arc-cosine kernel (Cho & Saul 2009):
    /// `E[relu(u₁)relu(u₂)] = q (sin θ + (π − θ) cos θ)/(2π)` and
    /// `E[1{u₁>0}1{u₂>0}] = (π − θ)/(2π)`, `θ = arccos c`. With σ_b² = 0 the map is
    /// `c ↦ σ_w²·that/(σ_w² q/2)`, independent of σ_w².
    #[test]
    fn relu_correlation_map_is_the_arccos_kernel() {
        let m = mf(Activation::Relu, 1.7, 0.0);
        let q = 0.8;
        for c in [-0.9, -0.3, 0.0, 0.4, 0.95, 0.999] {
            let th = f64::acos(c);
            let want = (th.sin() + (PI - th) * c) / PI;
            let got = m.corr_map(q, c);
            assert!((got - want).abs() < 1e-12, "c={c}: {got} vs {want}");
            let slope_want = 1.7 * q * (PI - th) / (2.0 * PI) / (1.7 * q / 2.0);
            let slope = m.corr_slope(q, c);
            assert!(
                (slope - slope_want).abs() < 1e-12,
                "c={c}: {slope} vs {slope_want}"
            );
        }
    }

    /// tanh at σ_b² = 0: `q* = 0` for σ_w² ≤ 1 with `χ₁ = σ_w² tanh′(0)² = σ_w²`; the critical
    /// point is σ_w² = 1 (Poole et al. 2016, Fig. 1).
    #[test]
    fn tanh_critical_point_at_zero_bias() {
        let a = mf(Activation::Tanh, 0.7, 0.0).analyze();
        assert_eq!(a.q_star, 0.0);
        assert!((a.chi1 - 0.7).abs() < 1e-12, "χ₁ {}", a.chi1);
        assert_eq!(a.c_star, 1.0);
        let w2 = critical_sigma_w2(Phi::plain(Activation::Tanh), 0.0)
            .unwrap()
            .unwrap();
        // χ₁ − 1 is linear below σ_w² = 1 but only quadratic above (q* ≈ (σ_w² − 1)/2 cancels
        // the first order), so the root is flat on one side: 1e-6 is what Brent resolves.
        assert!((w2 - 1.0).abs() < 1e-6, "critical σ_w² = {w2}");
        // Chaotic side: q* > 0, c* = 0 (odd φ, σ_b² = 0 ⇒ M(0) = 0), χ₁ > 1.
        let a = mf(Activation::Tanh, 2.0, 0.0).analyze();
        assert!(a.q_star > 0.1 && a.chi1 > 1.0, "{a:?}");
        assert!(a.c_star.abs() < 1e-12, "c* {}", a.c_star);
        assert_eq!(a.phase, Phase::Chaotic);
    }

    /// The fixed point really is one: `L(q*) = q*`, `M(c*) = c*`; `χ_c < 1` at the stable `c*`;
    /// and `χ_c` agrees with a central difference of the correlation map.
    #[test]
    fn tanh_chaotic_fixed_points_are_consistent() {
        let m = mf(Activation::Tanh, 2.5, 0.05);
        let a = m.analyze();
        assert!((m.length_map(a.q_star) - a.q_star).abs() < 1e-13);
        assert!(a.c_star > 0.0 && a.c_star < 1.0, "c* {}", a.c_star);
        assert!((m.corr_map(a.q_star, a.c_star) - a.c_star).abs() < 1e-12);
        assert!(a.chi_c < 1.0 && a.chi1 > 1.0, "{a:?}");
        let h = 1e-5;
        let fd =
            (m.corr_map(a.q_star, a.c_star + h) - m.corr_map(a.q_star, a.c_star - h)) / (2.0 * h);
        assert!((fd - a.chi_c).abs() < 1e-8, "fd {fd} vs χ_c {}", a.chi_c);
        // Length-map slope vs a central difference.
        let fd = (m.length_map(a.q_star + h) - m.length_map(a.q_star - h)) / (2.0 * h);
        assert!(
            (fd - a.q_slope).abs() < 1e-8,
            "fd {fd} vs slope {}",
            a.q_slope
        );
        assert!(a.xi_c > 0.0 && a.xi_grad < 0.0 && a.xi_q > 0.0);
    }

    /// A biased relu `φ(x) = 1.3·relu(x − 0.4) + 0.2` against the closed forms of the truncated
    /// normal: with `s = √q`, `t = b/s`, `E[(sz − b)₊] = sφ(t) − bΦ(−t)`,
    /// `E[(sz − b)₊²] = (s² + b²)Φ(−t) − bsφ(t)`, so
    /// `E[φ²] = a²E[(·)₊²] + 2acE[(·)₊] + c²` and `χ₁ = σ_w² a² Φ(−t)`. The fixed point is found
    /// independently by Brent on the closed-form length map.
    #[test]
    fn biased_relu_matches_truncated_normal_closed_forms() {
        let (a, b, c) = (1.3, 0.4, 0.2);
        let (w2, b2) = (0.9, 0.05);
        let m = MeanField::new(
            Phi {
                act: Activation::Relu,
                a,
                b,
                c,
            },
            w2,
            b2,
        )
        .unwrap();
        let closed = |q: f64| {
            let s = q.sqrt();
            let t = b / s;
            let m1 = s * normal_pdf(t) - b * normal_cdf(-t);
            let m2 = (s * s + b * b) * normal_cdf(-t) - b * s * normal_pdf(t);
            w2 * (a * a * m2 + 2.0 * a * c * m1 + c * c) + b2
        };
        for q in [0.01, 0.3, 1.0, 4.0] {
            assert!((m.length_map(q) - closed(q)).abs() < 1e-13, "q={q}");
        }
        let q_want = brent(|q| closed(q) - q, 1e-6, 100.0, 1e-15).unwrap();
        let an = m.analyze();
        assert!(
            (an.q_star - q_want).abs() < 1e-12,
            "{} vs {q_want}",
            an.q_star
        );
        let chi_want = w2 * a * a * normal_cdf(-b / q_want.sqrt());
        assert!(
            (an.chi1 - chi_want).abs() < 1e-12,
            "{} vs {chi_want}",
            an.chi1
        );
    }

    /// relu at σ_w² = 2, σ_b² = 0 (He et al. 2015's initialization) is critical: the length map
    /// is the identity, so every depth scale is infinite, never ±4.5e15 from rounding.
    #[test]
    fn relu_at_he_criticality_has_infinite_depth_scales() {
        let a = mf(Activation::Relu, 2.0, 0.0).analyze();
        assert_eq!(a.phase, Phase::Critical);
        assert_eq!(
            (a.xi_q, a.xi_c, a.xi_grad),
            (f64::INFINITY, f64::INFINITY, f64::INFINITY)
        );
        let m = mf(Activation::Relu, 2.0, 0.0);
        for q in [0.5, 1.0, 3.0] {
            assert!((m.length_map(q) - q).abs() < 1e-12 * q);
        }
    }

    #[test]
    fn depth_scales_at_the_edges() {
        assert_eq!(depth_scale(1.0), f64::INFINITY);
        assert_eq!(depth_scale(1.0 + 2e-16), f64::INFINITY);
        assert_eq!(depth_scale(1.0 - 1.1e-16), f64::INFINITY);
        assert!(depth_scale(0.0).is_nan());
        assert!(depth_scale(f64::NAN).is_nan());
        assert!((depth_scale((-0.1f64).exp()) - 10.0).abs() < 1e-12);
        assert!(depth_scale(2.0) < 0.0);
    }

    #[test]
    fn phase_diagram_labels_both_sides() {
        let rows = phase_diagram(Phi::plain(Activation::Tanh), &[0.5, 3.0], &[0.0, 0.05]).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].phase, Phase::Ordered);
        assert_eq!(rows[3].phase, Phase::Chaotic);
        assert!(MeanField::new(Phi::plain(Activation::Tanh), -1.0, 0.0).is_err());
        assert!(MeanField::new(Phi::plain(Activation::Tanh), 1.0, f64::NAN).is_err());
    }

    /// Every activation of the zoo runs through `analyze` without panicking, and `L(q*) = q*`
    /// wherever `q*` is finite and positive.
    #[test]
    fn every_activation_has_consistent_fixed_points() {
        for act in Activation::ALL {
            let m = mf(act, 1.5, 0.1);
            let a = m.analyze();
            if a.q_star.is_finite() && a.q_star > 0.0 {
                let r = (m.length_map(a.q_star) - a.q_star).abs() / a.q_star;
                assert!(r < 1e-12, "{}: residual {r}", act.name());
            }
            assert!(a.chi1.is_finite(), "{}: {a:?}", act.name());
        }
    }
}
