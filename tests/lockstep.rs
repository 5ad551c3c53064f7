//! Lockstep: seeds trained together in SIMD lanes record exactly what each records alone —
//! every metric row bit for bit, and the same ending — across activations, optimizers,
//! schedules, parametrizations, losses, widths that do not fill a vector, short last batches,
//! runs that diverge or reach their target loss mid-group, and groups of 1 to 16 runs.

use std::path::Path;

use cloudchamber::spec::{self, Spec};
use cloudchamber::store::MetricRow;
use cloudchamber::task::Dataset;
use cloudchamber::train::{self, lockstep, Outcome};

fn specs(text: &str, seeds: std::ops::Range<u64>) -> Vec<Spec> {
    seeds
        .map(|s| spec::parse(text, Path::new("t.toml"), &[format!("seed={s}")]).unwrap())
        .collect()
}

fn solo(spec: &Spec, data: &Dataset) -> (Outcome, Vec<MetricRow>) {
    let mut rows = Vec::new();
    let out = train::train(spec, data, &mut rows, None, false, &mut |_, _| {}).unwrap();
    (out, rows)
}

fn key(r: &MetricRow) -> (u64, Option<u32>, String, u64) {
    (r.step, r.layer, r.name.clone(), r.value.to_bits())
}

/// Trains `seeds` alone and together; asserts they agree; returns the endings.
fn same_alone_and_together(text: &str, seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    alone_and_together(specs(text, seeds))
}

/// [`same_alone_and_together`] for runs given as specs.
fn alone_and_together(specs: Vec<Spec>) -> Vec<Outcome> {
    if let Some(why) = lockstep::refuse(&specs[0]) {
        panic!("refused: {why}");
    }
    let group = lockstep::group_key(&specs[0]);
    assert!(
        specs.iter().all(|s| lockstep::group_key(s) == group),
        "one group"
    );
    let datas: Vec<Dataset> = specs
        .iter()
        .map(|s| s.task.generate(s.seed, Path::new(".")).unwrap())
        .collect();
    let alone: Vec<_> = specs.iter().zip(&datas).map(|(s, d)| solo(s, d)).collect();
    let mut sinks: Vec<Vec<MetricRow>> = vec![Vec::new(); specs.len()];
    let members = specs
        .iter()
        .zip(&datas)
        .zip(sinks.iter_mut())
        .map(|((spec, data), sink)| lockstep::Member {
            spec,
            data,
            sink,
            artifacts: None,
            resume: false,
        })
        .collect();
    let together = lockstep::train_group(members);
    let mut outs = Vec::new();
    for (i, ((a_out, a_rows), t)) in alone.into_iter().zip(together).enumerate() {
        let t_out = t.unwrap();
        let t_rows = &sinks[i];
        assert_eq!(a_rows.len(), t_rows.len(), "seed {i}: row count");
        for (a, t) in a_rows.iter().zip(t_rows) {
            assert_eq!(key(a), key(t), "seed {i}: {a:?} vs {t:?}");
        }
        assert_eq!(a_out.status, t_out.status, "seed {i}");
        assert_eq!(a_out.steps, t_out.steps, "seed {i}");
        assert_eq!(a_out.diverged_step, t_out.diverged_step, "seed {i}");
        assert_eq!(a_out.message, t_out.message, "seed {i}");
        for (x, y) in [
            (a_out.final_batch_loss, t_out.final_batch_loss),
            (a_out.train_loss, t_out.train_loss),
            (a_out.test_loss, t_out.test_loss),
        ] {
            assert_eq!(x.to_bits(), y.to_bits(), "seed {i}");
        }
        outs.push(a_out);
    }
    outs
}

/// The peers' tiny sweep, shortened: a width-16 tanh MLP, Adam, a short last batch per epoch
/// (200 = 3·64 + 8), every observable at the logged steps.
const TINY: &str = r#"
seed = 0
[task.teacher_student]
input_dim = 8
n_train = 200
n_test = 100
[model]
width = 16
depth = 2
activation = "tanh"
[optim]
optimizer = "adam"
lr = 3e-3
[train]
steps = 60
batch_size = 64
eval_every = 25
[observe]
log_every = 10
"#;

#[test]
fn tiny_adam_group_of_sixteen() {
    if !cloudchamber::engine::sgemm::available() {
        eprintln!("skipped: lockstep needs the AVX-512 kernels");
        return;
    }
    same_alone_and_together(TINY, 0..16);
}

#[test]
fn narrow_relu_momentum_without_bias() {
    if !cloudchamber::engine::sgemm::available() {
        return;
    }
    let text = TINY
        .replace(
            "width = 16\ndepth = 2\nactivation = \"tanh\"",
            "width = 5\ndepth = 3\nactivation = \"relu\"\nbias = false",
        )
        .replace(
            "optimizer = \"adam\"\nlr = 3e-3",
            "optimizer = \"momentum\"\nlr = 0.05\nmomentum = 0.9",
        );
    same_alone_and_together(&text, 3..8);
}

#[test]
fn sigmoid_nesterov_schedule_mup_and_wide_output() {
    if !cloudchamber::engine::sgemm::available() {
        return;
    }
    let text = TINY
        .replace("input_dim = 8", "input_dim = 1\noutput_dim = 3")
        .replace("activation = \"tanh\"", "activation = \"sigmoid\"\nparametrization = \"mup\"\nbase_width = 4")
        .replace(
            "optimizer = \"adam\"\nlr = 3e-3",
            "optimizer = \"nesterov\"\nlr = 0.1\nmomentum = 0.8\nschedule = \"warmup_cosine\"\nwarmup_steps = 7",
        );
    same_alone_and_together(&text, 0..4);
}

#[test]
fn classification_with_cross_entropy_adamw_and_identity() {
    if !cloudchamber::engine::sgemm::available() {
        return;
    }
    for act in ["leaky_relu", "identity"] {
        let text = format!(
            r#"
seed = 0
[task.moons]
noise = 0.1
n_train = 150
n_test = 60
[model]
width = 24
depth = 2
activation = "{act}"
[optim]
optimizer = "adamw"
lr = 1e-2
weight_decay = 0.1
[train]
steps = 40
batch_size = 32
eval_every = 20
[observe]
log_every = 15
"#
        );
        same_alone_and_together(&text, 10..13);
    }
}

/// Runs leave the group when they diverge (a tight divergence factor makes some seeds stop at
/// different steps) or reach their target loss between logged steps.
#[test]
fn runs_that_diverge_or_hit_the_target_leave_the_group() {
    if !cloudchamber::engine::sgemm::available() {
        return;
    }
    let text = TINY.replace("lr = 3e-3", "lr = 0.2").replace(
        "eval_every = 25",
        "eval_every = 25\ndivergence_factor = 1.3",
    );
    let outs = same_alone_and_together(&text, 0..12);
    let diverged: Vec<_> = outs.iter().filter_map(|o| o.diverged_step).collect();
    assert!(
        diverged.len() >= 2 && diverged.iter().any(|&s| s % 10 != 0),
        "the case should make seeds diverge between logged steps: {diverged:?}"
    );
    assert!(
        outs.iter().any(|o| o.diverged_step.is_none()),
        "and some finish"
    );

    // A target loss the seeds reach at different steps.
    let text = TINY.replace("eval_every = 25", "eval_every = 25\ntarget_loss = 0.05");
    let outs = same_alone_and_together(&text, 0..6);
    let stopped: Vec<_> = outs
        .iter()
        .filter(|o| o.steps < 60)
        .map(|o| o.steps)
        .collect();
    assert!(
        stopped.iter().any(|s| (s - 1) % 10 != 0),
        "the case should stop seeds between logged steps: {stopped:?}"
    );
}

/// Groups of one and of two (a lane per run, the rest idle) are the same too.
#[test]
fn small_groups() {
    if !cloudchamber::engine::sgemm::available() {
        return;
    }
    same_alone_and_together(TINY, 5..6);
    same_alone_and_together(TINY, 7..9);
}

/// What lockstep refuses, and why.
#[test]
fn refusals_say_why() {
    let cases = [
        ("norm = \"layernorm\"", "norm"),
        ("dtype = \"f64\"", "f32"),
        ("activation = \"gelu\"", "slope"),
    ];
    for (line, why) in cases {
        let text = TINY
            .replace(
                "activation = \"tanh\"",
                &format!("activation = \"tanh\"\n{line}"),
            )
            .replace(
                "activation = \"tanh\"\nactivation = \"gelu\"",
                "activation = \"gelu\"",
            );
        let s = &specs(&text, 0..1)[0];
        let r = lockstep::refuse(s).unwrap_or_default();
        assert!(r.contains(why), "{line}: {r}");
    }
}

/// Runs that share their shapes, task and loop but not their learning rate, schedule, optimizer
/// settings, initialization, logging or divergence test train together too.
#[test]
fn runs_differing_in_more_than_the_seed() {
    if !cloudchamber::engine::sgemm::available() {
        return;
    }
    let sets: [&[&str]; 6] = [
        &["seed=1"],
        &["seed=1", "optim.lr=0.02"],
        &[
            "seed=2",
            "optim.weight_decay=0.1",
            "optim.betas=[0.8, 0.99]",
        ],
        &["seed=3", "model.init_scale=2.0", "optim.eps=1e-6"],
        &[
            "seed=4",
            "optim.schedule=\"warmup_cosine\"",
            "optim.warmup_steps=9",
        ],
        &[
            "seed=5",
            "train.divergence_factor=50.0",
            "observe.log_every=20",
        ],
    ];
    let specs: Vec<Spec> = sets
        .iter()
        .map(|over| {
            let over: Vec<String> = over.iter().map(|s| s.to_string()).collect();
            spec::parse(TINY, Path::new("t.toml"), &over).unwrap()
        })
        .collect();
    alone_and_together(specs);
    // Momentum SGD with a momentum per run.
    let text = TINY.replace("optimizer = \"adam\"", "optimizer = \"nesterov\"");
    let specs: Vec<Spec> = [0.5, 0.9, 0.0]
        .iter()
        .map(|m| {
            let over = vec![format!("optim.momentum={m}"), "optim.lr=0.05".to_string()];
            spec::parse(&text, Path::new("t.toml"), &over).unwrap()
        })
        .collect();
    alone_and_together(specs);
}
