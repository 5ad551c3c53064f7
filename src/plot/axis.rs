//! One axis type for every chart: linear or logarithmic, with our own tick positions and labels
//! (`10⁻³` on log axes), so that log and linear axes are one Rust type and every figure gets the
//! same readable ticks. Categories (sweep values, layers) are a second, simpler axis.

use std::ops::Range;

use plotters::coord::ranged1d::{
    KeyPointHint, KeyPointWeight, NoDefaultFormatting, Ranged, ValueFormatter,
};

/// A continuous axis over `[lo, hi]`; on a log axis both are positive.
#[derive(Clone, Debug)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    /// Ticks at whole numbers only (layer indices).
    pub integer: bool,
}

impl Axis {
    /// The axis that shows every finite value of `values` (positive ones only when `log`), with a
    /// little headroom on linear axes and whole decades on log axes. None when nothing is drawable.
    pub fn fit(values: impl IntoIterator<Item = f64>, log: bool) -> Option<Axis> {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            if v.is_finite() && (!log || v > 0.0) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi {
            return None;
        }
        Some(if log {
            let (a, b) = (lo.log10(), hi.log10());
            // Snap to decades when that costs little room, so the ends carry labels.
            let (mut a2, mut b2) = (a.floor(), b.ceil());
            if b2 - a2 > 2.0 {
                a2 = if a - a2 > 0.7 {
                    a - 0.05 * (b - a).max(0.3)
                } else {
                    a2
                };
                b2 = if b2 - b > 0.7 {
                    b + 0.05 * (b - a).max(0.3)
                } else {
                    b2
                };
            }
            if b2 - a2 < 1e-9 {
                a2 -= 0.5;
                b2 += 0.5;
            }
            Axis {
                lo: 10f64.powf(a2),
                hi: 10f64.powf(b2),
                log: true,
                integer: false,
            }
        } else {
            let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
            Axis {
                lo: lo - 0.04 * span,
                hi: hi + 0.04 * span,
                log: false,
                integer: false,
            }
        })
    }

    /// A linear axis from exactly `lo` to `hi` (steps start at 0, fractions end at 1).
    pub fn exact(lo: f64, hi: f64) -> Axis {
        Axis {
            lo,
            hi,
            log: false,
            integer: false,
        }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    pub fn t(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// Whether `v` can be placed on this axis (finite; positive on log axes).
    pub fn drawable(&self, v: f64) -> bool {
        v.is_finite() && (!self.log || v > 0.0)
    }

    /// Ticks: bold ones (labelled) and all ones (for the light grid).
    pub fn ticks(&self, max: usize, bold: bool) -> Vec<f64> {
        let max = max.max(2);
        if self.log {
            let (a, b) = (self.lo.log10(), self.hi.log10());
            let decades = (b.floor() - a.ceil()) as i64 + 1;
            let every = ((decades as usize).div_ceil(max)).max(1) as i64;
            let mut out = Vec::new();
            let mut k = a.ceil() as i64;
            if decades < 2 {
                // Less than two decades on screen: 1, 2, 5 × 10ᵏ.
                let mut k = a.floor() as i64;
                while (k as f64) <= b {
                    for m in [1.0, 2.0, 5.0] {
                        let v = m * 10f64.powi(k as i32);
                        if v >= self.lo * (1.0 - 1e-9) && v <= self.hi * (1.0 + 1e-9) {
                            out.push(v);
                        }
                    }
                    k += 1;
                }
                return out;
            }
            while (k as f64) <= b + 1e-9 {
                if bold {
                    if k.rem_euclid(every) == 0 {
                        out.push(10f64.powi(k as i32));
                    }
                } else {
                    for m in 1..10 {
                        let v = m as f64 * 10f64.powi(k as i32);
                        if v <= self.hi * (1.0 + 1e-9) {
                            out.push(v);
                        }
                    }
                }
                k += 1;
            }
            if !bold {
                // The partial decade below the first whole one.
                let k0 = a.ceil() as i32 - 1;
                for m in 2..10 {
                    let v = m as f64 * 10f64.powi(k0);
                    if v >= self.lo {
                        out.push(v);
                    }
                }
            }
            out
        } else {
            let step = nice_step((self.hi - self.lo) / max as f64);
            let step = if bold { step } else { step / 2.0 };
            let step = if self.integer { step.max(1.0) } else { step };
            let mut out = Vec::new();
            let mut v = (self.lo / step).ceil() * step;
            while v <= self.hi + step * 1e-9 {
                out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
                v += step;
            }
            out
        }
    }
}

/// The smallest 1, 2 or 5 × 10ᵏ at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw > 0.0 && raw.is_finite() {
        raw
    } else {
        1.0
    };
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// A log-axis label: `10⁻³` for powers of ten, `2×10⁻³` between them.
pub fn format_log(v: f64) -> String {
    let k = v.log10();
    if (k - k.round()).abs() < 1e-9 {
        return format!("10{}", superscript(k.round() as i64));
    }
    format_number(v)
}

/// Short decimals; `2.5×10⁻⁵` for very small or large magnitudes.
pub fn format_number(v: f64) -> String {
    format_sig(v, 4)
}

/// A swept value for a label: numbers to 3 significant digits (`9.48683298050514e-3` → `0.00949`),
/// anything else as written.
pub fn pretty_value(s: &str) -> String {
    match s.parse::<f64>() {
        Ok(v) if s.len() > 6 && v.is_finite() => format_sig(v, 3),
        _ => s.to_string(),
    }
}

fn format_sig(v: f64, sig: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let k = v.abs().log10();
    if v.abs() >= 1e5 || v.abs() < 1e-3 {
        let e = k.floor() as i64;
        let m = v / 10f64.powi(e as i32);
        return format!("{}×10{}", trim(format!("{m:.2}")), superscript(e));
    }
    let decimals = ((sig - 1) as f64 - k.floor()).clamp(0.0, 6.0) as usize;
    let s = trim(format!("{v:.decimals$}"));
    s.replace('-', "−")
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

thread_local! {
    /// Set while a PNG is drawn on this thread: the embedded font has superscript digits but no
    /// superscript minus (U+207B), so the macron (U+00AF), which sits at the same height, stands in.
    static NO_SUPERSCRIPT_MINUS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the PNG font's glyph substitutions on.
pub(super) fn with_png_glyphs<T>(f: impl FnOnce() -> T) -> T {
    NO_SUPERSCRIPT_MINUS.with(|c| c.set(true));
    let out = f();
    NO_SUPERSCRIPT_MINUS.with(|c| c.set(false));
    out
}

pub fn superscript(k: i64) -> String {
    let minus = if NO_SUPERSCRIPT_MINUS.with(|c| c.get()) {
        '¯'
    } else {
        '⁻'
    };
    k.to_string()
        .chars()
        .map(|c| match c {
            '-' => minus,
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = if self.drawable(*value) {
            self.t(*value)
        } else {
            0.0
        };
        let px = limit.0 as f64 + t * (limit.1 - limit.0) as f64;
        px.round().clamp(-1e6, 1e6) as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let bold = matches!(hint.weight(), KeyPointWeight::Bold);
        let max = hint.max_num_points();
        if max == 0 {
            return vec![];
        }
        let mut t = self.ticks(if bold { max.min(8) } else { 8 }, bold);
        t.truncate(max);
        t
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        if self.log {
            return format_log(*value);
        }
        // Enough decimals to tell neighbouring ticks apart (a parameter drifting from 1 to
        // 1.0004 needs four), whatever the magnitude.
        let step = nice_step((self.hi - self.lo) / 8.0);
        let v = *value;
        if v == 0.0 || v.abs() >= 1e5 || (v.abs() < 1e-3 && step < 1e-3) {
            return format_number(v);
        }
        let decimals = (-step.log10().floor()).clamp(0.0, 9.0) as usize;
        trim(format!("{v:.decimals$}")).replace('-', "−")
    }
}

/// Categories `0..n` drawn as equal bands; values are band edges, labels sit at centres.
#[derive(Clone, Debug)]
pub struct Categories {
    pub labels: Vec<String>,
    /// At most this many labels (evenly thinned), for long category lists such as steps.
    pub max_labels: usize,
}

impl Ranged for Categories {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let n = self.labels.len().max(1) as f64;
        (limit.0 as f64 + value / n * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if !matches!(hint.weight(), KeyPointWeight::Bold) {
            return vec![];
        }
        let n = self.labels.len();
        let max = hint.max_num_points().min(self.max_labels).max(1);
        let every = n.div_ceil(max).max(1);
        (0..n)
            .filter(|i| i % every == 0)
            .map(|i| i as f64 + 0.5)
            .collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.labels.len() as f64
    }
}

impl ValueFormatter<f64> for Categories {
    fn format_ext(&self, value: &f64) -> String {
        let i = value.floor();
        if i >= 0.0 && (i as usize) < self.labels.len() {
            self.labels[i as usize].clone()
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_are_decades_and_labels_are_superscripts() {
        let a = Axis::fit([3e-4, 0.8], true).unwrap();
        assert_eq!((a.lo, a.hi), (1e-4, 1.0));
        let t = a.ticks(8, true);
        let labels: Vec<String> = t.iter().map(|v| format_log(*v)).collect();
        assert_eq!(labels, ["10⁻⁴", "10⁻³", "10⁻²", "10⁻¹", "10⁰"]);
    }

    #[test]
    fn linear_ticks_are_round() {
        let a = Axis::exact(0.0, 2000.0);
        let t = a.ticks(6, true);
        assert_eq!(t, [0.0, 500.0, 1000.0, 1500.0, 2000.0]);
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(-1.5), "−1.5");
        assert_eq!(format_number(2.5e-5), "2.5×10⁻⁵");
        // A narrow range away from zero keeps the digits that differ.
        let narrow = Axis::exact(0.9995, 1.0007);
        let labels: Vec<String> = narrow
            .ticks(6, true)
            .iter()
            .map(|v| narrow.format_ext(v))
            .collect();
        assert_eq!(
            labels,
            ["0.9996", "0.9998", "1", "1.0002", "1.0004", "1.0006"]
        );
    }
}
