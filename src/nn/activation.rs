//! The activation zoo and the general biased form `y = a·f(x − b) + c`.
//!
//! Every activation gives its value and derivative in one call (`value_and_slope`), so a fused
//! forward pass stores `d = a·f′(x − b)` and the backward pass is a multiply. The per-activation
//! code is monomorphized (one `match` outside the loop), so the inner loops auto-vectorize; for
//! `f32` the transcendental functions are the approximations of `engine::fastmath`.

use serde::{Deserialize, Serialize};

use crate::engine::Float;

/// SELU constants (Klambauer et al. 2017, "Self-Normalizing Neural Networks"; `torch.nn.SELU`).
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_2;
pub const SELU_LAMBDA: f64 = 1.050_700_987_355_480_4;
/// `torch.nn.LeakyReLU` default negative slope.
pub const LEAKY_SLOPE: f64 = 0.01;
/// `torch.nn.ELU` default alpha.
pub const ELU_ALPHA: f64 = 1.0;

/// Base activation `f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Identity,
    Relu,
    /// `torch.nn.LeakyReLU(0.01)`.
    LeakyRelu,
    /// `torch.nn.ELU(alpha=1)`.
    Elu,
    Selu,
    /// `x·Φ(x)`, `torch.nn.GELU()` (erf form).
    Gelu,
    /// `torch.nn.GELU(approximate="tanh")`.
    GeluTanh,
    /// `x·σ(x)`, `torch.nn.SiLU`.
    Silu,
    Tanh,
    Sigmoid,
    /// `ln(1 + eˣ)`, `torch.nn.Softplus()` (beta 1; exact beyond its threshold too).
    Softplus,
}

impl Activation {
    pub const ALL: [Activation; 11] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Selu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Softplus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu => "leaky_relu",
            Activation::Elu => "elu",
            Activation::Selu => "selu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Silu => "silu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Softplus => "softplus",
        }
    }

    /// `(f(x), f′(x))`. At kinks the derivative follows PyTorch (relu′(0) = 0).
    #[inline(always)]
    pub fn value_and_slope<F: Float>(self, x: F) -> (F, F) {
        let zero = F::zero();
        let one = F::one();
        let half = F::of(0.5);
        match self {
            Activation::Identity => (x, one),
            Activation::Relu => {
                let pos = x > zero;
                (if pos { x } else { zero }, if pos { one } else { zero })
            }
            Activation::LeakyRelu => {
                let s = F::of(LEAKY_SLOPE);
                let pos = x > zero;
                (if pos { x } else { s * x }, if pos { one } else { s })
            }
            Activation::Elu => {
                let alpha = F::of(ELU_ALPHA);
                // min(x, 0) keeps exp from overflowing on the branch that is discarded.
                let e = x.min(zero).exp_();
                let pos = x > zero;
                (
                    if pos { x } else { alpha * (e - one) },
                    if pos { one } else { alpha * e },
                )
            }
            Activation::Selu => {
                let (l, a) = (F::of(SELU_LAMBDA), F::of(SELU_ALPHA));
                let e = x.min(zero).exp_();
                let pos = x > zero;
                (
                    l * if pos { x } else { a * (e - one) },
                    l * if pos { one } else { a * e },
                )
            }
            // f32: fused multiply-adds throughout (`fastmath::gelu_f32`), as its vector pass.
            Activation::Gelu => x.gelu_(),
            Activation::GeluTanh => {
                let k = F::of(0.797_884_560_802_865_4); // sqrt(2/pi)
                let c = F::of(0.044_715);
                let inner = k * (x + c * x * x * x);
                let t = inner.tanh_();
                let dinner = k * (one + F::of(3.0) * c * x * x);
                (
                    half * x * (one + t),
                    half * (one + t) + half * x * (one - t * t) * dinner,
                )
            }
            Activation::Silu => {
                let s = one / (one + (-x).exp_());
                (x * s, s * (one + x * (one - s)))
            }
            Activation::Tanh => {
                let t = x.tanh_();
                (t, one - t * t)
            }
            Activation::Sigmoid => {
                let s = one / (one + (-x).exp_());
                (s, s * (one - s))
            }
            Activation::Softplus => {
                let s = one / (one + (-x).exp_());
                (x.softplus_(), s)
            }
        }
    }

    /// `f(x)` in f64 (theory, teachers, tests).
    pub fn eval(self, x: f64) -> f64 {
        self.value_and_slope(x).0
    }

    /// [`Activation::eval`] of every element of `z`, in place (the same bits): tanh eight at
    /// a time where the CPU allows ([`crate::engine::tanh64::tanh_in_place`]).
    pub fn eval_in_place(self, z: &mut ndarray::Array2<f64>) {
        match (self, z.as_slice_memory_order_mut()) {
            (Activation::Tanh, Some(s)) => crate::engine::tanh64::tanh_in_place(s),
            _ => z.mapv_inplace(|v| self.eval(v)),
        }
    }

    /// `f′(x)` in f64.
    pub fn slope(self, x: f64) -> f64 {
        self.value_and_slope(x).1
    }

    /// Whether `f(x)` counts as "dead" (relu family: output ≤ 0 where the slope vanishes) or
    /// "saturated" (bounded family: |f| within 1% of its bound). `None` for activations with
    /// neither notion.
    pub fn inactive_kind(self) -> Option<InactiveKind> {
        match self {
            Activation::Relu | Activation::LeakyRelu | Activation::Elu | Activation::Selu => {
                Some(InactiveKind::Dead)
            }
            Activation::Gelu | Activation::GeluTanh | Activation::Silu => Some(InactiveKind::Dead),
            // softplus is positive everywhere: neither dead nor saturated.
            Activation::Softplus => None,
            Activation::Tanh | Activation::Sigmoid => Some(InactiveKind::Saturated),
            Activation::Identity => None,
        }
    }

    /// A bound on `|x|` below which `f(x)` is surely active, so that counting inactive units
    /// need not evaluate `f` there (libm's `tanh` per unit was most of the `frac_saturated`
    /// observable's time): `tanh(2.6) = 0.98903 < 0.99`, `σ(±4.5) = 0.98901, 0.01099`, each far
    /// inside the thresholds of [`Self::is_inactive`]; 0 where there is no such bound.
    pub fn surely_active_below(self) -> f64 {
        match self {
            Activation::Tanh => 2.6,
            Activation::Sigmoid => 4.5,
            _ => 0.0,
        }
    }

    /// Whether the unbiased value `f(x)` is inactive in the sense of [`Self::inactive_kind`].
    pub fn is_inactive(self, fx: f64) -> bool {
        match self {
            Activation::Tanh => fx.abs() > 0.99,
            Activation::Sigmoid => !(0.01..=0.99).contains(&fx),
            Activation::Identity | Activation::Softplus => false,
            _ => fx <= 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InactiveKind {
    /// Reported as `frac_dead`.
    Dead,
    /// Reported as `frac_saturated`.
    Saturated,
}

impl InactiveKind {
    pub fn metric_name(self) -> &'static str {
        match self {
            InactiveKind::Dead => "frac_dead",
            InactiveKind::Saturated => "frac_saturated",
        }
    }
    /// The name of the fraction of units inactive on every sample of the batch.
    pub fn units_metric_name(self) -> &'static str {
        match self {
            InactiveKind::Dead => "dead_units",
            InactiveKind::Saturated => "saturated_units",
        }
    }
}

impl Activation {
    /// Whether `f′(x)` is a function of `f(x)` alone (tanh: `1 − f²`, sigmoid: `f(1 − f)`, the
    /// relu family: the sign of `f`). For these the plain forward pass stores no slope buffer
    /// and the backward pass derives it from the output: one memory pass fewer per layer.
    pub fn slope_from_output(self) -> bool {
        matches!(
            self,
            Activation::Identity
                | Activation::Relu
                | Activation::LeakyRelu
                | Activation::Tanh
                | Activation::Sigmoid
        )
    }
}

/// `match act { Activation::X => $run!(Activation::X), … }` over every activation: a loop
/// written once as a local `run!` macro is monomorphized per activation (constants folded, the
/// unused slope dropped, the loop vectorized).
macro_rules! each_activation {
    ($act:expr, $run:ident) => {
        match $act {
            Activation::Identity => $run!(Activation::Identity),
            Activation::Relu => $run!(Activation::Relu),
            Activation::LeakyRelu => $run!(Activation::LeakyRelu),
            Activation::Elu => $run!(Activation::Elu),
            Activation::Selu => $run!(Activation::Selu),
            Activation::Gelu => $run!(Activation::Gelu),
            Activation::GeluTanh => $run!(Activation::GeluTanh),
            Activation::Silu => $run!(Activation::Silu),
            Activation::Tanh => $run!(Activation::Tanh),
            Activation::Sigmoid => $run!(Activation::Sigmoid),
            Activation::Softplus => $run!(Activation::Softplus),
        }
    };
}

pub(crate) use each_activation;

/// `h = f(z)` only, for activations whose slope the backward pass derives from `h`, and for any
/// plain activation in eval mode (no backward pass).
pub fn forward_value_only<F: Float>(act: Activation, z: &[F], h: &mut [F]) {
    macro_rules! run {
        ($a:expr) => {
            for (hv, &zv) in h.iter_mut().zip(z) {
                *hv = $a.value_and_slope(zv).0;
            }
        };
    }
    match act {
        Activation::Identity => h.copy_from_slice(z),
        Activation::Relu => run!(Activation::Relu),
        Activation::LeakyRelu => run!(Activation::LeakyRelu),
        Activation::Tanh => run!(Activation::Tanh),
        Activation::Sigmoid => run!(Activation::Sigmoid),
        // Eval-mode passes of the others (constants folded per activation, so the unused slope
        // is dropped and the loop vectorizes).
        Activation::Silu => run!(Activation::Silu),
        Activation::Gelu => F::gelu_pass(z, h, &mut []),
        Activation::GeluTanh => run!(Activation::GeluTanh),
        Activation::Elu => run!(Activation::Elu),
        Activation::Selu => run!(Activation::Selu),
        Activation::Softplus => run!(Activation::Softplus),
    }
}

/// `z += bias` (per column) and `h = f(z)` in one pass, for activations whose slope the
/// backward pass derives from `h`, and for any plain activation in eval mode.
pub fn forward_bias_value_only<F: Float>(
    act: Activation,
    width: usize,
    bias: Option<&[F]>,
    z: &mut [F],
    h: &mut [F],
) {
    let Some(b) = bias else {
        return forward_value_only(act, z, h);
    };
    // Large passes go over the pool in row blocks (elementwise: the same values whoever
    // computes them); small ones stay on this thread, where a pool call costs more than it saves.
    let rows = z.len() / width.max(1);
    if z.len() >= PARALLEL_ELEMENTS && crate::engine::ops::threads() > 1 {
        use crate::engine::par;
        par::for_row_blocks(
            rows,
            (par::rows(z, width), par::rows(h, width)),
            |_, _, (z, h)| bias_value_rows(act, width, b, z, h),
        );
        return;
    }
    bias_value_rows(act, width, b, z, h)
}

/// Elements past which an elementwise pass is split over the pool: 2¹⁵ (128 KiB of f32), where
/// the pass takes tens of microseconds against a pool call's few.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// [`forward_bias_value_only`] on this thread.
fn bias_value_rows<F: Float>(act: Activation, width: usize, b: &[F], z: &mut [F], h: &mut [F]) {
    // Zipped iterators, not indices: without bounds checks LLVM vectorizes the row (with
    // indices it kept a scalar loop, 42% of a width-16 MLP's step).
    macro_rules! run {
        ($a:expr) => {
            for (zr, hr) in z.chunks_exact_mut(width).zip(h.chunks_exact_mut(width)) {
                for ((zv, hv), &bv) in zr.iter_mut().zip(hr.iter_mut()).zip(&b[..width]) {
                    let v = *zv + bv;
                    *zv = v;
                    *hv = $a.value_and_slope(v).0;
                }
            }
        };
    }
    each_activation!(act, run)
}

/// `∂L/∂z = ∂L/∂h · f′`, with `f′` derived from the output `h = f(z)`, in place.
pub fn backward_from_output<F: Float>(act: Activation, g: &mut [F], h: &[F]) {
    // One loop per activation, so each folds its `match` and vectorizes.
    macro_rules! run {
        ($a:expr) => {
            for (gv, &hv) in g.iter_mut().zip(h) {
                slope_from_output_one($a, gv, hv);
            }
        };
    }
    match act {
        Activation::Identity => {}
        Activation::Relu => run!(Activation::Relu),
        Activation::LeakyRelu => run!(Activation::LeakyRelu),
        Activation::Tanh => run!(Activation::Tanh),
        Activation::Sigmoid => run!(Activation::Sigmoid),
        other => panic!(
            "backward_from_output: {} needs its stored slope",
            other.name()
        ),
    }
}

/// One element of [`backward_from_output`] (shared with the lockstep lanes, so both compute
/// the same bits).
#[inline(always)]
pub fn slope_from_output_one<F: Float>(act: Activation, g: &mut F, h: F) {
    let (zero, one) = (F::zero(), F::one());
    match act {
        Activation::Relu => *g = if h > zero { *g } else { zero },
        Activation::LeakyRelu => {
            *g = if h > zero {
                *g
            } else {
                *g * F::of(LEAKY_SLOPE)
            }
        }
        Activation::Tanh => *g *= one - h * h,
        Activation::Sigmoid => *g *= h * (one - h),
        // Identity, and (never called) the activations that keep their slope.
        _ => {}
    }
}

/// The plain fused kernel: `h = f(z)`, `d = f′(z)` over a whole buffer.
fn plain_kernel<F: Float>(act: Activation, z: &[F], h: &mut [F], d: &mut [F]) {
    // GELU has a vector kernel of its own (16 lanes on AVX-512; the same bits as the element).
    if act == Activation::Gelu {
        return F::gelu_pass(z, h, d);
    }
    // One monomorphized loop per activation: the `match` in `value_and_slope` is resolved at
    // compile time inside each arm, so every loop is branch-free over `act`.
    macro_rules! run {
        ($a:expr) => {
            for ((hv, dv), &zv) in h.iter_mut().zip(d.iter_mut()).zip(z) {
                let (f, s) = $a.value_and_slope(zv);
                *hv = f;
                *dv = s;
            }
        };
    }
    each_activation!(act, run)
}

/// The biased fused kernel over a `[rows, width]` buffer with per-column `a, b, c`:
/// `h = a·f(z − b) + c`, `d = a·f′(z − b)`, and `fu = f(z − b)` when `fu` is given (needed
/// for the gradient of a learned `a`).
#[allow(clippy::too_many_arguments)]
fn biased_kernel<F: Float>(
    act: Activation,
    width: usize,
    a: &[F],
    b: &[F],
    c: &[F],
    z: &[F],
    h: &mut [F],
    d: &mut [F],
    mut fu: Option<&mut [F]>,
) {
    macro_rules! run {
        ($act:expr) => {
            for (r, (zr, (hr, dr))) in z
                .chunks_exact(width)
                .zip(h.chunks_exact_mut(width).zip(d.chunks_exact_mut(width)))
                .enumerate()
            {
                // Zipped iterators, not indices, so the row vectorizes (as in
                // `forward_bias_value_only`).
                let abc = a[..width].iter().zip(&b[..width]).zip(&c[..width]);
                for (((hv, dv), &zv), ((&aj, &bj), &cj)) in
                    hr.iter_mut().zip(dr.iter_mut()).zip(zr).zip(abc)
                {
                    let (f, s) = $act.value_and_slope(zv - bj);
                    *hv = aj * f + cj;
                    *dv = aj * s;
                }
                if let Some(fu) = fu.as_deref_mut() {
                    let fr = &mut fu[r * width..(r + 1) * width];
                    for ((fv, &zv), &bj) in fr.iter_mut().zip(zr).zip(&b[..width]) {
                        *fv = $act.value_and_slope(zv - bj).0;
                    }
                }
            }
        };
    }
    each_activation!(act, run)
}

/// Per-column parameters of the biased form, already broadcast to the layer width.
pub struct BiasedParams<'a, F> {
    pub a: &'a [F],
    pub b: &'a [F],
    pub c: &'a [F],
}

/// Forward: `h = a·f(z − b) + c` and `d = a·f′(z − b)`; `plain` skips the broadcast when
/// `a = 1, b = 0, c = 0` are fixed (the common case, and the benchmark's).
pub fn forward<F: Float>(
    act: Activation,
    width: usize,
    params: Option<BiasedParams<'_, F>>,
    z: &[F],
    h: &mut [F],
    d: &mut [F],
    fu: Option<&mut [F]>,
) {
    match params {
        None => plain_kernel(act, z, h, d),
        Some(p) => biased_kernel(act, width, p.a, p.b, p.c, z, h, d, fu),
    }
}

/// Gradients of the biased form's parameters, accumulated per column:
/// `∂L/∂a_j += Σ_r g·f(u)`, `∂L/∂b_j += −Σ_r g·d`, `∂L/∂c_j += Σ_r g` — where `g = ∂L/∂h`.
/// Must run before [`backward_input`] overwrites `g`.
pub fn backward_params<F: Float>(
    width: usize,
    g: &[F],
    d: &[F],
    fu: Option<&[F]>,
    ga: Option<&mut [F]>,
    gb: Option<&mut [F]>,
    gc: Option<&mut [F]>,
) {
    if let (Some(ga), Some(fu)) = (ga, fu) {
        for (gr, fr) in g.chunks_exact(width).zip(fu.chunks_exact(width)) {
            for j in 0..width {
                ga[j] += gr[j] * fr[j];
            }
        }
    }
    if let Some(gb) = gb {
        for (gr, dr) in g.chunks_exact(width).zip(d.chunks_exact(width)) {
            for j in 0..width {
                gb[j] -= gr[j] * dr[j];
            }
        }
    }
    if let Some(gc) = gc {
        for gr in g.chunks_exact(width) {
            for j in 0..width {
                gc[j] += gr[j];
            }
        }
    }
}

/// `∂L/∂z = ∂L/∂h · d`, in place.
pub fn backward_input<F: Float>(g: &mut [F], d: &[F]) {
    for (gv, &dv) in g.iter_mut().zip(d) {
        *gv *= dv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slope matches a central finite difference of the value (f64, h = 1e-6).
    #[test]
    fn slopes_match_finite_differences() {
        for act in Activation::ALL {
            for i in -60..=60 {
                let x = i as f64 * 0.1 + 0.013; // avoid sitting exactly on a kink
                let h = 1e-6;
                let fd = (act.eval(x + h) - act.eval(x - h)) / (2.0 * h);
                let s = act.slope(x);
                assert!(
                    (fd - s).abs() < 1e-6 * (1.0 + s.abs()),
                    "{}: x={x} fd={fd} slope={s}",
                    act.name()
                );
            }
        }
    }

    /// Closed-form values from an independent implementation, Python's `math` module:
    /// `sig = lambda x: 1/(1+math.exp(-x))`; elu `math.exp(x)-1`; selu `L*A*(math.exp(x)-1)`;
    /// gelu `0.5*x*(1+math.erf(x/math.sqrt(2)))`; gelu_tanh
    /// `0.5*x*(1+math.tanh(math.sqrt(2/math.pi)*(x+0.044715*x**3)))`; silu `x*sig(x)`;
    /// softplus `math.log1p(math.exp(x))` — at x = -1.5 and 0.7.
    #[test]
    fn values_match_reference() {
        let cases: [(Activation, [f64; 2]); 8] = [
            (Activation::Elu, [-0.7768698398515702, 0.7]),
            (Activation::Selu, [-1.3658143533672527, 0.7354906911488363]),
            (Activation::Gelu, [-0.10021080190328713, 0.5306254434438489]),
            (
                Activation::GeluTanh,
                [-0.10042842301976707, 0.5305701347051167],
            ),
            (Activation::Silu, [-0.2736382857095345, 0.46773144051771626]),
            (
                Activation::Sigmoid,
                [0.18242552380635635, 0.6681877721681662],
            ),
            (
                Activation::Softplus,
                [0.2014132779827524, 1.103186048885458],
            ),
            (Activation::LeakyRelu, [-0.015, 0.7]),
        ];
        for (act, want) in cases {
            for (x, w) in [-1.5, 0.7].iter().zip(want) {
                let got = act.eval(*x);
                assert!(
                    (got - w).abs() < 1e-12,
                    "{}({x}) = {got}, want {w}",
                    act.name()
                );
            }
        }
    }
}
