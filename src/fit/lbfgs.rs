//! A compact L-BFGS with an Armijo backtracking line search (curvature pairs with s·y ≤ 0 are
//! skipped, so the inverse-Hessian estimate stays positive definite).

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct LbfgsOptions {
    /// Number of (s, y) pairs kept.
    pub memory: usize,
    pub max_iter: usize,
    /// Stop when the largest gradient component is at most this.
    pub gtol: f64,
    /// Stop when one step lowers f by at most `ftol · max(|f|, tiny)`.
    pub ftol: f64,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            memory: 10,
            max_iter: 1000,
            gtol: 1e-12,
            ftol: 1e-15,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LbfgsResult {
    pub x: Vec<f64>,
    pub f: f64,
    pub iterations: usize,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimise `fg(x, grad) -> f` (which writes the gradient into `grad`) from `x0`.
pub fn minimize<F: FnMut(&[f64], &mut [f64]) -> f64>(
    mut fg: F,
    x0: &[f64],
    opts: &LbfgsOptions,
) -> LbfgsResult {
    let n = x0.len();
    let mut x = x0.to_vec();
    let mut g = vec![0.0; n];
    let mut f = fg(&x, &mut g);
    type Pair = (Vec<f64>, Vec<f64>, f64); // (s, y, 1 / s·y)
    let mut hist: VecDeque<Pair> = VecDeque::new();
    let mut xn = vec![0.0; n];
    let mut gn = vec![0.0; n];
    let mut iterations = 0;
    if !f.is_finite() || n == 0 {
        return LbfgsResult { x, f, iterations };
    }
    while iterations < opts.max_iter {
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if gmax <= opts.gtol {
            break;
        }
        iterations += 1;
        // Two-loop recursion.
        let mut q = g.clone();
        let mut alphas = vec![0.0; hist.len()];
        for (i, (s, y, rho)) in hist.iter().enumerate().rev() {
            let a = rho * dot(s, &q);
            alphas[i] = a;
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
        }
        let gamma = match hist.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / gmax.max(1.0),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for (i, (s, y, rho)) in hist.iter().enumerate() {
            let b = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += si * (alphas[i] - b));
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut dg = dot(&d, &g);
        if dg.is_nan() || dg >= 0.0 || !dg.is_finite() {
            hist.clear();
            let scale = 1.0 / gmax.max(1.0);
            d = g.iter().map(|v| -v * scale).collect();
            dg = dot(&d, &g);
        }
        // Armijo backtracking.
        let mut t = 1.0;
        let mut fnew = f64::INFINITY;
        let mut accepted = false;
        for _ in 0..80 {
            for i in 0..n {
                xn[i] = x[i] + t * d[i];
            }
            fnew = fg(&xn, &mut gn);
            if fnew.is_finite() && fnew <= f + 1e-4 * t * dg {
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            if hist.is_empty() {
                break;
            }
            hist.clear(); // retry once along the steepest descent
            continue;
        }
        let s: Vec<f64> = (0..n).map(|i| xn[i] - x[i]).collect();
        let y: Vec<f64> = (0..n).map(|i| gn[i] - g[i]).collect();
        let sy = dot(&s, &y);
        if sy > 1e-300 && sy.is_finite() {
            if hist.len() == opts.memory {
                hist.pop_front();
            }
            hist.push_back((s, y, 1.0 / sy));
        }
        let decrease = f - fnew;
        x.copy_from_slice(&xn);
        g.copy_from_slice(&gn);
        let fold = f;
        f = fnew;
        if decrease <= opts.ftol * fold.abs().max(1e-300) {
            break;
        }
    }
    LbfgsResult { x, f, iterations }
}
