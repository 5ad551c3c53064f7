//! Scaling-law fits with uncertainty (Hoffmann et al. 2022; Besiroglu et al. 2024).
//!
//! Forms: `power` L(x) = E + A·x^(−α), `learning_curve` (the same in the step t),
//! `chinchilla` L(N, D) = E + A/N^α + B/D^β, and `broken_power` — one smooth break
//! (Caballero et al. 2023, "Broken Neural Scaling Laws", eq. 1 with n = 1):
//! L(x) = E + A·x^(−α)·(1 + (x/x_b)^(1/s))^(−(β−α)·s), slope α well below the break x_b, β well
//! above it, s the width of the bend in e-folds of x. The fit is done in log space with the log-sum-exp
//! parameterisation log L ≈ LSE(a − α log N, b − β log D, e), A = eᵃ, B = eᵇ, E = eᵉ, minimising
//! the summed Huber loss (δ) of the log residuals with L-BFGS started from every point of a grid;
//! the best is kept. Uncertainty comes from a bootstrap over points: each resample is fitted from
//! the full-data optimum (a resample's optimum lies near it, and restarting 1000 resamples from the
//! whole grid would cost 1000 grid fits), giving standard errors and 95% percentile intervals.

pub mod input;

pub mod lbfgs;

use serde::Serialize;

use crate::engine::Rng;
use crate::Error;

pub use lbfgs::{minimize, LbfgsOptions, LbfgsResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    Power,
    Chinchilla,
    LearningCurve,
    BrokenPower,
}

// Internal slots: 0 e = ln E, 1 a = ln A, 2 b = ln B, 3 alpha, 4 beta, 5 ln x_b, 6 ln s.
const E: usize = 0;
const A: usize = 1;
const B: usize = 2;
const ALPHA: usize = 3;
const BETA: usize = 4;
const XB: usize = 5;
const S: usize = 6;
/// Parameter slots of [`law`] and [`FitResult::samples`]: E, A, B, alpha, beta, x_break, smoothness.
pub const SLOTS: usize = 7;
const NAMES: [&str; SLOTS] = ["E", "A", "B", "alpha", "beta", "x_break", "smoothness"];

/// Slots fitted as logarithms (positive parameters); the exponents are fitted as they are.
fn is_log(k: usize) -> bool {
    !matches!(k, ALPHA | BETA)
}

impl Form {
    /// The name `parse` reads and the output prints.
    pub fn name(self) -> &'static str {
        match self {
            Form::Power => "power",
            Form::Chinchilla => "chinchilla",
            Form::LearningCurve => "learning_curve",
            Form::BrokenPower => "broken_power",
        }
    }

    pub fn parse(s: &str) -> Result<Form, Error> {
        let all = [
            Form::Power,
            Form::Chinchilla,
            Form::LearningCurve,
            Form::BrokenPower,
        ];
        match all.into_iter().find(|f| f.name() == s.replace('-', "_")) {
            Some(f) => Ok(f),
            None => Err(invalid(
                "--form",
                format!("unknown form `{s}`"),
                "one of: power, chinchilla, learning_curve, broken_power",
            )),
        }
    }

    fn slots(self) -> &'static [usize] {
        match self {
            Form::Chinchilla => &[E, A, B, ALPHA, BETA],
            Form::BrokenPower => &[E, A, ALPHA, BETA, XB, S],
            Form::Power | Form::LearningCurve => &[E, A, ALPHA],
        }
    }

    /// Parameter names in output order.
    pub fn param_names(self) -> Vec<&'static str> {
        self.slots().iter().map(|&s| NAMES[s]).collect()
    }

    pub fn two_inputs(self) -> bool {
        self == Form::Chinchilla
    }
}

fn invalid(what: &str, message: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.into(),
        message: message.into(),
        hint: hint.into(),
    }
}

/// The points: `x` (N, or t), `d` (D; empty unless chinchilla) and the loss `y`.
#[derive(Clone, Debug, Default)]
pub struct Data {
    pub x: Vec<f64>,
    pub d: Vec<f64>,
    pub y: Vec<f64>,
}

/// Starting grid, in log-space units (a = ln A, b = ln B, e = ln E).
#[derive(Clone, Debug)]
pub struct Grid {
    pub alpha: Vec<f64>,
    pub beta: Vec<f64>,
    pub e: Vec<f64>,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    /// Break positions for `broken_power`, as quantiles of the data's ln x (the break is only
    /// identifiable inside the data).
    pub break_quantiles: Vec<f64>,
    /// Bend widths s for `broken_power` (e-folds of x).
    pub smoothness: Vec<f64>,
}

fn range(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let n = ((hi - lo) / step).round() as usize;
    (0..=n).map(|i| lo + step * i as f64).collect()
}

impl Default for Grid {
    fn default() -> Self {
        Grid {
            alpha: range(0.0, 2.0, 0.5),
            beta: range(0.0, 2.0, 0.5),
            e: range(-1.0, 1.0, 0.5),
            a: range(0.0, 25.0, 5.0),
            b: range(0.0, 25.0, 5.0),
            break_quantiles: vec![0.25, 0.5, 0.75],
            smoothness: vec![0.3, 1.0],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Huber δ on log residuals.
    pub delta: f64,
    /// Fixed parameters in natural units: names `E`, `A`, `B`, `alpha`, `beta`, `x_break`,
    /// `smoothness`.
    pub fixed: Vec<(String, f64)>,
    pub grid: Grid,
    /// Bootstrap resamples (0: none).
    pub bootstrap: usize,
    pub seed: u64,
    pub threads: usize,
    /// Chinchilla only: report N_opt and D_opt at this compute C (= 6ND).
    pub at_compute: Option<f64>,
    pub lbfgs: LbfgsOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delta: 1e-3,
            fixed: Vec::new(),
            grid: Grid::default(),
            bootstrap: 1000,
            seed: 0,
            threads: 2,
            at_compute: None,
            lbfgs: LbfgsOptions::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    pub name: String,
    pub value: f64,
    pub fixed: bool,
    /// Bootstrap standard error (None without a bootstrap).
    pub stderr: Option<f64>,
    /// Bootstrap 95% percentile interval.
    pub ci95: Option<[f64; 2]>,
    /// False when the data do not pin the parameter down ([`unidentified`] says why, in
    /// `why`): then its estimate and interval are not a measurement. None without a bootstrap
    /// (nothing to judge by) and for a fixed parameter.
    pub identified: Option<bool>,
    pub why: Option<String>,
}

/// Bootstrap failures past this fraction of the resamples flag every parameter.
const MAX_FAILED: f64 = 0.1;
/// A 95% interval wider than this ratio (two decades) of a positive quantity, or a standard
/// error this many times the estimate, identifies nothing.
const MAX_DECADES_RATIO: f64 = 100.0;
const MAX_REL_STDERR: f64 = 10.0;

/// Why a parameter is not identified by the data, or `None` when it is: its bootstrap interval
/// spans more than two decades (or crosses zero for a quantity that has a sign), its standard
/// error exceeds ten times its estimate, or too many resamples failed. Exponents and logs of
/// positive scales are judged on the natural value; a fixed parameter is identified.
pub fn unidentified(e: &Estimate, failed: usize, bootstrap: usize) -> Option<String> {
    if e.fixed {
        return None;
    }
    if bootstrap > 0 && failed as f64 > MAX_FAILED * bootstrap as f64 {
        return Some(format!("{failed} of {bootstrap} bootstrap fits failed"));
    }
    if let (Some(se), true) = (e.stderr, e.value != 0.0) {
        if se > MAX_REL_STDERR * e.value.abs() {
            let ratio = se / e.value.abs();
            let ratio = if ratio < 1e4 {
                format!("{ratio:.0}")
            } else {
                format!("{ratio:.1e}")
            };
            return Some(format!("stderr {se:.2e} is {ratio}× the estimate"));
        }
    }
    if let Some([lo, hi]) = e.ci95 {
        if lo < 0.0 && hi > 0.0 && e.value != 0.0 {
            return Some(format!("the 95% interval [{lo:.3e}, {hi:.3e}] spans zero"));
        }
        // A one-signed interval (positive or negative) spanning more than two decades.
        let (a, b) = (lo.abs().min(hi.abs()), lo.abs().max(hi.abs()));
        if lo * hi > 0.0 && b / a > MAX_DECADES_RATIO {
            return Some(format!(
                "the 95% interval spans {:.1} decades",
                (b / a).log10()
            ));
        }
    }
    None
}

#[derive(Clone, Debug, Serialize)]
pub struct FitResult {
    pub form: Form,
    pub n_points: usize,
    /// Summed Huber loss of the log residuals at the optimum.
    pub loss: f64,
    pub delta: f64,
    pub params: Vec<Estimate>,
    /// Chinchilla: a, b exponents, G, and N_opt, D_opt at `at_compute`.
    pub derived: Vec<Estimate>,
    pub bootstrap: usize,
    /// Resamples whose fit did not end at a finite loss (left out of the statistics).
    pub bootstrap_failed: usize,
    /// The bootstrap fits in natural units, `[E, A, B, alpha, beta, x_break, smoothness]` each
    /// (unused slots are 0): for prediction bands through [`law`].
    #[serde(skip)]
    pub samples: Vec<[f64; SLOTS]>,
}

impl FitResult {
    /// The fitted parameters in natural units, in the slots of [`law`] (0 where the form has
    /// none).
    pub fn natural_params(&self) -> [f64; SLOTS] {
        std::array::from_fn(|k| self.get(NAMES[k]).unwrap_or(0.0))
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.params
            .iter()
            .chain(&self.derived)
            .find(|e| e.name == name)
            .map(|e| e.value)
    }
}

/// The problem over one set of points (log-transformed).
struct Problem<'a> {
    form: Form,
    lx: &'a [f64],
    ld: &'a [f64],
    ly: &'a [f64],
    delta: f64,
    fixed: [Option<f64>; SLOTS],
    free: Vec<usize>,
}

impl Problem<'_> {
    fn full(&self, z: &[f64]) -> [f64; SLOTS] {
        let mut p = [0.0; SLOTS];
        for (k, f) in self.fixed.iter().enumerate() {
            if let Some(v) = f {
                p[k] = *v;
            }
        }
        for (i, &k) in self.free.iter().enumerate() {
            p[k] = z[i];
        }
        p
    }

    fn value_grad(&self, z: &[f64], grad: &mut [f64]) -> f64 {
        let p = self.full(z);
        let mut g = [0.0; SLOTS];
        let mut f = 0.0;
        for i in 0..self.ly.len() {
            // Log of each additive term; the fitted log-loss is their log-sum-exp.
            let lx = self.lx[i];
            // t1 = ln(A·x^−α·bend) and its partial derivatives for the broken form, where
            // ln bend = −(β−α)·s·softplus(u), u = (ln x − ln x_b)/s.
            let (t1, bend) = match self.form {
                Form::BrokenPower => {
                    let s = p[S].exp();
                    let u = (lx - p[XB]) / s;
                    let sp = u.max(0.0) + (-u.abs()).exp().ln_1p();
                    let sig = 1.0 / (1.0 + (-u).exp());
                    let dab = p[BETA] - p[ALPHA];
                    let t1 = p[A] - p[ALPHA] * lx - dab * s * sp;
                    // ∂t1/∂α, ∂t1/∂β, ∂t1/∂ln x_b, ∂t1/∂ln s.
                    let d = [-lx + s * sp, -s * sp, dab * sig, -dab * s * (sp - u * sig)];
                    (t1, Some(d))
                }
                _ => (p[A] - p[ALPHA] * lx, None),
            };
            let t2 = if self.form.two_inputs() {
                p[B] - p[BETA] * self.ld[i]
            } else {
                f64::NEG_INFINITY
            };
            let t3 = p[E];
            let m = t1.max(t2).max(t3);
            let (w1, w2, w3) = ((t1 - m).exp(), (t2 - m).exp(), (t3 - m).exp());
            let s = w1 + w2 + w3;
            let r = m + s.ln() - self.ly[i];
            let (h, psi) = if r.abs() <= self.delta {
                (0.5 * r * r, r)
            } else {
                (
                    self.delta * (r.abs() - 0.5 * self.delta),
                    self.delta * r.signum(),
                )
            };
            f += h;
            let (w1, w2, w3) = (w1 / s, w2 / s, w3 / s);
            g[E] += psi * w3;
            g[A] += psi * w1;
            match bend {
                Some([d_al, d_be, d_xb, d_s]) => {
                    g[ALPHA] += psi * w1 * d_al;
                    g[BETA] += psi * w1 * d_be;
                    g[XB] += psi * w1 * d_xb;
                    g[S] += psi * w1 * d_s;
                }
                None => g[ALPHA] -= psi * w1 * lx,
            }
            if self.form.two_inputs() {
                g[B] += psi * w2;
                g[BETA] -= psi * w2 * self.ld[i];
            }
        }
        for (i, &k) in self.free.iter().enumerate() {
            grad[i] = g[k];
        }
        f
    }

    fn solve(&self, z0: &[f64], opts: &LbfgsOptions) -> LbfgsResult {
        minimize(|z, g| self.value_grad(z, g), z0, opts)
    }
}

/// The law of `form` at `(x, d)` for natural-unit parameters `p` (as in
/// [`FitResult::samples`]); `d` is used by `chinchilla` only.
pub fn law(form: Form, p: &[f64; SLOTS], x: f64, d: f64) -> f64 {
    match form {
        Form::Power | Form::LearningCurve => p[E] + p[A] * x.powf(-p[ALPHA]),
        Form::Chinchilla => p[E] + p[A] * x.powf(-p[ALPHA]) + p[B] * d.powf(-p[BETA]),
        Form::BrokenPower => {
            let bend = (1.0 + (x / p[XB]).powf(1.0 / p[S])).powf(-(p[BETA] - p[ALPHA]) * p[S]);
            p[E] + p[A] * x.powf(-p[ALPHA]) * bend
        }
    }
}

fn natural(p: &[f64; SLOTS]) -> [f64; SLOTS] {
    std::array::from_fn(|k| if is_log(k) { p[k].exp() } else { p[k] })
}

/// Chinchilla-derived quantities from natural parameters.
fn derived(p: &[f64; SLOTS], at_compute: Option<f64>) -> Vec<(&'static str, f64)> {
    let (a_, b_, al, be) = (p[A], p[B], p[ALPHA], p[BETA]);
    let s = al + be;
    let a_exp = be / s;
    let b_exp = al / s;
    let g = (al * a_ / (be * b_)).powf(1.0 / s);
    let mut out = vec![("a_exp", a_exp), ("b_exp", b_exp), ("G", g)];
    if let Some(c) = at_compute {
        let n_opt = g * (c / 6.0).powf(a_exp);
        let d_opt = (c / 6.0).powf(b_exp) / g;
        out.push(("N_opt", n_opt));
        out.push(("D_opt", d_opt));
        out.push(("tokens_per_param", d_opt / n_opt));
    }
    out
}

fn validate(form: Form, data: &Data, opts: &Options) -> Result<[Option<f64>; SLOTS], Error> {
    let n = data.y.len();
    if data.x.len() != n || (form.two_inputs() && data.d.len() != n) {
        return Err(invalid(
            "data",
            "columns have different lengths",
            "give one value of each column per point",
        ));
    }
    for (name, col) in [("x", &data.x), ("y", &data.y), ("d", &data.d)] {
        if name == "d" && !form.two_inputs() {
            continue;
        }
        if let Some(v) = col.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(invalid(
                "data",
                format!("column {name} has a value {v} that is not finite and > 0"),
                "all inputs and losses must be positive",
            ));
        }
    }
    if !(opts.delta > 0.0 && opts.delta.is_finite()) {
        return Err(invalid(
            "delta",
            format!("{} is not > 0", opts.delta),
            "the default is 1e-3",
        ));
    }
    if opts.threads == 0 {
        return Err(invalid("threads", "must be ≥ 1", "e.g. 2"));
    }
    let mut fixed = [None; SLOTS];
    for (name, v) in &opts.fixed {
        let k = match NAMES.iter().position(|s| s == name) {
            Some(k) if form.slots().contains(&k) => k,
            _ => {
                return Err(invalid(
                    "--fix",
                    format!("no parameter `{name}` in form {form:?}"),
                    format!("one of: {}", form.param_names().join(", ")),
                ))
            }
        };
        if !v.is_finite() || (is_log(k) && *v < 0.0) || (is_log(k) && k != E && *v == 0.0) {
            return Err(invalid(
                "--fix",
                format!("{name}={v} is out of range"),
                "A, B, x_break and smoothness must be > 0, E ≥ 0, exponents finite",
            ));
        }
        fixed[k] = Some(if is_log(k) { v.ln() } else { *v });
    }
    let free = form.slots().iter().filter(|k| fixed[**k].is_none()).count();
    if n < free.max(1) {
        return Err(invalid(
            "data",
            format!("{n} points for {free} free parameters"),
            "give more points or fix parameters",
        ));
    }
    if let Some(c) = opts.at_compute {
        if !(c.is_finite() && c > 0.0) {
            return Err(invalid(
                "--at-compute",
                format!("{c} is not > 0"),
                "e.g. --at-compute 1e24",
            ));
        }
    }
    Ok(fixed)
}

/// Every combination of the grid's values for the free slots (internal units). `lx` is the
/// data's ln x, for the break positions.
fn grid_starts(grid: &Grid, free: &[usize], lx: &[f64]) -> Vec<Vec<f64>> {
    let mut sorted = lx.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mut starts: Vec<Vec<f64>> = vec![vec![]];
    for &k in free {
        let vals: Vec<f64> = match k {
            E => grid.e.clone(),
            A => grid.a.clone(),
            B => grid.b.clone(),
            ALPHA => grid.alpha.clone(),
            BETA => grid.beta.clone(),
            XB => grid
                .break_quantiles
                .iter()
                .map(|q| percentile(&sorted, q.clamp(0.0, 1.0)))
                .collect(),
            _ => grid.smoothness.iter().map(|s| s.ln()).collect(),
        };
        let vals = if vals.is_empty() { vec![0.0] } else { vals };
        starts = starts
            .into_iter()
            .flat_map(|s| {
                vals.iter().map(move |v| {
                    let mut s2 = s.clone();
                    s2.push(*v);
                    s2
                })
            })
            .collect();
    }
    starts
}

/// Run `f(i)` for i in 0..n on `threads` scoped threads; results in index order.
fn par_map<T: Send, F: Fn(usize) -> T + Sync>(n: usize, threads: usize, f: F) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    let mut parts: Vec<Vec<(usize, T)>> = Vec::new();
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                sc.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| (i, f(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(p) => parts.push(p),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    });
    let mut all: Vec<(usize, T)> = parts.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

fn better(a: &LbfgsResult, b: &LbfgsResult) -> bool {
    // a strictly better than b (NaN never better)
    a.f.is_finite() && (!b.f.is_finite() || a.f < b.f)
}

/// Fit `form` to `data`.
pub fn fit(form: Form, data: &Data, opts: &Options) -> Result<FitResult, Error> {
    let fixed = validate(form, data, opts)?;
    let lx: Vec<f64> = data.x.iter().map(|v| v.ln()).collect();
    let ld: Vec<f64> = if form.two_inputs() {
        data.d.iter().map(|v| v.ln()).collect()
    } else {
        vec![]
    };
    let ly: Vec<f64> = data.y.iter().map(|v| v.ln()).collect();
    let free: Vec<usize> = form
        .slots()
        .iter()
        .copied()
        .filter(|k| fixed[*k].is_none())
        .collect();
    let prob = Problem {
        form,
        lx: &lx,
        ld: &ld,
        ly: &ly,
        delta: opts.delta,
        fixed,
        free: free.clone(),
    };

    let starts = grid_starts(&opts.grid, &free, &lx);
    let results = par_map(starts.len(), opts.threads, |i| {
        prob.solve(&starts[i], &opts.lbfgs)
    });
    let mut best: Option<LbfgsResult> = None;
    for r in results {
        if best.as_ref().map_or(r.f.is_finite(), |b| better(&r, b)) {
            best = Some(r);
        }
    }
    let best = best.ok_or_else(|| Error::Failed {
        what: "fit".into(),
        message: "no start reached a finite loss".into(),
        hint: "check the data: losses and inputs must be positive".into(),
    })?;
    let p_best = prob.full(&best.x);
    let nat = natural(&p_best);

    // Bootstrap: index sets drawn sequentially (independent of thread count), fits in parallel.
    let n = ly.len();
    let mut rng = Rng::stream(opts.seed, "fit-bootstrap");
    let sets: Vec<Vec<usize>> = (0..opts.bootstrap)
        .map(|_| (0..n).map(|_| rng.below(n as u64) as usize).collect())
        .collect();
    let boot: Vec<Option<[f64; SLOTS]>> = par_map(sets.len(), opts.threads, |i| {
        let idx = &sets[i];
        let bx: Vec<f64> = idx.iter().map(|&j| lx[j]).collect();
        let bd: Vec<f64> = if ld.is_empty() {
            vec![]
        } else {
            idx.iter().map(|&j| ld[j]).collect()
        };
        let by: Vec<f64> = idx.iter().map(|&j| ly[j]).collect();
        let bp = Problem {
            form,
            lx: &bx,
            ld: &bd,
            ly: &by,
            delta: opts.delta,
            fixed,
            free: free.clone(),
        };
        let r = bp.solve(&best.x, &opts.lbfgs);
        r.f.is_finite().then(|| natural(&bp.full(&r.x)))
    });
    let ok: Vec<[f64; SLOTS]> = boot.iter().flatten().copied().collect();
    let failed = boot.len() - ok.len();

    let stats = |vals: Vec<f64>| -> (Option<f64>, Option<[f64; 2]>) {
        let mut v: Vec<f64> = vals.into_iter().filter(|x| x.is_finite()).collect();
        if v.len() < 2 {
            return (None, None);
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        v.sort_by(|a, b| a.total_cmp(b));
        (
            Some(sd),
            Some([percentile(&v, 0.025), percentile(&v, 0.975)]),
        )
    };

    let params = form
        .slots()
        .iter()
        .map(|&k| {
            let (stderr, ci95) = if fixed[k].is_some() {
                (None, None)
            } else {
                stats(ok.iter().map(|p| p[k]).collect())
            };
            Estimate {
                name: NAMES[k].into(),
                value: nat[k],
                fixed: fixed[k].is_some(),
                stderr,
                ci95,
                identified: None,
                why: None,
            }
        })
        .collect();
    let derived_q = if form.two_inputs() {
        let at = opts.at_compute;
        let boot_d: Vec<Vec<(&str, f64)>> = ok.iter().map(|p| derived(p, at)).collect();
        derived(&nat, at)
            .into_iter()
            .enumerate()
            .map(|(j, (name, value))| {
                let (stderr, ci95) = stats(boot_d.iter().map(|d| d[j].1).collect());
                Estimate {
                    name: name.into(),
                    value,
                    fixed: false,
                    stderr,
                    ci95,
                    identified: None,
                    why: None,
                }
            })
            .collect()
    } else {
        vec![]
    };
    let flag = |mut list: Vec<Estimate>| -> Vec<Estimate> {
        for e in &mut list {
            e.why = unidentified(e, failed, opts.bootstrap);
            e.identified = (opts.bootstrap > 0 && !e.fixed).then_some(e.why.is_none());
        }
        list
    };
    Ok(FitResult {
        form,
        n_points: n,
        loss: best.f,
        delta: opts.delta,
        params: flag(params),
        derived: flag(derived_q),
        bootstrap: opts.bootstrap,
        bootstrap_failed: failed,
        samples: ok,
    })
}

/// Linear-interpolated percentile of sorted values (q in [0, 1]).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}
