//! Weight initialization schemes. Weights are drawn in f64 from the run's "init" stream and then
//! cast, so an f32 and an f64 model of the same spec start from the same numbers (up to rounding).

use serde::{Deserialize, Serialize};

use crate::engine::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// `torch.nn.Linear`'s own default: `kaiming_uniform_(a=√5)`, i.e. `U(±1/√fan_in)`, and
    /// biases `U(±1/√fan_in)`.
    Pytorch,
    /// `torch.nn.init.xavier_normal_`: `N(0, 2/(fan_in + fan_out))` (Glorot & Bengio 2010).
    XavierNormal,
    /// `torch.nn.init.xavier_uniform_`: `U(±√(6/(fan_in + fan_out)))`.
    XavierUniform,
    /// LeCun normal: `N(0, 1/fan_in)` (LeCun et al. 1998; untruncated, unlike JAX's).
    LecunNormal,
    /// LeCun uniform: `U(±√(3/fan_in))`.
    LecunUniform,
    /// `torch.nn.init.kaiming_normal_(nonlinearity="relu")`: `N(0, 2/fan)` (He et al. 2015).
    HeNormal,
    /// `torch.nn.init.kaiming_uniform_(nonlinearity="relu")`: `U(±√(6/fan))`.
    HeUniform,
    /// `torch.nn.init.orthogonal_`: a Haar-random (semi-)orthogonal matrix, gain = `init_scale`.
    Orthogonal,
    /// Mean-field parameters given directly: `W ~ N(0, σ_w²/fan_in)`, `b ~ N(0, σ_b²)`
    /// (Poole et al. 2016).
    MeanField,
}

/// Which fan the He (Kaiming) schemes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanMode {
    /// Preserves the forward signal's variance.
    FanIn,
    /// Preserves the backward gradient's variance.
    FanOut,
}

/// Everything an initializer needs besides the shape.
#[derive(Clone, Copy, Debug)]
pub struct InitParams {
    pub init: Init,
    pub fan_mode: FanMode,
    /// Multiplies every weight (not biases): the global init scale.
    pub scale: f64,
    pub sigma_w: f64,
    pub sigma_b: f64,
}

impl InitParams {
    /// `torch.nn.Linear`'s default: weights and biases `U(±1/√fan_in)`.
    pub const PYTORCH: InitParams = InitParams {
        init: Init::Pytorch,
        fan_mode: FanMode::FanIn,
        scale: 1.0,
        sigma_w: 1.0,
        sigma_b: 0.0,
    };
}

/// Draws a `[fan_out, fan_in]` weight (PyTorch's Linear layout) and its bias, in f64.
pub fn linear(
    p: &InitParams,
    fan_out: usize,
    fan_in: usize,
    rng: &mut Rng,
) -> (Vec<f64>, Vec<f64>) {
    let n = fan_out * fan_in;
    let fi = fan_in as f64;
    let fo = fan_out as f64;
    let fan = match p.fan_mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    };
    let normal = |rng: &mut Rng, std: f64| (0..n).map(|_| std * rng.normal()).collect::<Vec<_>>();
    let uniform = |rng: &mut Rng, bound: f64| {
        (0..n)
            .map(|_| rng.uniform_in(-bound, bound))
            .collect::<Vec<_>>()
    };
    let mut w = match p.init {
        Init::Pytorch => uniform(rng, 1.0 / fi.sqrt()),
        Init::XavierNormal => normal(rng, (2.0 / (fi + fo)).sqrt()),
        Init::XavierUniform => uniform(rng, (6.0 / (fi + fo)).sqrt()),
        Init::LecunNormal => normal(rng, (1.0 / fi).sqrt()),
        Init::LecunUniform => uniform(rng, (3.0 / fi).sqrt()),
        Init::HeNormal => normal(rng, (2.0 / fan).sqrt()),
        Init::HeUniform => uniform(rng, (6.0 / fan).sqrt()),
        Init::Orthogonal => orthogonal(fan_out, fan_in, rng),
        Init::MeanField => normal(rng, p.sigma_w / fi.sqrt()),
    };
    for v in &mut w {
        *v *= p.scale;
    }
    let b = match p.init {
        Init::Pytorch => (0..fan_out)
            .map(|_| rng.uniform_in(-1.0 / fi.sqrt(), 1.0 / fi.sqrt()))
            .collect(),
        Init::MeanField => (0..fan_out).map(|_| p.sigma_b * rng.normal()).collect(),
        _ => vec![0.0; fan_out],
    };
    (w, b)
}

/// Draws a convolution's `weights` values and `biases` biases by `p`'s scheme, with PyTorch's
/// fans for convolutions (`torch.nn.init._calculate_fan_in_and_fan_out`: `fan_in =
/// weight.size(1)·k²`, `fan_out = weight.size(0)·k²`, biases `U(±1/√fan_in)` for the default
/// scheme). Orthogonal and mean-field draws are the linear layer's only.
pub fn conv(
    p: &InitParams,
    weights: usize,
    (fan_in, fan_out): (usize, usize),
    biases: usize,
    rng: &mut Rng,
) -> (Vec<f64>, Vec<f64>) {
    let (fi, fo) = (fan_in as f64, fan_out as f64);
    let fan = match p.fan_mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    };
    let normal =
        |rng: &mut Rng, std: f64| (0..weights).map(|_| std * rng.normal()).collect::<Vec<_>>();
    let uniform = |rng: &mut Rng, bound: f64| {
        (0..weights)
            .map(|_| rng.uniform_in(-bound, bound))
            .collect::<Vec<_>>()
    };
    let mut w = match p.init {
        Init::Pytorch => uniform(rng, 1.0 / fi.sqrt()),
        Init::XavierNormal => normal(rng, (2.0 / (fi + fo)).sqrt()),
        Init::XavierUniform => uniform(rng, (6.0 / (fi + fo)).sqrt()),
        Init::LecunNormal => normal(rng, (1.0 / fi).sqrt()),
        Init::LecunUniform => uniform(rng, (3.0 / fi).sqrt()),
        Init::HeNormal | Init::Orthogonal | Init::MeanField => normal(rng, (2.0 / fan).sqrt()),
        Init::HeUniform => uniform(rng, (6.0 / fan).sqrt()),
    };
    for v in &mut w {
        *v *= p.scale;
    }
    let b = match p.init {
        Init::Pytorch => (0..biases)
            .map(|_| rng.uniform_in(-1.0 / fi.sqrt(), 1.0 / fi.sqrt()))
            .collect(),
        _ => vec![0.0; biases],
    };
    (w, b)
}

/// The mean-field variances of a `[fan_out, fan_in]` layer drawn by [`linear`]:
/// `σ_w² = fan_in·Var(W)` and `σ_b² = Var(b)`, from each scheme's formula (orthogonal rows have
/// unit norm, so `Var(W) = 1/fan_in` when `fan_out ≤ fan_in`, else `1/fan_out`).
pub fn variances(p: &InitParams, fan_out: usize, fan_in: usize) -> (f64, f64) {
    let (fi, fo) = (fan_in as f64, fan_out as f64);
    let fan = match p.fan_mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    };
    let var_w = match p.init {
        Init::Pytorch => 1.0 / (3.0 * fi),
        Init::XavierNormal | Init::XavierUniform => 2.0 / (fi + fo),
        Init::LecunNormal | Init::LecunUniform => 1.0 / fi,
        Init::HeNormal | Init::HeUniform => 2.0 / fan,
        Init::Orthogonal => 1.0 / fi.max(fo),
        Init::MeanField => p.sigma_w * p.sigma_w / fi,
    };
    let var_b = match p.init {
        Init::Pytorch => 1.0 / (3.0 * fi),
        Init::MeanField => p.sigma_b * p.sigma_b,
        _ => 0.0,
    };
    (fi * var_w * p.scale * p.scale, var_b)
}

/// A `[rows, cols]` matrix with orthonormal rows (rows ≤ cols) or columns (rows > cols), as
/// `torch.nn.init.orthogonal_`: QR of a Gaussian matrix with the signs of `diag(R)` folded in,
/// which makes the result Haar-distributed (Mezzadri 2007).
pub fn orthogonal(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f64> {
    // Work on the tall orientation [tall, short] and transpose back if needed.
    let (tall, short) = if rows >= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let mut a: Vec<f64> = (0..tall * short).map(|_| rng.normal()).collect(); // [tall, short], row-major
                                                                             // Modified Gram–Schmidt on the columns: q_j orthonormal, r_jj = norm before normalising.
    for j in 0..short {
        for i in 0..j {
            let dot: f64 = (0..tall).map(|r| a[r * short + i] * a[r * short + j]).sum();
            for r in 0..tall {
                a[r * short + j] -= dot * a[r * short + i];
            }
        }
        let norm: f64 = (0..tall)
            .map(|r| a[r * short + j].powi(2))
            .sum::<f64>()
            .sqrt();
        // MGS normalises by +norm, i.e. diag(R) > 0 already: the sign correction is built in.
        for r in 0..tall {
            a[r * short + j] /= norm;
        }
    }
    if rows >= cols {
        a
    } else {
        let mut t = vec![0.0; rows * cols];
        for r in 0..tall {
            for c in 0..short {
                t[c * cols + r] = a[r * short + c];
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal() {
        let mut rng = Rng::new(0);
        for (r, c) in [(8, 8), (5, 12), (12, 5)] {
            let q = orthogonal(r, c, &mut rng);
            let (outer, inner, by_rows) = if r <= c { (r, c, true) } else { (c, r, false) };
            for i in 0..outer {
                for j in 0..outer {
                    let dot: f64 = (0..inner)
                        .map(|k| {
                            if by_rows {
                                q[i * c + k] * q[j * c + k]
                            } else {
                                q[k * c + i] * q[k * c + j]
                            }
                        })
                        .sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-12, "{r}x{c}: <{i},{j}> = {dot}");
                }
            }
        }
    }

    /// `variances` agrees with the empirical variances of drawn layers, for every scheme.
    #[test]
    fn declared_variances_match_draws() {
        let mut rng = Rng::new(4);
        for init in [
            Init::Pytorch,
            Init::XavierNormal,
            Init::XavierUniform,
            Init::LecunNormal,
            Init::LecunUniform,
            Init::HeNormal,
            Init::HeUniform,
            Init::Orthogonal,
            Init::MeanField,
        ] {
            for (o, i) in [(300, 200), (200, 300)] {
                let p = InitParams {
                    init,
                    fan_mode: FanMode::FanOut,
                    scale: 1.3,
                    sigma_w: 1.2,
                    sigma_b: 0.4,
                };
                let (w, b) = linear(&p, o, i, &mut rng);
                let (sw2, sb2) = variances(&p, o, i);
                let var_w = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
                assert!(
                    (i as f64 * var_w / sw2 - 1.0).abs() < 0.03,
                    "{init:?} {o}x{i}: {} vs {sw2}",
                    i as f64 * var_w
                );
                let var_b = b.iter().map(|v| v * v).sum::<f64>() / b.len() as f64;
                // 200–300 draws: relative standard error of a variance ≈ 10%.
                assert!(
                    (var_b - sb2).abs() <= 0.3 * sb2 + 1e-15,
                    "{init:?} bias: {var_b} vs {sb2}"
                );
            }
        }
    }

    #[test]
    fn variances_match_their_formulas() {
        let mut rng = Rng::new(1);
        let (o, i) = (300, 200);
        let cases = [
            (Init::XavierNormal, 2.0 / 500.0),
            (Init::XavierUniform, 2.0 / 500.0),
            (Init::LecunNormal, 1.0 / 200.0),
            (Init::HeNormal, 2.0 / 200.0),
            (Init::HeUniform, 2.0 / 200.0),
            (Init::Pytorch, 1.0 / 600.0),
            (Init::MeanField, 1.7 / 200.0),
        ];
        for (init, want) in cases {
            let p = InitParams {
                init,
                fan_mode: FanMode::FanIn,
                scale: 1.0,
                sigma_w: 1.7f64.sqrt(),
                sigma_b: 0.0,
            };
            let (w, _) = linear(&p, o, i, &mut rng);
            let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
            // 60,000 draws: relative standard error of a variance ≈ sqrt(2/n) ≈ 0.6%.
            assert!((var / want - 1.0).abs() < 0.03, "{init:?}: {var} vs {want}");
        }
    }
}
