//! MNIST-format IDX files (LeCun et al., "The MNIST database of handwritten digits"): an images
//! file (magic 0x00000803) and a labels file (magic 0x00000801) per split, unsigned-byte data,
//! uncompressed. Images are flattened and pixels scaled to `[0, 1]`. Images files of shape
//! `[n, h, w]` (MNIST's) or `[n, c, h, w]` record their image shape (`Dataset::image`), as
//! `[task.shapes]` does, so a `[model.cnn]` can classify them; an MLP reads the same rows
//! flattened.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    assemble, element_count, parse_err, shape_err, validate_common, Common, Fail, FileTask, Labels,
    Part,
};
use crate::task::{key, matrix, read_bytes, resolve, Dataset, ImageInfo, TaskError};

/// `[task.idx]`: MNIST-format IDX files (uncompressed, unsigned-byte data). Images are flattened
/// and pixels scaled to `[0, 1]` (divided by 255); labels are classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxSpec {
    /// Folder holding the four files (relative to the experiment file).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_train_images")]
    pub train_images: PathBuf,
    #[serde(default = "default_train_labels")]
    pub train_labels: PathBuf,
    #[serde(default = "default_test_images")]
    pub test_images: PathBuf,
    #[serde(default = "default_test_labels")]
    pub test_labels: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_test: Option<usize>,
}

/// The experiment file's own folder.
fn default_dir() -> PathBuf {
    PathBuf::from(".")
}
/// The four defaults are the names MNIST and Fashion-MNIST ship with (after gunzip).
fn default_train_images() -> PathBuf {
    "train-images-idx3-ubyte".into()
}
/// MNIST's name.
fn default_train_labels() -> PathBuf {
    "train-labels-idx1-ubyte".into()
}
/// MNIST's name.
fn default_test_images() -> PathBuf {
    "t10k-images-idx3-ubyte".into()
}
/// MNIST's name.
fn default_test_labels() -> PathBuf {
    "t10k-labels-idx1-ubyte".into()
}

/// Parses an IDX file with unsigned-byte data: `[0, 0, 0x08, ndim]`, `ndim` big-endian u32
/// sizes, then the bytes (LeCun et al., the MNIST database's file format). `images` asks for
/// ≥ 2 dimensions (magic 0x00000803 for MNIST), otherwise exactly 1 (0x00000801).
fn parse_idx<'a>(b: &'a [u8], images: bool, path: &Path) -> Result<(Vec<usize>, &'a [u8]), Fail> {
    let want = if images {
        "0x00000803 (u8 images)"
    } else {
        "0x00000801 (u8 labels)"
    };
    if b.starts_with(&[0x1f, 0x8b]) {
        return Err((
            "is gzip-compressed".into(),
            format!(
                "decompress it first: gunzip -k '{}' (the .gz suffix may be missing)",
                path.display()
            ),
        ));
    }
    if b.len() < 4 {
        return Err((
            format!("too short for an IDX header ({} bytes)", b.len()),
            "an IDX file starts with a 4-byte magic number".into(),
        ));
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if b[0] != 0 || b[1] != 0 {
        return Err((
            format!("not an IDX file: magic number 0x{magic:08x}, expected {want}"),
            "IDX files start with two zero bytes".into(),
        ));
    }
    if b[2] != 0x08 {
        let kind = match b[2] {
            0x09 => "i8",
            0x0b => "i16",
            0x0c => "i32",
            0x0d => "f32",
            0x0e => "f64",
            _ => "unknown",
        };
        return Err((
            format!(
                "element type 0x{:02x} ({kind}): only unsigned bytes (0x08) are read",
                b[2]
            ),
            "MNIST-format files hold u8 pixels and labels".into(),
        ));
    }
    let ndim = b[3] as usize;
    if (images && ndim < 2) || (!images && ndim != 1) {
        let swapped = if images == (ndim == 1) {
            " — are the images and labels files swapped?"
        } else {
            ""
        };
        return Err((
            format!("magic number 0x{magic:08x}, expected {want}{swapped}"),
            "check which file each key names".into(),
        ));
    }
    let header = 4 + 4 * ndim;
    if b.len() < header {
        return Err((
            format!(
                "truncated header: {ndim} dimensions announced, file is {} bytes",
                b.len()
            ),
            "the file is damaged; download and decompress it again".into(),
        ));
    }
    let dims: Vec<usize> = b[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let n = element_count(&dims).unwrap_or(usize::MAX);
    let data = &b[header..];
    if data.len() != n {
        let what = if data.len() < n {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err((
            format!(
                "{what}: dimensions {dims:?} need {n} data bytes, found {}",
                data.len()
            ),
            "the file is damaged; download and decompress it again".into(),
        ));
    }
    Ok((dims, data))
}

impl IdxSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        validate_common(
            "idx",
            FileTask::Classification,
            self.n_classes,
            None,
            self.n_train,
            self.n_test,
        )
    }

    fn read(
        &self,
        base_dir: &Path,
        field: &str,
        file: &Path,
        images: bool,
    ) -> Result<(Vec<usize>, Vec<u8>, PathBuf), TaskError> {
        let k = key("idx", field);
        let written = self.dir.join(file);
        let bytes = read_bytes(&k, base_dir, &written)?;
        let path = resolve(base_dir, &written);
        let (dims, data) =
            parse_idx(&bytes, images, &path).map_err(|(m, h)| parse_err(&k, &path, m, h))?;
        Ok((dims, data.to_vec(), path))
    }

    fn part(
        &self,
        base_dir: &Path,
        split: &str,
        images: &Path,
        labels: &Path,
    ) -> Result<(Part, Vec<usize>), TaskError> {
        let (xf, yf) = (format!("{split}_images"), format!("{split}_labels"));
        let (dims, pixels, x_path) = self.read(base_dir, &xf, images, true)?;
        let (ldims, labels, y_path) = self.read(base_dir, &yf, labels, false)?;
        if ldims[0] != dims[0] {
            return Err(shape_err(
                &key("idx", &yf),
                format!("{} labels for {} images", ldims[0], dims[0]),
                "the images and labels files must come from the same split",
            ));
        }
        let d: usize = dims[1..].iter().product();
        if dims[0] == 0 || d == 0 {
            return Err(parse_err(
                &key("idx", &xf),
                &x_path,
                format!("empty image array, dimensions {dims:?}"),
                "the file holds no images",
            ));
        }
        // Pixels scaled to [0, 1], the usual MNIST preprocessing.
        let x = matrix(
            dims[0],
            d,
            pixels.iter().map(|&v| v as f64 / 255.0).collect(),
        );
        let y = matrix(dims[0], 1, labels.iter().map(|&v| v as f64).collect());
        let part = Part {
            x,
            y: Labels::Numbers(y),
            x_key: key("idx", &xf),
            x_path,
            y_key: key("idx", &yf),
            y_path,
            lines: vec![],
        };
        Ok((part, dims[1..].to_vec()))
    }

    pub(crate) fn load(&self, seed: u64, base_dir: &Path) -> Result<Dataset, TaskError> {
        let (train, image_dims) =
            self.part(base_dir, "train", &self.train_images, &self.train_labels)?;
        let (test, test_dims) =
            self.part(base_dir, "test", &self.test_images, &self.test_labels)?;
        if test_dims != image_dims {
            let shown = |d: &[usize]| d.iter().map(usize::to_string).collect::<Vec<_>>().join("×");
            return Err(shape_err(
                &key("idx", "test_images"),
                format!(
                    "test images are {} but training images are {}",
                    shown(&test_dims[..]),
                    shown(&image_dims[..])
                ),
                "train and test images must have one shape",
            ));
        }
        // `[h, w]` is one channel; `[c, h, w]` is channels first (NCHW rows).
        let image = match *image_dims.as_slice() {
            [height, width] => Some(ImageInfo {
                channels: 1,
                height,
                width,
            }),
            [channels, height, width] => Some(ImageInfo {
                channels,
                height,
                width,
            }),
            _ => None,
        };
        let dims = image_dims
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("×");
        let source = format!("{} ({dims} images, pixels/255)", self.dir.display());
        let common = Common {
            kind: "idx",
            task: FileTask::Classification,
            n_classes: self.n_classes,
            test_fraction: None,
            n_train: self.n_train,
            n_test: self.n_test,
            source: &source,
        };
        let mut data = assemble(&common, seed, train, Some(test))?;
        data.image = image;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::files::test_util::*;
    use crate::task::TaskSpec;
    use std::fs;

    fn idx(magic_ndim: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0x08, magic_ndim];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn mnist_dir(n_train: u32, n_test: u32) -> tempfile::TempDir {
        let d = dir();
        let images = |n: u32| {
            idx(
                3,
                &[n, 2, 3],
                &(0..n * 6).map(|i| (i * 37 % 256) as u8).collect::<Vec<_>>(),
            )
        };
        let labels = |n: u32| idx(1, &[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>());
        write(d.path(), "train-images-idx3-ubyte", images(n_train));
        write(d.path(), "train-labels-idx1-ubyte", labels(n_train));
        write(d.path(), "t10k-images-idx3-ubyte", images(n_test));
        write(d.path(), "t10k-labels-idx1-ubyte", labels(n_test));
        d
    }

    fn idx_spec() -> IdxSpec {
        IdxSpec {
            dir: default_dir(),
            train_images: default_train_images(),
            train_labels: default_train_labels(),
            test_images: default_test_images(),
            test_labels: default_test_labels(),
            n_classes: None,
            n_train: None,
            n_test: None,
        }
    }

    #[test]
    fn idx_round_trip_scaling_and_nested_subsets() {
        let d = mnist_dir(40, 12);
        let ds = gen(TaskSpec::Idx(idx_spec()), d.path()).unwrap();
        assert_eq!(
            (ds.n_train(), ds.n_test(), ds.input_dim(), ds.output_dim()),
            (40, 12, 6, 10)
        );
        for (r, row) in ds.train_x.rows().into_iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(v, ((r * 6 + c) * 37 % 256) as f64 / 255.0);
            }
            assert_eq!(ds.train_y[[r, 0]], (r % 10) as f64);
        }
        assert_eq!(
            ds.description,
            "idx . (2×3 images, pixels/255): 10 classes, 6 inputs: 40 train / 12 test"
        );
        // [n, h, w] images record their shape, as [task.shapes] does, for a CNN.
        assert_eq!(ds.image, image_shape(1, 2, 3));
        assert_eq!(ds.target, crate::task::Target::Classes { n_classes: 10 });

        // n_train keeps a seeded subset in file order; a smaller one is nested in a larger one.
        let take = |n| {
            gen(
                TaskSpec::Idx(IdxSpec {
                    n_train: Some(n),
                    ..idx_spec()
                }),
                d.path(),
            )
            .unwrap()
        };
        let (small, big) = (take(10), take(25));
        assert_eq!(small.n_train(), 10);
        let rows = |ds: &Dataset| {
            ds.train_x
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect::<Vec<_>>()
        };
        let big_rows = rows(&big);
        assert!(rows(&small).iter().all(|r| big_rows.contains(r)));
        let err = gen(
            TaskSpec::Idx(IdxSpec {
                n_test: Some(13),
                ..idx_spec()
            }),
            d.path(),
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("task.idx.n_test"));
    }

    /// `[n, c, h, w]` is channels first; `[n, d]` rows are no images; train and test images
    /// must share one shape.
    #[test]
    fn idx_image_shapes() {
        let d = dir();
        let p = d.path();
        let pixels = |n: u32| (0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>();
        write(p, "x4", idx(4, &[3, 2, 4, 5], &pixels(3 * 40)));
        write(p, "x2", idx(2, &[3, 40], &pixels(3 * 40)));
        write(p, "x3", idx(3, &[3, 8, 5], &pixels(3 * 40)));
        write(p, "y", idx(1, &[3], &[0, 1, 0]));
        let spec = |train: &str, test: &str| IdxSpec {
            train_images: train.into(),
            train_labels: "y".into(),
            test_images: test.into(),
            test_labels: "y".into(),
            ..idx_spec()
        };
        let ds = gen(TaskSpec::Idx(spec("x4", "x4")), p).unwrap();
        assert_eq!(ds.image, image_shape(2, 4, 5));
        assert_eq!(ds.input_dim(), 40);
        let ds = gen(TaskSpec::Idx(spec("x2", "x2")), p).unwrap();
        assert_eq!((ds.image, ds.input_dim()), (None, 40));
        // Same 40 pixels, another shape.
        let err = gen(TaskSpec::Idx(spec("x4", "x3")), p).unwrap_err();
        assert!(
            matches!(err, TaskError::Shape { .. }) && err.key() == Some("task.idx.test_images"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("8×5") && err.to_string().contains("2×4×5"),
            "{err}"
        );
    }

    #[test]
    fn idx_errors() {
        let d = mnist_dir(5, 5);
        let p = d.path();
        // Swapped files.
        let spec = IdxSpec {
            train_images: default_train_labels(),
            train_labels: default_train_images(),
            ..idx_spec()
        };
        let err = gen(TaskSpec::Idx(spec), p).unwrap_err();
        assert!(
            matches!(&err, TaskError::Parse { msg, .. } if msg.contains("0x00000801") && msg.contains("swapped")),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.idx.train_images"));
        // Wrong magic.
        write(
            p,
            "t10k-labels-idx1-ubyte",
            [8u8, 8, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5],
        );
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(
            matches!(&err, TaskError::Parse { msg, .. } if msg.contains("magic number 0x08080801")),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.idx.test_labels"));
        // Gzipped: a hint to gunzip.
        write(p, "t10k-labels-idx1-ubyte", [0x1f, 0x8b, 8, 0, 0, 0]);
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(err.hints()[0].contains("gunzip"), "{:?}", err.hints());
        // Missing, with a .gz next to it.
        fs::rename(
            p.join("t10k-labels-idx1-ubyte"),
            p.join("t10k-labels-idx1-ubyte.gz"),
        )
        .unwrap();
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(matches!(err, TaskError::MissingFile { .. }), "{err:?}");
        assert!(
            err.hints().iter().any(|h| h.contains("gunzip")),
            "{:?}",
            err.hints()
        );
        // Count mismatch and label range.
        write(p, "t10k-labels-idx1-ubyte", idx(1, &[4], &[1, 2, 3, 4]));
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(
            matches!(err, TaskError::Shape { .. }) && err.key() == Some("task.idx.test_labels"),
            "{err:?}"
        );
        write(p, "t10k-labels-idx1-ubyte", idx(1, &[5], &[1, 2, 3, 4, 12]));
        let err = gen(
            TaskSpec::Idx(IdxSpec {
                n_classes: Some(10),
                ..idx_spec()
            }),
            p,
        )
        .unwrap_err();
        assert!(
            matches!(&err, TaskError::Label { msg, .. } if msg.contains("row 4") && msg.contains("label 12")),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.idx.test_labels"));
        // Truncated data.
        write(p, "t10k-labels-idx1-ubyte", idx(1, &[5], &[1, 2]));
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
