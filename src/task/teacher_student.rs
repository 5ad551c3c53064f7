//! Teacher–student regression: targets are the outputs of a fixed random MLP (the teacher), so
//! the function to learn is known exactly and its complexity is a dial (Gardner & Derrida 1989;
//! Saad & Solla 1995; Goldt et al. 2019, "Dynamics of stochastic gradient descent for two-layer
//! neural networks in the teacher-student setup").
//!
//! Conventions:
//! - inputs `x ~ N(0, I_input_dim)`, train rows from stream `"task/train_inputs"`, test rows from
//!   `"task/test_inputs"` (row-major, one normal per entry);
//! - the teacher has `depth` hidden layers of `width` units with `activation`, then a linear
//!   readout to `output_dim` (no activation on the output; `depth = 0` is a linear teacher);
//! - weights `W ~ N(0, σ_w²/fan_in)` and biases `b ~ N(0, σ_b²)`, drawn from stream
//!   `"task/teacher"` layer by layer: all of `W` (`[fan_out, fan_in]`, row-major), then `b`. The
//!   same draws are scaled by σ_w and σ_b, so changing them rescales one fixed teacher;
//! - label noise `ε ~ N(0, noise²)` (stream `"task/noise"`) is added to the **train targets only**.
//!   Test targets are the clean teacher outputs, so test MSE measures the distance to the teacher
//!   function itself (the generalization error of teacher–student theory, e.g. Advani & Saxe 2017);
//!   the noisy-test MSE is that plus `noise²` per output.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::{
    at_least, counts, finite_nonneg, key, matrix, positive, size_ok, Dataset, Target, TaskError,
};
use crate::engine::rng::Rng;
use crate::nn::activation::Activation;

/// `[task.teacher_student.teacher]`: the teacher network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSpec {
    /// Units per hidden layer.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Number of hidden layers (0: a linear teacher).
    #[serde(default = "default_depth")]
    pub depth: usize,
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Weight scale: `W ~ N(0, σ_w²/fan_in)`.
    #[serde(default = "default_sigma_w")]
    pub sigma_w: f64,
    /// Bias scale: `b ~ N(0, σ_b²)`.
    #[serde(default = "default_sigma_b")]
    pub sigma_b: f64,
}

/// 4 units: a small committee as in Goldt et al. (2019), so any student of width ≥ 4 can realize it.
fn default_width() -> usize {
    4
}
/// One hidden layer: the classic two-layer teacher of the committee-machine literature.
fn default_depth() -> usize {
    1
}
/// tanh: the smooth, odd stand-in for the erf teachers of Saad & Solla (1995) and Goldt et al.
fn default_activation() -> Activation {
    Activation::Tanh
}
/// σ_w = 1 with σ_b = 0 is tanh's edge of chaos (Poole et al. 2016): a deep teacher is then
/// neither collapsed to a constant nor chaotic.
fn default_sigma_w() -> f64 {
    1.0
}
/// No biases: the teacher is odd (tanh) and centred, matching the theory's setting.
fn default_sigma_b() -> f64 {
    0.0
}

impl Default for TeacherSpec {
    fn default() -> Self {
        TeacherSpec {
            width: default_width(),
            depth: default_depth(),
            activation: default_activation(),
            sigma_w: default_sigma_w(),
            sigma_b: default_sigma_b(),
        }
    }
}

/// `[task.teacher_student]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherStudentSpec {
    #[serde(default = "default_input_dim")]
    pub input_dim: usize,
    #[serde(default = "default_output_dim")]
    pub output_dim: usize,
    #[serde(default = "default_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
    /// Standard deviation of the Gaussian label noise on train targets (test targets are clean).
    #[serde(default = "default_noise")]
    pub noise: f64,
    #[serde(default)]
    pub teacher: TeacherSpec,
}

/// 16 inputs: several times the teacher width (so the student must find the teacher's
/// directions) yet small enough to train in seconds on a CPU.
fn default_input_dim() -> usize {
    16
}
/// A scalar output: the setting of the teacher–student theory.
fn default_output_dim() -> usize {
    1
}
/// 1,000 examples: ~60 per input dimension, so the realizable task is learnable but the train set
/// is finite enough to overfit when noise is added.
fn default_n_train() -> usize {
    1000
}
/// 10,000 test examples: the test MSE is then known to ~1.4% (relative s.e. √(2/n)).
fn default_n_test() -> usize {
    10_000
}
/// Noiseless: the realizable case; set it to study overfitting and double descent.
fn default_noise() -> f64 {
    0.0
}

impl Default for TeacherStudentSpec {
    fn default() -> Self {
        TeacherStudentSpec {
            input_dim: default_input_dim(),
            output_dim: default_output_dim(),
            n_train: default_n_train(),
            n_test: default_n_test(),
            noise: default_noise(),
            teacher: TeacherSpec::default(),
        }
    }
}

/// A teacher network's weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Teacher {
    /// `(W, b)` per layer with `W: [fan_out, fan_in]`; the last layer is the linear readout.
    pub layers: Vec<(Array2<f64>, Array1<f64>)>,
    pub activation: Activation,
}

impl Teacher {
    /// Teacher outputs `[n, output_dim]` for inputs `[n, input_dim]` (f64, ndarray `dot`).
    pub fn forward(&self, x: &Array2<f64>) -> Array2<f64> {
        // The input is read in place: no copy of it (a test split is 10⁴ rows).
        let mut h: Option<Array2<f64>> = None;
        let last = self.layers.len().saturating_sub(1);
        for (l, (w, b)) in self.layers.iter().enumerate() {
            let mut z = h.as_ref().unwrap_or(x).dot(&w.t()) + b;
            if l < last {
                self.activation.eval_in_place(&mut z);
            }
            h = Some(z);
        }
        h.unwrap_or_else(|| x.clone())
    }
}

impl TeacherStudentSpec {
    /// Layer widths from input to output, e.g. `[16, 4, 1]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.input_dim];
        w.extend(std::iter::repeat_n(self.teacher.width, self.teacher.depth));
        w.push(self.output_dim);
        w
    }

    /// The teacher drawn from `seed` (see the module docs for the draw order).
    pub fn teacher(&self, seed: u64) -> Teacher {
        let mut rng = Rng::stream(seed, "task/teacher");
        let t = &self.teacher;
        let layers = self
            .widths()
            .windows(2)
            .map(|fan| {
                let (fan_in, fan_out) = (fan[0], fan[1]);
                let scale = t.sigma_w / (fan_in as f64).sqrt();
                let w = (0..fan_in * fan_out)
                    .map(|_| scale * rng.normal())
                    .collect();
                let b = (0..fan_out).map(|_| t.sigma_b * rng.normal()).collect();
                (matrix(fan_out, fan_in, w), Array1::from_vec(b))
            })
            .collect();
        Teacher {
            layers,
            activation: t.activation,
        }
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f: &str| key("teacher_student", f);
        at_least(
            k("input_dim"),
            self.input_dim,
            1,
            "the number of input features",
        )?;
        at_least(
            k("output_dim"),
            self.output_dim,
            1,
            "the number of regression targets",
        )?;
        at_least(
            k("n_train"),
            self.n_train,
            1,
            "the number of training examples",
        )?;
        at_least(
            k("n_test"),
            self.n_test,
            1,
            "the lab always reports a test metric",
        )?;
        finite_nonneg(
            k("noise"),
            self.noise,
            "the standard deviation of the label noise; 0 for none",
        )?;
        let t = &self.teacher;
        if t.depth > 0 {
            at_least(
                k("teacher.width"),
                t.width,
                1,
                "units per hidden layer; use depth = 0 for a linear teacher",
            )?;
        }
        positive(
            k("teacher.sigma_w"),
            t.sigma_w,
            "a zero-weight teacher is a constant function",
        )?;
        finite_nonneg(
            k("teacher.sigma_b"),
            t.sigma_b,
            "the bias standard deviation; 0 for no biases",
        )?;
        let rows = self.n_train.saturating_add(self.n_test);
        size_ok(
            "teacher_student",
            rows,
            self.input_dim.saturating_add(self.output_dim),
            "n_train, n_test or input_dim",
        )?;
        // Computed, not summed over widths(): a typo'd depth must not allocate before it errs.
        let (w, d) = (t.width, t.depth);
        let params = if d == 0 {
            self.input_dim.saturating_mul(self.output_dim)
        } else {
            let inner = (d - 1).saturating_mul(w.saturating_mul(w));
            (self.input_dim.saturating_add(self.output_dim))
                .saturating_mul(w)
                .saturating_add(inner)
        };
        size_ok(
            "teacher_student",
            params,
            1,
            "teacher.width or teacher.depth",
        )?;
        Ok(())
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let teacher = self.teacher(seed);
        let inputs = |label: &str, n: usize| {
            let mut rng = Rng::stream(seed, label);
            matrix(n, self.input_dim, rng.normals(n * self.input_dim))
        };
        let train_x = inputs("task/train_inputs", self.n_train);
        let test_x = inputs("task/test_inputs", self.n_test);
        let mut train_y = teacher.forward(&train_x);
        if self.noise > 0.0 {
            let mut rng = Rng::stream(seed, "task/noise");
            train_y
                .iter_mut()
                .for_each(|y| *y += self.noise * rng.normal());
        }
        let test_y = teacher.forward(&test_x);
        let t = &self.teacher;
        let hidden = if t.depth == 0 {
            "linear".to_string()
        } else {
            format!("[{} {}]×{}", t.width, t.activation.name(), t.depth)
        };
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
            target: Target::Regression {
                out_dim: self.output_dim,
            },
            description: format!(
                "teacher–student, teacher {}→{hidden}→{}, σ_w={} σ_b={}, train noise {}: {}",
                self.input_dim,
                self.output_dim,
                t.sigma_w,
                t.sigma_b,
                self.noise,
                counts(self.n_train, self.n_test)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;

    fn small() -> TeacherStudentSpec {
        TeacherStudentSpec {
            input_dim: 5,
            output_dim: 2,
            n_train: 40,
            n_test: 30,
            noise: 0.0,
            teacher: TeacherSpec {
                width: 7,
                depth: 2,
                activation: Activation::Tanh,
                sigma_w: 1.3,
                sigma_b: 0.2,
            },
        }
    }

    #[test]
    fn shapes_and_description() {
        let d = small().generate(1);
        assert_eq!(d.train_x.dim(), (40, 5));
        assert_eq!(d.train_y.dim(), (40, 2));
        assert_eq!(d.test_x.dim(), (30, 5));
        assert_eq!(d.test_y.dim(), (30, 2));
        assert_eq!((d.input_dim(), d.output_dim()), (5, 2));
        assert_eq!(d.target, Target::Regression { out_dim: 2 });
        assert_eq!(
            d.description,
            "teacher–student, teacher 5→[7 tanh]×2→2, σ_w=1.3 σ_b=0.2, train noise 0: 40 train / 30 test"
        );
    }

    /// With noise 0 the targets equal a recomputation written from the documented convention
    /// alone: the same streams, plain loops instead of ndarray.
    #[test]
    fn noiseless_targets_match_an_independent_recomputation() {
        let spec = small();
        let seed = 42;
        let d = spec.generate(seed);
        let widths = [5, 7, 7, 2];
        let mut rng = Rng::stream(seed, "task/teacher");
        let mut layers: Vec<(Vec<Vec<f64>>, Vec<f64>)> = Vec::new();
        for l in 0..3 {
            let (fi, fo) = (widths[l], widths[l + 1]);
            let w: Vec<Vec<f64>> = (0..fo)
                .map(|_| {
                    (0..fi)
                        .map(|_| 1.3 / (fi as f64).sqrt() * rng.normal())
                        .collect()
                })
                .collect();
            let b: Vec<f64> = (0..fo).map(|_| 0.2 * rng.normal()).collect();
            layers.push((w, b));
        }
        for (label, x, y) in [
            ("task/train_inputs", &d.train_x, &d.train_y),
            ("task/test_inputs", &d.test_x, &d.test_y),
        ] {
            let mut rin = Rng::stream(seed, label);
            for i in 0..x.nrows() {
                let mut h: Vec<f64> = (0..5).map(|_| rin.normal()).collect();
                for (j, &v) in h.iter().enumerate() {
                    assert_eq!(x[[i, j]], v);
                }
                for (l, (w, b)) in layers.iter().enumerate() {
                    h = w
                        .iter()
                        .zip(b)
                        .map(|(row, bj)| {
                            let z: f64 = row.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>() + bj;
                            if l < 2 {
                                z.tanh()
                            } else {
                                z
                            }
                        })
                        .collect();
                }
                for (j, &v) in h.iter().enumerate() {
                    assert!(
                        (y[[i, j]] - v).abs() < 1e-12,
                        "{label} row {i}: {} vs {v}",
                        y[[i, j]]
                    );
                }
            }
        }
    }

    #[test]
    fn noise_hits_train_targets_only() {
        let clean = TeacherStudentSpec {
            n_train: 20_000,
            n_test: 50,
            ..small()
        };
        let noisy = TeacherStudentSpec {
            noise: 0.5,
            ..clean.clone()
        };
        let (c, n) = (clean.generate(9), noisy.generate(9));
        assert_eq!(c.train_x, n.train_x);
        assert_eq!(c.test_y, n.test_y, "test targets stay clean");
        let diff = &n.train_y - &c.train_y;
        let m = diff.len() as f64;
        let mean = diff.sum() / m;
        let std = (diff.mapv(|v| v * v).sum() / m - mean * mean).sqrt();
        // 40,000 draws: s.e. of the std ≈ 0.5/√(2·40000) ≈ 0.0018, of the mean 0.0025.
        assert!((std - 0.5).abs() < 0.01, "std {std}");
        assert!(mean.abs() < 0.012, "mean {mean}");
    }

    #[test]
    fn deterministic_and_nested() {
        let spec = small();
        assert_eq!(spec.generate(3), spec.generate(3));
        assert_ne!(spec.generate(3).train_y, spec.generate(4).train_y);
        let bigger = TeacherStudentSpec {
            n_train: 80,
            noise: 0.1,
            ..small()
        };
        let smaller = TeacherStudentSpec {
            noise: 0.1,
            ..small()
        };
        let (a, b) = (smaller.generate(3), bigger.generate(3));
        assert_eq!(a.train_x, b.train_x.slice(ndarray::s![..40, ..]));
        assert_eq!(a.train_y, b.train_y.slice(ndarray::s![..40, ..]));
        assert_eq!(
            a.test_x, b.test_x,
            "the test set does not depend on n_train"
        );
    }

    #[test]
    fn linear_teacher_and_sigma_rescaling() {
        let spec = TeacherStudentSpec {
            teacher: TeacherSpec {
                depth: 0,
                ..TeacherSpec::default()
            },
            ..small()
        };
        let t = spec.teacher(2);
        assert_eq!(t.layers.len(), 1);
        assert_eq!(t.layers[0].0.dim(), (2, 5));
        let d = spec.generate(2);
        let want = d.test_x.dot(&t.layers[0].0.t());
        assert!(
            (&d.test_y - &want).iter().all(|v| v.abs() < 1e-12),
            "σ_b = 0: no bias"
        );
        // σ_w rescales the same draws.
        let doubled = TeacherStudentSpec {
            teacher: TeacherSpec {
                sigma_w: 2.0,
                ..spec.teacher.clone()
            },
            ..spec.clone()
        };
        assert_eq!(doubled.teacher(2).layers[0].0, &t.layers[0].0 * 2.0);
    }

    #[test]
    fn invalid_specs_name_the_key() {
        let check = |spec: TeacherStudentSpec, key: &str| {
            let err = TaskSpec::TeacherStudent(spec).validate().unwrap_err();
            assert!(matches!(err, TaskError::Invalid { .. }), "{err:?}");
            assert_eq!(err.key(), Some(key), "{err}");
        };
        check(
            TeacherStudentSpec {
                input_dim: 0,
                ..small()
            },
            "task.teacher_student.input_dim",
        );
        check(
            TeacherStudentSpec {
                n_test: 0,
                ..small()
            },
            "task.teacher_student.n_test",
        );
        check(
            TeacherStudentSpec {
                noise: -0.1,
                ..small()
            },
            "task.teacher_student.noise",
        );
        check(
            TeacherStudentSpec {
                noise: f64::INFINITY,
                ..small()
            },
            "task.teacher_student.noise",
        );
        let t = TeacherSpec {
            width: 0,
            ..TeacherSpec::default()
        };
        check(
            TeacherStudentSpec {
                teacher: t,
                ..small()
            },
            "task.teacher_student.teacher.width",
        );
        let t = TeacherSpec {
            sigma_w: 0.0,
            ..TeacherSpec::default()
        };
        check(
            TeacherStudentSpec {
                teacher: t,
                ..small()
            },
            "task.teacher_student.teacher.sigma_w",
        );
        check(
            TeacherStudentSpec {
                n_train: usize::MAX / 2,
                ..small()
            },
            "task.teacher_student",
        );
        let t = TeacherSpec {
            depth: usize::MAX,
            ..TeacherSpec::default()
        };
        check(
            TeacherStudentSpec {
                teacher: t,
                ..small()
            },
            "task.teacher_student",
        );
        // A linear teacher ignores width.
        let t = TeacherSpec {
            width: 0,
            depth: 0,
            ..TeacherSpec::default()
        };
        TeacherStudentSpec {
            teacher: t,
            ..small()
        }
        .validate()
        .unwrap();
    }
}
