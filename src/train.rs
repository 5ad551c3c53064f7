//! The training loop: one explicit function, top to bottom, with commented phases
//! (lr, batch, forward, loss, backward, clip, step, observe, eval, flush).

use std::path::Path;
use std::time::Instant;

use crate::checkpoint;
use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::interop;
use crate::model::{Mlp, Param};
use crate::nn::loss::{self, LossValue};
use crate::nn::norm::Mode;
use crate::observe::{self, Ctx};
use crate::optim::{self, Hyper, OptimState};
use crate::spec::{BatchSize, Dtype, LossKind, OptimSpec, Spec, TrainSpec};
use crate::store::{MetricRow, RunStatus};
use crate::task::{Dataset, Target};
use crate::theory::curvature::Sharpness;

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

impl Outcome {
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.wall_seconds.max(1e-9)
    }
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
    // GEMMs split over `train.threads` threads; results are bit-identical for any count.
    if spec.model.gpt.is_some() {
        // Language models: the same loop over token windows (src/train_lm.rs).
        return crate::engine::ops::with_threads(spec.train.threads, || match spec.model.dtype {
            Dtype::F32 => {
                crate::train_lm::train_typed::<f32>(spec, data, sink, artifacts, resume, progress)
            }
            Dtype::F64 => {
                crate::train_lm::train_typed::<f64>(spec, data, sink, artifacts, resume, progress)
            }
        });
    }
    crate::engine::ops::with_threads(spec.train.threads, || match spec.model.dtype {
        Dtype::F32 => train_typed::<f32>(spec, data, sink, artifacts, resume, progress),
        Dtype::F64 => train_typed::<f64>(spec, data, sink, artifacts, resume, progress),
    })
}

/// A dataset split flattened to the model's precision.
struct Split<F> {
    x: Vec<F>,
    y: Vec<F>,
    rows: usize,
    y_cols: usize,
}

impl<F: Float> Split<F> {
    fn new(x: &ndarray::Array2<f64>, y: &ndarray::Array2<f64>) -> Self {
        Split {
            x: x.iter().map(|&v| F::of(v)).collect(),
            y: y.iter().map(|&v| F::of(v)).collect(),
            rows: x.nrows(),
            y_cols: y.ncols(),
        }
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
    let start = Instant::now();
    let (tr, opt_spec, obs_spec) = (&spec.train, &spec.optim, &spec.observe);
    let loss_kind = tr.loss.unwrap_or(match data.target {
        Target::Classes { .. } => LossKind::CrossEntropy,
        Target::Regression { .. } => LossKind::Mse,
    });
    let train_set = Split::<F>::new(&data.train_x, &data.train_y);
    let test_set = Split::<F>::new(&data.test_x, &data.test_y);
    let (in_dim, out_dim) = (data.input_dim(), data.output_dim());
    let n = train_set.rows;
    if n == 0 {
        return Err(empty_training_set());
    }
    let batch = batch_rows(tr, n);

    let mut model = Mlp::<F>::new(
        &spec.model,
        in_dim,
        out_dim,
        batch,
        &mut Rng::stream(spec.seed, "init"),
    );
    if let (Some(dir), true) = (artifacts, spec.output.save_weights) {
        interop::save_params(&model.params, &dir.join("weights_init.safetensors"))?;
    }
    if let (Some(dir), true) = (artifacts, spec.output.save_data) {
        interop::save_dataset(data, &dir.join("data.safetensors"))?;
    }
    let mut opt = OptimState::new(&model.params, opt_spec.optimizer);
    let hyper = hyper(opt_spec);
    let observables = observe::registry::<F>(obs_spec.observables.as_deref().unwrap_or(&[]));

    // Preallocated: the batch, the pre-update snapshot, the metric rows.
    let mut order_rng = Rng::stream(spec.seed, "batches");
    let mut order = order_rng.permutation(n);
    let mut cursor = 0usize;
    let mut bx = vec![F::zero(); batch * in_dim];
    let mut by = vec![F::zero(); batch * train_set.y_cols];
    let mut before: Vec<Vec<F>> = model.params.iter().map(|p| p.value.clone()).collect();
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
        if let Some(st) = resume_from(path, &run_id, &mut model.params, &mut opt, &mut order)? {
            steps_done = st.step;
            cursor = st.cursor;
            order_rng = st.order_rng;
            initial_loss = st.initial_loss_bits.map(f64::from_bits);
            last_eval = st.last_eval;
        }
    }

    // Flush every row so far, then write the whole state as it stands before step `steps_done`.
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
                save_checkpoint(path, sink, &mut rows, &state, &model.params, &opt, &order)?;
            }
        };
    }

    // The parameter count, once, so that scaling fits can read N from the store.
    if steps_done == 0 {
        rows.push(metric(0, "n_params", model.n_params() as f64));
    }

    for step in steps_done..tr.steps {
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
            evaluate(
                &mut model, loss_kind, &train_set, &test_set, step, &mut rows,
            );
            last_eval = Some(step);
        }

        // Learning rate.
        let lr = lr_at(opt_spec, step, tr.steps);

        // Batch: a fresh permutation each epoch; the last batch of an epoch may be short
        // (DataLoader's drop_last = False).
        let (x, y, b): (&[F], &[F], usize) = if batch == n {
            (&train_set.x, &train_set.y, n)
        } else {
            let picked = next_batch(&mut order_rng, &mut order, &mut cursor, n, batch);
            let b = picked.len();
            for (k, &i) in order[picked].iter().enumerate() {
                bx[k * in_dim..(k + 1) * in_dim]
                    .copy_from_slice(&train_set.x[i * in_dim..(i + 1) * in_dim]);
                let yc = train_set.y_cols;
                by[k * yc..(k + 1) * yc].copy_from_slice(&train_set.y[i * yc..(i + 1) * yc]);
            }
            (&bx, &by, b)
        };

        // Forward and loss (which also writes ∂L/∂output).
        model.forward(x, b, Mode::Train);
        last = loss::loss(
            loss_kind,
            &model.output[..b * out_dim],
            y,
            b,
            out_dim,
            Some(&mut model.d_output[..b * out_dim]),
        );
        let first = *initial_loss.get_or_insert(last.loss);
        let reached_target = tr.target_loss.is_some_and(|t| last.loss <= t);
        let log_now = step % obs_spec.log_every == 0 || step + 1 == tr.steps || reached_target;
        let diverged = diverged(last.loss, first, tr.divergence_factor);
        if log_now || diverged {
            rows.push(metric(step, "train_loss", last.loss));
            if let Some(c) = last.correct {
                rows.push(metric(step, "train_acc", c as f64 / b as f64));
            }
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
        model.backward(x);

        // Sharpness of this batch's loss at the parameters before the update.
        if obs_spec.sharpness_every > 0 && step % obs_spec.sharpness_every == 0 {
            let yc = train_set.y_cols;
            // A fresh start vector from a per-step stream (no warm start), so a resumed run
            // measures exactly what an uninterrupted one does.
            let mut rng = Rng::stream(
                spec.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                "curvature",
            );
            let s = Sharpness::default().measure(
                &spec.model,
                &model,
                x,
                &y[..b * yc],
                b,
                loss_kind,
                obs_spec.sharpness_iters,
                &mut rng,
            );
            rows.push(metric(step, "sharpness", s));
        }

        // Clip (global norm), keeping the factor so observables can report the raw gradient.
        let clip_coef = clip(opt_spec, &mut model.params);

        // Step (snapshot first on logged steps, for the update-to-weight ratio).
        update(
            opt_spec,
            &hyper,
            lr,
            &mut opt,
            &mut model.params,
            &mut before,
            log_now,
        );
        steps_done = step + 1;

        // Observe.
        if log_now {
            let ctx = Ctx {
                step,
                model: &model,
                before: &before,
                lr,
                clip_coef,
                input: &x[..b * in_dim],
            };
            for o in &observables {
                o.observe(&ctx, &mut rows);
            }
            // Flush: one transaction per logged step.
            sink.write(&rows)?;
            rows.clear();
        }
        progress(steps_done, last.loss);

        // Checkpoint (after flushing every row so far, so the store and the checkpoint agree).
        if tr.checkpoint_every > 0 && steps_done % tr.checkpoint_every == 0 && steps_done < tr.steps
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
        let mut scratch = Vec::new();
        evaluate(
            &mut model,
            loss_kind,
            &train_set,
            &test_set,
            steps_done,
            &mut scratch,
        )
    } else {
        evaluate(
            &mut model, loss_kind, &train_set, &test_set, steps_done, &mut rows,
        )
    };
    sink.write(&rows)?;
    if let (Some(dir), true) = (artifacts, spec.output.save_weights) {
        interop::save_params(&model.params, &dir.join("weights_final.safetensors"))?;
    }
    // The run is over: its checkpoint has nothing left to resume.
    if let Some(path) = &ckpt_path {
        remove_checkpoint(path)?;
    }
    Ok(Outcome::finished(
        status,
        steps_done,
        diverged_step,
        message,
        last.loss,
        (train_eval, test_eval),
        start.elapsed().as_secs_f64(),
        model.n_params(),
    ))
}

/// Eval-mode loss and accuracy over whole splits, in chunks of the model's capacity; appends
/// `train_eval_loss`/`train_eval_acc` and `test_loss`/`test_acc` rows at `step`.
fn evaluate<F: Float>(
    model: &mut Mlp<F>,
    kind: LossKind,
    train: &Split<F>,
    test: &Split<F>,
    step: u64,
    rows: &mut Vec<MetricRow>,
) -> ((f64, Option<f64>), (f64, Option<f64>)) {
    let mut results = [(f64::NAN, None), (f64::NAN, None)];
    for (k, (split, name_loss, name_acc)) in [
        (train, "train_eval_loss", "train_eval_acc"),
        (test, "test_loss", "test_acc"),
    ]
    .into_iter()
    .enumerate()
    {
        if split.rows == 0 {
            continue;
        }
        let (in_dim, out_dim, cap) = (model.input_dim(), model.output_dim(), model.capacity());
        let (mut loss_sum, mut correct, mut any_acc) = (0.0, 0usize, false);
        let mut start = 0;
        while start < split.rows {
            let b = cap.min(split.rows - start);
            model.forward(
                &split.x[start * in_dim..(start + b) * in_dim],
                b,
                Mode::Eval,
            );
            let y = &split.y[start * split.y_cols..(start + b) * split.y_cols];
            let v = loss::loss(kind, &model.output[..b * out_dim], y, b, out_dim, None);
            loss_sum += v.loss * b as f64;
            if let Some(c) = v.correct {
                correct += c;
                any_acc = true;
            }
            start += b;
        }
        let loss = loss_sum / split.rows as f64;
        let acc = any_acc.then(|| correct as f64 / split.rows as f64);
        rows.push(metric(step, name_loss, loss));
        if let Some(a) = acc {
            rows.push(metric(step, name_acc, a));
        }
        results[k] = (loss, acc);
    }
    (results[0], results[1])
}

// Shared by both training loops (this file's and src/train_lm.rs): the phases that do not
// depend on the model.

/// One step-level metric row (no layer).
pub(crate) fn metric(step: u64, name: &str, value: f64) -> MetricRow {
    MetricRow {
        step,
        layer: None,
        name: name.to_string(),
        value,
    }
}

impl Outcome {
    /// A run stopped when asked (Ctrl-C) before step `steps`: no final evaluation.
    pub(crate) fn interrupted(
        steps: u64,
        final_batch_loss: f64,
        wall_seconds: f64,
        n_params: usize,
    ) -> Self {
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
pub(crate) fn empty_training_set() -> Error {
    Error::Invalid {
        what: "task".into(),
        message: "the training set is empty".into(),
        hint: "check the task's size settings or data file".into(),
    }
}

/// Rows per batch: the whole set, or the asked size capped at the set's `n` rows.
pub(crate) fn batch_rows(tr: &TrainSpec, n: usize) -> usize {
    match tr.batch_size {
        BatchSize::Full => n,
        BatchSize::Size(b) => b.min(n),
    }
}

/// The optimizer's hyperparameters as the spec sets them.
pub(crate) fn hyper(o: &OptimSpec) -> Hyper {
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
pub(crate) fn resume_from<F: Float>(
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

/// Flushes every row so far, then writes the whole state (so the store and the checkpoint agree).
pub(crate) fn save_checkpoint<F: Float>(
    path: &Path,
    sink: &mut dyn MetricSink,
    rows: &mut Vec<MetricRow>,
    state: &checkpoint::State,
    params: &[Param<F>],
    opt: &OptimState<F>,
    order: &[usize],
) -> Result<(), Error> {
    sink.write(rows)?;
    rows.clear();
    checkpoint::save(path, state, params, opt, order)
}

/// The next batch's positions in `order` (`batch` of the `n` rows, fewer at the end of an
/// epoch: DataLoader's drop_last = False); a fresh permutation each epoch.
pub(crate) fn next_batch(
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
pub(crate) fn lr_at(o: &OptimSpec, step: u64, steps: u64) -> f64 {
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
pub(crate) fn diverged(loss: f64, first: f64, factor: f64) -> bool {
    !loss.is_finite() || loss > factor * first.max(f64::MIN_POSITIVE)
}

/// The recorded message of a run that diverged at `step`.
pub(crate) fn divergence_message(loss: f64, first: f64, factor: f64, step: u64) -> String {
    if loss.is_finite() {
        format!("loss {loss:.4e} exceeded {factor}× its initial value {first:.4e} at step {step}")
    } else {
        format!("loss became {loss} at step {step}")
    }
}

/// Clips the gradients to the spec's global norm, if any; returns the factor applied (1 when
/// none), so observables can report the raw gradient.
pub(crate) fn clip<F: Float>(o: &OptimSpec, params: &mut [Param<F>]) -> f64 {
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
pub(crate) fn update<F: Float>(
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
pub(crate) fn target_message(tr: &TrainSpec, step: u64) -> String {
    format!(
        "reached target loss {} at step {step}",
        tr.target_loss.unwrap_or_default()
    )
}

/// Deletes a finished run's checkpoint (nothing left to resume); a missing one is fine.
pub(crate) fn remove_checkpoint(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

impl Outcome {
    /// A run that ended (completed, diverged or reached its target) with its final evaluation
    /// `(train, test)`, each `(loss, accuracy)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finished(
        status: RunStatus,
        steps: u64,
        diverged_step: Option<u64>,
        message: Option<String>,
        final_batch_loss: f64,
        (train_eval, test_eval): ((f64, Option<f64>), (f64, Option<f64>)),
        wall_seconds: f64,
        n_params: usize,
    ) -> Self {
        Outcome {
            status,
            steps,
            diverged_step,
            message,
            final_batch_loss,
            train_loss: train_eval.0,
            train_acc: train_eval.1,
            test_loss: test_eval.0,
            test_acc: test_eval.1,
            wall_seconds,
            n_params,
        }
    }
}
