//! A folder of images and their masks, for segmentation: `[task.images]`.
//!
//! - Layout: `dir/images/` and `dir/masks/` (the folder names are keys) hold one file per
//!   image, matched by file name without the extension (`images/case07.png` ↔
//!   `masks/case07.png` or `masks/case07.npy`). Files are taken in name order, so the order (and
//!   with it the seeded split) does not depend on the file system. Hidden files and files of
//!   other types are skipped, but JPEG, TIFF, BMP, GIF and WebP files are refused rather than
//!   silently left out. Every image needs its mask and every mask its image.
//! - Images: PNG (gray, gray + alpha, RGB, RGBA, palette; 1- to 16-bit; alpha is dropped and
//!   palettes and low bit depths are expanded) or NPY (`[h, w]` or `[c, h, w]`, any dtype the
//!   NPY reader takes). All images share one `c × h × w`. 8-bit values are divided by 255 and
//!   16-bit values by 65,535 (NPY `uint8` and `uint16` likewise); NPY floats and other integer
//!   types are taken as stored.
//! - Masks: one class index per pixel, the image's `h × w`: PNG gray or palette (the stored
//!   value or palette index, not scaled) or NPY `[h, w]` (or `[1, h, w]`) integers in
//!   `0..classes`. With `classes = 2` the value 255 also reads as 1: binary masks saved as
//!   0/255 PNGs.
//! - Splits and subsets as every file task (`files.rs`): a seeded split holds out
//!   `test_fraction` of the images unless test folders are given, and `n_train` / `n_test`
//!   keep nested seeded subsets.
//! - `scale = "standardize"` then maps each channel to mean 0 and standard deviation 1 over the
//!   training images, applying the same map to the test images.
//!
//! The dataset has the shape [`shapes`](crate::task::shapes) gives a U-Net: rows of
//! `[c, h, w]` images (NCHW) with `image: Some(..)`, masks `[n, h·w]` and
//! [`Target::Masks`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::npy::parse_npy_typed;
use super::{parse_err, shape_err, split_and_subset, Elem, Fail};
use crate::task::{
    counts, invalid, key, matrix, open_fraction, read_bytes, resolve, size_ok, thousands,
    where_hint, Dataset, ImageInfo, Target, TaskError,
};

const KIND: &str = "images";

/// The most classes a mask can label: a 16-bit mask's range.
const MAX_CLASSES: usize = 1 << 16;

/// The most channels an image may have (as `[task.shapes]`); more is almost surely an
/// `[h, w, c]` array read as `[c, h, w]`.
const MAX_CHANNELS: usize = 64;

/// Image file types that are refused rather than skipped: a folder of them is a data set this
/// task cannot read, and leaving them out would silently shrink it.
const REFUSED: &[&str] = &["jpg", "jpeg", "tif", "tiff", "bmp", "gif", "webp"];

/// How pixel values become inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PixelScale {
    /// 8-bit values divided by 255 and 16-bit by 65,535 (inputs in [0, 1]); NPY floats and
    /// other integer types as stored.
    Unit,
    /// Then each channel shifted and scaled to mean 0 and standard deviation 1 over the
    /// training images (the same map applied to the test images).
    Standardize,
}

/// `[task.images]`: a folder of images and a folder of masks (PNG or NPY), matched by file name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSpec {
    /// The folder holding `images` and `masks` (relative to the experiment file); the
    /// experiment file's own folder, as for `[task.idx]`.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// `images/`, the usual layout of segmentation data sets.
    #[serde(default = "default_images")]
    pub images: PathBuf,
    /// `masks/`, beside `images/`.
    #[serde(default = "default_masks")]
    pub masks: PathBuf,
    /// A separate test set's images (relative to `dir`); with `test_masks`, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_images: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_masks: Option<PathBuf>,
    /// Classes the masks label, background included (required: a folder of masks may not
    /// show every class).
    pub classes: usize,
    /// Held-out fraction when there are no test folders (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_test: Option<usize>,
    /// Pixels to [0, 1], the usual preprocessing of 8-bit images (and what `[task.idx]` does).
    #[serde(default = "default_scale")]
    pub scale: PixelScale,
}

/// The experiment file's own folder.
fn default_dir() -> PathBuf {
    PathBuf::from(".")
}
/// The usual name.
fn default_images() -> PathBuf {
    "images".into()
}
/// The usual name.
fn default_masks() -> PathBuf {
    "masks".into()
}
/// Pixels to [0, 1].
fn default_scale() -> PixelScale {
    PixelScale::Unit
}

/// A file of a folder, by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Png,
    Npy,
}

/// A folder's image files by file stem, in name order.
type Listing = BTreeMap<OsString, (PathBuf, Format)>;

/// A decoded image, `[c, h, w]` row-major.
struct Image {
    c: usize,
    h: usize,
    w: usize,
    data: Vec<f64>,
}

/// A decoded mask, `[h, w]` row-major, values as stored.
struct Mask {
    h: usize,
    w: usize,
    data: Vec<f64>,
}

/// One set (train or test) as read: rows of images and masks.
struct Set {
    x: Array2<f64>,
    y: Array2<f64>,
    /// `(c, h, w)`.
    shape: (usize, usize, usize),
    /// The first image, named when another set's shape differs.
    first: PathBuf,
}

/// The PNG and NPY files of the folder `written` (key `field`), by stem in name order.
fn list(field: &str, base_dir: &Path, written: &Path) -> Result<(PathBuf, Listing), TaskError> {
    let k = key(KIND, field);
    let folder = resolve(base_dir, written);
    if !folder.exists() {
        return Err(invalid(
            k,
            format!("folder not found: {}", folder.display()),
            where_hint(base_dir, written),
        ));
    }
    if !folder.is_dir() {
        return Err(invalid(
            k,
            format!("{} is not a folder", folder.display()),
            "point it at the folder that holds the files (matched by name between images and masks)",
        ));
    }
    let io = |source| TaskError::Io {
        key: k.clone(),
        path: folder.clone(),
        source,
    };
    let mut files = Listing::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(&folder).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        // Hidden files (.DS_Store) and subfolders are not images.
        if entry.file_name().to_string_lossy().starts_with('.') || !path.is_file() {
            continue;
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let format = match ext.as_str() {
            "png" => Format::Png,
            "npy" => Format::Npy,
            e if REFUSED.contains(&e) => {
                *refused.entry(ext.clone()).or_default() += 1;
                continue;
            }
            _ => continue,
        };
        let stem = path.file_stem().map(OsString::from).unwrap_or_default();
        if let Some((other, _)) = files.insert(stem, (path.clone(), format)) {
            return Err(invalid(
                &k,
                format!(
                    "two files share one name: {} and {}",
                    other.display(),
                    path.display()
                ),
                "keep one file per image (files are matched by name without the extension)",
            ));
        }
    }
    if let Some((ext, n)) = refused.iter().next() {
        return Err(invalid(
            &k,
            format!(
                "{} holds {} .{ext} file{}, which are not read (PNG and NPY are)",
                folder.display(),
                thousands(*n),
                if *n == 1 { "" } else { "s" }
            ),
            format!(
                "convert them to PNG (lossless, e.g. `mogrify -format png *.{ext}`) and move the .{ext} files out"
            ),
        ));
    }
    if files.is_empty() {
        return Err(invalid(
            k,
            format!("{} holds no PNG or NPY files", folder.display()),
            "point it at the folder of .png or .npy files",
        ));
    }
    Ok((folder, files))
}

fn png_fail(e: png::DecodingError) -> Fail {
    (
        format!("not a readable PNG: {e}"),
        "the file is damaged or not a PNG; re-save it as PNG".into(),
    )
}

fn color_name(c: png::ColorType) -> &'static str {
    match c {
        png::ColorType::Grayscale => "gray",
        png::ColorType::GrayscaleAlpha => "gray + alpha",
        png::ColorType::Rgb => "RGB",
        png::ColorType::Rgba => "RGBA",
        png::ColorType::Indexed => "palette",
    }
}

/// A PNG image with palettes and low bit depths expanded, alpha dropped, scaled to [0, 1].
fn png_image(bytes: &[u8]) -> Result<Image, Fail> {
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(png_fail)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(png_fail)?;
    let (h, w) = (info.height as usize, info.width as usize);
    let samples = info.color_type.samples();
    let keep = match info.color_type {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => 1,
        png::ColorType::Rgb | png::ColorType::Rgba => 3,
        png::ColorType::Indexed => {
            return Err((
                "a palette image was not expanded".into(),
                "re-save it as a gray or RGB PNG".into(),
            ))
        }
    };
    let (bytes_per, max) = match info.bit_depth {
        png::BitDepth::Sixteen => (2, 65535.0),
        png::BitDepth::Eight => (1, 255.0),
        d => {
            return Err((
                format!("{}-bit samples were not expanded", d as u8),
                "re-save it as an 8- or 16-bit PNG".into(),
            ))
        }
    };
    let row_bytes = w * samples * bytes_per;
    let mut data = vec![0.0; keep * h * w];
    for (y, line) in buf.chunks(info.line_size.max(1)).take(h).enumerate() {
        let Some(line) = line.get(..row_bytes) else {
            return Err((
                "decoded rows are shorter than the image width".into(),
                "re-save it as PNG".into(),
            ));
        };
        for x in 0..w {
            for ch in 0..keep {
                let at = (x * samples + ch) * bytes_per;
                let v = if bytes_per == 2 {
                    u16::from_be_bytes([line[at], line[at + 1]]) as f64
                } else {
                    line[at] as f64
                };
                data[(ch * h + y) * w + x] = v / max;
            }
        }
    }
    Ok(Image {
        c: keep,
        h,
        w,
        data,
    })
}

/// A PNG mask: gray or palette, the stored values (palette indices, not colours; low bit
/// depths not scaled).
fn png_mask(bytes: &[u8]) -> Result<Mask, Fail> {
    // No transformations: a palette mask's indices are its classes, and a 1-bit mask is 0/1.
    let mut reader = png::Decoder::new(bytes).read_info().map_err(png_fail)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(png_fail)?;
    if !matches!(
        info.color_type,
        png::ColorType::Grayscale | png::ColorType::Indexed
    ) {
        return Err((
            format!(
                "holds {} pixels, not a one-channel mask",
                color_name(info.color_type)
            ),
            "save each mask as a one-channel (gray or palette) PNG whose values are the class indices"
                .into(),
        ));
    }
    let (h, w) = (info.height as usize, info.width as usize);
    let bits = info.bit_depth as usize;
    let row_bytes = (w * bits).div_ceil(8);
    let mut data = Vec::with_capacity(h * w);
    for line in buf.chunks(info.line_size.max(1)).take(h) {
        let Some(line) = line.get(..row_bytes) else {
            return Err((
                "decoded rows are shorter than the mask width".into(),
                "re-save it as PNG".into(),
            ));
        };
        for x in 0..w {
            let v = match bits {
                16 => u16::from_be_bytes([line[2 * x], line[2 * x + 1]]) as u32,
                8 => line[x] as u32,
                // 1, 2 or 4 bits, packed from the most significant bit.
                b => {
                    let bit = x * b;
                    let shift = 8 - b - bit % 8;
                    ((line[bit / 8] >> shift) as u32) & ((1u32 << b) - 1)
                }
            };
            data.push(v as f64);
        }
    }
    Ok(Mask { h, w, data })
}

/// An NPY image, `[h, w]` or `[c, h, w]`; `uint8` and `uint16` scaled to [0, 1].
fn npy_image(bytes: &[u8]) -> Result<Image, Fail> {
    let (a, elem) = parse_npy_typed(bytes)?;
    let (c, h, w) = match *a.shape.as_slice() {
        [h, w] => (1, h, w),
        [c, h, w] => (c, h, w),
        _ => {
            return Err((
                format!("holds an array of shape {:?}, not an image", a.shape),
                "store each image as [h, w] or [c, h, w] (channels first)".into(),
            ))
        }
    };
    if c > MAX_CHANNELS {
        let hint = if w <= 4 {
            format!("this looks like [h, w, c] = {:?}: save the channels first, np.save(path, np.transpose(a, (2, 0, 1)))", a.shape)
        } else {
            "store each image as [h, w] or [c, h, w] (channels first)".into()
        };
        return Err((
            format!(
                "has {c} channels (at most {MAX_CHANNELS}), shape {:?}",
                a.shape
            ),
            hint,
        ));
    }
    if c * h * w == 0 {
        return Err((
            format!("holds an empty image of shape {:?}", a.shape),
            "an image needs at least one pixel".into(),
        ));
    }
    let max = match elem {
        Elem::U8 => Some(255.0),
        Elem::U16 => Some(65535.0),
        _ => None,
    };
    let data = match max {
        Some(max) => a.data.into_iter().map(|v| v / max).collect(),
        None => a.data,
    };
    Ok(Image { c, h, w, data })
}

/// An NPY mask, `[h, w]` or `[1, h, w]`, values as stored.
fn npy_mask(bytes: &[u8]) -> Result<Mask, Fail> {
    let (a, _) = parse_npy_typed(bytes)?;
    let (h, w) = match *a.shape.as_slice() {
        [h, w] | [1, h, w] => (h, w),
        _ => {
            return Err((
                format!("holds an array of shape {:?}, not a mask", a.shape),
                "store each mask as [h, w] class indices".into(),
            ))
        }
    };
    Ok(Mask { h, w, data: a.data })
}

impl ImagesSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        if !(2..=MAX_CLASSES).contains(&self.classes) {
            return Err(invalid(
                key(KIND, "classes"),
                format!(
                    "must be between 2 and {} (got {})",
                    thousands(MAX_CLASSES),
                    self.classes
                ),
                "the number of classes the masks label, background included, e.g. classes = 2",
            ));
        }
        if let Some(f) = self.test_fraction {
            open_fraction(
                key(KIND, "test_fraction"),
                f,
                "the share of images held out for testing, e.g. 0.25",
            )?;
        }
        match (&self.test_images, &self.test_masks) {
            (Some(_), None) => {
                return Err(invalid(
                    key(KIND, "test_masks"),
                    "missing: test_images is given",
                    "give both test folders, or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    key(KIND, "test_images"),
                    "missing: test_masks is given",
                    "give both test folders, or neither",
                ))
            }
            (Some(_), Some(_)) if self.test_fraction.is_some() => {
                return Err(invalid(
                    key(KIND, "test_fraction"),
                    "given together with test_images/test_masks",
                    "use either separate test folders or a held-out fraction",
                ))
            }
            _ => {}
        }
        for (field, images, masks) in [
            ("masks", Some(&self.images), Some(&self.masks)),
            (
                "test_masks",
                self.test_images.as_ref(),
                self.test_masks.as_ref(),
            ),
        ] {
            if let (Some(i), Some(m)) = (images, masks) {
                if i == m {
                    return Err(invalid(
                        key(KIND, field),
                        format!("names the same folder as the images ('{}')", m.display()),
                        "keep images and masks in separate folders, matched by file name",
                    ));
                }
            }
        }
        for (field, v) in [("n_train", self.n_train), ("n_test", self.n_test)] {
            if v == Some(0) {
                return Err(invalid(
                    key(KIND, field),
                    "must be ≥ 1 (got 0)",
                    "leave it out to use every image",
                ));
            }
        }
        Ok(())
    }

    /// Reads one set: the images of folder `images` and their masks in folder `masks`
    /// (`(key, path)` each, relative to `dir`), in name order.
    fn set(
        &self,
        base_dir: &Path,
        (ifield, idir): (&str, &Path),
        (mfield, mdir): (&str, &Path),
    ) -> Result<Set, TaskError> {
        let (ik, mk) = (key(KIND, ifield), key(KIND, mfield));
        let (_, images) = list(ifield, base_dir, &self.dir.join(idir))?;
        let (mask_dir, masks) = list(mfield, base_dir, &self.dir.join(mdir))?;
        for (stem, (path, _)) in &images {
            if !masks.contains_key(stem) {
                let name = Path::new(stem).display().to_string();
                return Err(invalid(
                    &mk,
                    format!(
                        "no mask for {}: expected {} (or .npy)",
                        path.display(),
                        mask_dir.join(format!("{name}.png")).display()
                    ),
                    "every image needs a mask with the same file name (PNG or NPY): add it, or move the image out",
                ));
            }
        }
        for (stem, (path, _)) in &masks {
            if !images.contains_key(stem) {
                return Err(invalid(
                    &mk,
                    format!("no image for the mask {}", path.display()),
                    "every mask needs an image with the same file name (PNG or NPY): add it, or move the mask out",
                ));
            }
        }
        let n = images.len();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        let mut first: Option<(usize, usize, usize, PathBuf)> = None;
        for (stem, (ipath, iformat)) in &images {
            // Listed paths are already resolved: read them as they are.
            let bytes = read_bytes(&ik, Path::new(""), ipath)?;
            let img = match iformat {
                Format::Png => png_image(&bytes),
                Format::Npy => npy_image(&bytes),
            }
            .map_err(|(m, h)| parse_err(&ik, ipath, m, h))?;
            drop(bytes);
            if first.is_none() {
                size_ok(
                    KIND,
                    n,
                    (img.c * img.h * img.w).saturating_add(img.h * img.w),
                    "the number or the size of the images (n_train keeps a subset only after every image is read)",
                )?;
                xs.reserve(n * img.c * img.h * img.w);
                ys.reserve(n * img.h * img.w);
                first = Some((img.c, img.h, img.w, ipath.clone()));
            }
            if let Some((c, h, w, path)) = &first {
                if (img.c, img.h, img.w) != (*c, *h, *w) {
                    return Err(parse_err(
                        &ik,
                        ipath,
                        format!(
                            "is {}×{}×{} (channels × height × width) but {} is {c}×{h}×{w}",
                            img.c,
                            img.h,
                            img.w,
                            path.display()
                        ),
                        "every image must have one shape: resize, crop or pad them to one size",
                    ));
                }
            }
            if let Some(i) = img.data.iter().position(|v| !v.is_finite()) {
                let (ch, p) = (i / (img.h * img.w), i % (img.h * img.w));
                return Err(parse_err(
                    &ik,
                    ipath,
                    format!(
                        "pixel (channel {ch}, row {}, column {}) is {}, not a finite number",
                        p / img.w,
                        p % img.w,
                        img.data[i]
                    ),
                    "replace NaN and ±inf before training",
                ));
            }
            let (mpath, mformat) = &masks[stem];
            let bytes = read_bytes(&mk, Path::new(""), mpath)?;
            let mask = match mformat {
                Format::Png => png_mask(&bytes),
                Format::Npy => npy_mask(&bytes),
            }
            .map_err(|(m, h)| parse_err(&mk, mpath, m, h))?;
            if (mask.h, mask.w) != (img.h, img.w) {
                return Err(parse_err(
                    &mk,
                    mpath,
                    format!(
                        "is {}×{} but its image {} is {}×{} (height × width)",
                        mask.h,
                        mask.w,
                        ipath.display(),
                        img.h,
                        img.w
                    ),
                    "a mask labels every pixel of its image: give it the image's height and width",
                ));
            }
            xs.extend(img.data);
            self.check_mask(&mask, mpath)?;
            ys.extend(mask.data.iter().map(|&v| {
                if self.classes == 2 && v == 255.0 {
                    1.0
                } else {
                    v
                }
            }));
        }
        let Some((c, h, w, first)) = first else {
            // `list` refuses an empty folder.
            return Err(invalid(ik, "holds no images", "add images"));
        };
        Ok(Set {
            x: matrix(n, c * h * w, xs),
            y: matrix(n, h * w, ys),
            shape: (c, h, w),
            first,
        })
    }

    /// Every mask value an integer in `0..classes` (255 reads as 1 with two classes).
    fn check_mask(&self, mask: &Mask, path: &Path) -> Result<(), TaskError> {
        let k = self.classes as f64;
        for (i, &v) in mask.data.iter().enumerate() {
            let v = if self.classes == 2 && v == 255.0 {
                1.0
            } else {
                v
            };
            if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < k) {
                let raise = if v.is_finite() && v >= 0.0 && v.fract() == 0.0 {
                    format!("raise classes to at least {}, or fix the mask", v + 1.0)
                } else {
                    "fix the mask: its values are class indices (integers ≥ 0)".into()
                };
                return Err(TaskError::Label {
                    key: key(KIND, "classes"),
                    path: path.to_path_buf(),
                    msg: format!(
                        "pixel (row {}, column {}) has the value {v}, not a class index in 0..{}",
                        i / mask.w.max(1),
                        i % mask.w.max(1),
                        self.classes
                    ),
                    hint: format!(
                        "{raise}\nmasks hold class indices 0..classes−1 (with classes = 2, 255 also reads as 1: 0/255 binary masks)"
                    ),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn load(&self, seed: u64, base_dir: &Path) -> Result<Dataset, TaskError> {
        let train = self.set(base_dir, ("images", &self.images), ("masks", &self.masks))?;
        let test = match (&self.test_images, &self.test_masks) {
            (Some(i), Some(m)) => {
                Some(self.set(base_dir, ("test_images", i), ("test_masks", m))?)
            }
            _ => None,
        };
        let (c, h, w) = train.shape;
        if let Some(t) = &test {
            if t.shape != train.shape {
                let (tc, th, tw) = t.shape;
                return Err(shape_err(
                    &key(KIND, "test_images"),
                    format!(
                        "test images are {tc}×{th}×{tw} ({}) but training images are {c}×{h}×{w} ({})",
                        t.first.display(),
                        train.first.display()
                    ),
                    "train and test images must have one shape (channels × height × width)",
                ));
            }
        }
        let [mut train_x, train_y, mut test_x, test_y] = split_and_subset(
            KIND,
            seed,
            self.test_fraction,
            (self.n_train, self.n_test),
            (train.x, train.y),
            test.map(|t| (t.x, t.y)),
        )?;
        let scaled = match self.scale {
            PixelScale::Unit => "8/16-bit pixels to [0, 1]",
            PixelScale::Standardize => {
                standardize(&mut train_x, &mut test_x, c, h * w);
                "standardized per channel"
            }
        };
        Ok(Dataset {
            sequence: None,
            subtasks: None,
            mixture: None,
            prompts: None,
            image: Some(ImageInfo {
                channels: c,
                height: h,
                width: w,
            }),
            description: format!(
                "images {} ({c}×{h}×{w}, {} classes per pixel, {scaled}): {}",
                self.dir.join(&self.images).display(),
                self.classes,
                counts(train_x.nrows(), test_x.nrows())
            ),
            train_x,
            train_y,
            test_x,
            test_y,
            target: Target::Masks {
                n_classes: self.classes,
            },
        })
    }
}

/// Maps each channel (`plane` columns at a time) of both sets to mean 0 and standard deviation
/// 1 over the training rows (a constant channel is only centred).
fn standardize(train: &mut Array2<f64>, test: &mut Array2<f64>, channels: usize, plane: usize) {
    let count = (train.nrows() * plane) as f64;
    for ch in 0..channels {
        let start = ch * plane;
        let mut sum = 0.0;
        for row in train.rows() {
            sum += row.iter().skip(start).take(plane).sum::<f64>();
        }
        let mean = sum / count;
        let mut squares = 0.0;
        for row in train.rows() {
            squares += row
                .iter()
                .skip(start)
                .take(plane)
                .map(|v| (v - mean) * (v - mean))
                .sum::<f64>();
        }
        let std = (squares / count).sqrt();
        let std = if std > 0.0 && std.is_finite() {
            std
        } else {
            1.0
        };
        for x in [&mut *train, &mut *test] {
            for mut row in x.rows_mut() {
                for v in row.iter_mut().skip(start).take(plane) {
                    *v = (*v - mean) / std;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::files::test_util::*;
    use crate::task::TaskSpec;
    use png::{BitDepth, ColorType};

    /// Writes `bytes` to `root/rel`, creating folders.
    fn put(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// A PNG of `w × h` pixels from `data` as the encoder takes it (packed rows, 16-bit samples
    /// big-endian), with `palette` for indexed colour.
    fn encode_png(
        (w, h): (u32, u32),
        color: ColorType,
        depth: BitDepth,
        palette: Option<Vec<u8>>,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(color);
            enc.set_depth(depth);
            if let Some(p) = palette {
                enc.set_palette(p);
            }
            let mut writer = enc.write_header().unwrap();
            writer.write_image_data(data).unwrap();
            writer.finish().unwrap();
        }
        out
    }

    /// A PNG without a palette: every colour type but indexed.
    fn png_file(size: (u32, u32), color: ColorType, depth: BitDepth, data: &[u8]) -> Vec<u8> {
        encode_png(size, color, depth, None, data)
    }

    fn gray8(size: (u32, u32), data: &[u8]) -> Vec<u8> {
        png_file(size, ColorType::Grayscale, BitDepth::Eight, data)
    }

    /// 16-bit samples as a PNG stores them: big-endian.
    fn be16(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_be_bytes()).collect()
    }

    /// An 8-bit palette PNG: `data` indexes the RGB triples of `palette`.
    fn indexed8(size: (u32, u32), palette: &[u8], data: &[u8]) -> Vec<u8> {
        encode_png(
            size,
            ColorType::Indexed,
            BitDepth::Eight,
            Some(palette.to_vec()),
            data,
        )
    }

    /// NPY v1 bytes as numpy.save writes them.
    fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape_s = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn spec(classes: usize) -> ImagesSpec {
        ImagesSpec {
            dir: default_dir(),
            images: default_images(),
            masks: default_masks(),
            test_images: None,
            test_masks: None,
            classes,
            test_fraction: None,
            n_train: None,
            n_test: None,
            scale: default_scale(),
        }
    }

    /// The same folders as train and test: every file, in name order, in both sets.
    fn both(classes: usize) -> ImagesSpec {
        ImagesSpec {
            test_images: Some(default_images()),
            test_masks: Some(default_masks()),
            ..spec(classes)
        }
    }

    fn load(s: ImagesSpec, d: &Path) -> Result<Dataset, TaskError> {
        gen(TaskSpec::Images(s), d)
    }

    /// Gray images 3 wide and 2 high in every format, with masks in every format: values,
    /// layout, scaling and the 0/255 reading.
    #[test]
    fn every_format_decodes_to_scaled_rows() {
        let d = dir();
        let p = d.path();
        // a: 8-bit gray; b: 16-bit gray; c: NPY uint8 [1, 2, 3]; e: gray + alpha (dropped);
        // f: NPY float [2, 3], as stored.
        put(
            p,
            "images/a.png",
            &gray8((3, 2), &[0, 51, 102, 153, 204, 255]),
        );
        let b16 = be16(&[0, 1, 256, 4096, 65534, 65535]);
        put(
            p,
            "images/b.png",
            &png_file((3, 2), ColorType::Grayscale, BitDepth::Sixteen, &b16),
        );
        put(
            p,
            "images/c.npy",
            &npy("|u1", &[1, 2, 3], &[1, 2, 3, 4, 5, 255]),
        );
        let ga = [10, 0, 20, 255, 30, 7, 40, 8, 50, 9, 60, 10];
        put(
            p,
            "images/e.png",
            &png_file((3, 2), ColorType::GrayscaleAlpha, BitDepth::Eight, &ga),
        );
        let f = [-1.5, 0.0, 0.25, 2.0, 3.5, 1e3];
        put(p, "images/f.npy", &npy("<f8", &[2, 3], &f64s(&f)));
        // Masks: 0/255 (→ 0/1); 1-bit gray; NPY int64; 8-bit palette indices; NPY bool [1, h, w].
        put(p, "masks/a.png", &gray8((3, 2), &[0, 255, 255, 0, 0, 1]));
        let bits = [0b1010_0000, 0b0110_0000];
        put(
            p,
            "masks/b.png",
            &png_file((3, 2), ColorType::Grayscale, BitDepth::One, &bits),
        );
        let m: Vec<u8> = [1i64, 1, 0, 0, 1, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        put(p, "masks/c.npy", &npy("<i8", &[2, 3], &m));
        let palette = [0, 0, 0, 200, 10, 10];
        put(
            p,
            "masks/e.png",
            &indexed8((3, 2), &palette, &[0, 1, 1, 0, 0, 1]),
        );
        put(
            p,
            "masks/f.npy",
            &npy("|b1", &[1, 2, 3], &[1, 1, 1, 0, 0, 0]),
        );
        // Files of other kinds are skipped.
        put(p, "images/README.txt", b"not an image");
        put(p, "masks/.DS_Store", b"\0");

        let ds = load(both(2), p).unwrap();
        assert_eq!(ds.image, image_shape(1, 2, 3));
        assert_eq!(ds.target, Target::Masks { n_classes: 2 });
        assert_eq!((ds.n_train(), ds.n_test(), ds.input_dim()), (5, 5, 6));
        assert_eq!(ds.train_y.ncols(), 6);
        assert_eq!(ds.train_x, ds.test_x);
        let row = |r: usize| ds.train_x.row(r).to_vec();
        let mask = |r: usize| ds.train_y.row(r).to_vec();
        assert_eq!(row(0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            row(1),
            [0u16, 1, 256, 4096, 65534, 65535].map(|v| v as f64 / 65535.0)
        );
        assert_eq!(row(2), [1u8, 2, 3, 4, 5, 255].map(|v| v as f64 / 255.0));
        assert_eq!(row(3), [10u8, 20, 30, 40, 50, 60].map(|v| v as f64 / 255.0));
        assert_eq!(row(4), f);
        assert_eq!(mask(0), [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(mask(1), [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
        assert_eq!(mask(2), [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(mask(3), [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(mask(4), [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        assert!(
            ds.description
                .starts_with("images ./images (1×2×3, 2 classes per pixel"),
            "{}",
            ds.description
        );
    }

    /// Colour images: RGB, 16-bit RGBA (alpha dropped) and a palette, as channels-first rows.
    #[test]
    fn colour_images_are_channels_first() {
        let d = dir();
        let p = d.path();
        let rgb = [255, 0, 51, 0, 102, 255];
        put(
            p,
            "images/1.png",
            &png_file((2, 1), ColorType::Rgb, BitDepth::Eight, &rgb),
        );
        let rgba = be16(&[65535, 0, 0, 9, 0, 65535, 65535, 9]);
        put(
            p,
            "images/2.png",
            &png_file((2, 1), ColorType::Rgba, BitDepth::Sixteen, &rgba),
        );
        put(
            p,
            "images/3.png",
            &indexed8((2, 1), &[0, 51, 255, 255, 255, 0], &[1, 0]),
        );
        for m in ["1", "2", "3"] {
            put(p, &format!("masks/{m}.png"), &gray8((2, 1), &[0, 2]));
        }
        let ds = load(both(3), p).unwrap();
        assert_eq!(ds.image, image_shape(3, 1, 2));
        // [r0, r1, g0, g1, b0, b1].
        assert_eq!(ds.train_x.row(0).to_vec(), [1.0, 0.0, 0.0, 0.4, 0.2, 1.0]);
        assert_eq!(ds.train_x.row(1).to_vec(), [1.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
        assert_eq!(ds.train_x.row(2).to_vec(), [1.0, 0.0, 1.0, 0.2, 0.0, 1.0]);
        assert_eq!(ds.train_y.row(2).to_vec(), [0.0, 2.0]);
    }

    /// `n` 4×4 gray images, image `i` filled with the value `i`, and masks of `i mod 2`.
    fn numbered(n: u8) -> tempfile::TempDir {
        let d = dir();
        for i in 0..n {
            put(
                d.path(),
                &format!("images/img{i:03}.png"),
                &gray8((4, 4), &[i; 16]),
            );
            put(
                d.path(),
                &format!("masks/img{i:03}.png"),
                &gray8((4, 4), &[i % 2; 16]),
            );
        }
        d
    }

    /// Which images (by their value) a set holds.
    fn ids(x: &Array2<f64>) -> Vec<u8> {
        x.rows()
            .into_iter()
            .map(|r| (r[0] * 255.0).round() as u8)
            .collect()
    }

    #[test]
    fn split_is_seeded_and_subsets_nest() {
        let d = numbered(20);
        let p = d.path();
        let ds = load(spec(2), p).unwrap();
        assert_eq!((ds.n_train(), ds.n_test()), (15, 5));
        assert_eq!(ds, load(spec(2), p).unwrap(), "same seed, same split");
        let (train, test) = (ids(&ds.train_x), ids(&ds.test_x));
        let mut all: Vec<u8> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<u8>>(), "disjoint and complete");
        assert!(train.windows(2).all(|w| w[0] < w[1]), "name order kept");
        // Masks travel with their images.
        for (r, &i) in train.iter().enumerate() {
            assert!(ds.train_y.row(r).iter().all(|&v| v == (i % 2) as f64));
        }
        let seeded = TaskSpec::Images(spec(2)).generate(1, p).unwrap();
        assert_ne!(ids(&seeded.test_x), test, "another seed, another split");

        let take = |n| {
            load(
                ImagesSpec {
                    n_train: Some(n),
                    test_fraction: Some(0.2),
                    ..spec(2)
                },
                p,
            )
            .unwrap()
        };
        let (small, big) = (take(5), take(10));
        assert_eq!((small.n_train(), big.n_train(), small.n_test()), (5, 10, 4));
        let big_ids = ids(&big.train_x);
        assert!(ids(&small.train_x).iter().all(|i| big_ids.contains(i)));
        assert_eq!(small.test_x, big.test_x);
        let err = load(
            ImagesSpec {
                n_train: Some(16),
                ..spec(2)
            },
            p,
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("task.images.n_train"), "{err}");
    }

    #[test]
    fn standardize_uses_the_training_set() {
        let d = numbered(12);
        let s = ImagesSpec {
            scale: PixelScale::Standardize,
            ..spec(2)
        };
        let ds = load(s, d.path()).unwrap();
        let raw = load(spec(2), d.path()).unwrap();
        let values: Vec<f64> = raw.train_x.iter().copied().collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let std =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        let n = ds.train_x.len() as f64;
        let m: f64 = ds.train_x.iter().sum::<f64>() / n;
        let var: f64 = ds.train_x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        assert!(m.abs() < 1e-12 && (var - 1.0).abs() < 1e-12, "{m} {var}");
        for (a, b) in ds.test_x.iter().zip(raw.test_x.iter()) {
            assert!((a - (b - mean) / std).abs() < 1e-12);
        }
        assert!(
            ds.description.contains("standardized"),
            "{}",
            ds.description
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let d = numbered(4);
        let p = d.path();
        // A mask value out of range names the file, the value and `classes`.
        put(
            p,
            "masks/img002.png",
            &gray8((4, 4), &[0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        );
        let err = load(spec(2), p).unwrap_err();
        assert!(matches!(err, TaskError::Label { .. }), "{err:?}");
        assert_eq!(err.key(), Some("task.images.classes"));
        let text = err.to_string();
        assert!(
            text.contains("img002.png")
                && text.contains("value 7")
                && text.contains("row 0, column 2"),
            "{text}"
        );
        assert!(
            err.hints().iter().any(|h| h.contains("at least 8")),
            "{:?}",
            err.hints()
        );
        assert!(load(spec(8), p).is_ok());
        // 255 reads as 1 only with two classes.
        put(p, "masks/img002.png", &gray8((4, 4), &[255; 16]));
        assert!(load(spec(2), p).is_ok());
        let err = load(spec(3), p).unwrap_err();
        assert!(err.to_string().contains("value 255"), "{err}");

        // A missing mask names the image.
        std::fs::remove_file(p.join("masks/img002.png")).unwrap();
        let err = load(spec(2), p).unwrap_err();
        assert_eq!(err.key(), Some("task.images.masks"));
        assert!(err.to_string().contains("img002.png"), "{err}");
        put(p, "masks/img002.png", &gray8((4, 4), &[1; 16]));
        // A mask without an image.
        put(p, "masks/stray.png", &gray8((4, 4), &[1; 16]));
        let err = load(spec(2), p).unwrap_err();
        assert!(err.to_string().contains("stray.png"), "{err}");
        std::fs::remove_file(p.join("masks/stray.png")).unwrap();

        // An image of another shape names itself and the first image.
        put(p, "images/img003.png", &gray8((4, 3), &[1; 12]));
        let err = load(spec(2), p).unwrap_err();
        assert!(matches!(err, TaskError::Parse { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("img003.png") && text.contains("1×3×4") && text.contains("img000.png"),
            "{text}"
        );
        put(p, "images/img003.png", &gray8((4, 4), &[1; 16]));
        // A mask of another size.
        put(p, "masks/img001.png", &gray8((2, 2), &[1; 4]));
        let err = load(spec(2), p).unwrap_err();
        assert!(
            err.to_string().contains("img001.png") && err.to_string().contains("2×2"),
            "{err}"
        );
        put(p, "masks/img001.png", &gray8((4, 4), &[1; 16]));
        // An RGB mask.
        put(
            p,
            "masks/img001.png",
            &png_file((4, 4), ColorType::Rgb, BitDepth::Eight, &[1; 48]),
        );
        let err = load(spec(2), p).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds RGB pixels, not a one-channel mask"),
            "{err}"
        );
        put(p, "masks/img001.png", &gray8((4, 4), &[1; 16]));
        // A damaged PNG and an [h, w, c] NPY.
        put(p, "images/img001.png", b"\x89PNG\r\n\x1a\nbroken");
        let err = load(spec(2), p).unwrap_err();
        assert!(
            err.to_string().contains("img001.png")
                && err.to_string().contains("not a readable PNG"),
            "{err}"
        );
        std::fs::remove_file(p.join("images/img001.png")).unwrap();
        put(p, "images/img001.npy", &npy("|u1", &[4, 4, 3], &[0; 48]));
        let err = load(spec(2), p).unwrap_err();
        assert!(err.to_string().contains("img001.npy"), "{err}");
        put(
            p,
            "images/img001.npy",
            &npy("|u1", &[100, 4, 3], &[0; 1200]),
        );
        let err = load(spec(2), p).unwrap_err();
        assert!(
            err.hints().iter().any(|h| h.contains("np.transpose")),
            "{:?}",
            err.hints()
        );
        // NaN in an image.
        put(
            p,
            "images/img001.npy",
            &npy("<f8", &[4, 4], &f64s(&[f64::NAN; 16])),
        );
        let err = load(spec(2), p).unwrap_err();
        assert!(
            err.to_string().contains("img001.npy") && err.to_string().contains("NaN"),
            "{err}"
        );
        std::fs::remove_file(p.join("images/img001.npy")).unwrap();
        // Two files of one name.
        put(p, "images/img001.png", &gray8((4, 4), &[1; 16]));
        put(p, "images/img001.npy", &npy("|u1", &[4, 4], &[1; 16]));
        let err = load(spec(2), p).unwrap_err();
        assert!(
            err.to_string().contains("two files share one name"),
            "{err}"
        );
        std::fs::remove_file(p.join("images/img001.npy")).unwrap();
        // JPEGs are refused, not skipped.
        put(p, "images/x.jpg", b"\xff\xd8");
        let err = load(spec(2), p).unwrap_err();
        assert!(err.to_string().contains(".jpg"), "{err}");
        std::fs::remove_file(p.join("images/x.jpg")).unwrap();
        assert!(load(spec(2), p).is_ok());
        // A missing folder says where relative paths point.
        let err = load(
            ImagesSpec {
                dir: "nowhere".into(),
                ..spec(2)
            },
            p,
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("task.images.images"));
        assert!(err.to_string().contains("folder not found"), "{err}");
        assert!(
            err.hints()[0].contains("experiment file's folder"),
            "{:?}",
            err.hints()
        );
        // Test images of another shape.
        let t = numbered(3);
        put(t.path(), "test/images/a.png", &gray8((2, 2), &[0; 4]));
        put(t.path(), "test/masks/a.png", &gray8((2, 2), &[0; 4]));
        let err = load(
            ImagesSpec {
                test_images: Some("test/images".into()),
                test_masks: Some("test/masks".into()),
                ..spec(2)
            },
            t.path(),
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("task.images.test_images"), "{err}");
    }

    #[test]
    fn spec_validation() {
        let cases = [
            (spec(1), "task.images.classes"),
            (
                ImagesSpec {
                    test_images: Some("t".into()),
                    ..spec(2)
                },
                "task.images.test_masks",
            ),
            (
                ImagesSpec {
                    test_masks: Some("t".into()),
                    ..spec(2)
                },
                "task.images.test_images",
            ),
            (
                ImagesSpec {
                    test_fraction: Some(0.3),
                    ..both(2)
                },
                "task.images.test_fraction",
            ),
            (
                ImagesSpec {
                    test_fraction: Some(1.0),
                    ..spec(2)
                },
                "task.images.test_fraction",
            ),
            (
                ImagesSpec {
                    masks: "images".into(),
                    ..spec(2)
                },
                "task.images.masks",
            ),
            (
                ImagesSpec {
                    n_test: Some(0),
                    ..spec(2)
                },
                "task.images.n_test",
            ),
        ];
        for (s, key) in cases {
            let err = TaskSpec::Images(s).validate().unwrap_err();
            assert!(matches!(err, TaskError::Invalid { .. }), "{err:?}");
            assert_eq!(err.key(), Some(key), "{err}");
        }
        assert!(TaskSpec::Images(both(2)).validate().is_ok());
    }
}
