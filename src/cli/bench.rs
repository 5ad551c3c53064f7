//! `cloudchamber bench`: the reference MLP step against the GEMM ceiling, as ratios.

use cloudchamber::bench;
use cloudchamber::spec::Dtype;
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Timed steps (after the warm-up).
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DtypeArg,
    /// Instead: tiny MLPs (8 → w → w → 1, batch 64, Adam) trained 16 at a time in lockstep lanes
    /// against one at a time, per model-step, over hidden widths from 2 to 256: where lanes
    /// gain, and the crossover `sweep` uses.
    #[arg(long)]
    lanes: bool,
    /// Worker threads for `--tiny` (default: the number of cores).
    #[arg(long, value_parser = super::positive)]
    workers: Option<usize>,
    /// Instead: the reference tiny GPT of `torch_bench.py gpt` (f32, AdamW).
    #[arg(long)]
    gpt: bool,
    /// GEMM threads for `--gpt`.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Instead: the tiny-run sweep of the peers' `tiny-sweep.toml` (64 seeds of a width-16,
    /// depth-2 MLP, 2,000 Adam steps each) as `cloudchamber sweep` runs it on `--workers`
    /// workers, timed end to end (process start, data, training, store) on a fresh store.
    #[arg(long, conflicts_with_all = ["gpt", "lanes", "steps", "warmup", "dtype", "threads"])]
    tiny: bool,
    /// Instead: samples per second of EDM's Heun sampler (18 steps) with two reference
    /// denoisers (the 2-D toy's and the 1000-dimensional mixture's networks), on 1 and 2 GEMM
    /// threads, beside the same network and sampler in PyTorch (`benches/peers/torch_heun.py`,
    /// run by `--peer-python` or $CLOUDCHAMBER_TORCH_PYTHON when given).
    #[arg(long, conflicts_with_all = ["gpt", "lanes", "steps", "warmup", "dtype", "threads", "tiny"])]
    sampler: bool,
    /// Instead: the U-Net's training step (the `unet-shapes` example's network, 16 images of
    /// 64×64, Adam, f32) on 1 and 2 threads, beside PyTorch eager (`benches/peers/torch_unet.py`,
    /// run by `--peer-python` or $CLOUDCHAMBER_TORCH_PYTHON when given) on the same weights and
    /// batch.
    #[arg(long, conflicts_with_all = ["gpt", "lanes", "dtype", "tiny", "sampler"])]
    unet: bool,
    /// A Python with torch, numpy and safetensors, for the PyTorch side of `--sampler` and
    /// `--unet`.
    #[arg(long, value_name = "PYTHON")]
    peer_python: Option<std::path::PathBuf>,
    /// Timed repeats of `--tiny` and `--sampler`.
    #[arg(long, default_value_t = 3, value_parser = super::positive)]
    repeat: usize,
}

/// `shared/bench/peers/tiny-sweep.toml` as the peers run it (`tiny_jax.py` trains the same 64
/// models under `jax.vmap`).
const TINY_SWEEP: &str = r#"# W7: many tiny runs. 64 seeds of a width-16 MLP, 2000 Adam steps each.
seed = 0
[task.teacher_student]
input_dim = 8
n_train = 1024
[model]
width = 16
depth = 2
activation = "tanh"
[optim]
optimizer = "adam"
lr = 3e-3
[train]
steps = 2000
batch_size = 64
[observe]
log_every = 100
[sweep]
name = "tiny"
seeds = 64
"#;

/// Model-steps of [`TINY_SWEEP`]: 64 runs × 2,000 steps.
const TINY_MODEL_STEPS: f64 = 64.0 * 2000.0;

/// Runs [`TINY_SWEEP`] `repeat` times with `cloudchamber sweep --workers W` (this binary), each
/// on a fresh store in a scratch folder; prints every wall time and the median.
fn tiny(workers: usize, repeat: usize) -> Result<(), Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Io {
        path: "the cloudchamber binary".into(),
        source: e,
    })?;
    println!(
        "tiny-run sweep: 64 seeds × 2,000 Adam steps of a width-16, depth-2 tanh MLP (433 parameters, batch 64), `cloudchamber sweep --workers {workers}`, end to end"
    );
    let mut walls = Vec::with_capacity(repeat);
    for r in 0..repeat {
        let dir = std::env::temp_dir().join(format!(
            "cloudchamber-bench-tiny-{}-{r}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(Error::io(dir.clone()))?;
        let file = dir.join("tiny-sweep.toml");
        std::fs::write(&file, TINY_SWEEP).map_err(Error::io(file.clone()))?;
        let start = std::time::Instant::now();
        let out = std::process::Command::new(&exe)
            .arg("--store")
            .arg(dir.join("tiny.db"))
            .arg("sweep")
            .arg(&file)
            .arg("--workers")
            .arg(workers.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(Error::io(exe.clone()))?;
        let wall = start.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&dir);
        if !out.status.success() {
            return Err(Error::Invalid {
                what: "bench --tiny".into(),
                message: format!(
                    "the sweep failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                hint: "run `cloudchamber sweep` on the peers' tiny-sweep.toml to see why".into(),
            });
        }
        println!("  repeat {}: {wall:>7.3} s", r + 1);
        walls.push(wall);
    }
    walls.sort_by(f64::total_cmp);
    let median = walls[walls.len() / 2];
    println!("  median        {median:>7.3} s  (of {repeat})");
    println!(
        "  per model-step {:>6.2} µs of wall time ({:.2} µs of one worker's)",
        1e6 * median / TINY_MODEL_STEPS,
        1e6 * median * workers as f64 / TINY_MODEL_STEPS
    );
    Ok(())
}

/// The peer script, shipped in the crate (so `bench` finds it from any folder).
const TORCH_HEUN: &str = include_str!("../../benches/peers/torch_heun.py");

/// `--sampler`: our Heun sampler on each preset at 1 and 2 threads, then the PyTorch peer on the
/// same weights and prior draws when a Python with torch is named.
fn sampler(repeat: usize, peer: Option<std::path::PathBuf>) -> Result<(), Error> {
    use cloudchamber::bench_sampler::{run, PRESETS};
    let peer = peer.or_else(|| std::env::var_os("CLOUDCHAMBER_TORCH_PYTHON").map(Into::into));
    let dir =
        std::env::temp_dir().join(format!("cloudchamber-bench-sampler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(dir.clone()))?;
    let script = dir.join("torch_heun.py");
    std::fs::write(&script, TORCH_HEUN).map_err(Error::io(script.clone()))?;
    println!("EDM Heun sampler, 18 steps (35 denoiser calls), f32 network, median of {repeat}");
    for p in &PRESETS {
        let file = dir.join(format!("{}.safetensors", p.dim));
        for threads in [1, 2] {
            let r = run(p, threads, repeat, (threads == 1).then_some(file.as_path()))?;
            println!(
                "  {:<18} {} samples, {} params, {threads} thread(s): cloudchamber {:>10.0} samples/s ({:.3} s)",
                p.name, p.samples, r.n_params, r.samples_per_s, r.seconds
            );
            let Some(py) = &peer else { continue };
            let w = (p.width.to_string(), p.depth.to_string());
            let (t, r2) = (threads.to_string(), repeat.to_string());
            let args = [
                file.as_os_str(),
                "--width".as_ref(),
                w.0.as_ref(),
                "--depth".as_ref(),
                w.1.as_ref(),
                "--threads".as_ref(),
                t.as_ref(),
                "--repeat".as_ref(),
                r2.as_ref(),
            ];
            // The peer prints `samples_per_s=<v> max_abs_diff=<v>`.
            let peer_out = run_peer(py, &script, &args, "bench --sampler")?;
            let field = |k: &str| peer_out.field(k);
            let text = &peer_out.text;
            match (field("samples_per_s="), field("max_abs_diff=")) {
                (Some(sps), Some(diff)) => println!(
                    "  {:<18} {} samples, {threads} thread(s): PyTorch eager  {:>10.0} samples/s — ratio {:.2}× (samples differ by ≤ {diff:.1e})",
                    "", p.samples, sps, r.samples_per_s / sps
                ),
                _ => println!("  PyTorch peer printed: {}", text.trim()),
            }
        }
    }
    if peer.is_none() {
        println!("  (PyTorch peer not run: pass --peer-python or set CLOUDCHAMBER_TORCH_PYTHON)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

const TORCH_UNET: &str = include_str!("../../benches/peers/torch_unet.py");

/// Runs a PyTorch peer script with `args`; returns a reader of the `key=value` fields it
/// printed (an error naming `what` if it failed).
fn run_peer(
    py: &std::path::Path,
    script: &std::path::Path,
    args: &[&std::ffi::OsStr],
    what: &str,
) -> Result<PeerOutput, Error> {
    let out = std::process::Command::new(py)
        .arg(script)
        .args(args)
        .output()
        .map_err(Error::io(py.to_path_buf()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(Error::Invalid {
            what: what.into(),
            message: format!(
                "the PyTorch peer failed ({}): {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            hint: "--peer-python needs torch, numpy and safetensors".into(),
        });
    }
    Ok(PeerOutput { text })
}

/// What a peer printed.
struct PeerOutput {
    text: String,
}

impl PeerOutput {
    /// The number after `key` (e.g. `step_ms_median=`).
    fn field(&self, key: &str) -> Option<f64> {
        self.text
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<f64>().ok())
    }
}

/// `--unet`: our U-Net step at 1 and 2 threads, then PyTorch eager's on the same weights and
/// batch.
fn unet(warmup: usize, steps: usize, peer: Option<std::path::PathBuf>) -> Result<(), Error> {
    use cloudchamber::bench_unet::{run, BATCH, SIZE};
    let peer = peer.or_else(|| std::env::var_os("CLOUDCHAMBER_TORCH_PYTHON").map(Into::into));
    let dir = std::env::temp_dir().join(format!("cloudchamber-bench-unet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(dir.clone()))?;
    let script = dir.join("torch_unet.py");
    std::fs::write(&script, TORCH_UNET).map_err(Error::io(script.clone()))?;
    let file = dir.join("unet.safetensors");
    println!("cpu: {}", cloudchamber::os::cpu_description());
    println!("GEMM kernel: {}", cloudchamber::engine::gemm_kernel(true));
    println!("conv kernel: {}", cloudchamber::engine::direct::describe());
    println!(
        "U-Net training step: depth 2, 16→32→64 channels, batchnorm, relu, transposed up-convolutions, bce_dice, {BATCH} images of 1×{SIZE}×{SIZE}, Adam, f32; {steps} timed steps after {warmup}"
    );
    for threads in [1, 2] {
        let r = run(
            threads,
            warmup,
            steps,
            (threads == 1).then_some(file.as_path()),
        )?;
        println!(
            "  {threads} thread(s): cloudchamber  median {:>7.1} ms (min {:.1}, max {:.1}), {} params, loss {:.4} → {:.4}",
            r.median_ms, r.min_ms, r.max_ms, r.n_params, r.loss_first, r.loss_last
        );
        let Some(py) = &peer else { continue };
        let (t, st, wu) = (threads.to_string(), steps.to_string(), warmup.to_string());
        let args = [
            "--weights".as_ref(),
            file.as_os_str(),
            "--loss".as_ref(),
            "bce_dice".as_ref(),
            "--threads".as_ref(),
            t.as_ref(),
            "--steps".as_ref(),
            st.as_ref(),
            "--warmup".as_ref(),
            wu.as_ref(),
        ];
        let peer_out = run_peer(py, &script, &args, "bench --unet")?;
        let field = |k: &str| peer_out.field(k);
        let text = &peer_out.text;
        match (field("step_ms_median="), field("loss_first="), field("loss_last=")) {
            (Some(ms), Some(l0), Some(l1)) => println!(
                "  {threads} thread(s): PyTorch eager median {ms:>7.1} ms, loss {l0:.4} → {l1:.4} — cloudchamber is {:.2}× its speed",
                ms / r.median_ms
            ),
            _ => println!("  PyTorch peer printed: {}", text.trim()),
        }
    }
    if peer.is_none() {
        println!("  (PyTorch peer not run: pass --peer-python or set CLOUDCHAMBER_TORCH_PYTHON)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DtypeArg {
    F32,
    F64,
}

pub fn run(a: Args) -> Result<(), Error> {
    if a.steps == 0 {
        return Err(Error::Invalid {
            what: "--steps".into(),
            message: "must be ≥ 1".into(),
            hint: "the default is 200".into(),
        });
    }
    // Figures from different machines compare only with the machine beside them.
    println!("cpu: {}", cloudchamber::os::cpu_description());
    println!(
        "gemm: {}",
        cloudchamber::engine::gemm_kernel(!matches!(a.dtype, DtypeArg::F64) || a.gpt || a.lanes)
    );
    if a.gpt {
        println!(
            "attention: {}",
            cloudchamber::engine::attend::describe(cloudchamber::bench_gpt::head_width())
        );
    }
    // `--workers`, or one per core.
    let workers = a
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|c| c.get())
                .unwrap_or(1)
        })
        .max(1);
    if a.tiny {
        return tiny(workers, a.repeat);
    }
    if a.sampler {
        return sampler(a.repeat, a.peer_python);
    }
    if a.unet {
        return unet(a.warmup.min(5), a.steps.min(30), a.peer_python);
    }
    if a.gpt {
        let r = cloudchamber::bench_gpt::reference_gpt(a.warmup, a.steps, a.threads.max(1));
        println!(
            "reference tiny GPT: 2 layers, d_model 128, 4 heads, context 64, vocab 65, batch 32, AdamW, f32, {} thread(s), {} parameters",
            r.threads, r.n_params
        );
        print_step(
            r.step_ms,
            r.steps,
            a.warmup,
            [r.forward_ms, r.backward_ms, r.optim_ms],
        );
        println!("  loss {:.4} -> {:.4}", r.first_loss, r.last_loss);
        let threads = a.threads.max(1);
        let times = cloudchamber::bench_gpt::attention_alone(50, threads);
        println!(
            "one layer's attention alone (B 32, T 64, 4 heads of 32), {threads} thread(s), best of 50 interleaved:"
        );
        for t in &times {
            println!(
                "  {:<6} forward {:>7.3} ms   backward {:>7.3} ms",
                format!("{:?}", t.kernel).to_lowercase(),
                t.forward_ms,
                t.backward_ms
            );
        }
        if let [f, g] = &times[..] {
            println!(
                "  fused over GEMM path: forward {:.2}×, backward {:.2}×, both {:.2}×",
                g.forward_ms / f.forward_ms,
                g.backward_ms / f.backward_ms,
                (g.forward_ms + g.backward_ms) / (f.forward_ms + f.backward_ms)
            );
        }
        return Ok(());
    }
    if a.lanes {
        let widths = [2, 4, 8, 16, 32, 64, 128, 256];
        let steps = a.steps.max(160);
        let rows = bench::lanes(&widths, steps, a.repeat.max(3));
        println!(
            "tiny MLPs 8→w→w→1 tanh, batch 64, Adam, f32, 1 thread: µs per model-step, 16 models in lockstep lanes vs one at a time (medians of {} interleaved timings of {steps} steps)",
            a.repeat.max(3)
        );
        println!(
            "  {:>5}  {:>7}  {:>9}  {:>9}  {:>6}",
            "width", "params", "alone", "lanes", "gain"
        );
        for r in &rows {
            println!(
                "  {:>5}  {:>7}  {:>9.2}  {:>9.2}  {:>5.2}×",
                r.width,
                r.n_params,
                r.alone_us,
                r.lanes_us,
                r.alone_us / r.lanes_us
            );
        }
        println!(
            "  a group of K runs costs about 16 models in lanes, so it gains when K > 16 · lanes/alone;"
        );
        println!(
            "  `sweep` groups by the ratios measured on the development machines (sweep::exec::LANES_OVER_ALONE, and LANES_OVER_ALONE_AVX2 where the kernels are AVX2)"
        );
        return Ok(());
    }
    let dtype = match a.dtype {
        DtypeArg::F32 => Dtype::F32,
        DtypeArg::F64 => Dtype::F64,
    };
    let r = match dtype {
        Dtype::F32 => bench::reference_mlp::<f32>(a.warmup, a.steps),
        Dtype::F64 => bench::reference_mlp::<f64>(a.warmup, a.steps),
    };
    let name = match dtype {
        Dtype::F32 => "f32",
        Dtype::F64 => "f64",
    };
    println!("reference MLP 64→256→256→256→1 tanh, batch 128, Adam lr 1e-3, {name}, 1 thread");
    print_step(
        r.step_ms,
        r.steps,
        a.warmup,
        [r.forward_ms, r.backward_ms, r.optim_ms],
    );
    println!(
        "  its 11 GEMMs alone  {:>8.3} ms  (the ceiling, same shapes, same process)",
        r.gemm_ms
    );
    println!("    forward GEMMs     {:>8.3} ms", r.gemm_forward_ms);
    println!(
        "    backward GEMMs    {:>8.3} ms",
        r.gemm_ms - r.gemm_forward_ms
    );
    println!("  share of ceiling    {:>8.1} %", 100.0 * r.ceiling_share());
    println!("  loss {:.5} -> {:.5}", r.first_loss, r.last_loss);
    Ok(())
}

/// A training step's median time and its forward + loss, backward and optimizer parts (ms).
fn print_step(step_ms: f64, steps: usize, warmup: usize, [forward, backward, optim]: [f64; 3]) {
    println!("  training step       {step_ms:>8.3} ms  (median of {steps} after {warmup} warm-up)");
    println!("    forward + loss    {forward:>8.3} ms");
    println!("    backward          {backward:>8.3} ms");
    println!("    optimizer         {optim:>8.3} ms");
}
