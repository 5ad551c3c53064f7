//! 2-D toy classification: spirals, moons and Gaussian mixtures — small enough to plot the whole
//! decision boundary.
//!
//! Conventions: inputs are points `(x₁, x₂)`; example `i` belongs to class `i mod n_classes`, so
//! the classes are balanced (exactly, when `n` is a multiple of `n_classes`) in every prefix.
//! Train and test are independent i.i.d. draws from streams `"task/train_inputs"` and
//! `"task/test_inputs"`; Gaussian noise is drawn from the same stream, after each point's
//! position.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use super::{
    at_least, counts, finite_nonneg, invalid, key, label_column, matrix, positive, size_ok,
    Dataset, Target, TaskError,
};
use crate::engine::rng::Rng;

/// 1,000 points: a dense picture of the boundary, still instant to train on.
fn default_n_train() -> usize {
    1000
}
/// 10,000 test points: accuracy known to ±0.5% (binomial s.e. ≤ 0.5/√n).
fn default_n_test() -> usize {
    10_000
}

/// `[task.spirals]`: `n_arms` interleaved Archimedean spirals, one class each.
///
/// Arm `c` is `r(cos θ, sin θ)` with `r = t`, `θ = 2π(turns·t + c/n_arms)` for `t ∈ [0, 1]`;
/// `t = √u` with `u` uniform, which spreads points about evenly along the arm instead of piling
/// them up at the centre, where all arms meet. Isotropic Gaussian noise of std `noise` is added.
/// Adjacent arms are `1/(turns·n_arms)` apart radially.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpiralsSpec {
    #[serde(default = "default_n_arms")]
    pub n_arms: usize,
    /// Full turns each arm makes from the centre to radius 1.
    #[serde(default = "default_turns")]
    pub turns: f64,
    #[serde(default = "default_spiral_noise")]
    pub noise: f64,
    #[serde(default = "default_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

/// Two arms: the classic two-spirals benchmark (Lang & Witbrock 1988).
fn default_n_arms() -> usize {
    2
}
/// 1.5 turns: arms 1/3 apart, hard for a linear or shallow model, easy for a small MLP.
fn default_turns() -> f64 {
    1.5
}
/// 0.05: a sixth of the 1/3 arm spacing, so the classes barely overlap.
fn default_spiral_noise() -> f64 {
    0.05
}

impl Default for SpiralsSpec {
    fn default() -> Self {
        SpiralsSpec {
            n_arms: default_n_arms(),
            turns: default_turns(),
            noise: default_spiral_noise(),
            n_train: default_n_train(),
            n_test: default_n_test(),
        }
    }
}

/// `[task.moons]`: two interleaved half circles, as sklearn's `make_moons`.
///
/// Class 0 is `(cos t, sin t)`, class 1 is `(1 − cos t, 1 − sin t − 0.5)`, plus Gaussian noise of
/// std `noise`. sklearn spaces `t` evenly over `[0, π]`; here `t` is uniform on `[0, π]`, so the
/// train and test sets are independent samples rather than nearly the same grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoonsSpec {
    #[serde(default = "default_moons_noise")]
    pub noise: f64,
    #[serde(default = "default_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

/// 0.1: the moons stay separable by a smooth curve while a linear boundary fails.
fn default_moons_noise() -> f64 {
    0.1
}

impl Default for MoonsSpec {
    fn default() -> Self {
        MoonsSpec {
            noise: default_moons_noise(),
            n_train: default_n_train(),
            n_test: default_n_test(),
        }
    }
}

/// Where the Gaussian mixture's centres sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Centers {
    /// Evenly spaced on the circle of radius `radius`, class 0 at angle 0.
    Circle,
    /// Uniform in the disc of radius `radius`, drawn from stream `"task/centers"`.
    Random,
}

/// `[task.gaussians]`: one isotropic Gaussian blob per class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussiansSpec {
    #[serde(default = "default_n_classes")]
    pub n_classes: usize,
    #[serde(default = "default_centers")]
    pub centers: Centers,
    #[serde(default = "default_radius")]
    pub radius: f64,
    /// Standard deviation of each blob.
    #[serde(default = "default_std")]
    pub std: f64,
    #[serde(default = "default_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

/// Four classes: a genuinely multi-class problem (each blob has two neighbours and an opposite)
/// that still plots clearly.
fn default_n_classes() -> usize {
    4
}
/// On a circle: a fixed, symmetric geometry that does not depend on the seed.
fn default_centers() -> Centers {
    Centers::Circle
}
/// Radius 2: with 4 classes, neighbouring centres are 2√2 ≈ 2.8 apart.
fn default_radius() -> f64 {
    2.0
}
/// 0.5: neighbours 5.7σ apart, a Bayes error of about 0.5%.
fn default_std() -> f64 {
    0.5
}

impl Default for GaussiansSpec {
    fn default() -> Self {
        GaussiansSpec {
            n_classes: default_n_classes(),
            centers: default_centers(),
            radius: default_radius(),
            std: default_std(),
            n_train: default_n_train(),
            n_test: default_n_test(),
        }
    }
}

fn check_counts(kind: &str, n_train: usize, n_test: usize) -> Result<(), TaskError> {
    at_least(
        key(kind, "n_train"),
        n_train,
        1,
        "the number of training points",
    )?;
    at_least(
        key(kind, "n_test"),
        n_test,
        1,
        "the lab always reports a test metric",
    )?;
    size_ok(kind, n_train.saturating_add(n_test), 3, "n_train or n_test")
}

/// Every class gets at least one training point (example `i` is class `i mod n_classes`).
fn classes_fit(kind: &str, field: &str, n_classes: usize, n_train: usize) -> Result<(), TaskError> {
    if n_classes > n_train {
        return Err(invalid(
            key(kind, field),
            format!("{n_classes} classes but only n_train = {n_train} training points"),
            "every class needs at least one training point: lower it or raise n_train",
        ));
    }
    Ok(())
}

/// Draws `n` points from `point(rng, class)` with classes `i mod n_classes`.
fn sample(
    seed: u64,
    label: &str,
    n: usize,
    n_classes: usize,
    mut point: impl FnMut(&mut Rng, usize) -> [f64; 2],
) -> (ndarray::Array2<f64>, ndarray::Array2<f64>) {
    let mut rng = Rng::stream(seed, label);
    let mut x = Vec::with_capacity(2 * n);
    let classes: Vec<usize> = (0..n).map(|i| i % n_classes).collect();
    for &c in &classes {
        x.extend(point(&mut rng, c));
    }
    (matrix(n, 2, x), label_column(&classes))
}

fn dataset(
    seed: u64,
    n_train: usize,
    n_test: usize,
    n_classes: usize,
    description: String,
    mut point: impl FnMut(&mut Rng, usize) -> [f64; 2],
) -> Dataset {
    let (train_x, train_y) = sample(seed, "task/train_inputs", n_train, n_classes, &mut point);
    let (test_x, test_y) = sample(seed, "task/test_inputs", n_test, n_classes, &mut point);
    Dataset {
        sequence: None,
        subtasks: None,
        image: None,
        mixture: None,
        prompts: None,
        train_x,
        train_y,
        test_x,
        test_y,
        target: Target::Classes { n_classes },
        description: format!("{description}: {}", counts(n_train, n_test)),
    }
}

impl SpiralsSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        at_least(
            key("spirals", "n_arms"),
            self.n_arms,
            2,
            "one class per arm",
        )?;
        positive(
            key("spirals", "turns"),
            self.turns,
            "full turns per arm, e.g. 1.5",
        )?;
        finite_nonneg(
            key("spirals", "noise"),
            self.noise,
            "the std of the Gaussian noise; 0 for clean arms",
        )?;
        check_counts("spirals", self.n_train, self.n_test)?;
        classes_fit("spirals", "n_arms", self.n_arms, self.n_train)
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let (arms, turns, noise) = (self.n_arms as f64, self.turns, self.noise);
        let description = format!(
            "spirals: {} arms × {} turns, noise {}",
            self.n_arms, turns, noise
        );
        dataset(
            seed,
            self.n_train,
            self.n_test,
            self.n_arms,
            description,
            |rng, c| {
                let t = rng.uniform().sqrt();
                let theta = 2.0 * PI * (turns * t + c as f64 / arms);
                [
                    t * theta.cos() + noise * rng.normal(),
                    t * theta.sin() + noise * rng.normal(),
                ]
            },
        )
    }
}

/// `[task.rings]`: `n_rings` concentric circles, ring `c` of radius `(c + 1)/n_rings` (one class
/// each, points uniform in angle), with isotropic Gaussian noise of std `noise`. A 2-D target for
/// generative models whose support has holes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingsSpec {
    /// Two rings: the classic "circles" toy.
    #[serde(default = "default_n_rings")]
    pub n_rings: usize,
    /// 0.03: a tenth of the gap between two rings' radii at n_rings = 3, so rings stay apart.
    #[serde(default = "default_ring_noise")]
    pub noise: f64,
    #[serde(default = "default_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

fn default_n_rings() -> usize {
    2
}
fn default_ring_noise() -> f64 {
    0.03
}

/// `[task.checkerboard]`: points uniform on the dark cells (`i + j` even) of a `cells × cells`
/// board covering [−1, 1]²; class = the dark cell (example `i` in cell `i mod cells²/2`,
/// rounded up). A generative model must put no mass on the light cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckerboardSpec {
    /// 4 × 4: the board of the flow-matching and score-model toys (8 dark cells).
    #[serde(default = "default_cells")]
    pub cells: usize,
    #[serde(default = "default_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

fn default_cells() -> usize {
    4
}

impl RingsSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        at_least(key("rings", "n_rings"), self.n_rings, 1, "e.g. n_rings = 2")?;
        finite_nonneg(
            key("rings", "noise"),
            self.noise,
            "the std of the noise; 0 for clean circles",
        )?;
        classes_fit("rings", "n_rings", self.n_rings, self.n_train)?;
        check_counts("rings", self.n_train, self.n_test)
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let (k, noise) = (self.n_rings, self.noise);
        dataset(
            seed,
            self.n_train,
            self.n_test,
            k,
            format!("{k} rings: noise {noise}"),
            |rng, c| {
                let r = (c + 1) as f64 / k as f64;
                let a = 2.0 * PI * rng.uniform();
                [
                    r * a.cos() + noise * rng.normal(),
                    r * a.sin() + noise * rng.normal(),
                ]
            },
        )
    }
}

impl CheckerboardSpec {
    /// Dark cells, in row-major order.
    fn dark(&self) -> Vec<(usize, usize)> {
        let c = self.cells;
        (0..c * c)
            .map(|k| (k / c, k % c))
            .filter(|(i, j)| (i + j) % 2 == 0)
            .collect()
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        at_least(
            key("checkerboard", "cells"),
            self.cells,
            2,
            "e.g. cells = 4",
        )?;
        if self.cells > 1000 {
            return Err(invalid(
                key("checkerboard", "cells"),
                format!("must be at most 1000 (got {})", self.cells),
                "e.g. cells = 4",
            ));
        }
        classes_fit("checkerboard", "cells", self.dark().len(), self.n_train)?;
        check_counts("checkerboard", self.n_train, self.n_test)
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let dark = self.dark();
        let side = 2.0 / self.cells as f64;
        dataset(
            seed,
            self.n_train,
            self.n_test,
            dark.len(),
            format!("{0}×{0} checkerboard", self.cells),
            |rng, c| {
                let (i, j) = dark[c];
                [
                    -1.0 + side * (j as f64 + rng.uniform()),
                    -1.0 + side * (i as f64 + rng.uniform()),
                ]
            },
        )
    }
}

impl MoonsSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        finite_nonneg(
            key("moons", "noise"),
            self.noise,
            "the std of the Gaussian noise; 0 for clean arcs",
        )?;
        check_counts("moons", self.n_train, self.n_test)
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let noise = self.noise;
        dataset(
            seed,
            self.n_train,
            self.n_test,
            2,
            format!("moons: noise {noise}"),
            |rng, c| {
                let t = PI * rng.uniform();
                let (x, y) = if c == 0 {
                    (t.cos(), t.sin())
                } else {
                    (1.0 - t.cos(), 1.0 - t.sin() - 0.5)
                };
                [x + noise * rng.normal(), y + noise * rng.normal()]
            },
        )
    }
}

impl GaussiansSpec {
    /// The class centres for this seed (the seed matters only for [`Centers::Random`]).
    pub fn centers(&self, seed: u64) -> Vec<[f64; 2]> {
        let r = self.radius;
        match self.centers {
            Centers::Circle => (0..self.n_classes)
                .map(|c| {
                    let a = 2.0 * PI * c as f64 / self.n_classes as f64;
                    [r * a.cos(), r * a.sin()]
                })
                .collect(),
            Centers::Random => {
                let mut rng = Rng::stream(seed, "task/centers");
                (0..self.n_classes)
                    .map(|_| {
                        // √u makes the density uniform over the disc's area.
                        let (rad, a) = (r * rng.uniform().sqrt(), 2.0 * PI * rng.uniform());
                        [rad * a.cos(), rad * a.sin()]
                    })
                    .collect()
            }
        }
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        at_least(
            key("gaussians", "n_classes"),
            self.n_classes,
            2,
            "one blob per class",
        )?;
        finite_nonneg(
            key("gaussians", "radius"),
            self.radius,
            "the distance of the centres from the origin",
        )?;
        positive(
            key("gaussians", "std"),
            self.std,
            "the standard deviation of each blob",
        )?;
        check_counts("gaussians", self.n_train, self.n_test)?;
        classes_fit("gaussians", "n_classes", self.n_classes, self.n_train)
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let centers = self.centers(seed);
        let std = self.std;
        let placement = match self.centers {
            Centers::Circle => "on a circle",
            Centers::Random => "random in a disc",
        };
        let description = format!(
            "gaussians: {} classes, centres {placement} of radius {}, std {}",
            self.n_classes, self.radius, std
        );
        dataset(
            seed,
            self.n_train,
            self.n_test,
            self.n_classes,
            description,
            |rng, c| {
                [
                    centers[c][0] + std * rng.normal(),
                    centers[c][1] + std * rng.normal(),
                ]
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;

    fn class_counts(d: &Dataset, n_classes: usize) -> Vec<usize> {
        let mut c = vec![0; n_classes];
        for &y in d.train_y.iter() {
            c[y as usize] += 1;
        }
        c
    }

    #[test]
    fn shapes_balance_and_determinism() {
        let specs = [
            TaskSpec::Spirals(SpiralsSpec {
                n_arms: 3,
                n_train: 300,
                n_test: 90,
                ..Default::default()
            }),
            TaskSpec::Moons(MoonsSpec {
                n_train: 300,
                n_test: 90,
                ..Default::default()
            }),
            TaskSpec::Gaussians(GaussiansSpec {
                n_classes: 5,
                n_train: 300,
                n_test: 90,
                ..Default::default()
            }),
            TaskSpec::Gaussians(GaussiansSpec {
                centers: Centers::Random,
                n_train: 300,
                n_test: 90,
                ..Default::default()
            }),
        ];
        for spec in specs {
            let d = spec.generate(3, std::path::Path::new(".")).unwrap();
            let Target::Classes { n_classes } = d.target else {
                panic!()
            };
            assert_eq!(d.train_x.dim(), (300, 2));
            assert_eq!(d.test_x.dim(), (90, 2));
            assert_eq!(d.train_y.dim(), (300, 1));
            assert_eq!(d.output_dim(), n_classes);
            // 300 is a multiple of 3, 2, 5 and 4: exactly balanced.
            assert!(
                class_counts(&d, n_classes)
                    .iter()
                    .all(|&c| c == 300 / n_classes),
                "{}",
                d.description
            );
            assert!(d.train_x.iter().all(|v| v.is_finite()));
            assert_eq!(spec.generate(3, std::path::Path::new(".")).unwrap(), d);
            assert_ne!(
                spec.generate(4, std::path::Path::new(".")).unwrap().train_x,
                d.train_x
            );
        }
    }

    /// Noise-free points lie exactly on their curves.
    #[test]
    fn noiseless_geometry() {
        let d = MoonsSpec {
            noise: 0.0,
            n_train: 200,
            n_test: 10,
        }
        .generate(1);
        for (p, &c) in d.train_x.rows().into_iter().zip(d.train_y.iter()) {
            let (cx, cy) = if c == 0.0 { (0.0, 0.0) } else { (1.0, 0.5) };
            assert!(((p[0] - cx).powi(2) + (p[1] - cy).powi(2) - 1.0).abs() < 1e-12);
            // Class 0 is the upper arc, class 1 the lower one.
            assert!(if c == 0.0 {
                p[1] >= -1e-12
            } else {
                p[1] <= 0.5 + 1e-12
            });
        }
        let s = SpiralsSpec {
            n_arms: 3,
            turns: 2.0,
            noise: 0.0,
            n_train: 300,
            n_test: 10,
        };
        let d = s.generate(1);
        for (p, &c) in d.train_x.rows().into_iter().zip(d.train_y.iter()) {
            // r = t and θ = 2π(turns·t + c/3) must agree modulo a full turn.
            let r = p[0].hypot(p[1]);
            let theta = 2.0 * PI * (2.0 * r + c / 3.0);
            assert!((theta.cos() * r - p[0]).abs() < 1e-9 && (theta.sin() * r - p[1]).abs() < 1e-9);
        }
    }

    /// Blob means converge to the centres; class means on a circle are evenly spaced.
    #[test]
    fn gaussian_blobs_sit_on_their_centres() {
        let spec = GaussiansSpec {
            n_classes: 3,
            n_train: 30_000,
            n_test: 3,
            ..Default::default()
        };
        let d = spec.generate(2);
        let centres = spec.centers(2);
        assert!((centres[1][0] - 2.0 * (2.0 * PI / 3.0).cos()).abs() < 1e-12);
        for (c, centre) in centres.iter().enumerate() {
            let rows: Vec<_> = d
                .train_x
                .rows()
                .into_iter()
                .zip(d.train_y.iter())
                .filter(|(_, &y)| y == c as f64)
                .collect();
            let n = rows.len() as f64;
            let mx = rows.iter().map(|(p, _)| p[0]).sum::<f64>() / n;
            let my = rows.iter().map(|(p, _)| p[1]).sum::<f64>() / n;
            // s.e. of a mean = 0.5/√10000 = 0.005; allow 5σ.
            assert!(
                (mx - centre[0]).abs() < 0.025 && (my - centre[1]).abs() < 0.025,
                "class {c}: ({mx}, {my})"
            );
        }
        let random = GaussiansSpec {
            centers: Centers::Random,
            ..spec.clone()
        };
        assert!(random.centers(2).iter().all(|p| p[0].hypot(p[1]) <= 2.0));
        assert_ne!(random.centers(2), random.centers(3));
    }

    #[test]
    fn invalid_specs_name_the_key() {
        let check = |spec: TaskSpec, key: &str| {
            let err = spec.validate().unwrap_err();
            assert!(matches!(err, TaskError::Invalid { .. }), "{err:?}");
            assert_eq!(err.key(), Some(key), "{err}");
        };
        check(
            TaskSpec::Spirals(SpiralsSpec {
                n_arms: 1,
                ..Default::default()
            }),
            "task.spirals.n_arms",
        );
        check(
            TaskSpec::Spirals(SpiralsSpec {
                n_arms: 11,
                n_train: 10,
                ..Default::default()
            }),
            "task.spirals.n_arms",
        );
        check(
            TaskSpec::Spirals(SpiralsSpec {
                turns: 0.0,
                ..Default::default()
            }),
            "task.spirals.turns",
        );
        check(
            TaskSpec::Moons(MoonsSpec {
                noise: -1.0,
                ..Default::default()
            }),
            "task.moons.noise",
        );
        check(
            TaskSpec::Moons(MoonsSpec {
                n_test: 0,
                ..Default::default()
            }),
            "task.moons.n_test",
        );
        check(
            TaskSpec::Gaussians(GaussiansSpec {
                std: 0.0,
                ..Default::default()
            }),
            "task.gaussians.std",
        );
        check(
            TaskSpec::Gaussians(GaussiansSpec {
                n_classes: 1,
                ..Default::default()
            }),
            "task.gaussians.n_classes",
        );
    }
}
