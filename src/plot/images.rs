//! Raster figures of a segmentation run: held-out images beside their true and predicted masks
//! (and where the two disagree), composed pixel by pixel into one RGB image and encoded as PNG.
//!
//! [`Panels::from_tensors`] reads what `segmentation.safetensors` holds (`images` `[m, c, h, w]`,
//! `masks` and `predictions` `[m, h, w]` of class indices, any float dtype through
//! [`crate::interop::load_f64`]); [`compose`] lays out one row per image and one column per
//! panel, each tile zoomed by an integer nearest-neighbour factor ([`zoom`]) and separated by
//! [`GAP`] white pixels; [`encode_png`] writes the result. Everything here is pure: the report
//! decides what to do with a missing or malformed file.

use std::collections::HashMap;

/// A tile's longest side is zoomed up to at least this many pixels.
pub const TARGET: usize = 96;
/// A tile's longest side is shrunk (every k-th pixel) to at most this many pixels.
pub const MAX_SIDE: usize = 256;
/// White pixels between tiles.
pub const GAP: usize = 2;

/// The gap colour (the page's background).
pub const WHITE: [u8; 3] = [0xff, 0xff, 0xff];
/// Class 0, the background, in a mask.
pub const BACKGROUND: [u8; 3] = [0x00, 0x00, 0x00];
/// The foreground of a two-class mask.
pub const FOREGROUND: [u8; 3] = [0xff, 0xff, 0xff];
/// A label that is no class (negative, fractional, non-finite or ≥ the number of classes).
pub const INVALID: [u8; 3] = [0xff, 0x00, 0xff];
/// Foreground classes `1, 2, …` of a multi-class mask (cycled): Okabe & Ito's palette without
/// its black, ordered for contrast on the black background.
pub const CLASS_COLORS: [[u8; 3]; 7] = [
    [0xE6, 0x9F, 0x00],
    [0x56, 0xB4, 0xE9],
    [0x00, 0x9E, 0x73],
    [0xF0, 0xE4, 0x42],
    [0x00, 0x72, 0xB2],
    [0xD5, 0x5E, 0x00],
    [0xCC, 0x79, 0xA7],
];
/// The names of [`CLASS_COLORS`], for captions.
pub const CLASS_COLOR_NAMES: [&str; 7] = [
    "orange",
    "sky blue",
    "green",
    "yellow",
    "blue",
    "vermillion",
    "purple",
];
/// Errors panel: a foreground pixel predicted on the background (false positive).
pub const FALSE_POSITIVE: [u8; 3] = [0xD5, 0x5E, 0x00];
/// Errors panel: a foreground pixel predicted as background (false negative).
pub const FALSE_NEGATIVE: [u8; 3] = [0x56, 0xB4, 0xE9];
/// Errors panel: a foreground pixel predicted as another foreground class.
pub const WRONG_CLASS: [u8; 3] = [0xF0, 0xE4, 0x42];
/// Errors panel: a correctly predicted foreground pixel (correct background stays black).
pub const CORRECT_FOREGROUND: [u8; 3] = [0x70, 0x70, 0x70];

/// An 8-bit RGB image, row-major, three bytes a pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb {
    /// An image of one colour.
    pub fn filled(width: usize, height: usize, color: [u8; 3]) -> Rgb {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&color);
        }
        Rgb {
            width,
            height,
            data,
        }
    }

    /// The pixel at column `x`, row `y`.
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        let i = (y * self.width + x) * 3;
        self.data[i..i + 3].copy_from_slice(&c);
    }
}

/// The held-out images, masks and predictions of a segmentation artifact, checked for shape.
#[derive(Clone, Debug)]
pub struct Panels {
    /// Images with all three of image, mask and prediction.
    pub count: usize,
    /// Images in the artifact (predictions may cover fewer).
    pub stored: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `[count, channels, height, width]`.
    pub images: Vec<f64>,
    /// `[count, height, width]` class indices.
    pub masks: Vec<f64>,
    /// `[count, height, width]` class indices.
    pub predictions: Vec<f64>,
}

impl Panels {
    /// Checks and takes the `images`, `masks` and `predictions` tensors; the error says what is
    /// missing or inconsistent.
    pub fn from_tensors(t: &HashMap<String, (Vec<usize>, Vec<f64>)>) -> Result<Panels, String> {
        let (is, images) = tensor(t, "images")?;
        let (ms, masks) = tensor(t, "masks")?;
        let (ps, predictions) = tensor(t, "predictions")?;
        let &[m, c, h, w] = is else {
            return Err(format!(
                "tensor `images` has shape {is:?}; expected [images, channels, height, width]"
            ));
        };
        if ms != [m, h, w] {
            return Err(format!(
                "tensor `masks` has shape {ms:?}; expected {:?} to match `images` {is:?}",
                [m, h, w]
            ));
        }
        let &[mp, hp, wp] = ps else {
            return Err(format!(
                "tensor `predictions` has shape {ps:?}; expected [images, height, width]"
            ));
        };
        if (hp, wp) != (h, w) || mp > m {
            return Err(format!(
                "tensor `predictions` has shape {ps:?}, which does not match `images` {is:?}"
            ));
        }
        if c == 0 || h == 0 || w == 0 {
            return Err(format!("tensor `images` has shape {is:?}: no pixels"));
        }
        if mp == 0 {
            return Err(if m == 0 {
                "it holds no held-out images".to_string()
            } else {
                "it holds no predictions".to_string()
            });
        }
        let plane = h * w;
        Ok(Panels {
            count: mp,
            stored: m,
            channels: c,
            height: h,
            width: w,
            images: images[..mp * c * plane].to_vec(),
            masks: masks[..mp * plane].to_vec(),
            predictions: predictions[..mp * plane].to_vec(),
        })
    }

    /// The classes the labels need: one more than the largest valid label, at least 2.
    pub fn classes_seen(&self) -> usize {
        self.masks
            .iter()
            .chain(&self.predictions)
            .filter_map(|&v| label(v))
            .max()
            .map_or(2, |k| (k + 1).max(2))
    }

    /// How many mask and prediction pixels hold no class of `classes` (drawn [`INVALID`]).
    pub fn invalid_labels(&self, classes: usize) -> usize {
        self.masks
            .iter()
            .chain(&self.predictions)
            .filter(|&&v| !matches!(label(v), Some(k) if k < classes))
            .count()
    }

    /// Each image's Dice, the mean over the foreground classes `1 … classes − 1` of
    /// `2TP/(2TP + FP + FN)`, with the training loop's convention: a class absent from both the
    /// mask and the prediction scores 1.
    pub fn dice_per_image(&self, classes: usize) -> Vec<f64> {
        let plane = self.height * self.width;
        (0..self.count)
            .map(|i| {
                let truth = &self.masks[i * plane..(i + 1) * plane];
                let pred = &self.predictions[i * plane..(i + 1) * plane];
                let mut sum = 0.0;
                for k in 1..classes {
                    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
                    for (&t, &p) in truth.iter().zip(pred) {
                        match (label(p) == Some(k), label(t) == Some(k)) {
                            (true, true) => tp += 1,
                            (true, false) => fp += 1,
                            (false, true) => fn_ += 1,
                            (false, false) => {}
                        }
                    }
                    let den = 2 * tp + fp + fn_;
                    sum += if den == 0 {
                        1.0
                    } else {
                        2.0 * tp as f64 / den as f64
                    };
                }
                sum / classes.saturating_sub(1).max(1) as f64
            })
            .collect()
    }
}

/// The shape and values of tensor `name`, checked to agree.
fn tensor<'a>(
    t: &'a HashMap<String, (Vec<usize>, Vec<f64>)>,
    name: &str,
) -> Result<(&'a [usize], &'a [f64]), String> {
    let (shape, data) = t
        .get(name)
        .ok_or_else(|| format!("it has no tensor `{name}`"))?;
    if shape.iter().product::<usize>() != data.len() {
        return Err(format!(
            "tensor `{name}` has shape {shape:?} but {} values",
            data.len()
        ));
    }
    Ok((shape.as_slice(), data.as_slice()))
}

/// A stored value as a class index: a finite, non-negative whole number.
fn label(v: f64) -> Option<usize> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0).then_some(v as usize)
}

/// The colour of label `v` in a mask of `classes` classes: background black; for two classes a
/// white foreground, else [`CLASS_COLORS`] by class; [`INVALID`] for a label that is no class.
pub fn class_color(v: f64, classes: usize) -> [u8; 3] {
    match label(v) {
        Some(0) => BACKGROUND,
        Some(k) if k < classes => {
            if classes <= 2 {
                FOREGROUND
            } else {
                CLASS_COLORS[(k - 1) % CLASS_COLORS.len()]
            }
        }
        _ => INVALID,
    }
}

/// The errors panel's colour of a pixel labelled `truth` and predicted `pred`.
pub fn error_color(truth: f64, pred: f64, classes: usize) -> [u8; 3] {
    let valid = |v: f64| label(v).filter(|&k| k < classes);
    match (valid(truth), valid(pred)) {
        (Some(t), Some(p)) if t == p => {
            if t == 0 {
                BACKGROUND
            } else {
                CORRECT_FOREGROUND
            }
        }
        (Some(0), Some(_)) => FALSE_POSITIVE,
        (Some(_), Some(0)) => FALSE_NEGATIVE,
        (Some(_), Some(_)) => WRONG_CLASS,
        _ => INVALID,
    }
}

/// Integer nearest-neighbour factors `(up, down)` for a `height × width` image: a tile of
/// `⌈side·up/down⌉` pixels shows source pixel `⌊t·down/up⌋`. Small images are zoomed until the
/// longest side reaches [`TARGET`], large ones subsampled to at most [`MAX_SIDE`].
pub fn zoom(height: usize, width: usize) -> (usize, usize) {
    let side = height.max(width).max(1);
    if side < TARGET {
        (TARGET.div_ceil(side), 1)
    } else if side > MAX_SIDE {
        (1, side.div_ceil(MAX_SIDE))
    } else {
        (1, 1)
    }
}

/// Image `i` at source resolution: grey for one channel, RGB for three, the mean over channels
/// otherwise; min–max scaled over the image's finite values (all channels together, so that
/// colours keep their balance). A constant image is mid-grey; a non-finite value black.
pub fn image_tile(p: &Panels, i: usize) -> Vec<[u8; 3]> {
    let (c, plane) = (p.channels, p.height * p.width);
    let img = &p.images[i * c * plane..(i + 1) * c * plane];
    // The displayed channels: [plane] (grey) or [3, plane] (RGB).
    let shown: Vec<f64> = if c == 3 {
        img.to_vec()
    } else {
        (0..plane)
            .map(|q| (0..c).map(|ch| img[ch * plane + q]).sum::<f64>() / c as f64)
            .collect()
    };
    let (lo, hi) = shown
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let byte = |v: f64| -> u8 {
        if !v.is_finite() {
            0
        } else if hi > lo {
            (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
        } else {
            128
        }
    };
    (0..plane)
        .map(|q| {
            if c == 3 {
                [
                    byte(shown[q]),
                    byte(shown[plane + q]),
                    byte(shown[2 * plane + q]),
                ]
            } else {
                let g = byte(shown[q]);
                [g, g, g]
            }
        })
        .collect()
}

/// The panels a figure shows, left to right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    Image,
    Mask,
    Prediction,
    Errors,
}

impl Column {
    pub fn heading(self) -> &'static str {
        match self {
            Column::Image => "image",
            Column::Mask => "true mask",
            Column::Prediction => "prediction",
            Column::Errors => "errors",
        }
    }
}

/// The tile of `column` for image `i`, at source resolution.
fn tile(p: &Panels, i: usize, column: Column, classes: usize) -> Vec<[u8; 3]> {
    let plane = p.height * p.width;
    let masks = &p.masks[i * plane..(i + 1) * plane];
    let preds = &p.predictions[i * plane..(i + 1) * plane];
    match column {
        Column::Image => image_tile(p, i),
        Column::Mask => masks.iter().map(|&v| class_color(v, classes)).collect(),
        Column::Prediction => preds.iter().map(|&v| class_color(v, classes)).collect(),
        Column::Errors => masks
            .iter()
            .zip(preds)
            .map(|(&t, &q)| error_color(t, q, classes))
            .collect(),
    }
}

/// The size in pixels of one zoomed tile: `(width, height)`.
pub fn tile_size(p: &Panels) -> (usize, usize) {
    let (up, down) = zoom(p.height, p.width);
    (
        (p.width * up).div_ceil(down),
        (p.height * up).div_ceil(down),
    )
}

/// The figure: the first `rows` images (at most [`Panels::count`]), one per row, with one tile
/// per column, zoomed by [`zoom`], [`GAP`] white pixels between tiles and no outer margin.
pub fn compose(p: &Panels, classes: usize, rows: usize, columns: &[Column]) -> Rgb {
    let rows = rows.min(p.count);
    let (up, down) = zoom(p.height, p.width);
    let (tw, th) = tile_size(p);
    let n = columns.len();
    let width = n * tw + n.saturating_sub(1) * GAP;
    let height = rows * th + rows.saturating_sub(1) * GAP;
    let mut out = Rgb::filled(width, height, WHITE);
    for i in 0..rows {
        let y0 = i * (th + GAP);
        for (j, &col) in columns.iter().enumerate() {
            let x0 = j * (tw + GAP);
            let src = tile(p, i, col, classes);
            for ty in 0..th {
                let sy = (ty * down / up).min(p.height - 1);
                for tx in 0..tw {
                    let sx = (tx * down / up).min(p.width - 1);
                    out.set(x0 + tx, y0 + ty, src[sy * p.width + sx]);
                }
            }
        }
    }
    out
}

/// `img` as PNG bytes (8-bit RGB).
pub fn encode_png(img: &Rgb) -> Result<Vec<u8>, String> {
    let (w, h) = (
        u32::try_from(img.width).map_err(|e| e.to_string())?,
        u32::try_from(img.height).map_err(|e| e.to_string())?,
    );
    if w == 0 || h == 0 {
        return Err(format!("an empty image ({w}×{h})"));
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Best);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(&img.data)
            .map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2×2 images of `channels` channels (as many as the masks give), with their masks and
    /// predictions.
    fn panels(channels: usize, images: Vec<f64>, masks: Vec<f64>, preds: Vec<f64>) -> Panels {
        let m = masks.len() / 4;
        let mut t = HashMap::new();
        t.insert("images".to_string(), (vec![m, channels, 2, 2], images));
        t.insert("masks".to_string(), (vec![m, 2, 2], masks));
        t.insert("predictions".to_string(), (vec![m, 2, 2], preds));
        Panels::from_tensors(&t).unwrap()
    }

    #[test]
    fn grey_images_are_min_max_scaled_per_image() {
        // Image 0 spans [−1, 3]; image 1 is constant (mid-grey).
        let p = panels(
            1,
            vec![-1.0, 0.0, 1.0, 3.0, 5.0, 5.0, 5.0, 5.0],
            vec![0.0; 8],
            vec![0.0; 8],
        );
        let t = image_tile(&p, 0);
        assert_eq!(t, vec![[0; 3], [64; 3], [128; 3], [255; 3]]);
        assert_eq!(image_tile(&p, 1), vec![[128; 3]; 4]);
    }

    #[test]
    fn rgb_keeps_channels_and_other_counts_average() {
        // Three channels: red ramp, green constant 0, blue constant 2 → scaled together over
        // [0, 2].
        let p = panels(
            3,
            vec![0.0, 1.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0],
            vec![0.0; 4],
            vec![0.0; 4],
        );
        assert_eq!(
            image_tile(&p, 0),
            vec![[0, 0, 255], [128, 0, 255], [255, 0, 255], [255, 0, 255]]
        );
        // Two channels: their mean, 0, 1, 1, 2 → 0, 128, 128, 255.
        let p = panels(
            2,
            vec![0.0, 2.0, 0.0, 2.0, 0.0, 0.0, 2.0, 2.0],
            vec![0.0; 4],
            vec![0.0; 4],
        );
        assert_eq!(
            image_tile(&p, 0),
            vec![[0; 3], [128; 3], [128; 3], [255; 3]]
        );
    }

    #[test]
    fn palette_of_masks_and_errors() {
        assert_eq!(class_color(0.0, 2), BACKGROUND);
        assert_eq!(class_color(1.0, 2), [255, 255, 255]);
        assert_eq!(class_color(1.0, 4), [0xE6, 0x9F, 0x00]);
        assert_eq!(class_color(3.0, 4), [0x00, 0x9E, 0x73]);
        for bad in [4.0, -1.0, 0.5, f64::NAN] {
            assert_eq!(class_color(bad, 4), INVALID, "{bad}");
        }
        assert_eq!(error_color(0.0, 0.0, 2), BACKGROUND);
        assert_eq!(error_color(1.0, 1.0, 2), CORRECT_FOREGROUND);
        assert_eq!(error_color(0.0, 1.0, 2), FALSE_POSITIVE);
        assert_eq!(error_color(1.0, 0.0, 2), FALSE_NEGATIVE);
        assert_eq!(error_color(1.0, 2.0, 3), WRONG_CLASS);
        assert_eq!(error_color(1.0, 2.0, 2), INVALID);
    }

    #[test]
    fn composes_zoomed_tiles_with_gaps() {
        // One 2×2 grey image, mask [0 1; 1 0], prediction [1 1; 0 0].
        let p = panels(
            1,
            vec![0.0, 1.0, 2.0, 3.0],
            vec![0.0, 1.0, 1.0, 0.0],
            vec![1.0, 1.0, 0.0, 0.0],
        );
        assert_eq!(zoom(2, 2), (48, 1));
        let cols = [
            Column::Image,
            Column::Mask,
            Column::Prediction,
            Column::Errors,
        ];
        let img = compose(&p, 2, 4, &cols);
        // One row of four 96-pixel tiles, three 2-pixel gaps.
        assert_eq!((img.width, img.height), (4 * 96 + 3 * GAP, 96));
        assert_eq!(img.data.len(), img.width * img.height * 3);
        // Image: top-left black, bottom-right white; the tile's halves are the source pixels.
        assert_eq!(img.pixel(0, 0), [0; 3]);
        assert_eq!(img.pixel(47, 47), [0; 3]);
        assert_eq!(img.pixel(48, 0), [85; 3]);
        assert_eq!(img.pixel(95, 95), [255; 3]);
        // Gap.
        assert_eq!(img.pixel(96, 10), WHITE);
        assert_eq!(img.pixel(97, 10), WHITE);
        // Mask tile starts at 98: [0 1; 1 0].
        let x = 96 + GAP;
        assert_eq!(img.pixel(x, 0), BACKGROUND);
        assert_eq!(img.pixel(x + 48, 0), FOREGROUND);
        assert_eq!(img.pixel(x, 48), FOREGROUND);
        // Prediction: [1 1; 0 0].
        let x = 2 * (96 + GAP);
        assert_eq!(img.pixel(x, 0), FOREGROUND);
        assert_eq!(img.pixel(x + 95, 95), BACKGROUND);
        // Errors: FP, TP; FN, TN.
        let x = 3 * (96 + GAP);
        assert_eq!(img.pixel(x, 0), FALSE_POSITIVE);
        assert_eq!(img.pixel(x + 48, 0), CORRECT_FOREGROUND);
        assert_eq!(img.pixel(x, 48), FALSE_NEGATIVE);
        assert_eq!(img.pixel(x + 95, 95), BACKGROUND);
        // Dice of the one image: TP 1, FP 1, FN 1 → 2/4.
        assert_eq!(p.dice_per_image(2), vec![0.5]);
        assert_eq!(p.invalid_labels(2), 0);
        assert_eq!(p.classes_seen(), 2);
    }

    #[test]
    fn rows_stack_and_large_images_shrink() {
        let p = panels(1, vec![0.0; 12], vec![0.0; 12], vec![0.0; 12]);
        let img = compose(&p, 2, 2, &[Column::Image, Column::Mask]);
        assert_eq!((img.width, img.height), (2 * 96 + GAP, 2 * 96 + GAP));
        // The horizontal gap between the rows.
        assert_eq!(img.pixel(5, 96), WHITE);
        assert_eq!(img.pixel(5, 98), [128; 3]);
        assert_eq!(zoom(64, 64), (2, 1));
        assert_eq!(zoom(200, 100), (1, 1));
        assert_eq!(zoom(300, 512), (1, 2));
        assert_eq!(zoom(1, 1), (96, 1));
    }

    #[test]
    fn malformed_artifacts_are_named() {
        let mut t = HashMap::new();
        t.insert("images".to_string(), (vec![1, 1, 2, 2], vec![0.0; 4]));
        assert!(Panels::from_tensors(&t)
            .unwrap_err()
            .contains("no tensor `masks`"));
        t.insert("masks".to_string(), (vec![1, 2, 3], vec![0.0; 6]));
        t.insert("predictions".to_string(), (vec![1, 2, 2], vec![0.0; 4]));
        assert!(Panels::from_tensors(&t).unwrap_err().contains("`masks`"));
        t.insert("masks".to_string(), (vec![1, 2, 2], vec![0.0; 4]));
        t.insert("predictions".to_string(), (vec![0, 2, 2], vec![]));
        assert!(Panels::from_tensors(&t)
            .unwrap_err()
            .contains("no predictions"));
        t.insert("predictions".to_string(), (vec![1, 2, 2], vec![0.0; 3]));
        assert!(Panels::from_tensors(&t).unwrap_err().contains("3 values"));
    }

    #[test]
    fn png_decodes_to_the_same_pixels() {
        let p = panels(
            3,
            (0..24).map(|v| v as f64).collect(),
            vec![0.0, 1.0, 2.0, 7.0, 1.0, 1.0, 0.0, 0.0],
            vec![0.0, 2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        );
        let img = compose(
            &p,
            3,
            8,
            &[
                Column::Image,
                Column::Mask,
                Column::Prediction,
                Column::Errors,
            ],
        );
        let bytes = encode_png(&img).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let mut reader = png::Decoder::new(bytes.as_slice()).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width as usize, info.height as usize),
            (img.width, img.height)
        );
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        assert_eq!(&buf[..info.buffer_size()], img.data.as_slice());
        // The label 7 is no class of three: drawn (and counted) as invalid.
        assert_eq!(p.invalid_labels(3), 1);
        assert_eq!(img.pixel(2 * (96 + GAP) - 1 - GAP, 95), INVALID);
    }
}
