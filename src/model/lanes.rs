//! Up to [`LANES`] same-shape MLPs trained in lockstep, one per SIMD lane
//! ([`crate::engine::lanes`]): the K seeds of a sweep point as one computation. Tiny models are
//! all fixed cost when trained one at a time — a width-16 layer is one vector per row, a width-4
//! layer a quarter of one, and every call, pass and update is paid per model — while here each
//! operation of the forward, backward and update covers K models at once.
//!
//! Every lane computes the bits its model computes alone ([`Mlp`]): the same GEMM arithmetic
//! ([`lanes::gemm`]), the same activation and optimizer element functions
//! ([`Activation::value_and_slope`], [`Coeffs`]), the same loss ([`loss::loss`], per lane). The
//! lockstep driver ([`crate::train`]) checks it (its tests compare whole runs bit for bit).
//!
//! What it trains: dense MLPs (any depth and widths up to [`lanes::MAX_K`], with or without
//! biases, any parametrization) with an activation whose slope follows from its output (identity,
//! ReLU, leaky ReLU, tanh, sigmoid), no norm layers, any loss, any optimizer
//! ([`LaneMlp::refuse`] says why not otherwise).

use crate::engine::lanes::{self, LaneBuf, Lanes, LANES};
use crate::engine::ops::Op;
use crate::nn::activation::{self, Activation};
use crate::nn::loss::{self, LossValue};
use crate::nn::norm::Norm;
use crate::optim::{Coeffs, Hyper, OptimState, Optimizer};
use crate::spec::LossKind;

use super::{LrMult, Mlp, Param};

/// One linear layer's parameter indices (into [`Mlp::params`]).
#[derive(Clone, Copy, Debug)]
struct Layer {
    weight: usize,
    bias: Option<usize>,
}

/// One lane's batch for [`LaneMlp::gather_batches`]: rows `picks` (`None`: the first rows, in
/// order) of a split `x: [n, input]`, `y: [n, y_cols]`.
#[derive(Clone, Copy)]
pub struct LaneRows<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub picks: Option<&'a [usize]>,
}

/// K MLPs of one shape, every tensor lane-major (`[elements][lane]`).
pub struct LaneMlp {
    /// `[input, width, …, width, output]`.
    dims: Vec<usize>,
    activation: Activation,
    hidden_mult: f32,
    out_mult: f32,
    loss: LossKind,
    /// Hidden layers, then the output layer.
    layers: Vec<Layer>,
    /// Per parameter tensor (the order of [`Mlp::params`]): values, gradients, optimizer moments.
    values: Vec<LaneBuf>,
    grads: Vec<LaneBuf>,
    m: Vec<LaneBuf>,
    v: Vec<LaneBuf>,
    lr_mult: Vec<LrMult>,
    decays: Vec<bool>,
    optimizer: Optimizer,
    /// Optimizer steps taken.
    pub t: u64,
    /// Per hidden layer: the pre-activation `z = x·Wᵀ + b` and the activation `h = f(z)`,
    /// `[rows, width]`.
    pre: Vec<LaneBuf>,
    act: Vec<LaneBuf>,
    /// `[rows, output]` and its gradient.
    output: LaneBuf,
    d_output: LaneBuf,
    /// Ping-pong gradient buffers `[rows, max width]`.
    grad: [LaneBuf; 2],
    /// The batch: `x: [rows, input]`, `y: [rows, y_cols]`.
    x: LaneBuf,
    y: LaneBuf,
    y_cols: usize,
    /// Per-lane scratch for the loss (one model's output, target and gradient).
    scratch: [Vec<f32>; 3],
    rows: usize,
    capacity: usize,
}

impl LaneMlp {
    /// Why this model cannot train in lanes with batches of up to `capacity` rows (`None`:
    /// it can).
    pub fn refuse(mlp: &Mlp<f32>, capacity: usize) -> Option<String> {
        if !crate::engine::sgemm::available() {
            return Some(
                "lockstep lanes reproduce the engine's GEMM kernels, which need AVX-512 or AVX2 with FMA"
                    .into(),
            );
        }
        if mlp.norm != Norm::None {
            return Some("the model has norm layers".into());
        }
        if mlp.hidden.iter().any(|h| h.act.is_some()) {
            return Some("the activation is biased (a·f(x − b) + c)".into());
        }
        if !mlp.activation.slope_from_output() {
            return Some(format!(
                "the {} activation keeps its slope in a buffer",
                mlp.activation.name()
            ));
        }
        if mlp.params.iter().any(|p| !p.trainable) {
            return Some("the model has state that is not trained".into());
        }
        let widest = mlp.dims.iter().copied().max().unwrap_or(0);
        if widest.max(capacity) > lanes::MAX_K {
            return Some(format!(
                "a layer or the batch exceeds {} (the GEMM kernels' depth block)",
                lanes::MAX_K
            ));
        }
        None
    }

    /// Buffers for the models shaped like `template` (values are loaded per lane with
    /// [`LaneMlp::load`]), batches of up to `capacity` rows with `y_cols` target columns.
    pub fn new(template: &Mlp<f32>, capacity: usize, y_cols: usize, optimizer: Optimizer) -> Self {
        let mut layers: Vec<Layer> = template
            .hidden
            .iter()
            .map(|h| Layer {
                weight: h.weight,
                bias: h.bias,
            })
            .collect();
        layers.push(Layer {
            weight: template.out_weight,
            bias: template.out_bias,
        });
        let ps = &template.params;
        let sized = |on: bool| -> Vec<LaneBuf> {
            ps.iter()
                .map(|p| lanes::zeros(if on { p.value.len() } else { 0 }))
                .collect()
        };
        let slots = match optimizer {
            Optimizer::Sgd => 0,
            Optimizer::Momentum | Optimizer::Nesterov => 1,
            Optimizer::Adam | Optimizer::Adamw => 2,
        };
        let dims = template.dims.clone();
        let widest = dims.iter().copied().max().unwrap_or(1);
        let out = *dims.last().unwrap_or(&1);
        let hidden: Vec<usize> = dims[1..dims.len() - 1].to_vec();
        LaneMlp {
            activation: template.activation,
            hidden_mult: template.hidden_mult,
            out_mult: template.out_mult,
            loss: template.loss,
            layers,
            values: sized(true),
            grads: sized(true),
            m: sized(slots >= 1),
            v: sized(slots >= 2),
            lr_mult: ps.iter().map(|p| p.lr_mult).collect(),
            decays: ps.iter().map(|p| p.decay).collect(),
            optimizer,
            t: 0,
            pre: hidden.iter().map(|&w| lanes::zeros(capacity * w)).collect(),
            act: hidden.iter().map(|&w| lanes::zeros(capacity * w)).collect(),
            output: lanes::zeros(capacity * out),
            d_output: lanes::zeros(capacity * out),
            grad: [
                lanes::zeros(capacity * widest),
                lanes::zeros(capacity * widest),
            ],
            x: lanes::zeros(capacity * dims[0]),
            y: lanes::zeros(capacity * y_cols),
            y_cols,
            scratch: [
                vec![0.0; capacity * out],
                vec![0.0; capacity * y_cols],
                vec![0.0; capacity * out],
            ],
            rows: 0,
            capacity,
            dims,
        }
    }

    /// Lane `lane` takes one model's parameters and optimizer moments (the step count is the
    /// group's: [`LaneMlp::t`]).
    pub fn load(&mut self, lane: usize, params: &[Param<f32>], opt: &OptimState<f32>) {
        for (i, p) in params.iter().enumerate() {
            lanes::insert(&mut self.values[i], lane, &p.value);
        }
        for (dst, src) in [(&mut self.m, &opt.m), (&mut self.v, &opt.v)] {
            for (d, s) in dst.iter_mut().zip(src) {
                lanes::insert(d, lane, s);
            }
        }
    }

    /// Lane `lane` emptied: its parameters and moments zero (a lane without a model).
    pub fn clear(&mut self, lane: usize) {
        for t in self.values.iter_mut().chain(&mut self.m).chain(&mut self.v) {
            for v in t.iter_mut() {
                v[lane] = 0.0;
            }
        }
    }

    /// Lane `lane`'s parameters and optimizer state, into one model's.
    pub fn store(&self, lane: usize, params: &mut [Param<f32>], opt: &mut OptimState<f32>) {
        for (i, p) in params.iter_mut().enumerate() {
            lanes::extract(&self.values[i], lane, &mut p.value);
        }
        for (src, dst) in [(&self.m, &mut opt.m), (&self.v, &mut opt.v)] {
            for (s, d) in src.iter().zip(dst.iter_mut()) {
                lanes::extract(s, lane, d);
            }
        }
        opt.t = self.t;
    }

    /// Lane `lane`'s parameter values into `out` (one tensor per parameter, as
    /// [`Mlp::params`] orders them): a logged step's values before its update.
    pub fn values_into(&self, lane: usize, out: &mut [Vec<f32>]) {
        for (v, o) in self.values.iter().zip(out.iter_mut()) {
            lanes::extract(v, lane, o);
        }
    }

    /// Lane `lane`'s last step into one model's buffers, as the model's own step would leave
    /// them for the observables: every parameter gradient, each hidden layer's pre-activation
    /// (after [`LaneMlp::forward_keeping_pre`]) and activation, the output and its gradient,
    /// and the row count. The values and optimizer state go by [`LaneMlp::store`].
    pub fn export(&self, lane: usize, mlp: &mut Mlp<f32>) {
        assert!(
            mlp.dims == self.dims && mlp.params.len() == self.grads.len(),
            "LaneMlp::export: another shape"
        );
        for (g, p) in self.grads.iter().zip(mlp.params.iter_mut()) {
            lanes::extract(g, lane, &mut p.grad);
        }
        let rows = self.rows;
        for (l, b) in mlp.bufs.iter_mut().enumerate() {
            let n = rows * self.dims[l + 1];
            lanes::extract(&self.pre[l][..n], lane, &mut b.pre[..n]);
            lanes::extract(&self.act[l][..n], lane, &mut b.act[..n]);
        }
        let n = rows * self.dims[self.dims.len() - 1];
        lanes::extract(&self.output[..n], lane, &mut mlp.output[..n]);
        lanes::extract(&self.d_output[..n], lane, &mut mlp.d_output[..n]);
        mlp.rows = rows;
    }

    /// Every lane's batch at once (`None`: a lane without a run), `x: [rows, input]`,
    /// `y: [rows, y_cols]`, each contiguous.
    pub fn set_batches(&mut self, batches: &[Option<(&[f32], &[f32])>], rows: usize) {
        let rows_of: Vec<Option<LaneRows<'_>>> = batches
            .iter()
            .map(|b| b.map(|(x, y)| LaneRows { x, y, picks: None }))
            .collect();
        self.gather_batches(&rows_of, rows);
    }

    /// Every lane's batch gathered straight from its training split into the lane tensors
    /// (`None`: a lane without a run) by [`lanes::gather_rows`]: a step copies each sample
    /// once, with no per-run batch buffer between.
    pub fn gather_batches(&mut self, batches: &[Option<LaneRows<'_>>], rows: usize) {
        assert!(
            rows <= self.capacity && batches.len() <= LANES,
            "gather_batches: batch exceeds capacity"
        );
        self.rows = rows;
        // A lane without a run reads the first run's rows (lanes are independent, and it is
        // never read into anything a run keeps), so every lane has a source.
        let Some(first) = batches.iter().flatten().next().copied() else {
            return;
        };
        let lane = |l: usize| batches.get(l).copied().flatten().unwrap_or(first);
        let xs: [&[f32]; LANES] = std::array::from_fn(|l| lane(l).x);
        let ys: [&[f32]; LANES] = std::array::from_fn(|l| lane(l).y);
        let picks: [Option<&[usize]>; LANES] = std::array::from_fn(|l| lane(l).picks);
        lanes::gather_rows(&mut self.x, self.dims[0], rows, &xs, &picks);
        lanes::gather_rows(&mut self.y, self.y_cols, rows, &ys, &picks);
    }

    /// The input's width: the columns [`LaneMlp::gather_batches`] reads per row of `x`.
    pub fn input_width(&self) -> usize {
        self.dims[0]
    }

    /// Rows a pass holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn depth(&self) -> usize {
        self.dims.len() - 2
    }

    /// Forward pass of every lane on its batch: `x: [rows, input]` → `output: [rows, output]`,
    /// as [`Mlp::forward`] computes it in training mode (the bias added in the activation's
    /// pass, the output layer's bias filled in before its GEMM).
    pub fn forward(&mut self) {
        self.forward_on(None, false);
    }

    /// [`LaneMlp::forward`] keeping each hidden layer's pre-activation, as a logged step's
    /// observables read it ([`LaneMlp::export`]): the GEMM, then the bias and activation's
    /// pass, never the epilogue that skips the buffer (the same bits either way).
    pub fn forward_keeping_pre(&mut self) {
        self.forward_on(None, true);
    }

    /// [`LaneMlp::forward`] on `rows` rows of a lane tensor held elsewhere (an evaluation's
    /// split, laid out once: [`crate::engine::lanes::transpose`]).
    pub fn forward_rows(&mut self, x: &[Lanes], rows: usize) {
        assert!(rows <= self.capacity && x.len() >= rows * self.dims[0]);
        self.rows = rows;
        self.forward_on(Some(x), false);
    }

    fn forward_on(&mut self, x: Option<&[Lanes]>, keep_pre: bool) {
        let x = x.unwrap_or(&self.x);
        let rows = self.rows;
        for l in 0..self.depth() {
            let (in_dim, width) = (self.dims[l], self.dims[l + 1]);
            let n = rows * width;
            let (done, rest) = self.act.split_at_mut(l);
            let input: &[Lanes] = match done.last() {
                Some(h) => &h[..rows * in_dim],
                None => &x[..rows * in_dim],
            };
            let layer = self.layers[l];
            let alpha = if l == 0 { 1.0 } else { self.hidden_mult };
            let w = &self.values[layer.weight];
            let bias = layer.bias.map(|i| &self.values[i][..width]);
            let dims = (rows, width, in_dim);
            let h = &mut rest[0][..n];
            // Tanh straight from the GEMM's registers where the kernels allow.
            if self.activation == Activation::Tanh
                && !keep_pre
                && lanes::gemm_bias_tanh(Op::N, Op::T, dims, alpha, input, w, bias, h)
            {
                continue;
            }
            let pre = &mut self.pre[l][..n];
            lanes::gemm(Op::N, Op::T, dims, alpha, input, w, 0.0, pre);
            bias_activation(self.activation, width, bias, pre, h);
        }
        // Output layer: bias rows, then the GEMM onto them.
        let depth = self.depth();
        let (in_dim, out_dim) = (self.dims[depth], self.dims[depth + 1]);
        let layer = self.layers[depth];
        let out = &mut self.output[..rows * out_dim];
        match layer.bias {
            Some(i) => {
                for row in out.chunks_exact_mut(out_dim) {
                    row.copy_from_slice(&self.values[i][..out_dim]);
                }
            }
            None => out.fill([0.0; LANES]),
        }
        let input: &[Lanes] = match self.act.last() {
            Some(h) => &h[..rows * in_dim],
            None => &x[..rows * in_dim],
        };
        let w = &self.values[layer.weight];
        let dims = (rows, out_dim, in_dim);
        lanes::gemm(Op::N, Op::T, dims, self.out_mult, input, w, 1.0, out);
    }

    /// Each lane's training loss ([`loss::loss`] on that model's output and targets), seeding
    /// the output gradient.
    pub fn loss(&mut self) -> [LossValue; LANES] {
        self.loss_on(None)
    }

    /// [`LaneMlp::loss`] against targets held elsewhere (`[rows, y_cols]`, as
    /// [`LaneMlp::forward_rows`] reads its inputs).
    pub fn loss_rows(&mut self, y: &[Lanes]) -> [LossValue; LANES] {
        self.loss_on(Some(y))
    }

    fn loss_on(&mut self, y: Option<&[Lanes]>) -> [LossValue; LANES] {
        let targets = y.unwrap_or(&self.y);
        let rows = self.rows;
        let k = *self.dims.last().unwrap_or(&1);
        let (n, ny) = (rows * k, rows * self.y_cols);
        if self.loss == LossKind::Mse && ny == n {
            // Regression targets: every lane at once.
            let sums = lanes::mse(&self.output[..n], &targets[..n], &mut self.d_output[..n]);
            return sums.map(|sum| LossValue {
                loss: sum / n as f64,
                correct: None,
                counted: rows,
            });
        }
        let [out, y, g] = &mut self.scratch;
        std::array::from_fn(|lane| {
            lanes::extract(&self.output[..n], lane, &mut out[..n]);
            lanes::extract(&targets[..ny], lane, &mut y[..ny]);
            let v = loss::loss(self.loss, &out[..n], &y[..ny], rows, k, Some(&mut g[..n]));
            lanes::insert(&mut self.d_output[..n], lane, &g[..n]);
            v
        })
    }

    /// Backward pass from the output gradient to every parameter gradient, as
    /// [`Mlp::backward`] computes it.
    pub fn backward(&mut self) {
        let rows = self.rows;
        let depth = self.depth();
        // Output layer: dW = gᵀ·h, db = Σ_rows g, dh = g·W.
        {
            let (in_dim, out_dim) = (self.dims[depth], self.dims[depth + 1]);
            let layer = self.layers[depth];
            let input: &[Lanes] = match self.act.last() {
                Some(h) => &h[..rows * in_dim],
                None => &self.x[..rows * in_dim],
            };
            let g = &self.d_output[..rows * out_dim];
            let a = self.out_mult;
            let dw = &mut self.grads[layer.weight];
            lanes::gemm(Op::T, Op::N, (out_dim, in_dim, rows), a, g, input, 0.0, dw);
            if depth > 0 {
                let w = &self.values[layer.weight];
                let dx = &mut self.grad[0][..rows * in_dim];
                lanes::gemm(Op::N, Op::N, (rows, in_dim, out_dim), a, g, w, 0.0, dx);
            }
            if let Some(bi) = layer.bias {
                lanes::column_sums(g, out_dim, &mut self.grads[bi]);
            }
        }
        for l in (0..depth).rev() {
            let (in_dim, width) = (self.dims[l], self.dims[l + 1]);
            let n = rows * width;
            let layer = self.layers[l];
            let [g_buf, next_buf] = &mut self.grad;
            let g = &mut g_buf[..n];
            slope_from_output(self.activation, g, &self.act[l][..n]);
            let input: &[Lanes] = match l {
                0 => &self.x[..rows * in_dim],
                _ => &self.act[l - 1][..rows * in_dim],
            };
            let a = if l == 0 { 1.0 } else { self.hidden_mult };
            let dw = &mut self.grads[layer.weight];
            lanes::gemm(Op::T, Op::N, (width, in_dim, rows), a, g, input, 0.0, dw);
            if let Some(bi) = layer.bias {
                lanes::column_sums(g, width, &mut self.grads[bi]);
            }
            if l > 0 {
                let w = &self.values[layer.weight];
                let dx = &mut next_buf[..rows * in_dim];
                lanes::gemm(Op::N, Op::N, (rows, in_dim, width), a, g, w, 0.0, dx);
                self.grad.swap(0, 1);
            }
        }
    }

    /// One optimizer step of every lane, lane `l` with its run's settings `hypers[l]` and
    /// learning rate `lrs[l]` ([`OptimState::step`]'s update). Lanes past `hypers` (no run)
    /// take the last one's.
    pub fn step(&mut self, hypers: &[Hyper], lrs: &[f64]) {
        assert!(!hypers.is_empty() && hypers.len() == lrs.len() && hypers.len() <= LANES);
        self.t += 1;
        let at = |l: usize| l.min(hypers.len() - 1);
        // Each lane's constants for a tensor's factors, formed once per run of lanes that share
        // their settings and learning rate (usually all 16: the powers are not free).
        let t = self.t;
        let coeffs = |mult: LrMult, decays: bool| -> [Coeffs<f32>; LANES] {
            let first = Coeffs::<f32>::new(&hypers[0], t, lrs[0], mult, decays);
            let mut c = [first; LANES];
            for l in 1..LANES {
                let (h, p) = (at(l), at(l - 1));
                c[l] = if hypers[h] == hypers[p] && lrs[h] == lrs[p] {
                    c[l - 1]
                } else {
                    Coeffs::<f32>::new(&hypers[h], t, lrs[h], mult, decays)
                };
            }
            c
        };
        // Per distinct factors (a weight's and a bias's, usually), the constants and Adam's
        // vector of them: on the stack, so a step allocates nothing.
        type Memo = (LrMult, bool, [Coeffs<f32>; LANES], lanes::AdamConsts);
        let mut memo: [Option<Memo>; 4] = [None; 4];
        for i in 0..self.values.len() {
            let (mult, decays) = (self.lr_mult[i], self.decays[i]);
            let found = memo
                .iter()
                .flatten()
                .find(|(m, d, ..)| *m == mult && *d == decays)
                .map(|&(_, _, c, a)| (c, a));
            let (c, adam) = found.unwrap_or_else(|| {
                let c = coeffs(mult, decays);
                let a = Coeffs::adam_consts(&c);
                if let Some(slot) = memo.iter_mut().find(|m| m.is_none()) {
                    *slot = Some((mult, decays, c, a));
                }
                (c, a)
            });
            let (w, g) = (&mut self.values[i], &self.grads[i]);
            match self.optimizer {
                Optimizer::Sgd => {
                    for (w, g) in w.iter_mut().zip(g) {
                        for l in 0..LANES {
                            c[l].sgd(&mut w[l], g[l]);
                        }
                    }
                }
                Optimizer::Momentum | Optimizer::Nesterov => {
                    for ((w, g), b) in w.iter_mut().zip(g).zip(self.m[i].iter_mut()) {
                        for l in 0..LANES {
                            c[l].momentum(&mut w[l], g[l], &mut b[l]);
                        }
                    }
                }
                Optimizer::Adam | Optimizer::Adamw => {
                    lanes::adam(&adam, w, g, &mut self.m[i], &mut self.v[i]);
                }
            }
        }
    }
}

/// `z += b` (per column, when there is a bias) and `h = f(z)`, lane by lane: the per-element
/// arithmetic of [`crate::nn::activation::forward_bias_value_only`].
fn bias_activation(
    act: Activation,
    width: usize,
    bias: Option<&[Lanes]>,
    z: &mut [Lanes],
    h: &mut [Lanes],
) {
    macro_rules! run {
        ($a:expr) => {
            match bias {
                Some(b) => {
                    for (zr, hr) in z.chunks_exact_mut(width).zip(h.chunks_exact_mut(width)) {
                        for ((zv, hv), bv) in zr.iter_mut().zip(hr.iter_mut()).zip(b) {
                            for l in 0..LANES {
                                let v = zv[l] + bv[l];
                                zv[l] = v;
                                hv[l] = $a.value_and_slope(v).0;
                            }
                        }
                    }
                }
                None => {
                    for (zv, hv) in z.iter().zip(h.iter_mut()) {
                        for l in 0..LANES {
                            hv[l] = $a.value_and_slope(zv[l]).0;
                        }
                    }
                }
            }
        };
    }
    match act {
        Activation::Identity => run!(Activation::Identity),
        Activation::Relu => run!(Activation::Relu),
        Activation::LeakyRelu => run!(Activation::LeakyRelu),
        Activation::Tanh => lanes::bias_tanh(width, bias, z, h),
        Activation::Sigmoid => run!(Activation::Sigmoid),
        other => unreachable!("LaneMlp::refuse keeps {} out", other.name()),
    }
}

/// `∂L/∂z = ∂L/∂h · f′` with `f′` from the output, lane by lane
/// ([`crate::nn::activation::backward_from_output`]'s arithmetic).
fn slope_from_output(act: Activation, g: &mut [Lanes], h: &[Lanes]) {
    macro_rules! run {
        ($a:expr) => {
            for (gv, hv) in g.iter_mut().zip(h) {
                for l in 0..LANES {
                    activation::slope_from_output_one($a, &mut gv[l], hv[l]);
                }
            }
        };
    }
    match act {
        Activation::Identity => {}
        Activation::Relu => run!(Activation::Relu),
        Activation::LeakyRelu => run!(Activation::LeakyRelu),
        Activation::Tanh => lanes::tanh_slope(g, h),
        Activation::Sigmoid => run!(Activation::Sigmoid),
        other => unreachable!("LaneMlp::refuse keeps {} out", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;
    use crate::nn::norm::Mode;
    use crate::optim::{Hyper, OptimState, Optimizer};
    use crate::spec::MlpSpec;

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// One model alone and the same model in every lane: output, loss, every gradient and the
    /// updated parameters agree bit for bit, step after step.
    #[test]
    fn each_lane_is_its_model_alone() {
        if !crate::engine::sgemm::available() {
            return;
        }
        for (act, opt_kind, width, depth, input, output, rows) in [
            (Activation::Tanh, Optimizer::Adam, 16, 2, 8, 1, 64),
            (Activation::Relu, Optimizer::Momentum, 5, 3, 3, 2, 17),
            (Activation::Sigmoid, Optimizer::Adamw, 33, 1, 1, 4, 40),
        ] {
            let spec = MlpSpec {
                width,
                depth,
                activation: act,
                ..MlpSpec::default()
            };
            let mut rng = Rng::stream(1, "lanes-model");
            let mut models: Vec<Mlp<f32>> = (0..LANES as u64)
                .map(|s| Mlp::new(&spec, input, output, rows, &mut Rng::stream(s, "init")))
                .collect();
            let mut opts: Vec<OptimState<f32>> = models
                .iter()
                .map(|m| OptimState::new(&m.params, opt_kind))
                .collect();
            let mut lanes = LaneMlp::new(&models[0], rows, output, opt_kind);
            for (l, (m, o)) in models.iter().zip(&opts).enumerate() {
                lanes.load(l, &m.params, o);
            }
            let h = Hyper {
                optimizer: opt_kind,
                momentum: 0.9,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            };
            for step in 0..3 {
                let xs: Vec<Vec<f32>> = (0..LANES)
                    .map(|_| (0..rows * input).map(|_| rng.normal() as f32).collect())
                    .collect();
                let ys: Vec<Vec<f32>> = (0..LANES)
                    .map(|_| (0..rows * output).map(|_| rng.normal() as f32).collect())
                    .collect();
                let views: Vec<Option<(&[f32], &[f32])>> = (0..LANES)
                    .map(|l| Some((xs[l].as_slice(), ys[l].as_slice())))
                    .collect();
                lanes.set_batches(&views, rows);
                lanes.forward();
                let losses = lanes.loss();
                lanes.backward();
                lanes.step(&[h], &[0.01]);
                for (l, (m, o)) in models.iter_mut().zip(opts.iter_mut()).enumerate() {
                    m.forward(&xs[l], rows, Mode::Train);
                    let mut out = vec![0.0; rows * output];
                    lanes::extract(&lanes.output, l, &mut out);
                    let ctx = format!("{act:?} step {step} lane {l}");
                    assert_eq!(
                        bits(&m.output[..rows * output]),
                        bits(&out),
                        "{ctx}: output"
                    );
                    let v = loss::loss(
                        LossKind::Mse,
                        &m.output[..rows * output],
                        &ys[l],
                        rows,
                        output,
                        Some(&mut m.d_output[..rows * output]),
                    );
                    assert_eq!(v.loss.to_bits(), losses[l].loss.to_bits(), "{ctx}: loss");
                    m.backward(&xs[l]);
                    for (i, p) in m.params.iter().enumerate() {
                        let mut g = vec![0.0; p.grad.len()];
                        lanes::extract(&lanes.grads[i], l, &mut g);
                        assert_eq!(bits(&p.grad), bits(&g), "{ctx}: gradient of {}", p.name);
                    }
                    o.step(&mut m.params, &h, 0.01);
                    for (i, p) in m.params.iter().enumerate() {
                        let mut w = vec![0.0; p.value.len()];
                        lanes::extract(&lanes.values[i], l, &mut w);
                        assert_eq!(bits(&p.value), bits(&w), "{ctx}: updated {}", p.name);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod profile {
    /// `perf record cargo test --release --lib lanes::profile -- --ignored`: the lanes at width 16.
    #[test]
    #[ignore]
    fn width_16_for_profiling() {
        let rows = crate::bench::lanes(&[16], 40_000, 1);
        eprintln!("{rows:?}");
    }
}
