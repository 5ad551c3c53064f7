//! One run's training state and the phases of its step, top to bottom (eval, lr, batch,
//! forward, loss, divergence, backward, sharpness, clip, step, observe, checkpoint). The loop
//! in [`super::train`] calls [`Run::step`] once per step; the lockstep driver
//! ([`super::lockstep`]) calls the same phases, computing the forward, loss, backward and update
//! of its runs' ordinary steps together, so a run means the same thing either way.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint;
use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::generative::Kernel;
use crate::interop;
use crate::model::{self, Model};
use crate::nn::loss::LossValue;
use crate::nn::norm::Mode;
use crate::observe::{self, Ctx, Observable};
use crate::optim::{Hyper, OptimState};
use crate::spec::{LossKind, ModelSpec, Spec};
use crate::store::{MetricRow, RunStatus};
use crate::task::{Dataset, Target};
use crate::theory::curvature::Sharpness;

use super::data::{self, Gathered, Part, Picked, Split};

/// How often a run's logged rows reach the store while it trains: a watcher sees them within
/// this, and a tiny run writes them in one transaction rather than one per logged step (with
/// two sweep workers, those commits were a fifth of a tiny-run sweep's CPU time). Checkpoints,
/// interrupts, divergence and the end always write everything first.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Loss and accuracy of the training and test splits.
type EvalPair = ((f64, Option<f64>), (f64, Option<f64>));

/// Per split (training, test), its loss and accuracy, or `None` when it is empty.
pub(crate) type SplitResults = [Option<(f64, Option<f64>)>; 2];
use super::generative::{self, GenerativeReport};
use super::in_context::PromptReport;
use super::segmentation::{self, SegmentationReport};
use super::sequence::SequenceReport;
use super::subtasks::SubtaskReport;
use super::{
    attention, batch_for, clip, diverged, divergence_message, empty_training_set, evaluate, hyper,
    lr_at, metric, next_batch, remove_checkpoint, resume_from, target_message, update, MetricSink,
    Outcome, ProgressFn,
};

/// What the loop does after a phase.
pub(crate) enum Flow {
    Go,
    /// The run ended (diverged, or reached its target loss): finish it.
    Stop,
    /// Ctrl-C: the run is checkpointed and reported as interrupted.
    Interrupted(Outcome),
}

/// A run between steps: its model, optimizer, data order, pending metric rows and how it
/// stands.
pub(crate) struct Run<'a, F: Float> {
    pub(crate) spec: &'a Spec,
    data: &'a Dataset,
    sink: &'a mut dyn MetricSink,
    artifacts: Option<&'a Path>,
    start: Instant,
    /// When rows were last written to the sink (see [`FLUSH_EVERY`]).
    flushed: Instant,
    pub(crate) train_set: Split<F>,
    test_set: Split<F>,
    pub(crate) n: usize,
    pub(crate) batch: usize,
    loss_kind: LossKind,
    pub(crate) model: Box<dyn Model<F>>,
    sequence: Option<SequenceReport<'a>>,
    prompts: Option<PromptReport<F>>,
    generative: Option<GenerativeReport>,
    subtasks: Option<SubtaskReport<F>>,
    segmentation: Option<SegmentationReport>,
    pub(crate) opt: OptimState<F>,
    pub(crate) hyper: Hyper,
    observables: Vec<Box<dyn Observable<F>>>,
    order_rng: Rng,
    order: Vec<usize>,
    cursor: usize,
    pub(crate) gathered: Gathered<F>,
    /// This step's batch, and its learning rate.
    pub(crate) picked: Picked,
    pub(crate) lr: f64,
    before: Vec<Vec<F>>,
    rows: Vec<MetricRow>,
    initial_loss: Option<f64>,
    last: LossValue,
    log_now: bool,
    reached_target: bool,
    status: RunStatus,
    diverged_step: Option<u64>,
    message: Option<String>,
    pub(crate) steps_done: u64,
    last_eval: Option<u64>,
    /// The last evaluation's losses and accuracies (train, test) and its step.
    eval_result: Option<(u64, EvalPair)>,
    /// An evaluation the lockstep lanes computed, recorded when its step begins
    /// ([`Run::evaluated`]).
    pending_eval: Option<(u64, SplitResults)>,
    run_id: String,
    ckpt_path: Option<PathBuf>,
}

impl<'a, F: Float> Run<'a, F> {
    /// Builds the run's data, model and optimizer; with `resume`, restores the checkpoint in
    /// `artifacts` when there is one. Writes the initial weights and data when the spec asks.
    pub(crate) fn new(
        spec: &'a Spec,
        data: &'a Dataset,
        sink: &'a mut dyn MetricSink,
        artifacts: Option<&'a Path>,
        resume: bool,
    ) -> Result<Self, Error> {
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
        let model = model::build::<F>(
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
        let generative = match &spec.model {
            ModelSpec::Denoiser { denoiser, .. } => {
                Some(GenerativeReport::new(denoiser, data, spec.seed))
            }
            _ => None,
        };
        let subtasks = data
            .subtasks
            .as_ref()
            .map(|s| SubtaskReport::new(s, &test_set, model.capacity()));
        let segmentation = SegmentationReport::new(data);
        if let (Some(dir), true) = (artifacts, spec.output.save_weights) {
            interop::save_params(model.params(), &dir.join("weights_init.safetensors"))?;
        }
        if let (Some(dir), true) = (artifacts, spec.output.save_data) {
            interop::save_dataset(data, &dir.join("data.safetensors"))?;
        }
        let opt = OptimState::new(model.params(), opt_spec.optimizer);
        let hyper = hyper(opt_spec);
        let names = obs_spec.observables.as_deref().unwrap_or(&[]);
        let observables = observe::registry::<F>(names, spec.model.family());

        // Preallocated: the batch, the pre-update snapshot, the metric rows.
        let mut order_rng = Rng::stream(spec.seed, "batches");
        let mut order = order_rng.permutation(n);
        let gathered = train_set.buffers(batch);
        let before: Vec<Vec<F>> = model.params().iter().map(|p| p.value.clone()).collect();
        let mut rows: Vec<MetricRow> = Vec::with_capacity(1024);

        let mut run = Run {
            spec,
            data,
            sink,
            artifacts,
            start,
            train_set,
            test_set,
            n,
            batch,
            loss_kind,
            model,
            sequence,
            prompts,
            generative,
            subtasks,
            segmentation,
            opt,
            hyper,
            observables,
            order_rng: order_rng.clone(),
            order: Vec::new(),
            cursor: 0,
            gathered,
            picked: Picked::Whole(0),
            lr: 0.0,
            before,
            rows: Vec::new(),
            initial_loss: None,
            last: LossValue::default(),
            log_now: false,
            flushed: Instant::now(),
            reached_target: false,
            status: RunStatus::Completed,
            diverged_step: None,
            message: None,
            steps_done: 0,
            last_eval: None,
            eval_result: None,
            pending_eval: None,
            run_id: spec.run_id(),
            ckpt_path: artifacts.map(|d| d.join(checkpoint::FILE)),
        };

        // Resume: restore the whole state the checkpoint holds.
        if let (true, Some(path)) = (resume, &run.ckpt_path) {
            let (params, opt) = (run.model.params_mut(), &mut run.opt);
            if let Some(st) = resume_from(path, &run.run_id, params, opt, &mut order)? {
                run.steps_done = st.step;
                run.cursor = st.cursor;
                order_rng = st.order_rng;
                run.initial_loss = st.initial_loss_bits.map(f64::from_bits);
                run.last_eval = st.last_eval;
            }
        }
        run.order = order;
        run.order_rng = order_rng;

        // Once, at step 0: the parameter count (scaling fits read N from the store) and what
        // the task knows (a sequence source's entropy rate).
        if run.steps_done == 0 {
            if let Some(s) = &run.sequence {
                s.start(&mut rows);
            }
            if let Some(p) = &run.prompts {
                p.start(&mut rows);
            }
            if let Some(s) = &run.subtasks {
                s.start(&mut rows);
            }
            if let Some(g) = &mut run.generative {
                g.start(&mut rows);
            }
            if let Some(s) = &run.segmentation {
                s.start(data, &mut rows);
            }
            rows.push(metric(0, "n_params", run.model.n_params() as f64));
        }
        run.rows = rows;
        Ok(run)
    }

    /// Target columns of the training data.
    pub(crate) fn y_cols(&self) -> usize {
        self.data.train_y.ncols()
    }

    /// The whole state as it stands before step `steps_done`, after flushing every row so far
    /// (so the store and the checkpoint agree).
    fn save_checkpoint(&mut self) -> Result<(), Error> {
        if let Some(path) = self.ckpt_path.clone() {
            let state = checkpoint::State {
                run_id: self.run_id.clone(),
                step: self.steps_done,
                optim_t: self.opt.t,
                cursor: self.cursor,
                order_rng: self.order_rng.clone(),
                initial_loss_bits: self.initial_loss.map(f64::to_bits),
                last_eval: self.last_eval,
            };
            self.flush()?;
            checkpoint::save(&path, &state, self.model.params(), &self.opt, &self.order)?;
        }
        Ok(())
    }

    /// Writes the rows so far to the sink, in one transaction.
    pub(crate) fn flush(&mut self) -> Result<(), Error> {
        self.sink.write(&self.rows)?;
        self.rows.clear();
        self.flushed = Instant::now();
        Ok(())
    }

    /// One whole step.
    pub(crate) fn step(&mut self, step: u64, progress: ProgressFn<'_>) -> Result<Flow, Error> {
        if let Flow::Interrupted(out) = self.begin(step)? {
            return Ok(Flow::Interrupted(out));
        }
        // Forward and loss (which also seeds the output gradient). A step that will not be
        // logged (known before its loss unless a target loss may make it so) needs no buffer
        // only the observables read.
        let b = self.train_set.view(self.picked, &self.gathered);
        if !self.logs(step) && self.spec.train.target_loss.is_none() {
            self.model.lean();
        }
        self.model.forward(&b, Mode::Train);
        let last = self.model.loss(&b, true);
        if let Flow::Stop = self.after_loss(step, last)? {
            return Ok(Flow::Stop);
        }
        self.finish_step(step, progress)
    }

    /// Interrupt and eval, then [`Run::pick`].
    pub(crate) fn begin(&mut self, step: u64) -> Result<Flow, Error> {
        // Stop when asked (Ctrl-C): checkpoint where we are and report the run as interrupted.
        if crate::interrupt::requested() {
            self.save_checkpoint()?;
            self.flush()?;
            return Ok(Flow::Interrupted(Outcome::interrupted(
                self.steps_done,
                self.last.loss,
                self.start.elapsed().as_secs_f64(),
                self.model.n_params(),
            )));
        }
        // Eval: the parameters as they are before this step's update (step 0 = initialization),
        // unless the lockstep lanes already evaluated them ([`Run::evaluated`]).
        self.record_pending_eval(step);
        if step.is_multiple_of(self.spec.train.eval_every) && self.last_eval != Some(step) {
            self.evaluate_all(step)?;
            self.last_eval = Some(step);
        }
        self.pick(step);
        Ok(Flow::Go)
    }

    /// This step's learning rate and batch ([`Run::picked`], gathered into [`Run::gathered`]).
    pub(crate) fn pick(&mut self, step: u64) {
        self.pick_rows(step);
        self.gather_picked(step);
    }

    /// [`Run::pick`] short of the gather: a batch of stored rows stays [`Picked::Ordered`]
    /// ([`Run::picked_rows`] names them), for a caller that reads the rows where they lie (the
    /// lockstep lanes gather every run's batch straight into their layout).
    pub(crate) fn pick_rows(&mut self, step: u64) {
        // Learning rate.
        self.lr = lr_at(&self.spec.optim, step, self.spec.train.steps);

        // Batch: a fresh permutation each epoch; the last batch of an epoch may be short
        // (DataLoader's drop_last = False). Prompt tasks draw fresh prompts every step.
        let (n, batch) = (self.n, self.batch);
        self.picked = if self.train_set.is_fresh() {
            self.train_set.fresh(step, batch, &mut self.gathered);
            Picked::Fresh { step, batch }
        } else if batch == n && !self.train_set.perturbs() {
            Picked::Whole(n)
        } else {
            let (rng, order, cursor) = (&mut self.order_rng, &mut self.order, &mut self.cursor);
            let picked = next_batch(rng, order, cursor, n, batch);
            Picked::Ordered {
                start: picked.start,
                len: picked.len(),
            }
        };
    }

    /// Completes [`Run::pick_rows`]: an ordered batch gathered into [`Run::gathered`].
    pub(crate) fn gather_picked(&mut self, step: u64) {
        if let Picked::Ordered { start, len } = self.picked {
            self.train_set
                .gather(&self.order[start..start + len], step, &mut self.gathered);
            self.picked = Picked::Gathered(len);
        }
    }

    /// The training split's rows in this step's batch, before [`Run::gather_picked`]: their
    /// indices, or `None` for the split's first rows in order (a whole-split batch).
    pub(crate) fn picked_rows(&self) -> Option<&[usize]> {
        // Rows read where they lie skip what a gather adds (a denoiser's perturbation).
        debug_assert!(self.train_set.stored_rows().is_some());
        match self.picked {
            Picked::Ordered { start, len } => Some(&self.order[start..start + len]),
            _ => None,
        }
    }

    /// Whether the evaluation is the loss and accuracy alone (no task report measures the
    /// model after it), so it may be computed elsewhere ([`Run::evaluated`]).
    pub(crate) fn plain_eval(&self) -> bool {
        self.sequence.is_none()
            && self.prompts.is_none()
            && self.subtasks.is_none()
            && self.generative.is_none()
            && self.segmentation.is_none()
    }

    /// The splits [`evaluate`] reads: the training split (as far as it reads it) and the test
    /// split, with their sample counts.
    pub(crate) fn eval_splits(&self, cap: usize) -> [(&Split<F>, usize); 2] {
        let test_n = self.test_set.len();
        [
            (&self.train_set, self.train_set.eval_count(test_n, cap)),
            (&self.test_set, test_n),
        ]
    }

    /// Step `step`'s evaluation, computed by the lockstep lanes with the passes and tallies of
    /// [`evaluate`] (`None`: an empty split, for which `evaluate` writes nothing). It is
    /// recorded when the step begins, after the interrupt test, as a run alone evaluates.
    pub(crate) fn evaluated(&mut self, step: u64, results: SplitResults) {
        self.pending_eval = Some((step, results));
    }

    /// Records the lanes' evaluation of `step`, if there is one: the rows [`evaluate`] writes.
    fn record_pending_eval(&mut self, step: u64) {
        let Some((at, results)) = self.pending_eval.take() else {
            return;
        };
        if at != step {
            return;
        }
        for (result, (name_loss, name_acc)) in results.into_iter().zip([
            ("train_eval_loss", "train_eval_acc"),
            ("test_loss", "test_acc"),
        ]) {
            let Some((loss, acc)) = result else { continue };
            self.rows.push(metric(step, name_loss, loss));
            if let Some(a) = acc {
                self.rows.push(metric(step, name_acc, a));
            }
        }
        self.last_eval = Some(step);
        let [train, test] = results.map(|r| r.unwrap_or((f64::NAN, None)));
        self.eval_result = Some((step, (train, test)));
    }

    /// The evaluation rows at `step` and what the task's reports measure after it.
    fn evaluate_all(&mut self, step: u64) -> Result<EvalPair, Error> {
        let model = &mut *self.model;
        let rows = &mut self.rows;
        let r = evaluate(model, &self.train_set, &self.test_set, step, rows);
        self.eval_result = Some((step, r));
        if let Some(s) = &self.sequence {
            s.after_eval(step, r.1 .0, model, rows)?;
        }
        if let Some(p) = &self.prompts {
            p.after_eval(step, model, rows);
        }
        if let Some(s) = &mut self.subtasks {
            s.after_eval(step, model, &self.test_set, rows);
        }
        if let Some(g) = &mut self.generative {
            g.after_eval(step, model, rows);
        }
        if let Some(s) = &mut self.segmentation {
            s.after_eval(step, model, &self.test_set, rows);
        }
        Ok(r)
    }

    /// Whether `step` is logged in full whatever its loss: the observables read the model's
    /// buffers, so the lockstep driver trains such a step on the run's own model.
    pub(crate) fn logs(&self, step: u64) -> bool {
        step.is_multiple_of(self.spec.observe.log_every) || step + 1 == self.spec.train.steps
    }

    /// The loss rows, every-step observables and the divergence test for this step's loss;
    /// [`Flow::Stop`] when the run diverged (recorded, rows flushed).
    pub(crate) fn after_loss(&mut self, step: u64, last: LossValue) -> Result<Flow, Error> {
        let tr = &self.spec.train;
        self.last = last;
        let first = *self.initial_loss.get_or_insert(last.loss);
        self.reached_target = tr.target_loss.is_some_and(|t| last.loss <= t);
        self.log_now = self.logs(step) || self.reached_target;
        let diverged = diverged(last.loss, first, tr.divergence_factor);
        if self.log_now || diverged {
            self.rows.push(metric(step, "train_loss", last.loss));
            if let Some(c) = last.correct {
                self.rows.push(metric(
                    step,
                    "train_acc",
                    c as f64 / last.counted.max(1) as f64,
                ));
            }
        }
        // Every step's loss, for the observables that watch all of them (loss spikes).
        for o in self.observables.iter_mut() {
            o.every_step(step, last.loss, &mut self.rows);
        }

        // Divergence is a result: record where it happened and stop.
        if diverged {
            self.status = RunStatus::Diverged;
            self.diverged_step = Some(step);
            self.message = Some(divergence_message(
                last.loss,
                first,
                tr.divergence_factor,
                step,
            ));
            self.flush()?;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }

    /// Whether this step must end in full on the run's own model (after [`Run::after_loss`]):
    /// it logs, or reached the target loss.
    pub(crate) fn needs_model(&self) -> bool {
        self.log_now
    }

    /// Backward, sharpness, clip, update, observe, checkpoint, target.
    pub(crate) fn finish_step(
        &mut self,
        step: u64,
        progress: ProgressFn<'_>,
    ) -> Result<Flow, Error> {
        let (spec, obs_spec) = (self.spec, &self.spec.observe);
        let b = self.train_set.view(self.picked, &self.gathered);
        let sharpness_now =
            obs_spec.sharpness_every > 0 && step.is_multiple_of(obs_spec.sharpness_every);
        // Backward and update in one pass, each tensor updated as soon as its gradient is final,
        // unless something must see the whole gradient or the parameters before the update
        // first: clipping, the sharpness, a logged step's observables. The same bits either way.
        if spec.optim.clip_grad_norm.is_none() && !sharpness_now && !self.log_now {
            let mut up = self.opt.begin(&self.hyper, self.lr, true);
            self.model.backward_update(&b, &mut up);
            up.finish(self.model.params_mut());
            super::after_update(&spec.optim, self.model.params_mut());
            return self.end_step(step, progress);
        }

        // Backward.
        self.model.backward(&b);

        // Sharpness of this batch's loss at the parameters before the update.
        if sharpness_now {
            // A fresh start vector from a per-step stream (no warm start), so a resumed run
            // measures exactly what an uninterrupted one does.
            let mut rng = Rng::stream(
                spec.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                "curvature",
            );
            let s = Sharpness::default().measure(
                &spec.model,
                data::shape(&spec.model, self.data),
                self.loss_kind,
                &*self.model,
                &b,
                obs_spec.sharpness_iters,
                &mut rng,
            )?;
            self.rows.push(metric(step, "sharpness", s));
        }

        // Clip (global norm), keeping the factor so observables can report the raw gradient.
        let clip_coef = clip(&spec.optim, self.model.params_mut());

        // Step (snapshot first on logged steps, for the update-to-weight ratio).
        update(
            &spec.optim,
            &self.hyper,
            self.lr,
            &mut self.opt,
            self.model.params_mut(),
            &mut self.before,
            self.log_now,
        );

        if self.log_now {
            self.observe(step, clip_coef)?;
        }
        self.end_step(step, progress)
    }

    /// A logged step's observables on the model as the step left it (its passes, gradients
    /// and updated parameters; [`Run::before`] the parameters before), then a flush when
    /// one is due: at most one transaction per [`FLUSH_EVERY`].
    fn observe(&mut self, step: u64, clip_coef: f64) -> Result<(), Error> {
        let b = self.train_set.view(self.picked, &self.gathered);
        let ctx = Ctx {
            step,
            model: &*self.model,
            batch: &b,
            before: &self.before,
            lr: self.lr,
            clip_coef,
        };
        for o in &self.observables {
            o.observe(&ctx, &mut self.rows);
        }
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// The start of a step the lockstep lanes train: [`Run::begin`] past the interrupt test
    /// (the lanes' evaluation recorded, none left to compute) and short of the gather.
    pub(crate) fn begin_in_lanes(&mut self, step: u64) {
        self.record_pending_eval(step);
        debug_assert!(
            !step.is_multiple_of(self.spec.train.eval_every) || self.last_eval == Some(step),
            "the lanes evaluate every step they train"
        );
        self.pick_rows(step);
    }

    /// The parameters before this step's update, for the lanes to fill on a logged step.
    pub(crate) fn before_mut(&mut self) -> &mut [Vec<F>] {
        &mut self.before
    }

    /// The end of a logged step the lockstep lanes trained, once they have filled the model
    /// (its passes, gradients, updated parameters and optimizer state) and [`Run::before_mut`]:
    /// the batch gathered for the observables that read it, the observables, [`Run::end_step`].
    pub(crate) fn observe_in_lanes(&mut self, step: u64) -> Result<Flow, Error> {
        self.gather_picked(step);
        self.observe(step, 1.0)?;
        self.end_step(step, &mut |_, _| {})
    }

    /// After the update: the step count, progress, checkpoint and target loss.
    pub(crate) fn end_step(&mut self, step: u64, progress: ProgressFn<'_>) -> Result<Flow, Error> {
        let tr = &self.spec.train;
        self.steps_done = step + 1;
        progress(self.steps_done, self.last.loss);

        // Checkpoint (after flushing every row so far, so the store and the checkpoint agree).
        if tr.checkpoint_every > 0
            && self.steps_done.is_multiple_of(tr.checkpoint_every)
            && self.steps_done < tr.steps
        {
            self.save_checkpoint()?;
        }

        // Stop at the target loss (this step was logged in full).
        if self.reached_target {
            self.message = Some(target_message(tr, step));
            return Ok(Flow::Stop);
        }
        Ok(Flow::Go)
    }

    /// Whether a checkpoint is due once step `step` is done.
    pub(crate) fn checkpoints_after(&self, step: u64) -> bool {
        let tr = &self.spec.train;
        tr.checkpoint_every > 0
            && (step + 1).is_multiple_of(tr.checkpoint_every)
            && step + 1 < tr.steps
    }

    /// Opens a batch on the run's sink ([`MetricSink::begin_batch`]).
    pub(crate) fn begin_batch(&mut self) -> Result<(), Error> {
        self.sink.begin_batch()
    }

    /// Commits the batch open on the run's sink ([`MetricSink::end_batch`]).
    pub(crate) fn end_batch(&mut self) -> Result<(), Error> {
        self.sink.end_batch()
    }

    /// The final evaluation, the artifacts, and how the run ended.
    pub(crate) fn finish(self) -> Result<Outcome, Error> {
        self.finish_to_sink().0
    }

    /// [`Run::finish`], giving back the run's sink (to end a batch its group opened on it).
    pub(crate) fn finish_to_sink(mut self) -> (Result<Outcome, Error>, &'a mut dyn MetricSink) {
        let result = self.finish_in_place();
        (result, self.sink)
    }

    fn finish_in_place(&mut self) -> Result<Outcome, Error> {
        let steps_done = self.steps_done;
        self.record_pending_eval(steps_done);
        // Final evaluation of the trained parameters, at the step count reached — unless those
        // very parameters were just evaluated (a run that diverged on an evaluation step).
        let (train_eval, test_eval) = if self.last_eval == Some(steps_done) {
            match self.eval_result {
                Some((step, r)) if step == steps_done => r,
                _ => evaluate(
                    &mut *self.model,
                    &self.train_set,
                    &self.test_set,
                    steps_done,
                    &mut Vec::new(),
                ),
            }
        } else {
            self.evaluate_all(steps_done)?
        };
        self.sink.write(&self.rows)?;
        let (artifacts, spec, data) = (self.artifacts, self.spec, self.data);
        if let (Some(dir), true) = (artifacts, spec.output.save_weights) {
            interop::save_params(self.model.params(), &dir.join("weights_final.safetensors"))?;
        }
        // What the trained denoiser generates, with its trajectories and the reference points.
        if let (Some(dir), Some(g)) = (artifacts, &self.generative) {
            g.save(&dir.join(generative::FILE))?;
        }
        // Held-out images, masks and the trained model's predictions.
        if let (Some(dir), Some(s)) = (artifacts, &self.segmentation) {
            s.save(data, &dir.join(segmentation::FILE))?;
        }
        // What the trained transformer's heads look at, on the first held-out sample.
        if let Some(dir) = artifacts {
            attention::save(&mut *self.model, &self.test_set, &dir.join(attention::FILE))?;
        }
        // The run is over: its checkpoint has nothing left to resume.
        if let Some(path) = &self.ckpt_path {
            remove_checkpoint(path)?;
        }
        let mut message = self.message.take();
        if message.is_none() {
            message = self.sequence.as_ref().and_then(|s| s.message(test_eval.0));
        }
        Ok(Outcome {
            status: self.status,
            steps: steps_done,
            diverged_step: self.diverged_step,
            message,
            final_batch_loss: self.last.loss,
            train_loss: train_eval.0,
            train_acc: train_eval.1,
            test_loss: test_eval.0,
            test_acc: test_eval.1,
            wall_seconds: self.start.elapsed().as_secs_f64(),
            n_params: self.model.n_params(),
        })
    }
}
