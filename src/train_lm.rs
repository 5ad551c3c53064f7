//! The training loop of the language models (`[model.gpt]`): the same phases, store, sinks,
//! checkpoints and outcome as [`crate::train`] (lr, batch, forward, loss, backward, clip, step,
//! observe, eval, flush), over token windows instead of feature rows.
//!
//! Besides the shared rows (`train_loss`, `train_acc`, `train_eval_*`, `test_*`) it records, for
//! sources with a known entropy (Markov, PCFG): `entropy_rate` (nats/token),
//! `entropy_rate_bits` and `bayes_loss` (the Bayes-optimal loss of a window) at step 0, and
//! `excess_loss = test_loss − entropy_rate` at each evaluation. Stored with the run (artifacts
//! folder): `vocab.json`, and `samples.txt`, a text sample of `seq_len` tokens drawn from the
//! model (temperature 1) at every evaluation.
//!
//! Accuracy is the argmax accuracy over counted target positions (for `modular_sequence`: the
//! answer token). The train-set evaluation covers the first `max(n_test, batch)` windows at most
//! (all of them for the grokking task), so it costs no more than the test evaluation.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::checkpoint;
use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::interop;
use crate::model::gpt::{self, Gpt, GptSpec, LmLoss, IGNORE};
use crate::observe_lm::{self, LmCtx, SpikeDetector};
use crate::optim::OptimState;
use crate::spec::Spec;
use crate::store::{MetricRow, RunStatus};
use crate::task::{Dataset, SequenceInfo};
use crate::train::{
    batch_rows, clip, diverged, divergence_message, empty_training_set, hyper, lr_at, metric,
    next_batch, remove_checkpoint, resume_from, save_checkpoint, target_message, update,
    MetricSink, Outcome, ProgressFn,
};

/// Token windows of one split.
struct Windows {
    x: Vec<usize>,
    y: Vec<usize>,
    n: usize,
    seq: usize,
}

impl Windows {
    fn new(x: &ndarray::Array2<f64>, y: &ndarray::Array2<f64>) -> Self {
        Windows {
            x: x.iter().map(|&v| v as usize).collect(),
            y: y.iter()
                .map(|&v| if v < 0.0 { IGNORE } else { v as usize })
                .collect(),
            n: x.nrows(),
            seq: x.ncols(),
        }
    }
}

fn invalid(message: &str, hint: &str) -> Error {
    Error::Invalid {
        what: "task".into(),
        message: message.into(),
        hint: hint.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn train_typed<F: Float>(
    spec: &Spec,
    data: &Dataset,
    sink: &mut dyn MetricSink,
    artifacts: Option<&Path>,
    resume: bool,
    progress: ProgressFn<'_>,
) -> Result<Outcome, Error> {
    let start = Instant::now();
    let (tr, opt_spec, obs_spec) = (&spec.train, &spec.optim, &spec.observe);
    let default_gpt = GptSpec::default();
    let gspec = spec.model.gpt.as_ref().unwrap_or(&default_gpt);
    let info: &SequenceInfo = data.sequence.as_ref().ok_or_else(|| {
        invalid(
            "[model.gpt] needs a token-sequence task",
            "use [task.text], [task.markov], [task.pcfg] or [task.modular_sequence]",
        )
    })?;
    let vocab = info.vocab.len();
    let train_set = Windows::new(&data.train_x, &data.train_y);
    let test_set = Windows::new(&data.test_x, &data.test_y);
    let (n, seq) = (train_set.n, train_set.seq);
    if n == 0 {
        return Err(empty_training_set());
    }
    let batch = batch_rows(tr, n);
    let mut model = Gpt::<F>::new(
        gspec,
        spec.model.norm_eps,
        vocab,
        seq,
        batch,
        &mut Rng::stream(spec.seed, "init"),
    );
    if let Some(dir) = artifacts {
        let p = dir.join("vocab.json");
        std::fs::write(&p, info.vocab_json()).map_err(io(&p))?;
        if spec.output.save_weights {
            interop::save_params(&model.params, &dir.join("weights_init.safetensors"))?;
        }
    }
    let mut opt = OptimState::new(&model.params, opt_spec.optimizer);
    let hyper = hyper(opt_spec);
    let names: Vec<String> = obs_spec.observables.clone().unwrap_or_default();
    let spikes_on = names.iter().any(|s| s == "loss_spike");

    // Preallocated: the batch, the pre-update snapshot, the metric rows.
    let mut order_rng = Rng::stream(spec.seed, "batches");
    let mut order = order_rng.permutation(n);
    let mut cursor = 0usize;
    let mut bx = vec![0usize; batch * seq];
    let mut by = vec![0usize; batch * seq];
    let mut before: Vec<Vec<F>> = model.params.iter().map(|p| p.value.clone()).collect();
    let mut rows: Vec<MetricRow> = Vec::with_capacity(1024);
    let mut spikes = SpikeDetector::default();

    let mut initial_loss: Option<f64> = None;
    let mut last = LmLoss::default();
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
    // The source's entropy, stored with the run (step 0, once).
    if steps_done == 0 {
        if let Some(e) = &info.entropy {
            rows.push(metric(0, "entropy_rate", e.nats));
            rows.push(metric(0, "entropy_rate_bits", e.bits()));
            rows.push(metric(0, "bayes_loss", e.window_nats));
        }
    }
    let samples_path = artifacts.map(|d| d.join("samples.txt"));
    let prompt = test_set.x.first().copied().unwrap_or(0);

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
    macro_rules! eval_and_sample {
        ($step:expr, $rows:expr) => {{
            let r = evaluate(&mut model, &train_set, &test_set, $step, $rows);
            if let Some(e) = &info.entropy {
                $rows.push(metric($step, "excess_loss", r.1 .0 - e.nats));
            }
            if let Some(path) = &samples_path {
                if info.seq_len >= 8 {
                    let mut rng = Rng::stream(spec.seed ^ $step, "samples");
                    let text = sample(&mut model, prompt, info, &mut rng);
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(io(path))?;
                    writeln!(f, "step {}: {}", $step, text.escape_debug()).map_err(io(path))?;
                }
            }
            r
        }};
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
        // Eval: the parameters before this step's update (step 0 = initialization).
        if step % tr.eval_every == 0 {
            eval_and_sample!(step, &mut rows);
            last_eval = Some(step);
        }

        // Learning rate.
        let lr = lr_at(opt_spec, step, tr.steps);

        // Batch: a fresh permutation of the windows each epoch (the last batch may be short).
        let (x, y, b): (&[usize], &[usize], usize) = if batch == n {
            (&train_set.x, &train_set.y, n)
        } else {
            let picked = next_batch(&mut order_rng, &mut order, &mut cursor, n, batch);
            let b = picked.len();
            for (k, &i) in order[picked].iter().enumerate() {
                bx[k * seq..(k + 1) * seq].copy_from_slice(&train_set.x[i * seq..(i + 1) * seq]);
                by[k * seq..(k + 1) * seq].copy_from_slice(&train_set.y[i * seq..(i + 1) * seq]);
            }
            (&bx, &by, b)
        };

        // Forward and loss (which also writes ∂L/∂logits).
        model.forward(x, b, seq);
        last = gpt::cross_entropy(&model.logits, y, b * seq, vocab, Some(&mut model.d_logits));
        let first = *initial_loss.get_or_insert(last.loss);
        let reached_target = tr.target_loss.is_some_and(|t| last.loss <= t);
        let log_now = step % obs_spec.log_every == 0 || step + 1 == tr.steps || reached_target;
        let diverged = diverged(last.loss, first, tr.divergence_factor);
        if log_now || diverged {
            rows.push(metric(step, "train_loss", last.loss));
            rows.push(metric(
                step,
                "train_acc",
                last.correct as f64 / last.counted.max(1) as f64,
            ));
        }
        if spikes_on {
            if let Some(ratio) = spikes.push(last.loss) {
                rows.push(metric(step, "loss_spike", ratio));
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

        // Clip (global norm).
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

        // Observe, then flush: one transaction per logged step.
        if log_now {
            let ctx = LmCtx {
                step,
                model: &model,
                before: &before,
                lr,
                clip_coef,
            };
            observe_lm::observe(&names, &ctx, &mut rows);
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

    // Final evaluation of the trained parameters (unless they were just evaluated).
    let (train_eval, test_eval) = if last_eval == Some(steps_done) {
        let mut scratch = Vec::new();
        evaluate(&mut model, &train_set, &test_set, steps_done, &mut scratch)
    } else {
        eval_and_sample!(steps_done, &mut rows)
    };
    sink.write(&rows)?;
    if let (Some(dir), true) = (artifacts, spec.output.save_weights) {
        interop::save_params(&model.params, &dir.join("weights_final.safetensors"))?;
    }
    // The run is over: its checkpoint has nothing left to resume.
    if let Some(path) = &ckpt_path {
        remove_checkpoint(path)?;
    }
    if message.is_none() {
        if let Some(e) = &info.entropy {
            message = Some(format!(
                "validation loss {:.4} nats/token vs entropy rate {:.4} ({:.4} bits; Bayes window loss {:.4}): {:+.1}%",
                test_eval.0,
                e.nats,
                e.bits(),
                e.window_nats,
                100.0 * (test_eval.0 / e.nats - 1.0)
            ));
        }
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

/// Loss (nats per counted token) and accuracy over the test windows and the first
/// `max(n_test, capacity)` train windows, in chunks of the model's capacity.
fn evaluate<F: Float>(
    model: &mut Gpt<F>,
    train: &Windows,
    test: &Windows,
    step: u64,
    rows: &mut Vec<MetricRow>,
) -> ((f64, Option<f64>), (f64, Option<f64>)) {
    let cap = model.capacity();
    let train_n = train.n.min(test.n.max(cap));
    let mut results = [(f64::NAN, None), (f64::NAN, None)];
    for (k, (split, n, name_loss, name_acc)) in [
        (train, train_n, "train_eval_loss", "train_eval_acc"),
        (test, test.n, "test_loss", "test_acc"),
    ]
    .into_iter()
    .enumerate()
    {
        if n == 0 {
            continue;
        }
        let seq = split.seq;
        let vocab = model.dims.vocab;
        let (mut loss_sum, mut counted, mut correct) = (0.0, 0usize, 0usize);
        let mut s = 0;
        while s < n {
            let b = cap.min(n - s);
            model.forward(&split.x[s * seq..(s + b) * seq], b, seq);
            let v = gpt::cross_entropy(
                &model.logits,
                &split.y[s * seq..(s + b) * seq],
                b * seq,
                vocab,
                None,
            );
            loss_sum += v.loss * v.counted as f64;
            counted += v.counted;
            correct += v.correct;
            s += b;
        }
        let loss = loss_sum / counted.max(1) as f64;
        let acc = correct as f64 / counted.max(1) as f64;
        rows.push(metric(step, name_loss, loss));
        rows.push(metric(step, name_acc, acc));
        results[k] = (loss, Some(acc));
    }
    (results[0], results[1])
}

/// `seq_len` tokens drawn from the model at temperature 1 after a one-token prompt, decoded.
fn sample<F: Float>(
    model: &mut Gpt<F>,
    prompt: usize,
    info: &SequenceInfo,
    rng: &mut Rng,
) -> String {
    let (vocab, t) = (model.dims.vocab, model.dims.context);
    let mut toks = vec![prompt];
    let mut p = vec![0.0f64; vocab];
    while toks.len() < t {
        let len = toks.len();
        model.forward(&toks, 1, len);
        let z = &model.logits[(len - 1) * vocab..len * vocab];
        let max = z.iter().fold(f64::NEG_INFINITY, |a, v| a.max(v.f64()));
        let mut s = 0.0;
        for (pv, v) in p.iter_mut().zip(z) {
            *pv = (v.f64() - max).exp();
            s += *pv;
        }
        let u = rng.uniform() * s;
        let mut acc = 0.0;
        let mut next = vocab - 1;
        for (j, &pv) in p.iter().enumerate() {
            acc += pv;
            if u < acc {
                next = j;
                break;
            }
        }
        toks.push(next);
    }
    let sep = if info.vocab.iter().all(|v| v.chars().count() == 1) {
        ""
    } else {
        " "
    };
    toks.iter()
        .map(|&i| info.vocab[i].as_str())
        .collect::<Vec<_>>()
        .join(sep)
}
