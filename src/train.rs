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
mod sequence;
mod subtasks;

use std::path::Path;
use std::time::Instant;

use crate::checkpoint;
use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::generative::Kernel;
use crate::interop;
use crate::model::{self, Model, Param};
use crate::nn::loss::LossValue;
use crate::nn::norm::Mode;
use crate::observe::{self, Ctx};
use crate::optim::{self, Hyper, OptimState};
use crate::spec::{BatchSize, Dtype, LossKind, ModelSpec, OptimSpec, Spec, TrainSpec};
use crate::store::{MetricRow, RunStatus};
use crate::task::{Dataset, Target};
use crate::theory::curvature::Sharpness;

use data::{Part, Split};
use generative::GenerativeReport;
use in_context::PromptReport;
use segmentation::SegmentationReport;
use sequence::SequenceReport;
use subtasks::SubtaskReport;

/// Where metric rows go (the store, or a vector in tests). One call per logged step, so a sink
/// backed by a database writes one transaction per logged step.
pub trait MetricSink {
    fn write(&mut self, rows: &[MetricRow]) -> Result<(), Error>;
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

/// Refuses a run whose estimated memory exceeds what this process can still allocate
/// ([`crate::os::available_memory`]), before anything is allocated.
pub fn check_memory(spec: &Spec, data: &Dataset) -> Result<model::Memory, Error> {
    let m = memory(spec, data);
    if let Some(free) = crate::os::available_memory() {
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
    }
    Ok(m)
}

fn train_typed<F: Float>(
    spec: &Spec,
    data: &Dataset,
    sink: &mut dyn MetricSink,
    artifacts: Option<&Path>,
    resume: bool,
    progress: ProgressFn<'_>,
) -> Result<Outcome, Error> {
    let start = Instant::now();
    let (tr, opt_spec, obs_spec) = (&spec.train, &spec.optim, &spec.observe);

    // Data: each split as feature rows in the model's precision, as token windows, or as a
    // denoiser's noisy points.
    let (train_set, test_set) = match &spec.model {
        ModelSpec::Denoiser { denoiser, .. } => {
            let kernel = Kernel::new(denoiser, data.input_dim());
            (
                Split::<F>::noisy(data, Part::Train, kernel, spec.seed),
                Split::<F>::noisy(data, Part::Test, kernel, spec.seed),
            )
        }
        _ => (
            Split::<F>::new(data, Part::Train),
            Split::<F>::new(data, Part::Test),
        ),
    };
    let n = train_set.len();
    if n == 0 {
        return Err(empty_training_set());
    }
    let batch = batch_for(tr, data, n);

    // Model: built from its spec for this data (a mismatch is an error, not a panic).
    let loss_kind = tr.loss.unwrap_or(match data.target {
        // A segmentation model's loss is its own (`model.unet.loss`).
        Target::Classes { .. } | Target::Masks { .. } => LossKind::CrossEntropy,
        Target::Regression { .. } => LossKind::Mse,
    });
    let mut rng = Rng::stream(spec.seed, "init");
    let mut model = model::build::<F>(
        &spec.model,
        data::shape(&spec.model, data),
        loss_kind,
        batch,
        &mut rng,
    )?;
    let sequence = match &data.sequence {
        Some(info) => {
            let prompt = test_set.first_token();
            Some(SequenceReport::new(info, artifacts, prompt, spec.seed)?)
        }
        None => None,
    };
    let prompts = PromptReport::<F>::new(data);
    let mut generative = match &spec.model {
        ModelSpec::Denoiser { denoiser, .. } => {
            Some(GenerativeReport::new(denoiser, data, spec.seed))
        }
        _ => None,
    };
    let mut subtasks = data
        .subtasks
        .as_ref()
        .map(|s| SubtaskReport::new(s, &test_set, model.capacity()));
    let mut segmentation = SegmentationReport::new(data);
    if let (Some(dir), true) = (artifacts, spec.output.save_weights) {
        interop::save_params(model.params(), &dir.join("weights_init.safetensors"))?;
    }
    if let (Some(dir), true) = (artifacts, spec.output.save_data) {
        interop::save_dataset(data, &dir.join("data.safetensors"))?;
    }
    let mut opt = OptimState::new(model.params(), opt_spec.optimizer);
    let hyper = hyper(opt_spec);
    let names = obs_spec.observables.as_deref().unwrap_or(&[]);
    let mut observables = observe::registry::<F>(names, spec.model.family());

    // Preallocated: the batch, the pre-update snapshot, the metric rows.
    let mut order_rng = Rng::stream(spec.seed, "batches");
    let mut order = order_rng.permutation(n);
    let mut cursor = 0usize;
    let mut gathered = train_set.buffers(batch);
    let mut before: Vec<Vec<F>> = model.params().iter().map(|p| p.value.clone()).collect();
    let mut rows: Vec<MetricRow> = Vec::with_capacity(1024);

    let mut initial_loss: Option<f64> = None;
    let mut last = LossValue::default();
    let mut status = RunStatus::Completed;
    let mut diverged_step = None;
    let mut message = None;
    let mut steps_done = 0u64;
    let mut last_eval = None;

    // Resume: restore the whole state the checkpoint holds.
    let run_id = spec.run_id();
    let ckpt_path = artifacts.map(|d| d.join(checkpoint::FILE));
    if let (true, Some(path)) = (resume, &ckpt_path) {
        if let Some(st) = resume_from(path, &run_id, model.params_mut(), &mut opt, &mut order)? {
            steps_done = st.step;
            cursor = st.cursor;
            order_rng = st.order_rng;
            initial_loss = st.initial_loss_bits.map(f64::from_bits);
            last_eval = st.last_eval;
        }
    }

    // Once, at step 0: the parameter count (scaling fits read N from the store) and what the
    // task knows (a sequence source's entropy rate).
    if steps_done == 0 {
        if let Some(s) = &sequence {
            s.start(&mut rows);
        }
        if let Some(p) = &prompts {
            p.start(&mut rows);
        }
        if let Some(s) = &subtasks {
            s.start(&mut rows);
        }
        if let Some(g) = &mut generative {
            g.start(&mut rows);
        }
        if let Some(s) = &segmentation {
            s.start(data, &mut rows);
        }
        rows.push(metric(0, "n_params", model.n_params() as f64));
    }

    // The whole state as it stands before step `steps_done`, after flushing every row so far
    // (so the store and the checkpoint agree).
    macro_rules! save_checkpoint {
        () => {
            if let Some(path) = &ckpt_path {
                let state = checkpoint::State {
                    run_id: run_id.clone(),
                    step: steps_done,
                    optim_t: opt.t,
                    cursor,
                    order_rng: order_rng.clone(),
                    initial_loss_bits: initial_loss.map(f64::to_bits),
                    last_eval,
                };
                sink.write(&rows)?;
                rows.clear();
                checkpoint::save(path, &state, model.params(), &opt, &order)?;
            }
        };
    }

    let first_step = steps_done;
    for step in first_step..tr.steps {
        // Stop when asked (Ctrl-C): checkpoint where we are and report the run as interrupted.
        if crate::interrupt::requested() {
            save_checkpoint!();
            sink.write(&rows)?;
            return Ok(Outcome::interrupted(
                steps_done,
                last.loss,
                start.elapsed().as_secs_f64(),
                model.n_params(),
            ));
        }
        // Eval: the parameters as they are before this step's update (step 0 = initialization).
        if step % tr.eval_every == 0 {
            let (_, test) = evaluate(&mut *model, &train_set, &test_set, step, &mut rows);
            if let Some(s) = &sequence {
                s.after_eval(step, test.0, &mut *model, &mut rows)?;
            }
            if let Some(p) = &prompts {
                p.after_eval(step, &mut *model, &mut rows);
            }
            if let Some(s) = &mut subtasks {
                s.after_eval(step, &mut *model, &test_set, &mut rows);
            }
            if let Some(g) = &mut generative {
                g.after_eval(step, &mut *model, &mut rows);
            }
            if let Some(s) = &mut segmentation {
                s.after_eval(step, &mut *model, &test_set, &mut rows);
            }
            last_eval = Some(step);
        }

        // Learning rate.
        let lr = lr_at(opt_spec, step, tr.steps);

        // Batch: a fresh permutation each epoch; the last batch of an epoch may be short
        // (DataLoader's drop_last = False). Prompt tasks draw fresh prompts every step.
        let b = if train_set.is_fresh() {
            train_set.fresh(step, batch, &mut gathered)
        } else if batch == n && !train_set.perturbs() {
            train_set.slice(0, n)
        } else {
            let picked = next_batch(&mut order_rng, &mut order, &mut cursor, n, batch);
            train_set.gather(&order[picked], step, &mut gathered)
        };

        // Forward and loss (which also seeds the output gradient).
        model.forward(&b, Mode::Train);
        last = model.loss(&b, true);
        let first = *initial_loss.get_or_insert(last.loss);
        let reached_target = tr.target_loss.is_some_and(|t| last.loss <= t);
        let log_now = step % obs_spec.log_every == 0 || step + 1 == tr.steps || reached_target;
        let diverged = diverged(last.loss, first, tr.divergence_factor);
        if log_now || diverged {
            rows.push(metric(step, "train_loss", last.loss));
            if let Some(c) = last.correct {
                rows.push(metric(
                    step,
                    "train_acc",
                    c as f64 / last.counted.max(1) as f64,
                ));
            }
        }
        // Every step's loss, for the observables that watch all of them (loss spikes).
        for o in observables.iter_mut() {
            o.every_step(step, last.loss, &mut rows);
        }

        // Divergence is a result: record where it happened and stop.
        if diverged {
            status = RunStatus::Diverged;
            diverged_step = Some(step);
            message = Some(divergence_message(
                last.loss,
                first,
                tr.divergence_factor,
                step,
            ));
            sink.write(&rows)?;
            rows.clear();
            break;
        }

        // Backward.
        model.backward(&b);

        // Sharpness of this batch's loss at the parameters before the update.
        if obs_spec.sharpness_every > 0 && step % obs_spec.sharpness_every == 0 {
            // A fresh start vector from a per-step stream (no warm start), so a resumed run
            // measures exactly what an uninterrupted one does.
            let mut rng = Rng::stream(
                spec.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                "curvature",
            );
            let s = Sharpness::default().measure(
                &spec.model,
                data::shape(&spec.model, data),
                loss_kind,
                &*model,
                &b,
                obs_spec.sharpness_iters,
                &mut rng,
            )?;
            rows.push(metric(step, "sharpness", s));
        }

        // Clip (global norm), keeping the factor so observables can report the raw gradient.
        let clip_coef = clip(opt_spec, model.params_mut());

        // Step (snapshot first on logged steps, for the update-to-weight ratio).
        update(
            opt_spec,
            &hyper,
            lr,
            &mut opt,
            model.params_mut(),
            &mut before,
            log_now,
        );
        steps_done = step + 1;

        // Observe, then flush: one transaction per logged step.
        if log_now {
            let ctx = Ctx {
                step,
                model: &*model,
                batch: &b,
                before: &before,
                lr,
                clip_coef,
            };
            for o in &observables {
                o.observe(&ctx, &mut rows);
            }
            sink.write(&rows)?;
            rows.clear();
        }
        progress(steps_done, last.loss);

        // Checkpoint (after flushing every row so far, so the store and the checkpoint agree).
        if tr.checkpoint_every > 0
            && steps_done.is_multiple_of(tr.checkpoint_every)
            && steps_done < tr.steps
        {
            save_checkpoint!();
        }

        // Stop at the target loss (this step was logged in full).
        if reached_target {
            message = Some(target_message(tr, step));
            break;
        }
    }

    // Final evaluation of the trained parameters, at the step count reached — unless those very
    // parameters were just evaluated (a run that diverged on an evaluation step).
    let (train_eval, test_eval) = if last_eval == Some(steps_done) {
        evaluate(
            &mut *model,
            &train_set,
            &test_set,
            steps_done,
            &mut Vec::new(),
        )
    } else {
        let r = evaluate(&mut *model, &train_set, &test_set, steps_done, &mut rows);
        if let Some(s) = &sequence {
            s.after_eval(steps_done, r.1 .0, &mut *model, &mut rows)?;
        }
        if let Some(p) = &prompts {
            p.after_eval(steps_done, &mut *model, &mut rows);
        }
        if let Some(s) = &mut subtasks {
            s.after_eval(steps_done, &mut *model, &test_set, &mut rows);
        }
        if let Some(g) = &mut generative {
            g.after_eval(steps_done, &mut *model, &mut rows);
        }
        if let Some(s) = &mut segmentation {
            s.after_eval(steps_done, &mut *model, &test_set, &mut rows);
        }
        r
    };
    sink.write(&rows)?;
    if let (Some(dir), true) = (artifacts, spec.output.save_weights) {
        interop::save_params(model.params(), &dir.join("weights_final.safetensors"))?;
    }
    // What the trained denoiser generates, with its trajectories and the reference points.
    if let (Some(dir), Some(g)) = (artifacts, &generative) {
        g.save(&dir.join(generative::FILE))?;
    }
    // Held-out images, masks and the trained model's predictions.
    if let (Some(dir), Some(s)) = (artifacts, &segmentation) {
        s.save(data, &dir.join(segmentation::FILE))?;
    }
    // What the trained transformer's heads look at, on the first held-out sample.
    if let Some(dir) = artifacts {
        attention::save(&mut *model, &test_set, &dir.join(attention::FILE))?;
    }
    // The run is over: its checkpoint has nothing left to resume.
    if let Some(path) = &ckpt_path {
        remove_checkpoint(path)?;
    }
    if message.is_none() {
        message = sequence.as_ref().and_then(|s| s.message(test_eval.0));
    }
    Ok(Outcome {
        status,
        steps: steps_done,
        diverged_step,
        message,
        final_batch_loss: last.loss,
        train_loss: train_eval.0,
        train_acc: train_eval.1,
        test_loss: test_eval.0,
        test_acc: test_eval.1,
        wall_seconds: start.elapsed().as_secs_f64(),
        n_params: model.n_params(),
    })
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
        let v = model.loss(batch, false);
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
        *order = order_rng.permutation(n);
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
