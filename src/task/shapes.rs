//! Synthetic segmentation with a known generator: `[task.shapes]`. Each image is a textured
//! background with a few shapes (circles, rotated rectangles, blobs) painted brighter, blurred,
//! then noised; its mask labels every pixel with the shape under it (0 for the background).
//!
//! - Background: a smooth random field, `texture · Σ_k a_k sin(2π f_k·(x, y)/size + φ_k)/√6`
//!   over six plane waves (`a_k ~ N(0, 1)`, 1–6 cycles across the image in a random direction),
//!   so the background's own peaks reach the shapes' brightness and a single intensity
//!   threshold cannot separate them.
//! - Shapes: `min_shapes ..= max_shapes` of them, kinds drawn uniformly from `kinds`, radius
//!   `U(min_radius, max_radius)` pixels, centre anywhere in the image (shapes may be cut by the
//!   border), each with brightness `contrast · U(1 − jitter, 1 + jitter)` replacing the
//!   background, over half the background's texture; a later shape covers an earlier one. A rectangle has half-sides `r·U(½, 1)`
//!   and a random rotation; a blob is `r(θ) = r·(1 + Σ_{m=2..4} c_m cos(mθ + φ_m))`,
//!   `c_m ~ U(−0.2, 0.2)`. A pixel belongs to a shape when its centre does.
//! - Then a Gaussian blur of standard deviation `blur` pixels (the mask is not blurred), and
//!   i.i.d. `N(0, noise²)` per pixel and channel (channels share the clean image).
//!
//! Labels: with `classes = 2` every shape is foreground (1); with `classes = 1 + kinds.len()`
//! shape kind `k` (in `kinds` order) is class `k + 1`. Images are `[channels, size, size]`
//! (NCHW rows), masks `[size, size]` class indices. Every image comes from its own stream
//! (`"task/train/{i}"`, `"task/test/{i}"`), so the first `n` images are the same for every
//! `n_train ≥ n` and the test set does not depend on `n_train`.

use serde::{Deserialize, Serialize};

use super::{
    at_least, counts, finite_nonneg, invalid, key, matrix, size_ok, Dataset, ImageInfo, Target,
    TaskError,
};
use crate::engine::Rng;

/// Shape kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeKind {
    Circle,
    Rectangle,
    Blob,
}

/// What an image is labelled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapesTarget {
    /// A class per pixel (segmentation).
    Mask,
    /// The kind of the image's one shape (classification; needs `max_shapes = 1` and
    /// `classes = len(kinds)`).
    Kind,
}

/// `[task.shapes]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapesSpec {
    /// 64×64 images: big enough for shapes at several scales, small enough for a CPU.
    #[serde(default = "d_size")]
    pub size: usize,
    /// One channel, like most medical images.
    #[serde(default = "d_channels")]
    pub channels: usize,
    /// Background and foreground; `1 + kinds.len()` gives each kind its class.
    #[serde(default = "d_classes")]
    pub classes: usize,
    /// All three kinds.
    #[serde(default = "d_kinds")]
    pub kinds: Vec<ShapeKind>,
    #[serde(default = "d_min_shapes")]
    pub min_shapes: usize,
    #[serde(default = "d_max_shapes")]
    pub max_shapes: usize,
    /// Radii of 5–14 pixels: shapes from a few pixels across to a fifth of the image.
    #[serde(default = "d_min_radius")]
    pub min_radius: f64,
    #[serde(default = "d_max_radius")]
    pub max_radius: f64,
    /// A shape's mean brightness above the background, in units of the noise-free texture's
    /// amplitude scale.
    #[serde(default = "d_contrast")]
    pub contrast: f64,
    /// Brightness varies ±40% from shape to shape.
    #[serde(default = "d_jitter")]
    pub jitter: f64,
    /// Pixel noise σ = 0.5: half the contrast.
    #[serde(default = "d_noise")]
    pub noise: f64,
    /// Blur σ = 1 pixel: soft edges.
    #[serde(default = "d_blur")]
    pub blur: f64,
    /// Background texture amplitude 0.8: its peaks rival the shapes.
    #[serde(default = "d_texture")]
    pub texture: f64,
    /// 1,000 training images.
    #[serde(default = "d_n_train")]
    pub n_train: usize,
    /// 200 held-out images.
    #[serde(default = "d_n_test")]
    pub n_test: usize,
    /// Masks, for segmentation.
    #[serde(default = "d_target")]
    pub target: ShapesTarget,
}

fn d_target() -> ShapesTarget {
    ShapesTarget::Mask
}

fn d_size() -> usize {
    64
}
fn d_channels() -> usize {
    1
}
fn d_classes() -> usize {
    2
}
fn d_kinds() -> Vec<ShapeKind> {
    vec![ShapeKind::Circle, ShapeKind::Rectangle, ShapeKind::Blob]
}
fn d_min_shapes() -> usize {
    1
}
fn d_max_shapes() -> usize {
    3
}
fn d_min_radius() -> f64 {
    5.0
}
fn d_max_radius() -> f64 {
    14.0
}
fn d_contrast() -> f64 {
    1.0
}
fn d_jitter() -> f64 {
    0.4
}
fn d_noise() -> f64 {
    0.5
}
fn d_blur() -> f64 {
    1.0
}
fn d_texture() -> f64 {
    0.8
}
fn d_n_train() -> usize {
    1000
}
fn d_n_test() -> usize {
    200
}

impl Default for ShapesSpec {
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

const KIND: &str = "shapes";

impl ShapesSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        at_least(key(KIND, "size"), self.size, 4, "e.g. size = 64")?;
        if self.size > 4096 {
            return Err(invalid(
                key(KIND, "size"),
                format!("must be at most 4096 (got {})", self.size),
                "e.g. size = 64",
            ));
        }
        at_least(key(KIND, "channels"), self.channels, 1, "e.g. channels = 1")?;
        if self.channels > 64 {
            return Err(invalid(
                key(KIND, "channels"),
                format!("must be at most 64 (got {})", self.channels),
                "e.g. channels = 1",
            ));
        }
        if self.kinds.is_empty() {
            return Err(invalid(
                key(KIND, "kinds"),
                "is empty",
                "e.g. kinds = [\"circle\", \"rectangle\", \"blob\"]",
            ));
        }
        let per_kind = 1 + self.kinds.len();
        if self.target == ShapesTarget::Kind {
            if self.classes != self.kinds.len() {
                return Err(invalid(
                    key(KIND, "classes"),
                    format!("must be the number of kinds, {}, when each image is labelled with its shape's kind (got {})", self.kinds.len(), self.classes),
                    format!("set classes = {}", self.kinds.len()),
                ));
            }
            if self.max_shapes != 1 || self.min_shapes != 1 {
                return Err(invalid(
                    key(KIND, "max_shapes"),
                    format!("must be 1 (with min_shapes = 1) when each image is labelled with its shape's kind (got {}..={})", self.min_shapes, self.max_shapes),
                    "set min_shapes = 1 and max_shapes = 1",
                ));
            }
        } else if self.classes != 2 && self.classes != per_kind {
            return Err(invalid(
                key(KIND, "classes"),
                format!("must be 2 (shape or background) or {per_kind} (one class per kind, plus the background) (got {})", self.classes),
                "e.g. classes = 2",
            ));
        }
        at_least(
            key(KIND, "max_shapes"),
            self.max_shapes,
            self.min_shapes.max(1),
            "at least min_shapes and 1",
        )?;
        for (k, v) in [
            ("min_radius", self.min_radius),
            ("max_radius", self.max_radius),
            ("contrast", self.contrast),
            ("jitter", self.jitter),
            ("noise", self.noise),
            ("blur", self.blur),
            ("texture", self.texture),
        ] {
            finite_nonneg(key(KIND, k), v, "a finite number ≥ 0")?;
        }
        if self.min_radius <= 0.0 || self.max_radius < self.min_radius {
            return Err(invalid(
                key(KIND, "max_radius"),
                format!(
                    "needs 0 < min_radius ≤ max_radius (got {} and {})",
                    self.min_radius, self.max_radius
                ),
                "e.g. min_radius = 5, max_radius = 14",
            ));
        }
        if self.jitter >= 1.0 {
            return Err(invalid(
                key(KIND, "jitter"),
                format!("must be below 1 (got {})", self.jitter),
                "e.g. jitter = 0.4",
            ));
        }
        at_least(key(KIND, "n_train"), self.n_train, 1, "e.g. n_train = 1000")?;
        let pixels = self
            .channels
            .saturating_mul(self.size)
            .saturating_mul(self.size);
        size_ok(
            KIND,
            self.n_train.saturating_add(self.n_test),
            pixels.saturating_add(self.size * self.size),
            "n_train, n_test or size",
        )
    }

    /// One image `[channels, size, size]`, its mask `[size, size]` and the kind of its last
    /// shape, from `rng`.
    fn image(&self, rng: &mut Rng) -> (Vec<f64>, Vec<f64>, usize) {
        let s = self.size;
        let sf = s as f64;
        // Background texture: six plane waves.
        let waves: Vec<(f64, f64, f64, f64)> = (0..6)
            .map(|_| {
                let dir = rng.uniform_in(0.0, std::f64::consts::TAU);
                let f = rng.uniform_in(1.0, 6.0);
                let phase = rng.uniform_in(0.0, std::f64::consts::TAU);
                let a = rng.normal() / 6f64.sqrt();
                (f * dir.cos(), f * dir.sin(), phase, a)
            })
            .collect();
        let mut clean = vec![0.0; s * s];
        for y in 0..s {
            for x in 0..s {
                let (u, v) = (x as f64 + 0.5, y as f64 + 0.5);
                clean[y * s + x] = self.texture
                    * waves
                        .iter()
                        .map(|&(fx, fy, ph, a)| {
                            a * (std::f64::consts::TAU * (fx * u + fy * v) / sf + ph).sin()
                        })
                        .sum::<f64>();
            }
        }
        let mut mask = vec![0.0; s * s];
        let count =
            self.min_shapes + rng.below((self.max_shapes - self.min_shapes + 1) as u64) as usize;
        let mut last_kind = 0;
        for _ in 0..count {
            let k = rng.below(self.kinds.len() as u64) as usize;
            last_kind = k;
            let kind = self.kinds[k];
            let (cx, cy) = (rng.uniform_in(0.0, sf), rng.uniform_in(0.0, sf));
            let r = rng.uniform_in(self.min_radius, self.max_radius);
            let bright = self.contrast * rng.uniform_in(1.0 - self.jitter, 1.0 + self.jitter);
            let class = if self.classes == 2 {
                1.0
            } else {
                (k + 1) as f64
            };
            // Kind-specific draws, always made (so every kind consumes the same stream).
            let (ha, hb, rot) = (
                r * rng.uniform_in(0.5, 1.0),
                r * rng.uniform_in(0.5, 1.0),
                rng.uniform_in(0.0, std::f64::consts::PI),
            );
            let harmonics: Vec<(f64, f64)> = (2..=4)
                .map(|_| {
                    (
                        rng.uniform_in(-0.2, 0.2),
                        rng.uniform_in(0.0, std::f64::consts::TAU),
                    )
                })
                .collect();
            let inside = |u: f64, v: f64| -> bool {
                let (dx, dy) = (u - cx, v - cy);
                match kind {
                    ShapeKind::Circle => dx * dx + dy * dy <= r * r,
                    ShapeKind::Rectangle => {
                        let (c, sn) = (rot.cos(), rot.sin());
                        (c * dx + sn * dy).abs() <= ha && (-sn * dx + c * dy).abs() <= hb
                    }
                    ShapeKind::Blob => {
                        let theta = dy.atan2(dx);
                        let rr = r
                            * (1.0
                                + harmonics
                                    .iter()
                                    .enumerate()
                                    .map(|(m, &(c, ph))| c * ((m + 2) as f64 * theta + ph).cos())
                                    .sum::<f64>());
                        dx * dx + dy * dy <= rr * rr
                    }
                }
            };
            let (x0, x1) = (
                ((cx - 1.5 * r).floor().max(0.0)) as usize,
                ((cx + 1.5 * r).ceil().min(sf)) as usize,
            );
            let (y0, y1) = (
                ((cy - 1.5 * r).floor().max(0.0)) as usize,
                ((cy + 1.5 * r).ceil().min(sf)) as usize,
            );
            for y in y0..y1 {
                for x in x0..x1 {
                    if inside(x as f64 + 0.5, y as f64 + 0.5) {
                        let i = y * s + x;
                        // The shape replaces the background: its brightness over half the
                        // texture (structure shows through, as in tissue).
                        clean[i] = bright + 0.5 * texture_at(&waves, self.texture, x, y, sf);
                        mask[i] = class;
                    }
                }
            }
        }
        let blurred = blur(&clean, s, self.blur);
        let mut img = Vec::with_capacity(self.channels * s * s);
        for _ in 0..self.channels {
            img.extend(blurred.iter().map(|&v| v + self.noise * rng.normal()));
        }
        (img, mask, last_kind)
    }

    pub fn generate(&self, seed: u64) -> Dataset {
        let kind = self.target == ShapesTarget::Kind;
        let y_cols = if kind { 1 } else { self.size * self.size };
        let split = |part: &str, n: usize| {
            let (mut xs, mut ys) = (
                Vec::with_capacity(n * self.channels * self.size * self.size),
                Vec::with_capacity(n * y_cols),
            );
            for i in 0..n {
                let mut rng = Rng::stream(seed, &format!("task/{part}/{i}"));
                let (x, y, k) = self.image(&mut rng);
                xs.extend(x);
                if kind {
                    ys.push(k as f64);
                } else {
                    ys.extend(y);
                }
            }
            (
                matrix(n, self.channels * self.size * self.size, xs),
                matrix(n, y_cols, ys),
            )
        };
        let (train_x, train_y) = split("train", self.n_train);
        let (test_x, test_y) = split("test", self.n_test);
        Dataset {
            sequence: None,
            subtasks: None,
            mixture: None,
            prompts: None,
            image: Some(ImageInfo {
                channels: self.channels,
                height: self.size,
                width: self.size,
            }),
            train_x,
            train_y,
            test_x,
            test_y,
            target: if kind {
                Target::Classes {
                    n_classes: self.classes,
                }
            } else {
                Target::Masks {
                    n_classes: self.classes,
                }
            },
            description: format!(
                "shapes {}×{}×{}, {} classes, noise {}, blur {}, texture {}: {}",
                self.channels,
                self.size,
                self.size,
                self.classes,
                self.noise,
                self.blur,
                self.texture,
                counts(self.n_train, self.n_test)
            ),
        }
    }
}

/// The background texture at pixel `(x, y)`.
fn texture_at(waves: &[(f64, f64, f64, f64)], amp: f64, x: usize, y: usize, sf: f64) -> f64 {
    let (u, v) = (x as f64 + 0.5, y as f64 + 0.5);
    amp * waves
        .iter()
        .map(|&(fx, fy, ph, a)| a * (std::f64::consts::TAU * (fx * u + fy * v) / sf + ph).sin())
        .sum::<f64>()
}

/// Separable Gaussian blur of an `s × s` image, σ in pixels (radius ⌈3σ⌉, borders clamped).
fn blur(img: &[f64], s: usize, sigma: f64) -> Vec<f64> {
    if sigma <= 0.0 {
        return img.to_vec();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = k.iter().sum();
    let k: Vec<f64> = k.into_iter().map(|v| v / total).collect();
    let clamp = |i: isize| i.clamp(0, s as isize - 1) as usize;
    let mut tmp = vec![0.0; s * s];
    for y in 0..s {
        for x in 0..s {
            tmp[y * s + x] = (-r..=r)
                .map(|d| k[(d + r) as usize] * img[y * s + clamp(x as isize + d)])
                .sum();
        }
    }
    let mut out = vec![0.0; s * s];
    for y in 0..s {
        for x in 0..s {
            out[y * s + x] = (-r..=r)
                .map(|d| k[(d + r) as usize] * tmp[clamp(y as isize + d) * s + x])
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic per seed, nested in n_train, masks in range, shapes present and brighter
    /// on average than the background.
    #[test]
    fn images_are_reproducible_nested_and_labelled() {
        let spec = ShapesSpec {
            n_train: 20,
            n_test: 5,
            size: 32,
            ..ShapesSpec::default()
        };
        let a = spec.generate(3);
        assert_eq!(a, spec.generate(3));
        let more = ShapesSpec {
            n_train: 30,
            ..spec.clone()
        }
        .generate(3);
        assert_eq!(a.train_x.row(7), more.train_x.row(7));
        assert_eq!(a.test_x, more.test_x);
        let (mut fg, mut bg, mut nf, mut nb) = (0.0, 0.0, 0, 0);
        for (x, y) in a.train_x.iter().zip(a.train_y.iter()) {
            assert!(*y == 0.0 || *y == 1.0);
            if *y == 1.0 {
                fg += x;
                nf += 1;
            } else {
                bg += x;
                nb += 1;
            }
        }
        assert!(nf > 0 && nb > nf, "{nf} foreground, {nb} background pixels");
        assert!(fg / nf as f64 > bg / nb as f64 + 0.5, "shapes not brighter");
        let per_kind = ShapesSpec { classes: 4, ..spec }.generate(3);
        assert!(per_kind.train_y.iter().any(|&v| v == 3.0));
    }

    #[test]
    fn blur_keeps_a_constant_image() {
        let img = vec![2.0; 100];
        assert!(blur(&img, 10, 1.5).iter().all(|v| (v - 2.0).abs() < 1e-12));
    }
}
