//! Lockstep: up to [`LANES`] runs of one shape, task and loop ([`group_key`]: they may differ
//! in seed, learning rate, optimizer settings, initialization), trained together — one per SIMD
//! lane of a [`LaneMlp`] — by the same phases as a run alone ([`Run`]).
//!
//! Every step takes each run's learning rate and batch from the run ([`Run::begin_in_lanes`]),
//! computes every lane's forward pass, loss, backward pass and update at once, and hands each run
//! its loss ([`Run::after_loss`]: the every-step observables, the divergence test) and the end of
//! its step ([`Run::end_step`]: the checkpoint, with the lane's state stored into the run first).
//! An evaluation is computed in lanes before the step. A logged step keeps the pre-activations
//! and hands each logged run its lane's passes, gradients and parameters before and after the
//! update ([`LaneMlp::export`]), so the run's observables read its own model as its own step
//! would have left it ([`Run::observe_in_lanes`]). Only after Ctrl-C (or for an evaluation the
//! lanes cannot compute) does each run take the step on its own model ([`Run::step`]), which
//! holds exactly the lane's state: the lanes compute the bits each model computes alone, so
//! whether a run trains alone or in a group changes nothing it records — metrics, checkpoints
//! and artifacts are the same files and rows. A run that diverges or reaches its target loss
//! leaves the group at that step, as it would stop alone.

use std::path::Path;
use std::time::Instant;

use crate::engine::lanes::{LaneBuf, LANES};
use crate::error::Error;
use crate::model::lanes::{LaneMlp, LaneRows};
use crate::model::{Batch, Mlp};
use crate::nn::norm::{Mode, Norm};
use crate::spec::{Dtype, ModelSpec, Spec};
use crate::task::Dataset;

use super::data::Split;
use super::{Flow, MetricSink, Outcome, Run, Tally};

/// One run of a group: what [`super::train`] takes for a run alone.
pub struct Member<'a> {
    pub spec: &'a Spec,
    pub data: &'a Dataset,
    pub sink: &'a mut dyn MetricSink,
    pub artifacts: Option<&'a Path>,
    /// Resume from the run's checkpoint in `artifacts`, if there is one (a group interrupted
    /// together resumes together).
    pub resume: bool,
}

/// Why runs of `spec` cannot train in lockstep, as far as the spec alone says (`None`: they
/// can, unless the built model refuses: [`LaneMlp::refuse`]).
pub fn refuse(spec: &Spec) -> Option<String> {
    let ModelSpec::Mlp(mlp) = &spec.model else {
        return Some("only MLPs train in lockstep".into());
    };
    if spec.model.dtype() != Dtype::F32 {
        return Some("lockstep lanes are f32".into());
    }
    match spec.train.batch_size {
        crate::spec::BatchSize::Size(b) if b <= crate::engine::lanes::MAX_K => {}
        _ => {
            return Some(format!(
                "lockstep batches hold at most {} rows",
                crate::engine::lanes::MAX_K
            ))
        }
    }
    if mlp.width > crate::engine::lanes::MAX_K {
        return Some(format!(
            "lockstep layers are at most {} wide",
            crate::engine::lanes::MAX_K
        ));
    }
    // The data must be small feature rows, known from the spec: file data and images can be
    // wide (lanes hold layers up to 256) and large (a group holds 16 runs' data, and its
    // evaluation splits once more in lanes).
    use crate::task::TaskSpec as T;
    match &spec.task {
        T::TeacherStudent(t) if t.input_dim > crate::engine::lanes::MAX_K => {
            return Some("the teacher's input is wider than lockstep layers".into())
        }
        T::TeacherStudent(_)
        | T::Modular(_)
        | T::SparseParity(_)
        | T::MultitaskSparseParity(_)
        | T::Spirals(_)
        | T::Moons(_)
        | T::Gaussians(_)
        | T::Rings(_)
        | T::Checkerboard(_)
        | T::GaussianMixture(_) => {}
        other => {
            return Some(format!(
                "[task.{}] data train alone (lockstep takes generated feature rows)",
                other.kind()
            ))
        }
    }
    if spec.observe.sharpness_every > 0 {
        return Some("sharpness is measured on one model".into());
    }
    if spec.optim.clip_grad_norm.is_some() || spec.optim.weight_norm.is_some() {
        return Some("gradient clipping and the weight-norm constraint are per-model norms".into());
    }
    if mlp.norm != Norm::None {
        return Some("the model has norm layers".into());
    }
    if mlp.calibrate != crate::spec::Calibrate::None {
        return Some("a calibrated activation is biased (a·f(x − b) + c)".into());
    }
    if !mlp.act.is_plain() {
        return Some("the activation is biased (a·f(x − b) + c)".into());
    }
    if !mlp.activation.slope_from_output() {
        return Some(format!(
            "the {} activation keeps its slope in a buffer",
            mlp.activation.name()
        ));
    }
    None
}

/// The key runs share to train together (`None` when [`refuse`] refuses): what the lanes hold
/// in common — the model's shape, activation and width parametrization, the loss, the
/// optimizer's kind, and the loop's steps, batch, evaluations and checkpoints. Everything else
/// is each run's own: the seed (so its data and initialization), the initialization's scheme
/// and scale, the learning rate, its schedule and the optimizer's other settings, the
/// observables, the divergence test and the target loss. The task's settings are shared, so
/// that a group's data have one shape (a run whose data still differ trains alone:
/// [`train_group`]).
pub fn group_key(spec: &Spec) -> Option<String> {
    if refuse(spec).is_some() {
        return None;
    }
    let ModelSpec::Mlp(m) = &spec.model else {
        return None;
    };
    let (tr, o) = (&spec.train, &spec.optim);
    let shared = serde_json::json!({
        "model": [m.width, m.depth],
        "bias": m.bias,
        "activation": m.activation,
        "parametrization": [serde_json::to_value(m.parametrization).ok(), Some(serde_json::Value::from(m.base_width))],
        "loss": tr.loss,
        "optimizer": o.optimizer,
        "loop": [tr.steps, tr.eval_every, tr.checkpoint_every, tr.threads as u64],
        "batch": serde_json::to_value(tr.batch_size).ok(),
        "task": serde_json::to_value(&spec.task).ok(),
    });
    Some(shared.to_string())
}

/// Trains `members` (at most [`LANES`] runs of one [`group_key`], fresh or resuming) together;
/// each result is what [`super::train`] returns for that run alone. Runs the lanes cannot hold
/// (a refused model, data shaped unlike the others', another starting step) train alone, one
/// after another.
pub fn train_group(members: Vec<Member<'_>>) -> Vec<Result<Outcome, Error>> {
    assert!(members.len() <= LANES, "train_group: more runs than lanes");
    let start = Instant::now();
    let threads = members.first().map_or(1, |m| m.spec.train.threads);
    crate::engine::ops::with_threads(threads, || {
        let k = members.len();
        let mut results: Vec<Option<Result<Outcome, Error>>> = (0..k).map(|_| None).collect();
        let mut runs: Vec<Option<Run<'_, f32>>> = Vec::with_capacity(k);
        for (i, m) in members.into_iter().enumerate() {
            let built = m
                .spec
                .check_data(m.data)
                .map_err(Error::from)
                .and_then(|()| Run::<f32>::new(m.spec, m.data, m.sink, m.artifacts, m.resume));
            match built {
                Ok(r) => runs.push(Some(r)),
                Err(e) => {
                    results[i] = Some(Err(e));
                    runs.push(None);
                }
            }
        }
        // The lanes, shaped by the first run; any run unlike it trains alone.
        let template = runs
            .iter()
            .flatten()
            .next()
            .and_then(|r| lane_model(r).ok());
        let mut lanes = template.map(|(mlp, y_cols, r)| {
            let lanes = LaneMlp::new(mlp, r.batch, y_cols, r.spec.optim.optimizer);
            (lanes, lane_shape(mlp, y_cols, r))
        });
        for (i, slot) in runs.iter_mut().enumerate() {
            let fits = match (&lanes, slot.as_ref()) {
                (Some((_, shape)), Some(r)) => {
                    lane_model(r).is_ok_and(|(mlp, y_cols, r)| lane_shape(mlp, y_cols, r) == *shape)
                }
                _ => false,
            };
            if !fits {
                if let Some(r) = slot.take() {
                    results[i] = Some(alone(r));
                }
            }
        }
        let in_lanes: Vec<bool> = runs.iter().map(Option::is_some).collect();
        if let Some((lanes, _)) = &mut lanes {
            for (lane, r) in runs.iter().enumerate() {
                if let Some(r) = r {
                    lanes.load(lane, r.model.params(), &r.opt);
                    lanes.t = r.opt.t;
                }
            }
            lockstep(lanes, &mut runs, &mut results);
        }
        let trained = in_lanes.iter().filter(|&&l| l).count().max(1);
        let share = start.elapsed().as_secs_f64() / trained as f64;
        results
            .into_iter()
            .zip(in_lanes)
            .map(|(r, in_lanes)| {
                // A lockstep run's wall time is its share of the group's.
                r.unwrap_or_else(|| {
                    Err(Error::Io {
                        path: Default::default(),
                        source: std::io::Error::other("lockstep: a run was left without a result"),
                    })
                })
                .map(|mut out| {
                    if in_lanes {
                        out.wall_seconds = share;
                    }
                    out
                })
            })
            .collect()
    })
}

/// The run's model as lanes see it: the MLP, its target columns, and the run (`Err`: why it
/// trains alone).
fn lane_model<'r, 'a>(
    r: &'r Run<'a, f32>,
) -> Result<(&'r Mlp<f32>, usize, &'r Run<'a, f32>), String> {
    let Some(mlp) = r.model.as_any().downcast_ref::<Mlp<f32>>() else {
        return Err("not an MLP".into());
    };
    if !matches!(r.train_set, Split::Rows(_)) || r.train_set.perturbs() || r.train_set.is_fresh() {
        return Err("the data is not stored feature rows".into());
    }
    if let Some(why) = LaneMlp::refuse(mlp, r.batch) {
        return Err(why);
    }
    Ok((mlp, r.y_cols(), r))
}

/// What runs of one group must share beyond their key: the batch, the training set's size,
/// the target columns, the layer widths, the loss, and the step they start from.
type Shape = (usize, usize, usize, Vec<usize>, crate::spec::LossKind, u64);

fn lane_shape(mlp: &Mlp<f32>, y_cols: usize, r: &Run<'_, f32>) -> Shape {
    (
        r.batch,
        r.n,
        y_cols,
        mlp.dims.clone(),
        mlp.loss,
        r.steps_done,
    )
}

/// A run alone: [`super::train`]'s loop.
fn alone(mut r: Run<'_, f32>) -> Result<Outcome, Error> {
    for step in r.steps_done..r.spec.train.steps {
        match r.step(step, &mut |_, _| {})? {
            Flow::Go => {}
            Flow::Stop => break,
            Flow::Interrupted(out) => return Ok(out),
        }
    }
    r.finish()
}

/// The group's steps. A run leaves `runs` when it ends (its result in `results`).
fn lockstep(
    lanes: &mut LaneMlp,
    runs: &mut [Option<Run<'_, f32>>],
    results: &mut [Option<Result<Outcome, Error>>],
) {
    let Some(first) = runs.iter().flatten().next() else {
        return;
    };
    let tr = first.spec.train.clone();
    let mut ended: Vec<(usize, Run<'_, f32>)> = Vec::new();
    let splits = eval_splits(lanes, runs);
    // A run leaves the group: finished later (after the loop) or with this error now.
    macro_rules! leave {
        ($lane:expr, $err:expr) => {{
            runs[$lane] = None;
            results[$lane] = Some(Err($err));
        }};
    }
    let first_step = first.steps_done;
    // Lanes whose run left (or never came) hold zeros, so no NaN or subnormal from a diverged
    // model slows the vector instructions every lane shares.
    let mut cleared = [false; LANES];
    for step in first_step..tr.steps {
        if runs.iter().all(Option::is_none) {
            break;
        }
        for (lane, r) in runs.iter().enumerate() {
            if r.is_none() && !cleared[lane] {
                lanes.clear(lane);
                cleared[lane] = true;
            }
        }
        // Evaluation, every lane at once, before anything else of the step (as a run alone
        // evaluates first).
        let eval_now = step.is_multiple_of(tr.eval_every);
        if eval_now && !crate::interrupt::requested() {
            evaluate(lanes, runs, &splits, step);
        }
        // Each run's own step, on its own model: after Ctrl-C (each checkpoints and stops), or
        // where the lanes do not compute the evaluation.
        if crate::interrupt::requested() || (eval_now && splits.is_none()) {
            let t = lanes.t;
            for lane in 0..runs.len() {
                let Some(r) = runs[lane].as_mut() else {
                    continue;
                };
                let (params, opt) = (r.model.params_mut(), &mut r.opt);
                lanes.store(lane, params, opt);
                let flow = r.step(step, &mut |_, _| {});
                if settle(lane, flow, runs, results, &mut ended, |_| {}) {
                    if let Some(r) = &runs[lane] {
                        lanes.load(lane, r.model.params(), &r.opt);
                    }
                }
                lanes.t = t;
            }
            lanes.t = t + 1;
            continue;
        }
        // Every lane at once: a logged step keeps what the observables read.
        for r in runs.iter_mut().flatten() {
            r.begin_in_lanes(step);
        }
        let logged = runs.iter().flatten().any(|r| r.logs(step));
        // Each lane's optimizer settings and learning rate (a lane without a run: another's).
        let Some(any) = runs.iter().flatten().next().map(|r| (r.hyper, r.lr)) else {
            break;
        };
        // On the stack: an ordinary step allocates nothing.
        let (mut hypers, mut lrs) = ([any.0; LANES], [any.1; LANES]);
        let mut batches: [Option<LaneRows<'_>>; LANES] = [None; LANES];
        let mut rows = 0;
        for (lane, r) in runs.iter().enumerate() {
            let Some(r) = r else { continue };
            (hypers[lane], lrs[lane]) = (r.hyper, r.lr);
            let Some((x, y, xw, yw)) = r.train_set.stored_rows() else {
                unreachable!("lane_model admits stored feature rows only")
            };
            debug_assert_eq!((xw, yw), (lanes.input_width(), r.y_cols()));
            let picks = r.picked_rows();
            rows = picks.map_or(r.n, <[usize]>::len);
            batches[lane] = Some(LaneRows { x, y, picks });
        }
        lanes.gather_batches(&batches, rows);
        if logged {
            lanes.forward_keeping_pre();
        } else {
            lanes.forward();
        }
        let losses = lanes.loss();
        // The runs whose step is logged in full, by their lanes.
        let mut observed = [false; LANES];
        for lane in 0..runs.len() {
            let Some(r) = runs[lane].as_mut() else {
                continue;
            };
            match r.after_loss(step, losses[lane]) {
                Ok(Flow::Go) if r.needs_model() && logged => observed[lane] = true,
                Ok(Flow::Go) if r.needs_model() => {
                    // The target loss on a step the lanes passed without the pre-activations:
                    // this step is logged in full on the run's own model, and ends it.
                    let (params, opt) = (r.model.params_mut(), &mut r.opt);
                    lanes.store(lane, params, opt);
                    r.gather_picked(step);
                    let b = r.train_set.view(r.picked, &r.gathered);
                    r.model.forward(&b, Mode::Train);
                    let again = r.model.loss(&b, true);
                    debug_assert_eq!(again.loss.to_bits(), losses[lane].loss.to_bits());
                    match r.finish_step(step, &mut |_, _| {}) {
                        Ok(_) => {
                            if let Some(r) = runs[lane].take() {
                                ended.push((lane, r));
                            }
                        }
                        Err(e) => leave!(lane, e),
                    }
                }
                Ok(Flow::Go) => {}
                Ok(_) => {
                    // Diverged: the run ends with the parameters it had before this step.
                    let (params, opt) = (r.model.params_mut(), &mut r.opt);
                    lanes.store(lane, params, opt);
                    if let Some(r) = runs[lane].take() {
                        ended.push((lane, r));
                    }
                }
                Err(e) => leave!(lane, e),
            }
        }
        // The logged runs' parameters before the update (their update ratios).
        for (lane, r) in runs.iter_mut().enumerate() {
            if let (Some(r), true) = (r, observed[lane]) {
                lanes.values_into(lane, r.before_mut());
            }
        }
        lanes.backward();
        lanes.step(&hypers, &lrs);
        flush_together(runs, results, |r| r.checkpoints_after(step));
        for lane in 0..runs.len() {
            let Some(r) = runs[lane].as_mut() else {
                continue;
            };
            // A logged step's model as its own step leaves it; a checkpoint's state.
            if observed[lane] || r.checkpoints_after(step) {
                let (params, opt) = (r.model.params_mut(), &mut r.opt);
                lanes.store(lane, params, opt);
            }
            let flow = if observed[lane] {
                match r.model.as_any_mut().downcast_mut::<Mlp<f32>>() {
                    Some(mlp) => lanes.export(lane, mlp),
                    None => unreachable!("lane_model admits MLPs only"),
                }
                r.observe_in_lanes(step)
            } else {
                r.end_step(step, &mut |_, _| {})
            };
            // The target loss, reached on a logged step: the run ends with the lanes' state.
            settle(lane, flow, runs, results, &mut ended, |r| {
                lanes.store(lane, r.model.params_mut(), &mut r.opt)
            });
        }
    }
    // The runs that went the distance: their final evaluation in lanes (the rows `finish`
    // writes, from the same tallies), and their final state from the lanes.
    if !crate::interrupt::requested() {
        evaluate(lanes, runs, &splits, tr.steps);
    }
    for (lane, slot) in runs.iter_mut().enumerate() {
        if let Some(mut r) = slot.take() {
            let (params, opt) = (r.model.params_mut(), &mut r.opt);
            lanes.store(lane, params, opt);
            ended.push((lane, r));
        }
    }
    // Their final rows in one transaction, which the last run's sink commits (a batch that
    // does not open: one each). Lost together, they fail every run of it.
    let batched = ended.len() > 1
        && ended
            .first_mut()
            .is_some_and(|(_, r)| r.begin_batch().is_ok());
    let mut finished = [false; LANES];
    let mut sink = None;
    for (lane, r) in ended {
        let (result, s) = r.finish_to_sink();
        results[lane] = Some(result);
        finished[lane] = true;
        sink = Some(s);
    }
    if let (true, Some(sink)) = (batched, sink) {
        if let Err(e) = sink.end_batch() {
            for (lane, result) in results.iter_mut().enumerate() {
                if finished[lane] {
                    *result = Some(Err(Error::batch_lost("the run's final rows", &e)));
                }
            }
        }
    }
}

/// Writes the pending rows of the runs `due` picks in one transaction, before any of them
/// checkpoints (each run's own flush then finds nothing left; fewer than two, or a batch that
/// does not open: each flushes alone). A run whose rows the batch lost leaves the group with
/// the error: its checkpoint must not get ahead of its stored rows.
fn flush_together(
    runs: &mut [Option<Run<'_, f32>>],
    results: &mut [Option<Result<Outcome, Error>>],
    due: impl Fn(&Run<'_, f32>) -> bool,
) {
    let mut picked = [false; LANES];
    for (lane, r) in runs.iter().enumerate() {
        picked[lane] = r.as_ref().is_some_and(&due);
    }
    let Some(first) = picked.iter().position(|&p| p) else {
        return;
    };
    if picked.iter().filter(|&&p| p).count() < 2 {
        return;
    }
    let opened = runs[first]
        .as_mut()
        .is_some_and(|r| r.begin_batch().is_ok());
    if !opened {
        return;
    }
    for (lane, r) in runs.iter_mut().enumerate() {
        if let (true, Some(r)) = (picked[lane], r) {
            // A write that fails keeps its rows: the run's own flush meets the error again.
            let _ = r.flush();
        }
    }
    let committed = runs[first].as_mut().map_or(Ok(()), |r| r.end_batch());
    if let Err(e) = committed {
        for (lane, slot) in runs.iter_mut().enumerate() {
            if picked[lane] {
                *slot = None;
                results[lane] = Some(Err(Error::batch_lost("the run's rows", &e)));
            }
        }
    }
}

/// A lane's run after its own step: `true` while it goes on; otherwise it leaves the group —
/// stopped (`before_leaving` first), to be finished after the loop; interrupted, with its
/// outcome; failed, with its error.
fn settle<'a>(
    lane: usize,
    flow: Result<Flow, Error>,
    runs: &mut [Option<Run<'a, f32>>],
    results: &mut [Option<Result<Outcome, Error>>],
    ended: &mut Vec<(usize, Run<'a, f32>)>,
    before_leaving: impl FnOnce(&mut Run<'a, f32>),
) -> bool {
    match flow {
        Ok(Flow::Go) => return true,
        Ok(Flow::Stop) => {
            if let Some(mut r) = runs[lane].take() {
                before_leaving(&mut r);
                ended.push((lane, r));
            }
        }
        Ok(Flow::Interrupted(out)) => {
            runs[lane] = None;
            results[lane] = Some(Ok(out));
        }
        Err(e) => {
            runs[lane] = None;
            results[lane] = Some(Err(e));
        }
    }
    false
}

/// The evaluation splits of a group's runs as lane tensors, laid out once: `(x, y, rows)` for
/// the training and the test split (`None` where the runs' splits differ in size, or a run's
/// evaluation is not plain loss and accuracy: those evaluate themselves).
type EvalSplits = Option<[(LaneBuf, LaneBuf, usize); 2]>;

fn eval_splits(lanes: &LaneMlp, runs: &[Option<Run<'_, f32>>]) -> EvalSplits {
    let cap = lanes.capacity();
    if runs.iter().flatten().any(|r| !r.plain_eval()) {
        return None;
    }
    let first = runs.iter().flatten().next()?;
    let sizes = |r: &Run<'_, f32>| r.eval_splits(cap).map(|(_, n)| n);
    let n = sizes(first);
    if runs.iter().flatten().any(|r| sizes(r) != n) {
        return None;
    }
    let part = |p: usize| {
        let rows = n[p];
        let views: Vec<Option<(&[f32], &[f32])>> = runs
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|r| match r.eval_splits(cap)[p].0.slice(0, rows) {
                        Batch::Rows { x, y, .. } => (x, y),
                        _ => unreachable!("lane_model admits feature rows only"),
                    })
            })
            .collect();
        let (xw, yw) = views
            .iter()
            .flatten()
            .next()
            .map_or((0, 0), |(x, y)| (x.len(), y.len()));
        let xs: Vec<Option<&[f32]>> = views.iter().map(|v| v.map(|v| v.0)).collect();
        let ys: Vec<Option<&[f32]>> = views.iter().map(|v| v.map(|v| v.1)).collect();
        (
            crate::engine::lanes::transpose(&xs, xw),
            crate::engine::lanes::transpose(&ys, yw),
            rows,
        )
    };
    Some([part(0), part(1)])
}

/// Step `step`'s evaluation of every run still in the group, in lanes: the passes and tallies
/// of [`super::evaluate`], per lane. Without `splits` the runs evaluate themselves in their step.
fn evaluate(
    lanes: &mut LaneMlp,
    runs: &mut [Option<Run<'_, f32>>],
    splits: &EvalSplits,
    step: u64,
) {
    let Some(splits) = splits else { return };
    let cap = lanes.capacity();
    let mut results = vec![[None, None]; runs.len()];
    for (part, (x, y, count)) in splits.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        let (xw, yw) = (x.len() / count, y.len() / count);
        let mut tallies: Vec<Tally> = (0..runs.len()).map(|_| Tally::default()).collect();
        let mut start = 0;
        while start < *count {
            let b = cap.min(count - start);
            lanes.forward_rows(&x[start * xw..(start + b) * xw], b);
            let values = lanes.loss_rows(&y[start * yw..(start + b) * yw]);
            for (t, v) in tallies.iter_mut().zip(values) {
                t.add_value(v);
            }
            start += b;
        }
        for (r, t) in results.iter_mut().zip(&tallies) {
            r[part] = Some(t.result());
        }
    }
    for (r, res) in runs.iter_mut().zip(results) {
        if let Some(r) = r {
            r.evaluated(step, res);
        }
    }
}
