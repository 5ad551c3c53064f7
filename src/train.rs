//! The training loop: one explicit function over the [`Model`] interface, top to bottom, with
//! commented phases (eval, lr, batch, forward, loss, divergence, backward, sharpness, clip, step,
//! observe, checkpoint). Every model family trains here; what differs between them is behind
//! the interface or an observable.

pub mod attention;
mod data;
pub mod generative;
mod in_context;
mod segmentation;
/// The artifact a segmentation run writes for the report's side-by-side figure.
pub use segmentation::FILE as SEGMENTATION_FILE;
pub mod lockstep;
mod run;
mod sequence;
mod subtasks;
pub(crate) use run::{Flow, Run};

use std::path::Path;

use crate::checkpoint;
use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::model::{self, Model, Param};
use crate::nn::norm::Mode;
use crate::optim::{self, Hyper, OptimState};
use crate::spec::{BatchSize, Dtype, ModelSpec, OptimSpec, Spec, TrainSpec};
use crate::store::{MetricRow, RunStatus};
use crate::task::Dataset;

use data::Split;
use generative::GenerativeReport;

/// Where metric rows go (the store, or a vector in tests). A run writes its pending rows at
/// most every 0.5 s while it trains, before each checkpoint and at the end; a sink backed by a
/// database writes one transaction per call, or one per batch ([`MetricSink::begin_batch`]).
pub trait MetricSink {
    fn write(&mut self, rows: &[MetricRow]) -> Result<(), Error>;

    /// Opens a batch: the writes until [`MetricSink::end_batch`] commit together, or are all
    /// lost (a sink shared by a lockstep group's runs: [`crate::store::Store::begin_batch`]).
    /// A sink without batches writes at once.
    fn begin_batch(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Commits the open batch; on failure none of its writes is kept.
    fn end_batch(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

impl MetricSink for Vec<MetricRow> {
    fn write(&mut self, rows: &[MetricRow]) -> Result<(), Error> {
        self.extend_from_slice(rows);
        Ok(())
    }
}

/// How a run ended, and its headline numbers.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: RunStatus,
    /// Optimizer steps taken.
    pub steps: u64,
    pub diverged_step: Option<u64>,
    pub message: Option<String>,
    /// Last training-batch loss.
    pub final_batch_loss: f64,
    /// Final evaluation (eval mode, whole sets).
    pub train_loss: f64,
    pub train_acc: Option<f64>,
    pub test_loss: f64,
    pub test_acc: Option<f64>,
    pub wall_seconds: f64,
    pub n_params: usize,
}

/// Progress callback: `(steps done, latest batch loss)`.
pub type ProgressFn<'a> = &'a mut dyn FnMut(u64, f64);

/// Trains the model the spec describes on `data`, writing metrics to `sink` and artifacts (when
/// the spec asks) to `artifacts`.
/// With `resume`, this run's checkpoint in `artifacts` (if there is one) is the starting point.
pub fn train(
    spec: &Spec,
    data: &Dataset,
    sink: &mut dyn MetricSink,
    artifacts: Option<&Path>,
    resume: bool,
    progress: ProgressFn<'_>,
) -> Result<Outcome, Error> {
    // A file task's image size against a conv net's poolings (known only now).
    spec.check_data(data)?;
    // GEMMs split over `train.threads` threads; results are bit-identical for any count.
    crate::engine::ops::with_threads(spec.train.threads, || match spec.model.dtype() {
        Dtype::F32 => train_typed::<f32>(spec, data, sink, artifacts, resume, progress),
        Dtype::F64 => train_typed::<f64>(spec, data, sink, artifacts, resume, progress),
    })
}

/// The memory a run of `spec` on `data` needs, estimated before anything is allocated: the
/// model, its optimizer state and its buffers, the data as the loop holds it, and the f64
/// twin that sharpness measures on.
/// The model this spec trains on this data, in one line ([`model::describe`]).
pub fn describe_model(spec: &Spec, data: &Dataset) -> String {
    model::describe(&spec.model, data::shape(&spec.model, data))
}

pub fn memory(spec: &Spec, data: &Dataset) -> model::Memory {
    let elem = match spec.model.dtype() {
        Dtype::F32 => 4,
        Dtype::F64 => 8,
    };
    let batch = batch_for(&spec.train, data, data.n_train().max(1));
    let slots = match spec.optim.optimizer {
        optim::Optimizer::Sgd => 0,
        optim::Optimizer::Momentum | optim::Optimizer::Nesterov => 1,
        optim::Optimizer::Adam | optim::Optimizer::Adamw => 2,
    };
    let shape = data::shape(&spec.model, data);
    let mut m = model::memory(&spec.model, shape, batch, slots, elem);
    let values = [&data.train_x, &data.train_y, &data.test_x, &data.test_y];
    let mut data_values: usize = values.iter().map(|a| a.len()).sum();
    // In-context runs also hold their retrieval-chosen evaluation prompts.
    if let Some(p) = &data.prompts {
        data_values = data_values.saturating_add(p.spec.retrieval_values());
    }
    m.activations = m
        .activations
        // 8 bytes a value: token ids are usize, and f32 rows take less (an upper bound).
        .saturating_add(data_values as u64 * 8);
    // A denoiser's evaluation holds its samples, level sets and distance matrices.
    if let ModelSpec::Denoiser { denoiser, .. } = &spec.model {
        let g = GenerativeReport::bytes(denoiser, data.input_dim(), data.n_test());
        m.activations = m.activations.saturating_add(g);
    }
    if spec.observe.sharpness_every > 0 {
        let twin = model::memory(&spec.model, shape, batch, 0, 8);
        m.activations = m.activations.saturating_add(twin.params + twin.activations);
    }
    m
}

/// What this process can still allocate, read once ([`crate::os::available_memory`]) and then
/// reduced by each run admitted against it: a lockstep group's runs are prepared one after
/// another and all held at once, so each must fit beside those before it. One reading per
/// group rather than per run: the reading opens five `/proc` and cgroup files, 2–3% of a
/// 64-run tiny sweep's CPU when done 64 times.
pub struct MemoryBudget {
    /// `None` where nothing could be read (not Linux): then nothing is refused.
    left: Option<u64>,
}

impl MemoryBudget {
    /// The memory available now.
    pub fn read() -> Self {
        Self::of(crate::os::available_memory())
    }

    /// A budget of `left` bytes (`None`: unlimited).
    pub fn of(left: Option<u64>) -> Self {
        MemoryBudget { left }
    }

    /// The run's estimate, taken from the budget: a run whose estimate exceeds what is left is
    /// refused (nothing taken) before anything of it is allocated.
    pub fn admit(&mut self, spec: &Spec, data: &Dataset) -> Result<model::Memory, Error> {
        let m = memory(spec, data);
        if let Some(free) = self.left {
            if m.total() > free {
                return Err(Error::Invalid {
                    what: "model".into(),
                    message: format!(
                        "the run needs about {} (parameters and gradients {}, optimizer state {}, \
                         buffers and data {}), more than the {} this process can still allocate",
                        crate::os::gib(m.total()),
                        crate::os::gib(m.params),
                        crate::os::gib(m.optimizer),
                        crate::os::gib(m.activations),
                        crate::os::gib(free)
                    ),
                    hint: "make the model smaller (width, depth, d_model, n_layer) or the batch \
                           (train.batch_size); `cloudchamber run FILE --dry-run` prints the estimate"
                        .into(),
                });
            }
            self.left = Some(free - m.total());
        }
        Ok(m)
    }
}

fn train_typed<F: Float>(
    spec: &Spec,
    data: &Dataset,
    sink: &mut dyn MetricSink,
    artifacts: Option<&Path>,
    resume: bool,
    progress: ProgressFn<'_>,
) -> Result<Outcome, Error> {
    let mut run = Run::<F>::new(spec, data, sink, artifacts, resume)?;
    for step in run.steps_done..spec.train.steps {
        match run.step(step, progress)? {
            Flow::Go => {}
            Flow::Stop => break,
            Flow::Interrupted(out) => return Ok(out),
        }
    }
    run.finish()
}

/// Eval-mode loss and accuracy over the splits (the training split as far as
/// [`Split::eval_count`] says), in chunks of the model's capacity; appends
/// `train_eval_loss`/`train_eval_acc` and `test_loss`/`test_acc` rows at `step`. Losses are
/// means over the counted samples (rows, or tokens with a target).
fn evaluate<F: Float>(
    model: &mut dyn Model<F>,
    train: &Split<F>,
    test: &Split<F>,
    step: u64,
    rows: &mut Vec<MetricRow>,
) -> ((f64, Option<f64>), (f64, Option<f64>)) {
    let cap = model.capacity();
    let mut results = [(f64::NAN, None), (f64::NAN, None)];
    for (k, (split, n, name_loss, name_acc)) in [
        (
            train,
            train.eval_count(test.len(), cap),
            "train_eval_loss",
            "train_eval_acc",
        ),
        (test, test.len(), "test_loss", "test_acc"),
    ]
    .into_iter()
    .enumerate()
    {
        if n == 0 {
            continue;
        }
        let mut tally = Tally::default();
        let mut start = 0;
        while start < n {
            let b = cap.min(n - start);
            tally.add(model, &split.slice(start, b));
            start += b;
        }
        let (loss, acc) = tally.result();
        rows.push(metric(step, name_loss, loss));
        if let Some(a) = acc {
            rows.push(metric(step, name_acc, a));
        }
        results[k] = (loss, acc);
    }
    (results[0], results[1])
}

/// Eval-mode loss and accuracy summed over batches: means over the counted samples.
#[derive(Default)]
pub(crate) struct Tally {
    loss_sum: f64,
    counted: usize,
    correct: usize,
    any_acc: bool,
}

impl Tally {
    /// Runs the model on `batch` (eval mode) and adds its loss and correct count.
    pub(crate) fn add<F: Float>(&mut self, model: &mut dyn Model<F>, batch: &model::Batch<'_, F>) {
        model.forward(batch, Mode::Eval);
        self.add_value(model.loss(batch, false));
    }

    /// One pass's loss, however it was computed.
    pub(crate) fn add_value(&mut self, v: crate::nn::loss::LossValue) {
        self.loss_sum += v.loss * v.counted as f64;
        self.counted += v.counted;
        if let Some(c) = v.correct {
            self.correct += c;
            self.any_acc = true;
        }
    }

    /// `(mean loss, accuracy when the loss counts correct answers)`.
    pub(crate) fn result(&self) -> (f64, Option<f64>) {
        let n = self.counted.max(1) as f64;
        (
            self.loss_sum / n,
            self.any_acc.then(|| self.correct as f64 / n),
        )
    }
}

// The phases that do not depend on the model.

/// One step-level metric row (no layer).
fn metric(step: u64, name: &str, value: f64) -> MetricRow {
    MetricRow {
        step,
        layer: None,
        name: name.to_string(),
        value,
    }
}

impl Outcome {
    /// A run stopped when asked (Ctrl-C) before step `steps`: no final evaluation.
    fn interrupted(steps: u64, final_batch_loss: f64, wall_seconds: f64, n_params: usize) -> Self {
        Outcome {
            status: RunStatus::Interrupted,
            steps,
            diverged_step: None,
            message: Some(format!(
                "interrupted before step {steps}; run it again to resume"
            )),
            final_batch_loss,
            train_loss: f64::NAN,
            train_acc: None,
            test_loss: f64::NAN,
            test_acc: None,
            wall_seconds,
            n_params,
        }
    }
}

/// The error for a task whose training set has no rows.
fn empty_training_set() -> Error {
    Error::Invalid {
        what: "task".into(),
        message: "the training set is empty".into(),
        hint: "check the task's size settings or data file".into(),
    }
}

/// Samples per batch: [`batch_rows`], except for fresh prompts, which have no set to cap at
/// (`"full"`: as many as the `n` evaluation prompts).
fn batch_for(tr: &TrainSpec, data: &Dataset, n: usize) -> usize {
    match (&data.prompts, tr.batch_size) {
        (Some(_), BatchSize::Size(b)) => b,
        _ => batch_rows(tr, n),
    }
}

/// Rows per batch: the whole set, or the asked size capped at the set's `n` rows.
fn batch_rows(tr: &TrainSpec, n: usize) -> usize {
    match tr.batch_size {
        BatchSize::Full => n,
        BatchSize::Size(b) => b.min(n),
    }
}

/// The optimizer's hyperparameters as the spec sets them.
fn hyper(o: &OptimSpec) -> Hyper {
    Hyper {
        optimizer: o.optimizer,
        momentum: o.momentum,
        beta1: o.betas[0],
        beta2: o.betas[1],
        eps: o.eps,
        weight_decay: o.weight_decay.unwrap_or(0.0),
    }
}

/// Restores parameters, optimizer and batch order from the checkpoint at `path` when there is
/// one, and returns the rest of its state; a checkpoint of another run is an error.
fn resume_from<F: Float>(
    path: &Path,
    run_id: &str,
    params: &mut [Param<F>],
    opt: &mut OptimState<F>,
    order: &mut Vec<usize>,
) -> Result<Option<checkpoint::State>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let st = checkpoint::load(path, params, opt, order)?;
    if st.run_id != run_id {
        return Err(Error::Invalid {
            what: path.display().to_string(),
            message: format!("the checkpoint belongs to run {}, not {run_id}", st.run_id),
            hint: "run with --force to start over".into(),
        });
    }
    Ok(Some(st))
}

/// The next batch's positions in `order` (`batch` of the `n` rows, fewer at the end of an
/// epoch: DataLoader's drop_last = False); a fresh permutation each epoch.
fn next_batch(
    order_rng: &mut Rng,
    order: &mut Vec<usize>,
    cursor: &mut usize,
    n: usize,
    batch: usize,
) -> std::ops::Range<usize> {
    if *cursor >= n {
        order_rng.permutation_into(n, order);
        *cursor = 0;
    }
    let b = batch.min(n - *cursor);
    let range = *cursor..*cursor + b;
    *cursor += b;
    range
}

/// The learning rate of `step` under the spec's schedule.
fn lr_at(o: &OptimSpec, step: u64, steps: u64) -> f64 {
    optim::lr_at(
        o.schedule,
        o.lr,
        o.warmup_steps,
        o.final_lr_fraction,
        step,
        steps,
    )
}

/// Whether a batch loss counts as divergence: not finite, or `factor` × the first loss exceeded.
fn diverged(loss: f64, first: f64, factor: f64) -> bool {
    !loss.is_finite() || loss > factor * first.max(f64::MIN_POSITIVE)
}

/// The recorded message of a run that diverged at `step`.
fn divergence_message(loss: f64, first: f64, factor: f64, step: u64) -> String {
    if loss.is_finite() {
        format!("loss {loss:.4e} exceeded {factor}× its initial value {first:.4e} at step {step}")
    } else {
        format!("loss became {loss} at step {step}")
    }
}

/// Clips the gradients to the spec's global norm, if any; returns the factor applied (1 when
/// none), so observables can report the raw gradient.
fn clip<F: Float>(o: &OptimSpec, params: &mut [Param<F>]) -> f64 {
    match o.clip_grad_norm {
        Some(max) => {
            let norm = optim::grad_norm(params);
            optim::clip_grad_norm(params, norm, max)
        }
        None => 1.0,
    }
}

/// One optimizer step (plus the weight-norm constraint), snapshotting the parameters into
/// `before` first when `snapshot` (logged steps: the update-to-weight ratio needs them).
fn update<F: Float>(
    o: &OptimSpec,
    hyper: &Hyper,
    lr: f64,
    opt: &mut OptimState<F>,
    params: &mut [Param<F>],
    before: &mut [Vec<F>],
    snapshot: bool,
) {
    if snapshot {
        for (s, p) in before.iter_mut().zip(params.iter()) {
            s.copy_from_slice(&p.value);
        }
    }
    opt.step(params, hyper, lr);
    after_update(o, params);
}

/// What follows every optimizer step, however it was taken: the weight-norm constraint.
pub(crate) fn after_update<F: Float>(o: &OptimSpec, params: &mut [Param<F>]) {
    if let Some(target) = o.weight_norm {
        optim::constrain_weight_norm(params, target);
    }
}

/// The recorded message of a run that reached the target loss at `step`.
fn target_message(tr: &TrainSpec, step: u64) -> String {
    format!(
        "reached target loss {} at step {step}",
        tr.target_loss.unwrap_or_default()
    )
}

/// Deletes a finished run's checkpoint (nothing left to resume); a missing one is fine.
fn remove_checkpoint(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group's runs are admitted against one budget: each takes its estimate, and the run
    /// that no longer fits beside the others is refused, taking nothing.
    #[test]
    fn a_budget_admits_runs_until_the_next_does_not_fit() {
        let text = "seed = 0\n[task.teacher_student]\ninput_dim = 4\nn_train = 64\nn_test = 32\n\
                    [model]\nwidth = 8\ndepth = 1\n[train]\nsteps = 2\nbatch_size = 16\n";
        let spec = crate::spec::parse(text, std::path::Path::new("t.toml"), &[]).unwrap();
        let data = spec.task.generate(0, std::path::Path::new(".")).unwrap();
        let m = memory(&spec, &data).total();
        assert!(m > 0);
        let mut b = MemoryBudget::of(Some(2 * m + m / 2));
        assert_eq!(b.admit(&spec, &data).unwrap().total(), m);
        b.admit(&spec, &data).unwrap();
        let err = b.admit(&spec, &data).unwrap_err().to_string();
        assert!(err.contains("this process can still allocate"), "{err}");
        assert_eq!(b.left, Some(m / 2), "a refused run takes nothing");
        let mut none = MemoryBudget::of(None);
        for _ in 0..3 {
            none.admit(&spec, &data).unwrap();
        }
    }
}
