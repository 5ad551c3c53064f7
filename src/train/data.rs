//! The data as the training loop feeds it to a model: one split as feature rows in the model's
//! precision, or as token windows; batches gathered into preallocated buffers.

use crate::engine::Float;
use crate::model::{Batch, Shape, IGNORE};
use crate::task::Dataset;

/// One split of the dataset.
pub(crate) enum Split<F> {
    /// `x: [n, input]`, `y: [n, y_cols]`.
    Rows {
        x: Vec<F>,
        y: Vec<F>,
        n: usize,
        input: usize,
        y_cols: usize,
    },
    /// `x, y: [n, seq]` token ids.
    Tokens {
        x: Vec<usize>,
        y: Vec<usize>,
        n: usize,
        seq: usize,
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
        match &data.sequence {
            // Token ids are exact integers; positions without a loss become IGNORE.
            Some(info) => Split::Tokens {
                x: x.iter().map(|&v| v as usize).collect(),
                y: y.indexed_iter()
                    .map(|((_, t), &v)| {
                        if info.trained.at(t, y.ncols()) {
                            v as usize
                        } else {
                            IGNORE
                        }
                    })
                    .collect(),
                n: x.nrows(),
                seq: x.ncols(),
            },
            None => Split::Rows {
                x: x.iter().map(|&v| F::of(v)).collect(),
                y: y.iter().map(|&v| F::of(v)).collect(),
                n: x.nrows(),
                input: x.ncols(),
                y_cols: y.ncols(),
            },
        }
    }

    /// Samples: rows or windows.
    pub(crate) fn len(&self) -> usize {
        match self {
            Split::Rows { n, .. } | Split::Tokens { n, .. } => *n,
        }
    }

    /// Samples `start..start + len`, as they are stored.
    pub(crate) fn slice(&self, start: usize, len: usize) -> Batch<'_, F> {
        let end = start + len;
        match self {
            Split::Rows {
                x,
                y,
                input,
                y_cols,
                ..
            } => Batch::Rows {
                x: &x[start * input..end * input],
                y: &y[start * y_cols..end * y_cols],
                rows: len,
            },
            Split::Tokens { x, y, seq, .. } => Batch::Tokens {
                x: &x[start * seq..end * seq],
                y: &y[start * seq..end * seq],
                seqs: len,
                seq: *seq,
            },
        }
    }

    /// Buffers for a gathered batch of up to `cap` samples.
    pub(crate) fn buffers(&self, cap: usize) -> Gathered<F> {
        match self {
            Split::Rows { input, y_cols, .. } => {
                Gathered::Rows(vec![F::zero(); cap * input], vec![F::zero(); cap * y_cols])
            }
            Split::Tokens { seq, .. } => Gathered::Tokens(vec![0; cap * seq], vec![0; cap * seq]),
        }
    }

    /// The samples at `picked`, copied into `into` (from [`Split::buffers`]).
    pub(crate) fn gather<'a>(&self, picked: &[usize], into: &'a mut Gathered<F>) -> Batch<'a, F> {
        fn copy<T: Copy>(dst: &mut [T], src: &[T], width: usize, picked: &[usize]) {
            for (k, &i) in picked.iter().enumerate() {
                dst[k * width..(k + 1) * width].copy_from_slice(&src[i * width..(i + 1) * width]);
            }
        }
        let b = picked.len();
        match (self, into) {
            (
                Split::Rows {
                    x,
                    y,
                    input,
                    y_cols,
                    ..
                },
                Gathered::Rows(bx, by),
            ) => {
                copy(bx, x, *input, picked);
                copy(by, y, *y_cols, picked);
                Batch::Rows {
                    x: &bx[..b * input],
                    y: &by[..b * y_cols],
                    rows: b,
                }
            }
            (Split::Tokens { x, y, seq, .. }, Gathered::Tokens(bx, by)) => {
                copy(bx, x, *seq, picked);
                copy(by, y, *seq, picked);
                Batch::Tokens {
                    x: &bx[..b * seq],
                    y: &by[..b * seq],
                    seqs: b,
                    seq: *seq,
                }
            }
            _ => unreachable!("buffers come from the same split"),
        }
    }

    /// How many samples of this (training) split the evaluation reads, when the test split has
    /// `test_n` and a pass holds `cap`: all rows; for token windows at most `max(test_n, cap)`,
    /// since a language corpus can be far larger than what an evaluation needs.
    pub(crate) fn eval_count(&self, test_n: usize, cap: usize) -> usize {
        match self {
            Split::Rows { n, .. } => *n,
            Split::Tokens { n, .. } => (*n).min(test_n.max(cap)),
        }
    }
}

/// Preallocated buffers of one gathered batch.
pub(crate) enum Gathered<F> {
    Rows(Vec<F>, Vec<F>),
    Tokens(Vec<usize>, Vec<usize>),
}

/// The data's shape as models see it (`context`: the window length).
pub(crate) fn shape(data: &Dataset) -> Shape {
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
