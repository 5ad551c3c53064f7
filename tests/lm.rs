//! Language models end to end: a tiny GPT trained on a synthetic Markov language reaches the
//! source's exact entropy rate; runs are bit-identical; the spec sections validate.

use std::path::Path;

use cloudchamber::spec;
use cloudchamber::store::MetricRow;
use cloudchamber::train;

const MARKOV: &str = r#"
seed = 1
[task.markov]
vocab = 12
order = 1
concentration = 0.5
seq_len = 24
n_train = 1024
n_test = 256
[model.gpt]
n_layer = 1
d_model = 32
n_head = 2
positions = "rotary"
tying = "tied"
[optim]
optimizer = "adamw"
lr = 3e-3
weight_decay = 0.0
[train]
steps = 400
batch_size = 32
eval_every = 200
[observe]
log_every = 50
"#;

fn run(text: &str, overrides: &[String]) -> (train::Outcome, Vec<MetricRow>, f64) {
    let spec = spec::parse(text, Path::new("t.toml"), overrides).unwrap();
    let data = spec.task.generate(spec.seed, Path::new(".")).unwrap();
    let h = data
        .sequence
        .as_ref()
        .unwrap()
        .entropy
        .as_ref()
        .unwrap()
        .nats;
    let mut rows: Vec<MetricRow> = Vec::new();
    let out = train::train(&spec, &data, &mut rows, None, false, &mut |_, _| {}).unwrap();
    (out, rows, h)
}

/// The validation loss comes within 5% of the exact entropy rate (the floor no model can beat),
/// and the stored rows say so.
#[test]
fn tiny_gpt_reaches_the_markov_entropy_rate() {
    let (out, rows, h) = run(MARKOV, &[]);
    assert!(out.test_loss.is_finite());
    assert!(
        out.test_loss < 1.05 * h,
        "validation loss {} vs entropy rate {h}",
        out.test_loss
    );
    // A model cannot beat the source on held-out data by more than sampling noise.
    assert!(out.test_loss > 0.97 * h, "{} < {h}?", out.test_loss);
    let get = |name: &str| rows.iter().rfind(|r| r.name == name).unwrap().value;
    assert_eq!(get("entropy_rate"), h);
    assert!((get("entropy_rate_bits") - h / std::f64::consts::LN_2).abs() < 1e-12);
    assert!((get("excess_loss") - (out.test_loss - h)).abs() < 1e-12);
    assert!(out.message.unwrap().contains("entropy rate"));
    // The GPT observables are there.
    for name in [
        "resid_norm",
        "attn_entropy_h1",
        "attn_logit_max_h0",
        "logit_norm",
        "grad_norm",
        "update_ratio",
        "weight_norm_embedding",
    ] {
        assert!(rows.iter().any(|r| r.name == name), "no {name}");
    }
}

/// Same spec, same seed ⇒ bit-identical metrics; two GEMM threads change nothing.
#[test]
fn runs_are_bit_identical() {
    let short = [
        "train.steps=30".to_string(),
        "observe.log_every=5".to_string(),
    ];
    let (_, a, _) = run(MARKOV, &short);
    let (_, b, _) = run(MARKOV, &short);
    let mut threaded = short.to_vec();
    threaded.push("train.threads=2".into());
    let (_, c, _) = run(MARKOV, &threaded);
    assert!(!a.is_empty());
    for other in [&b, &c] {
        assert_eq!(a.len(), other.len());
        for (x, y) in a.iter().zip(other.iter()) {
            assert_eq!((x.step, x.layer, &x.name), (y.step, y.layer, &y.name));
            assert_eq!(
                x.value.to_bits(),
                y.value.to_bits(),
                "{} at {}",
                x.name,
                x.step
            );
        }
    }
}

/// Every LM task trains a few steps; the answer-only loss of modular sequences counts one
/// token per example.
#[test]
fn pcfg_and_modular_sequences_train() {
    let pcfg = MARKOV.replace(
        "[task.markov]\nvocab = 12\norder = 1\nconcentration = 0.5",
        "[task.pcfg]\nnonterminals = 3\nrules = 3",
    );
    let (out, rows, h) = run(&pcfg, &["train.steps=20".into()]);
    assert!(out.test_loss.is_finite() && h > 0.0);
    assert!(rows.iter().any(|r| r.name == "bayes_loss"));
    let modular = r#"
[task.modular_sequence]
p = 7
[model.gpt]
n_layer = 1
d_model = 16
n_head = 2
[train]
steps = 5
batch_size = "full"
"#;
    let spec = spec::parse(modular, Path::new("m.toml"), &[]).unwrap();
    let data = spec.task.generate(0, Path::new(".")).unwrap();
    let mut rows: Vec<MetricRow> = Vec::new();
    let out = train::train(&spec, &data, &mut rows, None, false, &mut |_, _| {}).unwrap();
    // Untrained on 8 classes: the loss is near ln 8 = 2.08 (answer token only; ln 8 not ln 7
    // because `=` is in the vocabulary).
    let first = rows.iter().find(|r| r.name == "train_loss").unwrap().value;
    assert!((first - 8f64.ln()).abs() < 0.3, "{first}");
    assert!(out.test_acc.unwrap() <= 1.0);
}

#[test]
fn specs_validate_with_a_key_and_a_hint() {
    // A GPT needs a sequence task, and a sequence task needs a GPT.
    let e = spec::parse("[task.modular]\n[model.gpt]\n", Path::new("x.toml"), &[]).unwrap_err();
    assert_eq!(e.key(), Some("model.gpt"));
    let e = spec::parse("[task.markov]\n", Path::new("x.toml"), &[]).unwrap_err();
    assert_eq!(e.key(), Some("task.markov"));
    let e = spec::parse(
        "[task.markov]\n[model.gpt]\nn_head = 3\n",
        Path::new("x.toml"),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("model.gpt.n_head"));
    let e = spec::parse(
        "[task.markov]\n[model.gpt]\nnorm = \"batchnorm\"\n",
        Path::new("x.toml"),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("model.gpt.norm"));
    let e = spec::parse(
        "[task.markov]\n[model.gpt]\nheads = 3\n",
        Path::new("x.toml"),
        &[],
    )
    .unwrap_err();
    assert!(e.to_string().contains("heads"), "{e}");
    // The MLP's keys mean nothing to a transformer: refused, naming the key.
    let e = spec::parse(
        "[task.markov]\n[model]\nwidth = 64\n[model.gpt]\n",
        Path::new("x.toml"),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("model.width"), "{e}");
    assert!(e.hints().join(" ").contains("[model.gpt]"), "{e:?}");
    // Even at the MLP's default value: a key written beside [model.gpt] is a mistake.
    let e = spec::parse(
        "[task.markov]\n[model]\nactivation = \"tanh\"\n[model.gpt]\n",
        Path::new("x.toml"),
        &[],
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("model.activation"), "{e}");
    // `dtype` and `norm_eps` of [model] do apply.
    spec::parse(
        "[task.markov]\n[model]\ndtype = \"f64\"\nnorm_eps = 1e-6\n[model.gpt]\n",
        Path::new("x.toml"),
        &[],
    )
    .unwrap();
    // A typo of the section is an unknown key of [model] that suggests it.
    let e = spec::parse("[task.markov]\n[model.gtp]\n", Path::new("x.toml"), &[]).unwrap_err();
    assert!(e.to_string().contains("did you mean `gpt`"), "{e}");
    // MLP specs do not mention the transformer: their run ids are unchanged.
    let mlp = spec::parse("[task.modular]\n", Path::new("x.toml"), &[]).unwrap();
    assert!(!mlp.to_json().contains("gpt"));
    // A GPT spec round-trips through its stored TOML with the same id; the stored [model] holds
    // only what applies to a GPT.
    let g = spec::parse(MARKOV, Path::new("x.toml"), &[]).unwrap();
    let stored = g.to_toml();
    assert!(
        !stored.contains("width") && stored.contains("dtype"),
        "{stored}"
    );
    let again = spec::parse(&stored, Path::new("x.toml"), &[]).unwrap();
    assert_eq!(g.run_id(), again.run_id());
    // The form earlier versions stored (every MLP key at its default beside [model.gpt]) still
    // reads, with the same id.
    let old_form = toml::to_string(&g).unwrap();
    assert!(old_form.contains("width = 256"), "{old_form}");
    let again = spec::parse(&old_form, Path::new("x.toml"), &[]).unwrap();
    assert_eq!(g.run_id(), again.run_id());
}

/// The GPT goes through the same loop as the MLP: it records the sharpness, and
/// `output.save_data` writes its token windows (int64, untrained targets as −100, PyTorch's
/// `ignore_index`).
#[test]
fn gpt_records_sharpness_and_saves_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[task.modular_sequence]
p = 7
[model]
dtype = "f64"
[model.gpt]
n_layer = 1
d_model = 8
n_head = 2
[train]
steps = 4
batch_size = 8
[observe]
sharpness_every = 2
sharpness_iters = 20
[output]
save_data = true
"#;
    let spec = spec::parse(text, Path::new("m.toml"), &[]).unwrap();
    let data = spec.task.generate(0, Path::new(".")).unwrap();
    let mut rows: Vec<MetricRow> = Vec::new();
    train::train(
        &spec,
        &data,
        &mut rows,
        Some(dir.path()),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let sharp: Vec<(u64, f64)> = rows
        .iter()
        .filter(|r| r.name == "sharpness")
        .map(|r| (r.step, r.value))
        .collect();
    assert_eq!(sharp.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 2]);
    assert!(
        sharp.iter().all(|s| s.1.is_finite() && s.1 != 0.0),
        "{sharp:?}"
    );

    let bytes = std::fs::read(dir.path().join("data.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let y = st.tensor("train.y").unwrap();
    assert_eq!(y.dtype(), safetensors::Dtype::I64);
    assert_eq!(y.shape(), [data.n_train(), 3]);
    let ids: Vec<i64> = y
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    // `a b =` → only the answer is trained on.
    for (i, row) in ids.chunks_exact(3).enumerate() {
        assert_eq!(&row[..2], [-100, -100]);
        assert_eq!(row[2] as f64, data.train_y[[i, 2]]);
    }

    // The trained model's attention on the first test window: causal rows summing to 1, and
    // the window's tokens.
    let att = cloudchamber::interop::load_f64(&dir.path().join("attention.safetensors")).unwrap();
    let (shape, p) = &att["layer.0"];
    assert_eq!(shape, &[2, 3, 3]);
    for row in p.chunks_exact(3).enumerate().map(|(r, v)| (r % 3, v)) {
        let (i, v) = row;
        assert!((v[..=i].iter().sum::<f64>() - 1.0).abs() < 1e-12, "{v:?}");
        assert!(v[i + 1..].iter().all(|&a| a == 0.0), "{v:?}");
    }
    let (_, tokens) = &att["tokens"];
    let first: Vec<f64> = data.test_x.row(0).iter().copied().collect();
    assert_eq!(tokens, &first);
}
