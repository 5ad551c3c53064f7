//! The data as the training loop feeds it to a model: one split as feature rows in the model's
//! precision, or as token windows; batches gathered into preallocated buffers.

use crate::engine::{Float, Rng};
use crate::generative::Kernel;
use crate::model::{Batch, Shape, IGNORE};
use crate::spec::ModelSpec;
use crate::task::{in_context, Dataset, PromptInfo};

/// One split: `n` samples of `x` (`xw` values each) and `y` (`yw` each), row-major.
pub(crate) struct Samples<X, Y> {
    x: Vec<X>,
    y: Vec<Y>,
    n: usize,
    xw: usize,
    yw: usize,
}

impl<X: Copy + Default, Y: Copy + Default> Samples<X, Y> {
    /// Samples `start..start + len`.
    fn slice(&self, start: usize, len: usize) -> (&[X], &[Y]) {
        let end = start + len;
        (
            &self.x[start * self.xw..end * self.xw],
            &self.y[start * self.yw..end * self.yw],
        )
    }

    /// Buffers for `cap` gathered samples.
    fn buffers(&self, cap: usize) -> (Vec<X>, Vec<Y>) {
        (
            vec![X::default(); cap * self.xw],
            vec![Y::default(); cap * self.yw],
        )
    }

    /// The samples at `picked`, copied to the front of `(bx, by)`.
    fn gather<'a>(
        &self,
        picked: &[usize],
        (bx, by): &'a mut (Vec<X>, Vec<Y>),
    ) -> (&'a [X], &'a [Y]) {
        for (k, &i) in picked.iter().enumerate() {
            let (x, y) = self.slice(i, 1);
            bx[k * self.xw..(k + 1) * self.xw].copy_from_slice(x);
            by[k * self.yw..(k + 1) * self.yw].copy_from_slice(y);
        }
        let b = picked.len();
        (&bx[..b * self.xw], &by[..b * self.yw])
    }
}

/// A split as the model reads it.
pub(crate) enum Split<F> {
    /// `x: [n, input]`, `y: [n, y_cols]`.
    Rows(Samples<F, F>),
    /// `x, y: [n, seq]` token ids.
    Tokens(Samples<usize, usize>),
    /// In-context prompts: `x: [n, points·dim]`, `y: [n, points]`; `fresh` (the training
    /// split): the generator of each step's prompts, the stored ones being for evaluation.
    Prompts {
        s: Samples<F, F>,
        dim: usize,
        points: usize,
        fresh: Option<PromptInfo>,
    },
    /// A denoiser's points: `clean: [n, dim]`, with one fixed perturbation each (`noisy`, at
    /// `sigma`) for evaluation; training batches (`fresh`) are perturbed anew at every step.
    Noisy(Box<Noisy<F>>),
}

pub(crate) struct Noisy<F> {
    clean: Vec<F>,
    noisy: Vec<F>,
    sigma: Vec<F>,
    n: usize,
    dim: usize,
    kernel: Kernel,
    /// The run's seed, for the per-step perturbations of training batches.
    fresh: Option<u64>,
}

/// Preallocated buffers of one gathered batch.
pub(crate) enum Gathered<F> {
    Rows((Vec<F>, Vec<F>)),
    Tokens((Vec<usize>, Vec<usize>)),
    /// Clean rows, their perturbations and levels.
    Noisy([Vec<F>; 3]),
}

/// The stream of step `step`'s training perturbations: a function of the seed and the step
/// alone, so a resumed run and any thread count draw the same.
pub(crate) fn perturb_rng(seed: u64, step: u64) -> Rng {
    Rng::stream(
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        "denoise-train",
    )
}

/// A matrix's elements in row-major order, converted: over the contiguous slice where the
/// array is in standard layout (a loop the compiler vectorizes; ndarray's element iterator is
/// not, and a test split is 10⁵ elements), else element by element.
fn convert<F: Float>(a: &ndarray::Array2<f64>) -> Vec<F> {
    match a.as_slice() {
        Some(s) => s.iter().map(|&v| F::of(v)).collect(),
        None => a.iter().map(|&v| F::of(v)).collect(),
    }
}

/// Draws a level for each row of `clean` (`[rows, dim]`) and perturbs it into `noisy`.
fn perturb_rows<F: Float>(
    kernel: &Kernel,
    clean: &[F],
    noisy: &mut [F],
    sigma: &mut [F],
    rng: &mut Rng,
) {
    let dim = kernel.n;
    let (mut y, mut x) = (vec![0.0; dim], vec![0.0; dim]);
    for ((c, o), s) in clean
        .chunks_exact(dim)
        .zip(noisy.chunks_exact_mut(dim))
        .zip(sigma.iter_mut())
    {
        let level = kernel.draw_sigma(rng);
        for (a, &b) in y.iter_mut().zip(c) {
            *a = b.f64();
        }
        kernel.perturb(level, &y, &mut x, rng);
        for (a, &b) in o.iter_mut().zip(&x) {
            *a = F::of(b);
        }
        *s = F::of(level);
    }
}

/// Which samples a step trains on ([`Split::view`]): the whole split as stored, the first
/// `b` gathered samples, or step `step`'s fresh prompts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Picked {
    Whole(usize),
    Gathered(usize),
    /// Rows `order[start..start + len]` of a stored split, not yet gathered
    /// ([`super::Run::pick_rows`]): read where they lie, or gathered before a view.
    Ordered {
        start: usize,
        len: usize,
    },
    Fresh {
        step: u64,
        batch: usize,
    },
}

/// Which split of a dataset.
#[derive(Clone, Copy)]
pub(crate) enum Part {
    Train,
    Test,
}

impl<F: Float> Split<F> {
    pub(crate) fn new(data: &Dataset, part: Part) -> Self {
        let (x, y) = match part {
            Part::Train => (&data.train_x, &data.train_y),
            Part::Test => (&data.test_x, &data.test_y),
        };
        let (n, xw, yw) = (x.nrows(), x.ncols(), y.ncols());
        if let Some(info) = &data.prompts {
            return Split::Prompts {
                s: Samples {
                    x: convert(x),
                    y: convert(y),
                    n,
                    xw,
                    yw,
                },
                dim: info.spec.dim,
                points: info.spec.points,
                fresh: matches!(part, Part::Train).then(|| info.clone()),
            };
        }
        match &data.sequence {
            // Token ids are exact integers; positions without a loss become IGNORE.
            Some(info) => Split::Tokens(Samples {
                x: x.iter().map(|&v| v as usize).collect(),
                y: y.indexed_iter()
                    .map(|((_, t), &v)| {
                        if info.trained.at(t, yw) {
                            v as usize
                        } else {
                            IGNORE
                        }
                    })
                    .collect(),
                n,
                xw,
                yw,
            }),
            None => Split::Rows(Samples {
                x: convert(x),
                y: convert(y),
                n,
                xw,
                yw,
            }),
        }
    }

    /// A denoiser's split: the points of `part`, each with one fixed perturbation (stream
    /// `"denoise-{train,test}-eval"`) for evaluation; the training split perturbs its batches
    /// anew at each step ([`Split::gather`]).
    pub(crate) fn noisy(data: &Dataset, part: Part, kernel: Kernel, seed: u64) -> Self {
        let (x, label) = match part {
            Part::Train => (&data.train_x, "denoise-train-eval"),
            Part::Test => (&data.test_x, "denoise-test-eval"),
        };
        let (n, dim) = (x.nrows(), x.ncols());
        let clean: Vec<F> = convert(x);
        let (mut noisy, mut sigma) = (vec![F::zero(); n * dim], vec![F::zero(); n]);
        perturb_rows(
            &kernel,
            &clean,
            &mut noisy,
            &mut sigma,
            &mut Rng::stream(seed, label),
        );
        Split::Noisy(Box::new(Noisy {
            clean,
            noisy,
            sigma,
            n,
            dim,
            kernel,
            fresh: matches!(part, Part::Train).then_some(seed),
        }))
    }

    /// Whether training batches are perturbed anew at every step (so the whole training split
    /// is never fed as it is stored).
    pub(crate) fn perturbs(&self) -> bool {
        matches!(self, Split::Noisy(s) if s.fresh.is_some())
    }

    /// Samples: rows or windows.
    pub(crate) fn len(&self) -> usize {
        match self {
            Split::Rows(s) | Split::Prompts { s, .. } => s.n,
            Split::Tokens(s) => s.n,
            Split::Noisy(s) => s.n,
        }
    }

    /// Samples `start..start + len`, as they are stored.
    pub(crate) fn slice(&self, start: usize, len: usize) -> Batch<'_, F> {
        match self {
            Split::Rows(s) => rows(s.slice(start, len), len),
            Split::Tokens(s) => tokens(s.slice(start, len), len, s.xw),
            Split::Prompts { s, dim, points, .. } => {
                prompts(s.slice(start, len), len, *points, *dim)
            }
            Split::Noisy(s) => {
                let (a, b) = (start * s.dim, (start + len) * s.dim);
                Batch::Denoise {
                    x: &s.noisy[a..b],
                    sigma: &s.sigma[start..start + len],
                    y: &s.clean[a..b],
                    rows: len,
                    dim: s.dim,
                }
            }
        }
    }

    /// Buffers for a gathered batch of up to `cap` samples.
    pub(crate) fn buffers(&self, cap: usize) -> Gathered<F> {
        match self {
            Split::Rows(s) | Split::Prompts { s, .. } => Gathered::Rows(s.buffers(cap)),
            Split::Tokens(s) => Gathered::Tokens(s.buffers(cap)),
            Split::Noisy(s) => Gathered::Noisy([
                vec![F::zero(); cap * s.dim],
                vec![F::zero(); cap * s.dim],
                vec![F::zero(); cap],
            ]),
        }
    }

    /// The samples at `picked`, copied into `into` (from [`Split::buffers`]). A denoiser's
    /// training split perturbs them with step `step`'s stream ([`perturb_rng`]); its other
    /// splits copy their fixed perturbations.
    pub(crate) fn gather<'a>(
        &self,
        picked: &[usize],
        step: u64,
        into: &'a mut Gathered<F>,
    ) -> Batch<'a, F> {
        match (self, into) {
            (Split::Noisy(s), Gathered::Noisy([clean, noisy, sigma])) => {
                let (b, d) = (picked.len(), s.dim);
                for (k, &i) in picked.iter().enumerate() {
                    clean[k * d..(k + 1) * d].copy_from_slice(&s.clean[i * d..(i + 1) * d]);
                    noisy[k * d..(k + 1) * d].copy_from_slice(&s.noisy[i * d..(i + 1) * d]);
                    sigma[k] = s.sigma[i];
                }
                if let Some(seed) = s.fresh {
                    let mut rng = perturb_rng(seed, step);
                    perturb_rows(
                        &s.kernel,
                        &clean[..b * d],
                        &mut noisy[..b * d],
                        &mut sigma[..b],
                        &mut rng,
                    );
                }
                Batch::Denoise {
                    x: &noisy[..b * d],
                    sigma: &sigma[..b],
                    y: &clean[..b * d],
                    rows: b,
                    dim: d,
                }
            }
            (Split::Rows(s), Gathered::Rows(b)) => rows(s.gather(picked, b), picked.len()),
            (Split::Tokens(s), Gathered::Tokens(b)) => {
                tokens(s.gather(picked, b), picked.len(), s.xw)
            }
            (Split::Prompts { s, dim, points, .. }, Gathered::Rows(b)) => {
                prompts(s.gather(picked, b), picked.len(), *points, *dim)
            }
            _ => unreachable!("buffers come from the same split"),
        }
    }

    /// The batch `picked` names, read back from `gathered` (which [`Split::gather`] or
    /// [`Split::fresh`] filled for this step): the loop reads a step's batch more than once
    /// without borrowing its buffer for the whole step.
    pub(crate) fn view<'a>(&'a self, picked: Picked, gathered: &'a Gathered<F>) -> Batch<'a, F> {
        match (picked, self, gathered) {
            (Picked::Whole(n), ..) => self.slice(0, n),
            (Picked::Gathered(b), Split::Rows(s), Gathered::Rows((bx, by))) => {
                rows((&bx[..b * s.xw], &by[..b * s.yw]), b)
            }
            (Picked::Gathered(b), Split::Tokens(s), Gathered::Tokens((bx, by))) => {
                tokens((&bx[..b * s.xw], &by[..b * s.yw]), b, s.xw)
            }
            (
                Picked::Gathered(b),
                Split::Prompts { s, dim, points, .. },
                Gathered::Rows((bx, by)),
            ) => prompts((&bx[..b * s.xw], &by[..b * s.yw]), b, *points, *dim),
            (Picked::Gathered(b), Split::Noisy(s), Gathered::Noisy([clean, noisy, sigma])) => {
                Batch::Denoise {
                    x: &noisy[..b * s.dim],
                    sigma: &sigma[..b],
                    y: &clean[..b * s.dim],
                    rows: b,
                    dim: s.dim,
                }
            }
            (
                Picked::Fresh { step, batch },
                Split::Prompts {
                    dim,
                    fresh: Some(info),
                    ..
                },
                Gathered::Rows((bx, by)),
            ) => {
                let points = info.spec.at(step).1;
                prompts(
                    (&bx[..batch * points * dim], &by[..batch * points]),
                    batch,
                    points,
                    *dim,
                )
            }
            (Picked::Ordered { .. }, ..) => {
                unreachable!("an ordered batch is gathered (Run::gather_picked) before a view")
            }
            _ => unreachable!("a step's batch is read from the split that picked it"),
        }
    }

    /// A split of stored feature rows as stored: `(x: [n, xw], y: [n, yw], xw, yw)` (`None`
    /// for other splits).
    pub(crate) fn stored_rows(&self) -> Option<(&[F], &[F], usize, usize)> {
        match self {
            Split::Rows(s) => Some((&s.x, &s.y, s.xw, s.yw)),
            _ => None,
        }
    }

    /// Whether training batches are drawn fresh each step ([`Split::fresh`]) rather than
    /// gathered from the stored samples.
    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self, Split::Prompts { fresh: Some(_), .. })
    }

    /// The `batch` training prompts of `step`, drawn into `into` from the seed and the step
    /// alone (a resumed run draws the same), at the curriculum's size for that step.
    pub(crate) fn fresh<'a>(
        &self,
        step: u64,
        batch: usize,
        into: &'a mut Gathered<F>,
    ) -> Batch<'a, F> {
        let (
            Split::Prompts {
                dim,
                fresh: Some(info),
                ..
            },
            Gathered::Rows((bx, by)),
        ) = (self, into)
        else {
            unreachable!("fresh batches come from a prompt task's training split")
        };
        let (active, points) = info.spec.at(step);
        let mut rng = in_context::step_rng(info.seed, step);
        let (x, y) = (&mut bx[..batch * points * dim], &mut by[..batch * points]);
        info.spec.fill(active, points, &mut rng, x, y);
        prompts((x, y), batch, points, *dim)
    }

    /// The first token of the split (where samples of a language model start).
    pub(crate) fn first_token(&self) -> usize {
        match self {
            Split::Tokens(s) => s.x.first().copied().unwrap_or(0),
            Split::Rows(_) | Split::Prompts { .. } | Split::Noisy(_) => 0,
        }
    }

    /// How many samples of this (training) split the evaluation reads, when the test split has
    /// `test_n` and a pass holds `cap`: all rows; for token windows at most `max(test_n, cap)`,
    /// since a language corpus can be far larger than what an evaluation needs.
    pub(crate) fn eval_count(&self, test_n: usize, cap: usize) -> usize {
        match self {
            Split::Rows(s) | Split::Prompts { s, .. } => s.n,
            Split::Noisy(s) => s.n,
            Split::Tokens(s) => s.n.min(test_n.max(cap)),
        }
    }
}

fn rows<'a, F>((x, y): (&'a [F], &'a [F]), rows: usize) -> Batch<'a, F> {
    Batch::Rows { x, y, rows }
}

fn tokens<'a, F>((x, y): (&'a [usize], &'a [usize]), seqs: usize, seq: usize) -> Batch<'a, F> {
    Batch::Tokens { x, y, seqs, seq }
}

fn prompts<'a, F>(
    (x, y): (&'a [F], &'a [F]),
    seqs: usize,
    points: usize,
    dim: usize,
) -> Batch<'a, F> {
    Batch::Prompts {
        x,
        y,
        seqs,
        points,
        dim,
    }
}

/// The data's shape as `model` sees it (`context`: the window length). Labelled images (IDX
/// files, `[task.shapes]` with `target = "kind"`) are images to a conv net and flattened rows to
/// an MLP or a denoiser; masks are images to every model.
pub(crate) fn shape(model: &ModelSpec, data: &Dataset) -> Shape {
    if let Some(p) = &data.prompts {
        return Shape::Prompts {
            dim: p.spec.dim,
            points: p.spec.points,
        };
    }
    let conv = matches!(model, ModelSpec::Cnn { .. } | ModelSpec::Unet { .. });
    let masks = matches!(data.target, crate::task::Target::Masks { .. });
    if let (Some(img), true) = (&data.image, conv || masks) {
        let (classes, dense) = match data.target {
            crate::task::Target::Masks { n_classes } => (n_classes, true),
            crate::task::Target::Classes { n_classes } => (n_classes, false),
            crate::task::Target::Regression { out_dim } => (out_dim, false),
        };
        return Shape::Images {
            channels: img.channels,
            height: img.height,
            width: img.width,
            classes,
            dense,
        };
    }
    match &data.sequence {
        Some(info) => Shape::Tokens {
            vocab: info.vocab.len(),
            context: data.train_x.ncols(),
        },
        None => Shape::Rows {
            input: data.input_dim(),
            output: data.output_dim(),
        },
    }
}
