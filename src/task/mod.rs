//! Tasks: the data a network trains on.
//!
//! Every task is a spec (the `[task.<kind>]` section of an experiment file) that turns into a
//! [`Dataset`] with [`TaskSpec::generate`]. Generated tasks are a pure function of the spec and
//! the seed: each random ingredient (teacher weights, secret subsets, train inputs, test inputs,
//! label noise, the train/test split) has its own labelled [`Rng::stream`](crate::engine::rng::Rng::stream),
//! so changing how one is consumed never shifts another. Because train and test inputs come from
//! separate streams drawn example by example, the generated sets are *nested*: the first `n`
//! training examples are the same for every `n_train ≥ n`, and the test set does not change with
//! `n_train` — what a data-scaling sweep needs.
//!
//! Conventions shared by all tasks:
//! - inputs `x` are `[n, input_dim]` f64; targets are `[n, out_dim]` for regression and `[n, 1]`
//!   class indices stored as f64 for classification;
//! - generated classification tasks with `n_classes` classes are balanced where the task allows it
//!   (example `i` belongs to class `i mod n_classes`), so every prefix is balanced within one example;
//! - file paths resolve against the experiment file's folder (`base_dir`).

use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::{Deserialize, Serialize};

pub mod files;
pub mod in_context;
pub mod markov;
pub mod mixture;
pub mod modular;
pub mod modular_sequence;
pub mod parity;
pub mod pcfg;
pub mod repeated;
pub mod sequence;
pub mod shapes;
pub mod teacher_student;
pub mod text;
pub mod toy2d;

pub use files::{
    Column, Columns, CsvSpec, FileTask, IdxSpec, ImagesSpec, NpySpec, PixelScale, SafetensorsSpec,
};
pub use in_context::{CurriculumSpec, FunctionKind, InContextSpec, PromptInfo};
pub use markov::MarkovSpec;
pub use mixture::GaussianMixtureSpec;
pub use modular::{ModOp, ModularSpec};
pub use modular_sequence::ModularSequenceSpec;
pub use parity::{MultitaskSparseParitySpec, SparseParitySpec};
pub use pcfg::PcfgSpec;
pub use repeated::RepeatedSpec;
pub use sequence::{EntropyRate, SequenceInfo};
pub use shapes::{ShapeKind, ShapesSpec};
pub use teacher_student::{Teacher, TeacherSpec, TeacherStudentSpec};
pub use text::{TextSpec, Tokenizer};
pub use toy2d::{Centers, CheckerboardSpec, GaussiansSpec, MoonsSpec, RingsSpec, SpiralsSpec};

/// A train/test pair of arrays, ready to train on.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `[n_train, input_dim]`.
    pub train_x: Array2<f64>,
    /// Regression: `[n_train, out_dim]` targets; classification: `[n_train, 1]` class indices.
    pub train_y: Array2<f64>,
    pub test_x: Array2<f64>,
    pub test_y: Array2<f64>,
    pub target: Target,
    /// One line for logs and reports, e.g. `"modular addition p=97: 2,822 train / 6,587 test"`.
    pub description: String,
    /// For token-sequence tasks (language models): the vocabulary and the source's entropy.
    pub sequence: Option<SequenceInfo>,
    /// For in-context regression prompts: the generator of fresh training prompts. The splits
    /// then hold `[n, points·dim]` points and `[n, points]` values.
    pub prompts: Option<PromptInfo>,
    /// For multitask data: which subtask each example belongs to, and each subtask's frequency.
    pub subtasks: Option<Subtasks>,
    /// For a Gaussian mixture: the distribution itself, whose ideal denoiser a generative run
    /// measures its network against.
    pub mixture: Option<crate::generative::Mixture>,
    /// For images: each row of `x` is one `[channels, height, width]` image (NCHW).
    pub image: Option<ImageInfo>,
}

/// The shape of the images a dataset's rows hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// The subtask of every example of a multitask dataset (the quanta of Michaud et al. 2023), so
/// the loop can score each subtask on its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Subtasks {
    /// Subtask index of each test example.
    pub test: Vec<usize>,
    /// The probability with which an example belongs to each subtask (index order).
    pub frequency: Vec<f64>,
}

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Regression {
        out_dim: usize,
    },
    Classes {
        n_classes: usize,
    },
    /// Segmentation: `y` is `[n, height·width]`, a class index per pixel.
    Masks {
        n_classes: usize,
    },
}

impl Dataset {
    pub fn input_dim(&self) -> usize {
        self.train_x.ncols()
    }

    /// The network's output width: `out_dim` for regression, `n_classes` (one logit per class)
    /// for classification.
    pub fn output_dim(&self) -> usize {
        match self.target {
            Target::Regression { out_dim } => out_dim,
            Target::Classes { n_classes } | Target::Masks { n_classes } => n_classes,
        }
    }

    pub fn n_train(&self) -> usize {
        self.train_x.nrows()
    }

    pub fn n_test(&self) -> usize {
        self.test_x.nrows()
    }
}

/// The `[task]` section of the experiment file: an externally tagged enum so the file reads
/// `[task.modular]` / `p = 97` (kept externally tagged: internally tagged and untagged enums lose
/// the line numbers in toml error messages).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSpec {
    TeacherStudent(TeacherStudentSpec),
    Modular(ModularSpec),
    SparseParity(SparseParitySpec),
    MultitaskSparseParity(MultitaskSparseParitySpec),
    Spirals(SpiralsSpec),
    Moons(MoonsSpec),
    Gaussians(GaussiansSpec),
    Rings(RingsSpec),
    Checkerboard(CheckerboardSpec),
    /// Synthetic segmentation: textured images with shapes and their masks.
    Shapes(ShapesSpec),
    /// A Gaussian mixture in N dimensions, optionally embedded in more (generative models).
    GaussianMixture(GaussianMixtureSpec),
    Csv(CsvSpec),
    Npy(NpySpec),
    Safetensors(SafetensorsSpec),
    Idx(IdxSpec),
    /// A folder of images and their masks (PNG or NPY), for segmentation.
    Images(ImagesSpec),
    /// Token sequences for language models (`[model.gpt]`).
    Text(TextSpec),
    Markov(MarkovSpec),
    Pcfg(PcfgSpec),
    ModularSequence(ModularSequenceSpec),
    /// Random halves repeated: where induction heads form.
    RepeatedTokens(RepeatedSpec),
    /// In-context regression prompts (for `[model.gpt]`).
    InContext(InContextSpec),
}

impl TaskSpec {
    /// Whether the targets are class indices (known from the spec alone, before any data is
    /// read), which decides the default loss.
    pub fn is_classification(&self) -> bool {
        match self {
            TaskSpec::TeacherStudent(_) | TaskSpec::InContext(_) => false,
            TaskSpec::Csv(s) => s.task == FileTask::Classification,
            TaskSpec::Npy(s) => s.task == FileTask::Classification,
            TaskSpec::Safetensors(s) => s.task == FileTask::Classification,
            TaskSpec::Modular(_)
            | TaskSpec::SparseParity(_)
            | TaskSpec::MultitaskSparseParity(_)
            | TaskSpec::Spirals(_)
            | TaskSpec::Moons(_)
            | TaskSpec::Gaussians(_)
            | TaskSpec::Rings(_)
            | TaskSpec::Checkerboard(_)
            | TaskSpec::GaussianMixture(_)
            | TaskSpec::Shapes(_)
            | TaskSpec::Idx(_)
            | TaskSpec::Images(_) => true,
            TaskSpec::Text(_)
            | TaskSpec::Markov(_)
            | TaskSpec::Pcfg(_)
            | TaskSpec::ModularSequence(_)
            | TaskSpec::RepeatedTokens(_) => true,
        }
    }

    /// Whether the task yields token sequences (for `[model.gpt]`) rather than feature rows.
    pub fn is_sequence(&self) -> bool {
        matches!(
            self,
            TaskSpec::Text(_)
                | TaskSpec::Markov(_)
                | TaskSpec::Pcfg(_)
                | TaskSpec::ModularSequence(_)
                | TaskSpec::RepeatedTokens(_)
                | TaskSpec::InContext(_)
        )
    }

    /// The name of the `[task.<kind>]` section.
    pub fn kind(&self) -> &'static str {
        match self {
            TaskSpec::TeacherStudent(_) => "teacher_student",
            TaskSpec::Modular(_) => "modular",
            TaskSpec::SparseParity(_) => "sparse_parity",
            TaskSpec::MultitaskSparseParity(_) => "multitask_sparse_parity",
            TaskSpec::Spirals(_) => "spirals",
            TaskSpec::Moons(_) => "moons",
            TaskSpec::Gaussians(_) => "gaussians",
            TaskSpec::Rings(_) => "rings",
            TaskSpec::Checkerboard(_) => "checkerboard",
            TaskSpec::Shapes(_) => "shapes",
            TaskSpec::GaussianMixture(_) => "gaussian_mixture",
            TaskSpec::Csv(_) => "csv",
            TaskSpec::Npy(_) => "npy",
            TaskSpec::Safetensors(_) => "safetensors",
            TaskSpec::Idx(_) => "idx",
            TaskSpec::Images(_) => "images",
            TaskSpec::Text(_) => "text",
            TaskSpec::Markov(_) => "markov",
            TaskSpec::Pcfg(_) => "pcfg",
            TaskSpec::ModularSequence(_) => "modular_sequence",
            TaskSpec::RepeatedTokens(_) => "repeated_tokens",
            TaskSpec::InContext(_) => "in_context",
        }
    }

    /// Checks ranges and consistency without touching the file system; errors name the key as
    /// `task.<kind>.<field>`.
    pub fn validate(&self) -> Result<(), TaskError> {
        match self {
            TaskSpec::TeacherStudent(s) => s.validate(),
            TaskSpec::Modular(s) => s.validate(),
            TaskSpec::SparseParity(s) => s.validate(),
            TaskSpec::MultitaskSparseParity(s) => s.validate(),
            TaskSpec::Spirals(s) => s.validate(),
            TaskSpec::Moons(s) => s.validate(),
            TaskSpec::Gaussians(s) => s.validate(),
            TaskSpec::Rings(s) => s.validate(),
            TaskSpec::Checkerboard(s) => s.validate(),
            TaskSpec::Shapes(s) => s.validate(),
            TaskSpec::GaussianMixture(s) => s.validate(),
            TaskSpec::Csv(s) => s.validate(),
            TaskSpec::Npy(s) => s.validate(),
            TaskSpec::Safetensors(s) => s.validate(),
            TaskSpec::Idx(s) => s.validate(),
            TaskSpec::Images(s) => s.validate(),
            TaskSpec::Text(s) => s.validate(),
            TaskSpec::Markov(s) => s.validate(),
            TaskSpec::Pcfg(s) => s.validate(),
            TaskSpec::ModularSequence(s) => s.validate(),
            TaskSpec::RepeatedTokens(s) => s.validate(),
            TaskSpec::InContext(s) => s.validate(),
        }
    }

    /// Builds the dataset (validating first). `base_dir` is the experiment file's folder:
    /// relative data paths resolve against it. Same spec and seed ⇒ bit-identical data.
    pub fn generate(&self, seed: u64, base_dir: &Path) -> Result<Dataset, TaskError> {
        self.validate()?;
        match self {
            TaskSpec::TeacherStudent(s) => Ok(s.generate(seed)),
            TaskSpec::Modular(s) => Ok(s.generate(seed)),
            TaskSpec::SparseParity(s) => Ok(s.generate(seed)),
            TaskSpec::MultitaskSparseParity(s) => Ok(s.generate(seed)),
            TaskSpec::Spirals(s) => Ok(s.generate(seed)),
            TaskSpec::Moons(s) => Ok(s.generate(seed)),
            TaskSpec::Gaussians(s) => Ok(s.generate(seed)),
            TaskSpec::Rings(s) => Ok(s.generate(seed)),
            TaskSpec::Checkerboard(s) => Ok(s.generate(seed)),
            TaskSpec::Shapes(s) => Ok(s.generate(seed)),
            TaskSpec::GaussianMixture(s) => Ok(s.generate(seed)),
            TaskSpec::Csv(s) => s.load(seed, base_dir),
            TaskSpec::Npy(s) => s.load(seed, base_dir),
            TaskSpec::Safetensors(s) => s.load(seed, base_dir),
            TaskSpec::Idx(s) => s.load(seed, base_dir),
            TaskSpec::Images(s) => s.load(seed, base_dir),
            TaskSpec::Text(s) => s.load(base_dir),
            TaskSpec::Markov(s) => Ok(s.generate(seed)),
            TaskSpec::Pcfg(s) => s.generate(seed),
            TaskSpec::ModularSequence(s) => Ok(s.generate(seed)),
            TaskSpec::RepeatedTokens(s) => Ok(s.generate(seed)),
            TaskSpec::InContext(s) => Ok(s.generate(seed)),
        }
    }
}

/// Why a task could not be built. Every variant names the offending key (`task.csv.path`), and
/// [`TaskError::hints`] says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A spec value out of range or inconsistent with another.
    #[error("{key}: {msg}")]
    Invalid {
        key: String,
        msg: String,
        hint: String,
    },
    /// A data file that does not exist (`path` as resolved against the experiment's folder).
    #[error("{key}: file not found: {}", path.display())]
    MissingFile {
        key: String,
        path: PathBuf,
        hint: String,
    },
    /// A data file that exists but could not be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    Io {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Malformed file content: a bad NPY header, a wrong IDX magic number, a CSV row with the
    /// wrong number of fields, a missing safetensors tensor, …
    #[error("{key}: {}: {msg}", path.display())]
    Parse {
        key: String,
        path: PathBuf,
        msg: String,
        hint: String,
    },
    /// A classification label that is not an integer in `0..n_classes`.
    #[error("{key}: {}: {msg}", path.display())]
    Label {
        key: String,
        path: PathBuf,
        msg: String,
        hint: String,
    },
    /// Arrays that do not fit together: x and y row counts, train and test widths.
    #[error("{key}: {msg}")]
    Shape {
        key: String,
        msg: String,
        hint: String,
    },
}

impl TaskError {
    /// What to try next, one suggestion per line (empty when there is nothing to add).
    pub fn hints(&self) -> Vec<String> {
        let hint = match self {
            TaskError::Invalid { hint, .. }
            | TaskError::MissingFile { hint, .. }
            | TaskError::Parse { hint, .. }
            | TaskError::Label { hint, .. }
            | TaskError::Shape { hint, .. } => hint.clone(),
            TaskError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => "check the file's permissions".into(),
                std::io::ErrorKind::IsADirectory => "the path names a folder, not a file".into(),
                _ => String::new(),
            },
        };
        hint.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The experiment-file key the error is about, e.g. `"task.modular.p"`.
    pub fn key(&self) -> Option<&str> {
        match self {
            TaskError::Invalid { key, .. }
            | TaskError::MissingFile { key, .. }
            | TaskError::Io { key, .. }
            | TaskError::Parse { key, .. }
            | TaskError::Label { key, .. }
            | TaskError::Shape { key, .. } => Some(key),
        }
    }
}

// ----- helpers shared by the task files -------------------------------------------------------

/// The largest generated dataset, in f64 elements (8 GiB): past this a typo (`p = 9700`) would
/// exhaust memory before it produced an error.
pub(crate) const MAX_ELEMENTS: usize = 1 << 30;

/// `task.<kind>.<field>`.
pub(crate) fn key(kind: &str, field: &str) -> String {
    format!("task.{kind}.{field}")
}

pub(crate) fn invalid(
    key: impl Into<String>,
    msg: impl Into<String>,
    hint: impl Into<String>,
) -> TaskError {
    TaskError::Invalid {
        key: key.into(),
        msg: msg.into(),
        hint: hint.into(),
    }
}

pub(crate) fn at_least(key: String, got: usize, min: usize, hint: &str) -> Result<(), TaskError> {
    if got < min {
        return Err(invalid(key, format!("must be ≥ {min} (got {got})"), hint));
    }
    Ok(())
}

pub(crate) fn finite_nonneg(key: String, got: f64, hint: &str) -> Result<(), TaskError> {
    if !(got.is_finite() && got >= 0.0) {
        return Err(invalid(
            key,
            format!("must be a finite number ≥ 0 (got {got})"),
            hint,
        ));
    }
    Ok(())
}

pub(crate) fn positive(key: String, got: f64, hint: &str) -> Result<(), TaskError> {
    if !(got.is_finite() && got > 0.0) {
        return Err(invalid(
            key,
            format!("must be a finite number > 0 (got {got})"),
            hint,
        ));
    }
    Ok(())
}

/// A fraction strictly between 0 and 1.
pub(crate) fn open_fraction(key: String, got: f64, hint: &str) -> Result<(), TaskError> {
    if !(got > 0.0 && got < 1.0) {
        return Err(invalid(
            key,
            format!("must be strictly between 0 and 1 (got {got})"),
            hint,
        ));
    }
    Ok(())
}

/// Refuses datasets over [`MAX_ELEMENTS`], naming the sizes that made them large.
pub(crate) fn size_ok(kind: &str, rows: usize, cols: usize, what: &str) -> Result<(), TaskError> {
    let elements = rows.saturating_mul(cols);
    if elements > MAX_ELEMENTS {
        let gib = elements as f64 * 8.0 / (1u64 << 30) as f64;
        return Err(invalid(
            format!("task.{kind}"),
            format!(
                "the dataset would hold {} rows × {} columns ≈ {gib:.1} GiB of f64 (limit {} GiB)",
                thousands(rows),
                thousands(cols),
                (MAX_ELEMENTS * 8) >> 30
            ),
            format!("reduce {what}"),
        ));
    }
    Ok(())
}

/// `12345` → `"12,345"`.
pub(crate) fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `"2,822 train / 6,587 test"`.
pub(crate) fn counts(n_train: usize, n_test: usize) -> String {
    format!("{} train / {} test", thousands(n_train), thousands(n_test))
}

/// A `[rows, cols]` matrix from row-major data whose length the caller has checked.
pub(crate) fn matrix(rows: usize, cols: usize, data: Vec<f64>) -> Array2<f64> {
    debug_assert_eq!(data.len(), rows * cols);
    Array2::from_shape_vec((rows, cols), data).expect("caller checked data.len() == rows * cols")
}

/// A `[n, 1]` column of class indices.
pub(crate) fn label_column(labels: &[usize]) -> Array2<f64> {
    matrix(labels.len(), 1, labels.iter().map(|&c| c as f64).collect())
}

/// `path` if absolute, else `base_dir/path`.
pub(crate) fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Where a path written as `written` points, for "not found" hints.
pub(crate) fn where_hint(base_dir: &Path, written: &Path) -> String {
    if written.is_absolute() {
        return "check the path".into();
    }
    // An experiment file in the current folder has an empty parent: say so.
    let folder = if base_dir.as_os_str().is_empty() {
        "the current folder".to_string()
    } else {
        base_dir.display().to_string()
    };
    format!(
        "relative paths resolve against the experiment file's folder ({folder}); this one is written as '{}'",
        written.display()
    )
}

/// Reads a whole data file, turning "not found" into [`TaskError::MissingFile`] with a hint that
/// says where relative paths point and whether a gzipped copy sits next to the file. Only regular
/// files are read (a FIFO would block forever, `/dev/zero` never ends), and only when they fit
/// in the memory this process can still allocate, within the dataset limit.
pub(crate) fn read_bytes(key: &str, base_dir: &Path, written: &Path) -> Result<Vec<u8>, TaskError> {
    let path = resolve(base_dir, written);
    if let Ok(meta) = std::fs::metadata(&path) {
        if !meta.is_file() {
            return Err(invalid(
                key,
                format!("{} is not a regular file", path.display()),
                "point it at a data file (not a directory, pipe or device)",
            ));
        }
        let limit = crate::os::available_memory()
            .unwrap_or(u64::MAX)
            .min(MAX_ELEMENTS as u64 * 8);
        if meta.len() > limit {
            return Err(invalid(
                key,
                format!(
                    "{} holds {} bytes, more than the {} this run can hold",
                    path.display(),
                    thousands(meta.len() as usize),
                    crate::os::gib(limit)
                ),
                "use a smaller file, or a subset of it",
            ));
        }
    }
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut hint = where_hint(base_dir, written);
            let mut gz = path.clone().into_os_string();
            gz.push(".gz");
            if Path::new(&gz).is_file() {
                hint.push_str(&format!(
                    "\nfound a gzipped copy, {}: decompress it first (gunzip -k '{}')",
                    Path::new(&gz).display(),
                    Path::new(&gz).display()
                ));
            }
            Err(TaskError::MissingFile {
                key: key.to_string(),
                path,
                hint,
            })
        }
        Err(source) => Err(TaskError::Io {
            key: key.to_string(),
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Experiment {
        task: TaskSpec,
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(6587), "6,587");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn toml_sections_parse_with_defaults() {
        let e: Experiment = toml::from_str("[task.modular]\np = 113\nop = \"sub\"\n").unwrap();
        let TaskSpec::Modular(m) = &e.task else {
            panic!("{e:?}")
        };
        assert_eq!((m.p, m.op, m.train_fraction), (113, ModOp::Sub, 0.3));
        assert_eq!(e.task.kind(), "modular");

        let e: Experiment = toml::from_str(
            "[task.teacher_student]\ninput_dim = 8\n[task.teacher_student.teacher]\nwidth = 3\n",
        )
        .unwrap();
        let TaskSpec::TeacherStudent(t) = &e.task else {
            panic!("{e:?}")
        };
        assert_eq!((t.input_dim, t.teacher.width, t.teacher.depth), (8, 3, 1));
    }

    #[test]
    fn toml_errors_keep_line_numbers() {
        let err = toml::from_str::<Experiment>("[task.modular]\np = 97\nprime = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("prime"), "{msg}");
        let err = toml::from_str::<Experiment>("[task.modularr]\np = 97\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    /// Every kind survives spec → toml → spec, so recorded experiments reload exactly.
    #[test]
    fn every_kind_round_trips_through_toml() {
        let specs = [
            "[task.teacher_student]",
            "[task.modular]",
            "[task.sparse_parity]",
            "[task.multitask_sparse_parity]",
            "[task.spirals]",
            "[task.moons]",
            "[task.gaussians]\ncenters = \"random\"",
            "[task.rings]",
            "[task.checkerboard]",
            "[task.gaussian_mixture]\nembed = 100",
            "[task.csv]\npath = \"d.csv\"\ntask = \"regression\"\ntarget = [\"label\", 0]\ndelimiter = \"\\t\"",
            "[task.csv]\npath = \"d.csv\"\ntest_path = \"t.csv\"\ntask = \"regression\"\ntarget = \"y\"",
            "[task.npy]\ntrain_x = \"x.npy\"\ntrain_y = \"y.npy\"\ntask = \"regression\"\ntest_fraction = 0.1",
            "[task.safetensors]\npath = \"d.safetensors\"\ntask = \"classification\"\nn_classes = 10",
            "[task.idx]\ndir = \"mnist\"\nn_train = 1000",
            "[task.images]\nclasses = 2",
            "[task.images]\ndir = \"data\"\nclasses = 3\ntest_images = \"t/i\"\ntest_masks = \"t/m\"\nscale = \"standardize\"\nn_train = 10",
        ];
        for text in specs {
            let e: Experiment = toml::from_str(text).unwrap_or_else(|err| panic!("{text}: {err}"));
            e.task
                .validate()
                .unwrap_or_else(|err| panic!("{text}: {err}"));
            let back = toml::to_string(&e).unwrap();
            let again: Experiment =
                toml::from_str(&back).unwrap_or_else(|err| panic!("{back}: {err}"));
            assert_eq!(e, again, "{back}");
        }
    }

    #[test]
    fn generate_validates_first_and_names_the_key() {
        let e: Experiment = toml::from_str("[task.modular]\np = 1\n").unwrap();
        let err = e.task.generate(0, Path::new(".")).unwrap_err();
        assert!(matches!(err, TaskError::Invalid { .. }), "{err:?}");
        assert_eq!(err.key(), Some("task.modular.p"));
        assert_eq!(err.to_string(), "task.modular.p: must be ≥ 2 (got 1)");
        assert!(!err.hints().is_empty());
    }

    #[test]
    fn oversized_datasets_are_refused_before_allocating() {
        let e: Experiment = toml::from_str("[task.modular]\np = 9700\n").unwrap();
        let err = e.task.validate().unwrap_err();
        assert_eq!(err.key(), Some("task.modular"));
        assert!(err.to_string().contains("GiB"), "{err}");
    }
}
