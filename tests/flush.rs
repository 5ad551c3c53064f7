//! When a run's rows reach its sink: a run writes its logged rows at most every 0.5 s while it
//! trains (`train::run::FLUSH_EVERY`), and always everything before a checkpoint and at the end,
//! so a fast run makes one write per checkpoint plus one, and its rows are those a sink taking
//! every write in order would hold.

use std::path::Path;

use cloudchamber::spec;
use cloudchamber::store::MetricRow;
use cloudchamber::train::{self, MetricSink};

/// Every write, as it came.
#[derive(Default)]
struct Writes(Vec<Vec<MetricRow>>);

impl MetricSink for Writes {
    fn write(&mut self, rows: &[MetricRow]) -> Result<(), cloudchamber::error::Error> {
        self.0.push(rows.to_vec());
        Ok(())
    }
}

const SPEC: &str = r#"
seed = 3
[task.teacher_student]
input_dim = 4
n_train = 256
n_test = 256
[model]
width = 8
depth = 2
[train]
steps = 400
batch_size = 32
checkpoint_every = 100
[observe]
log_every = 10
"#;

#[test]
fn a_fast_run_writes_once_per_checkpoint_and_at_the_end() {
    let spec = spec::parse(SPEC, Path::new("t.toml"), &[]).unwrap();
    let data = spec.task.generate(spec.seed, Path::new(".")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut writes = Writes::default();
    let t0 = std::time::Instant::now();
    train::train(
        &spec,
        &data,
        &mut writes,
        Some(dir.path()),
        false,
        &mut |_, _| {},
    )
    .unwrap();
    let took = t0.elapsed();
    // Whatever the timing, the rows are all there, in order: those of a sink that keeps every
    // write.
    let mut whole = Vec::new();
    train::train(&spec, &data, &mut whole, None, false, &mut |_, _| {}).unwrap();
    let got: Vec<MetricRow> = writes.0.concat();
    let key = |r: &MetricRow| (r.step, r.layer, r.name.clone(), r.value.to_bits());
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        whole.iter().map(key).collect::<Vec<_>>()
    );
    // How many writes depends on time: on a machine too slow to train this in 0.5 s, say so
    // and stop here.
    if took.as_secs_f64() > 0.5 {
        eprintln!("write count not checked: the run took {took:?}, over FLUSH_EVERY");
        return;
    }
    // Checkpoints after steps 100, 200 and 300 (none at the end), then the end.
    assert_eq!(
        writes.0.len(),
        4,
        "writes of {:?} rows",
        writes.0.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // Each checkpoint's write holds every logged step before it.
    for (w, ckpt) in writes.0.iter().zip([100u64, 200, 300]) {
        let last = w.iter().map(|r| r.step).max().unwrap();
        assert!(
            last < ckpt && last + 10 >= ckpt,
            "write before checkpoint {ckpt} ends at step {last}"
        );
    }
}
