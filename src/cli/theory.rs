//! `cloudchamber theory` and `cloudchamber calibrate`: mean-field predictions and
//! self-normalizing constants, printed (see `cloudchamber::theory`).

use cloudchamber::nn::activation::Activation;
use cloudchamber::theory::calibrate;
use cloudchamber::theory::meanfield::{self, MeanField, Phi};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base activation f of φ(x) = a·f(x − b) + c.
    #[arg(long, default_value = "tanh")]
    activation: String,
    #[command(flatten)]
    phi: PhiArgs,
    /// σ_w²: a number, or START:STOP:COUNT (evenly spaced, both ends included) with
    /// --phase-diagram.
    #[arg(long = "sigma-w2", default_value = "1.0", allow_hyphen_values = true)]
    sigma_w2: String,
    /// σ_b²: a number, or START:STOP:COUNT with --phase-diagram.
    #[arg(long = "sigma-b2", default_value = "0.0", allow_hyphen_values = true)]
    sigma_b2: String,
    /// Layers of the printed q^l sequence.
    #[arg(long, default_value_t = 30)]
    depth: usize,
    /// q^0 of the printed sequence.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    q0: f64,
    /// Print χ₁ and the phase over the σ_w² × σ_b² grid instead.
    #[arg(long)]
    phase_diagram: bool,
    /// With --phase-diagram: one tab-separated row per grid point (for scripts) instead of
    /// the grid.
    #[arg(long, requires = "phase_diagram")]
    list: bool,
}

/// `--a --b --c` of the biased form φ(x) = a·f(x − b) + c, as `model.act` writes it (shared by
/// `theory` and `calibrate`).
#[derive(clap::Args, Debug)]
struct PhiArgs {
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    a: f64,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    b: f64,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    c: f64,
}

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// Activation to calibrate (for `elu`, the SELU (α, λ) too).
    activation: String,
    #[command(flatten)]
    phi: PhiArgs,
}

/// An activation of the zoo by name, or `Error::Invalid` listing them.
fn parse_activation(name: &str) -> Result<Activation, Error> {
    Activation::ALL
        .into_iter()
        .find(|a| a.name() == name)
        .ok_or_else(|| Error::Invalid {
            what: "activation".into(),
            message: format!("unknown activation `{name}`"),
            hint: format!("one of: {}", Activation::ALL.map(|a| a.name()).join(", ")),
        })
}

fn invalid(what: &str, message: String) -> Error {
    Error::Invalid {
        what: what.into(),
        message,
        hint: "give a number like 1.5, or START:STOP:COUNT like 0.5:4:8 with --phase-diagram"
            .into(),
    }
}

fn parse_number(what: &str, s: &str) -> Result<f64, Error> {
    s.trim()
        .parse::<f64>()
        .map_err(|_| invalid(what, format!("`{s}` is not a number")))
}

/// `START:STOP:COUNT` → COUNT evenly spaced values (a plain number → one value).
fn parse_range(what: &str, s: &str) -> Result<Vec<f64>, Error> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [v] => Ok(vec![parse_number(what, v)?]),
        [a, b, n] => {
            let (a, b) = (parse_number(what, a)?, parse_number(what, b)?);
            let n: usize = n
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| invalid(what, format!("COUNT `{n}` must be an integer 1–10000")))?;
            if n == 1 {
                return Ok(vec![a]);
            }
            Ok((0..n)
                .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
                .collect())
        }
        _ => Err(invalid(
            what,
            format!("`{s}` is neither a number nor START:STOP:COUNT"),
        )),
    }
}

/// The phase diagram as a grid: σ_b² down, σ_w² across, each cell χ₁ and its phase
/// (`o` ordered, `=` critical, `x` chaotic), then the critical σ_w² of each row.
fn print_grid(phi: Phi, w2s: &[f64], b2s: &[f64], rows: &[meanfield::PhaseRow]) {
    let mark = |p: meanfield::Phase| match p {
        meanfield::Phase::Ordered => 'o',
        meanfield::Phase::Critical => '=',
        meanfield::Phase::Chaotic => 'x',
    };
    println!(
        "chi_1 over sigma_w2 (across) x sigma_b2 (down) for phi(x) = {}*{}(x - {}) + {}; o ordered, = critical, x chaotic",
        phi.a,
        phi.act.name(),
        phi.b,
        phi.c
    );
    let cell = 9;
    let mut head = format!("{:>10}", "b2 \\ w2");
    for w in w2s {
        head += &format!(" {:>cell$}", format!("{w:.4}"));
    }
    println!("{head}  critical w2");
    for b in b2s {
        let mut line = format!("{:>10}", format!("{b:.4}"));
        for w in w2s {
            let r = rows.iter().find(|r| r.sigma_w2 == *w && r.sigma_b2 == *b);
            let text = match r {
                Some(r) if r.chi1.is_finite() => format!("{:.3}{}", r.chi1, mark(r.phase)),
                Some(r) => format!("{}{}", fmt(r.chi1), mark(r.phase)),
                None => "-".into(),
            };
            line += &format!(" {text:>cell$}");
        }
        let crit = match meanfield::critical_sigma_w2(phi, *b) {
            Ok(Some(c)) => format!("{c:.4}"),
            _ => "none".into(),
        };
        println!("{line}  {crit:>11}");
    }
}

fn fmt(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if v.is_nan() {
        "nan".into()
    } else {
        format!("{v:.10}")
    }
}

pub fn run(a: Args) -> Result<(), Error> {
    let phi = Phi {
        act: parse_activation(&a.activation)?,
        a: a.phi.a,
        b: a.phi.b,
        c: a.phi.c,
    };
    if a.phase_diagram {
        let w2s = parse_range("--sigma-w2", &a.sigma_w2)?;
        let b2s = parse_range("--sigma-b2", &a.sigma_b2)?;
        let rows = meanfield::phase_diagram(phi, &w2s, &b2s)?;
        if a.list {
            println!("sigma_w2\tsigma_b2\tq_star\tchi1\tphase");
            for r in rows {
                println!(
                    "{:.6}\t{:.6}\t{}\t{}\t{}",
                    r.sigma_w2,
                    r.sigma_b2,
                    fmt(r.q_star),
                    fmt(r.chi1),
                    r.phase.name()
                );
            }
            return Ok(());
        }
        print_grid(phi, &w2s, &b2s, &rows);
        return Ok(());
    }
    let w2 = parse_number("--sigma-w2", &a.sigma_w2)?;
    let b2 = parse_number("--sigma-b2", &a.sigma_b2)?;
    if !(a.q0.is_finite() && a.q0 >= 0.0) {
        return Err(Error::Invalid {
            what: "--q0".into(),
            message: format!("must be a finite number ≥ 0, got {}", a.q0),
            hint: "q⁰ is a second moment; the default is 1".into(),
        });
    }
    let m = MeanField::new(phi, w2, b2)?;
    let an = m.analyze();
    let crit = meanfield::critical_sigma_w2(phi, b2)?;
    println!(
        "phi(x) = {}*{}(x - {}) + {}   sigma_w2 = {w2}   sigma_b2 = {b2}",
        phi.a,
        phi.act.name(),
        phi.b,
        phi.c
    );
    // Where the length map is the identity around q⁰ (relu at σ_w² = 2, σ_b² = 0), every q is
    // a fixed point: q* is the q the map keeps, q⁰, not the degenerate 0.
    let keeps = (an.q_slope - 1.0).abs() <= 1e-9
        && (m.length_map(a.q0) - a.q0).abs() <= 1e-12 * a.q0.max(1.0);
    if keeps {
        println!(
            "q*                {}  (every q is a fixed point: the length map keeps q0)",
            fmt(a.q0)
        );
    } else {
        println!("q*                {}", fmt(an.q_star));
    }
    println!("c*                {}", fmt(an.c_star));
    println!("chi_1             {}", fmt(an.chi1));
    println!("chi_c             {}", fmt(an.chi_c));
    println!("length-map slope  {}", fmt(an.q_slope));
    // A depth scale at criticality is infinite, and printed so (`depth_scale`'s tolerance).
    println!("xi_q              {}", fmt(an.xi_q));
    println!("xi_c              {}", fmt(an.xi_c));
    println!("xi_grad           {}", fmt(an.xi_grad));
    println!("phase             {}", an.phase.name());
    match crit {
        Some(c) => println!("critical sigma_w2 {} (at sigma_b2 = {b2})", fmt(c)),
        None => println!("critical sigma_w2 none in [1e-3, 1e3] (at sigma_b2 = {b2})"),
    }
    println!("layer\tq");
    for (l, q) in m.q_sequence(a.q0, a.depth).iter().enumerate() {
        println!("{l}\t{}", fmt(*q));
    }
    Ok(())
}

/// The Gaussian integrals are good to about 1e-13 (see `theory::gauss`): a mean below that
/// is zero (tanh's is exactly 0 by symmetry; the rule gives −1e-16).
const QUADRATURE_TOL: f64 = 1e-13;

pub fn calibrate(a: CalibrateArgs) -> Result<(), Error> {
    let act = parse_activation(&a.activation)?;
    let phi = Phi {
        act,
        a: a.phi.a,
        b: a.phi.b,
        c: a.phi.c,
    };
    let plain = phi == Phi::plain(act);
    let c = calibrate::self_normalize(phi)?;
    let f = if plain {
        format!("{}(x)", act.name())
    } else {
        format!("{}*{}(x - {}) + {}", phi.a, act.name(), phi.b, phi.c)
    };
    println!("phi(x) = {f}: g(x) = lambda*(phi(x) - mu) has mean 0, variance 1 under N(0,1)");
    let mean = if c.mean.abs() < QUADRATURE_TOL {
        0.0
    } else {
        c.mean
    };
    println!("mu       {mean:.16}");
    println!("lambda   {:.16}", c.lambda);
    println!("gamma    {:.16}  (NF-Net gain 1/std phi(z))", c.gamma);
    if act == Activation::Elu && plain {
        let (al, la) = calibrate::selu_alpha_lambda(calibrate::elu_constants_closed())?;
        println!("SELU: lambda*elu_alpha(z) has mean 0, second moment 1");
        println!("alpha    {al:.16}");
        println!("lambda   {la:.16}");
    }
    Ok(())
}

/// `cloudchamber baselines`: the in-context algorithms on one function class.
#[derive(clap::Args, Debug)]
pub struct BaselinesArgs {
    /// linear, sparse_linear, noisy_linear, relu2 or tree (Garg et al. 2022).
    #[arg(long, default_value = "linear")]
    class: String,
    /// Input dimension d.
    #[arg(long, default_value_t = 8)]
    d: usize,
    /// Largest number of in-context examples.
    #[arg(long, default_value_t = 16)]
    k_max: usize,
    /// Prompts per k (the same prompts for every baseline).
    #[arg(long, default_value_t = 1000)]
    prompts: usize,
    /// sparse_linear: nonzero coordinates.
    #[arg(long, default_value_t = 3)]
    s: usize,
    /// noisy_linear: noise standard deviation.
    #[arg(long, default_value_t = 0.5)]
    sigma: f64,
    /// relu2: hidden units.
    #[arg(long, default_value_t = 100)]
    hidden: usize,
    /// tree: depth.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Choose each prompt's examples as the query's nearest neighbours among this many draws
    /// (retrieval) instead of at random.
    #[arg(long)]
    retrieve_from: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn baselines(a: BaselinesArgs) -> Result<(), Error> {
    use cloudchamber::theory::icl::{curves, Baseline, Exemplars, FunctionClass};
    let class = match a.class.as_str() {
        "linear" => FunctionClass::Linear,
        "sparse_linear" => FunctionClass::SparseLinear { s: a.s },
        "noisy_linear" => FunctionClass::NoisyLinear { sigma: a.sigma },
        "relu2" => FunctionClass::Relu2 { hidden: a.hidden },
        "tree" => FunctionClass::Tree { depth: a.depth },
        other => {
            return Err(Error::Invalid {
                what: format!("--class {}", cloudchamber::spec::clip(other)),
                message: "unknown function class".into(),
                hint: "one of: linear, sparse_linear, noisy_linear, relu2, tree".into(),
            })
        }
    };
    if a.d == 0 || a.prompts == 0 || a.s == 0 || a.depth > 16 {
        return Err(Error::Invalid {
            what: "baselines".into(),
            message: "--d, --prompts and --s must be at least 1, --depth at most 16".into(),
            hint: "e.g. --d 8 --prompts 1000".into(),
        });
    }
    let how = match a.retrieve_from {
        Some(pool) => Exemplars::Nearest { pool },
        None => Exemplars::Random,
    };
    let mut list = vec![
        Baseline::LeastSquares,
        Baseline::Averaging,
        Baseline::NearestNeighbours { n: 3 },
        Baseline::Lasso { alpha: 0.01 },
    ];
    if let FunctionClass::NoisyLinear { sigma } = class {
        list.push(Baseline::BayesRidge { sigma });
    }
    let c = curves(class, a.d, a.k_max, a.prompts, how, &list, a.seed);
    println!(
        "# normalized squared error (÷ E f(x)²: d, the sparsity, or 1 for trees) over {} prompts per k, mean [95% bootstrap interval]; class {}, d = {}, exemplars {}",
        a.prompts,
        a.class,
        a.d,
        match how {
            Exemplars::Random => "random".to_string(),
            Exemplars::Nearest { pool } => format!("nearest of {pool}"),
        }
    );
    println!("k\tbaseline\tmean\tlo\thi");
    for k in 0..=a.k_max {
        for (b, curve) in list.iter().zip(&c) {
            let p = &curve[k];
            println!("{k}\t{}\t{:.6}\t{:.6}\t{:.6}", b.name(), p.mean, p.lo, p.hi);
        }
    }
    Ok(())
}
