//! `[task.gaussian_mixture]`: equal-weight isotropic Gaussians in `dim` dimensions, optionally
//! embedded in `embed > dim` dimensions by a random orthonormal map (data on a `dim`-dimensional
//! plane of a larger space, as images lie near a low-dimensional set). The distribution is
//! known exactly, so a generative run measures its denoiser against the ideal one
//! ([`crate::generative::Mixture`]). Labels are the components (a classifier can train on it
//! too).
//!
//! Streams: `"task/centers"` (component means), `"task/embedding"` (the map),
//! `"task/train_inputs"`, `"task/test_inputs"`. Example `i` belongs to component `i mod
//! components`.

use serde::{Deserialize, Serialize};

use super::{
    at_least, counts, invalid, key, label_column, matrix, positive, size_ok, Dataset, Target,
    TaskError,
};
use crate::engine::rng::Rng;
use crate::generative::Mixture;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussianMixtureSpec {
    /// Two components: PFGM++'s high-dimensional toy.
    #[serde(default = "d_components")]
    pub components: usize,
    /// 10 dimensions per component.
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Ambient dimension N of the data; 0 keeps the data in `dim` dimensions.
    #[serde(default)]
    pub embed: usize,
    /// Component means ~ 𝒩(0, spread²·I): 1, so means sit ≈ √(2·dim) apart.
    #[serde(default = "d_spread")]
    pub spread: f64,
    /// Each component's std per coordinate of its plane: 0.2, well-separated components.
    #[serde(default = "d_std")]
    pub std: f64,
    /// 10,000 training points: plenty for a denoiser of a few hundred units.
    #[serde(default = "d_n_train")]
    pub n_train: usize,
    /// 2,000 held-out points: the reference sample of the metrics.
    #[serde(default = "d_n_test")]
    pub n_test: usize,
}

fn d_components() -> usize {
    2
}
fn d_dim() -> usize {
    10
}
fn d_spread() -> f64 {
    1.0
}
fn d_std() -> f64 {
    0.2
}
fn d_n_train() -> usize {
    10_000
}
fn d_n_test() -> usize {
    2_000
}

impl Default for GaussianMixtureSpec {
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

impl GaussianMixtureSpec {
    /// The data's dimension N.
    pub fn ambient(&self) -> usize {
        if self.embed == 0 {
            self.dim
        } else {
            self.embed
        }
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f| key("gaussian_mixture", f);
        at_least(k("components"), self.components, 1, "e.g. components = 2")?;
        at_least(k("dim"), self.dim, 1, "e.g. dim = 10")?;
        if self.embed != 0 && self.embed < self.dim {
            return Err(invalid(
                k("embed"),
                format!("must be 0 or ≥ dim = {} (got {})", self.dim, self.embed),
                "embed is the ambient dimension the components' plane sits in",
            ));
        }
        if self.ambient() > 1 << 16 || self.components > 1 << 16 {
            return Err(invalid(
                k("embed"),
                format!(
                    "{} dimensions or {} components is past this task's limit of 65536",
                    self.ambient(),
                    self.components
                ),
                "use fewer dimensions",
            ));
        }
        positive(k("spread"), self.spread, "e.g. spread = 1")?;
        positive(k("std"), self.std, "e.g. std = 0.2")?;
        at_least(
            k("n_train"),
            self.n_train,
            self.components,
            "every component needs a training point",
        )?;
        at_least(k("n_test"), self.n_test, 1, "e.g. n_test = 2000")?;
        size_ok(
            "gaussian_mixture",
            self.n_train.saturating_add(self.n_test),
            self.ambient(),
            "n_train, n_test or embed",
        )
    }

    /// The distribution for this seed.
    pub fn mixture(&self, seed: u64) -> Mixture {
        let (j, d, n) = (self.components, self.dim, self.ambient());
        let mut rng = Rng::stream(seed, "task/centers");
        let centres: Vec<f64> = (0..j * d).map(|_| self.spread * rng.normal()).collect();
        let basis = if self.embed == 0 {
            Vec::new()
        } else {
            orthonormal_rows(d, n, &mut Rng::stream(seed, "task/embedding"))
        };
        let means = if basis.is_empty() {
            centres
        } else {
            let mut m = vec![0.0; j * n];
            for c in 0..j {
                for (a, row) in basis.chunks_exact(n).enumerate() {
                    let z = centres[c * d + a];
                    for (o, b) in m[c * n..(c + 1) * n].iter_mut().zip(row) {
                        *o += z * b;
                    }
                }
            }
            m
        };
        Mixture {
            n,
            weights: vec![1.0 / j as f64; j],
            means,
            var: vec![self.std * self.std; j],
            basis,
        }
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let mix = self.mixture(seed);
        let n = mix.n;
        let draw = |label: &str, count: usize| {
            let mut rng = Rng::stream(seed, label);
            let mut x = vec![0.0; count * n];
            let classes: Vec<usize> = (0..count).map(|i| i % self.components).collect();
            // One component per example (balanced), then its Gaussian in the plane.
            let one = Mixture {
                weights: vec![1.0],
                means: vec![0.0; n],
                var: vec![mix.var[0]],
                ..mix.clone()
            };
            for (row, &c) in x.chunks_exact_mut(n).zip(&classes) {
                one.sample(&mut rng, row);
                for (o, m) in row.iter_mut().zip(&mix.means[c * n..(c + 1) * n]) {
                    *o += m;
                }
            }
            (matrix(count, n, x), label_column(&classes))
        };
        let (train_x, train_y) = draw("task/train_inputs", self.n_train);
        let (test_x, test_y) = draw("task/test_inputs", self.n_test);
        let plane = if self.embed == 0 {
            String::new()
        } else {
            format!(" on a random {}-plane of R^{}", self.dim, n)
        };
        Dataset {
            train_x,
            train_y,
            test_x,
            test_y,
            target: Target::Classes {
                n_classes: self.components,
            },
            description: format!(
                "{} Gaussians in {} dimensions (std {}){plane}: {}",
                self.components,
                self.dim,
                self.std,
                counts(self.n_train, self.n_test)
            ),
            sequence: None,
            prompts: None,
            subtasks: None,
            image: None,
            mixture: Some(mix),
        }
    }
}

/// `k` orthonormal rows of length `n` (Gram–Schmidt on Gaussian rows, twice for accuracy).
fn orthonormal_rows(k: usize, n: usize, rng: &mut Rng) -> Vec<f64> {
    let mut b: Vec<f64> = (0..k * n).map(|_| rng.normal()).collect();
    for i in 0..k {
        for _ in 0..2 {
            for j in 0..i {
                let dot: f64 = (0..n).map(|t| b[i * n + t] * b[j * n + t]).sum();
                for t in 0..n {
                    b[i * n + t] -= dot * b[j * n + t];
                }
            }
        }
        let norm: f64 = (0..n)
            .map(|t| b[i * n + t] * b[i * n + t])
            .sum::<f64>()
            .sqrt();
        for t in 0..n {
            b[i * n + t] /= norm;
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded data lies on the plane (its projection off the plane is zero) and each
    /// component's spread along the plane is `std`.
    #[test]
    fn embedded_mixture_lies_on_its_plane() {
        let spec = GaussianMixtureSpec {
            embed: 50,
            dim: 4,
            n_train: 4000,
            ..GaussianMixtureSpec::default()
        };
        let d = spec.generate(3);
        let mix = d.mixture.as_ref().unwrap();
        assert_eq!(d.train_x.ncols(), 50);
        let b = &mix.basis;
        for (i, row) in d.train_x.rows().into_iter().enumerate().take(200) {
            let c = i % 2;
            let delta: Vec<f64> = row
                .iter()
                .zip(&mix.means[c * 50..(c + 1) * 50])
                .map(|(a, m)| a - m)
                .collect();
            let mut on = vec![0.0; 50];
            for r in b.chunks_exact(50) {
                let z: f64 = r.iter().zip(&delta).map(|(a, v)| a * v).sum();
                for (o, a) in on.iter_mut().zip(r) {
                    *o += z * a;
                }
            }
            let off: f64 = delta.iter().zip(&on).map(|(a, o)| (a - o) * (a - o)).sum();
            assert!(off < 1e-20, "{off}");
        }
        // Mean squared distance to the component mean: dim·std².
        let ms: f64 = d
            .train_x
            .rows()
            .into_iter()
            .enumerate()
            .map(|(i, row)| {
                let c = i % 2;
                row.iter()
                    .zip(&mix.means[c * 50..(c + 1) * 50])
                    .map(|(a, m)| (a - m) * (a - m))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / 4000.0;
        assert!((ms / (4.0 * 0.04) - 1.0).abs() < 0.05, "{ms}");
    }
}
