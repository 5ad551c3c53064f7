//! Heatmaps with a colour bar: layer × step observables and sweep phase diagrams. Missing
//! (non-finite) cells are grey with a cross: in a phase diagram they are the diverged runs.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{format_number, Axis, Categories};
use super::style::{self, FONT, INK, LABEL_SIZE, MISSING, TICK_SIZE, TITLE_SIZE};
use super::Heatmap;

pub(super) fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    h: &Heatmap,
    s: f64,
    t: f64,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let px = |v: f64| (v * s).round() as u32;
    area.fill(&WHITE).map_err(e)?;
    let tick_font = (FONT, TICK_SIZE * t).into_font().color(&INK);
    let desc_font = (FONT, LABEL_SIZE * t).into_font().color(&INK);
    let title_font = (FONT, TITLE_SIZE * t).into_font().color(&INK);

    let area = area.margin(px(10.0), 0, 0, 0);
    let area = area.titled(&h.title, title_font).map_err(e)?;
    let (w, _) = area.dim_in_pixel();
    let (main, bar) = area.split_horizontally(w.saturating_sub(px(110.0)));
    let color_axis = Axis::fit(h.values.iter().flatten().copied(), h.log_color);
    let tone = |v: f64| -> RGBColor {
        match &color_axis {
            Some(a) if a.drawable(v) => style::viridis(a.t(v)),
            _ => MISSING,
        }
    };

    let cols = Categories {
        labels: h.columns.clone(),
        max_labels: 8,
    };
    let rows = Categories {
        labels: h.rows.clone(),
        max_labels: 16,
    };
    let mut chart = ChartBuilder::on(&main)
        .margin(px(10.0))
        .x_label_area_size(px(50.0))
        .y_label_area_size(px(80.0))
        .build_cartesian_2d(cols, rows)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(h.x_label.as_str())
        .y_desc(h.y_label.as_str())
        .label_style(tick_font.clone())
        .axis_desc_style(desc_font.clone())
        .axis_style(style::AXIS.stroke_width(px(1.0)))
        .set_all_tick_mark_size(px(4.0))
        .x_labels(8)
        .y_labels(16)
        .draw()
        .map_err(e)?;

    let n_cols = h.columns.len();
    let big = n_cols * h.rows.len() <= 120;
    for (r, row) in h.values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate().take(n_cols) {
            let (x0, y0, x1, y1) = (c as f64, r as f64, c as f64 + 1.0, r as f64 + 1.0);
            let fill = tone(v);
            let stroke = if big {
                WHITE.stroke_width(px(1.0))
            } else {
                fill.filled()
            };
            chart
                .draw_series([
                    Rectangle::new([(x0, y0), (x1, y1)], fill.filled()),
                    Rectangle::new([(x0, y0), (x1, y1)], stroke),
                ])
                .map_err(e)?;
            if !color_axis.as_ref().is_some_and(|a| a.drawable(v)) {
                let ink = RGBColor(0x80, 0x80, 0x80).stroke_width(px(1.5));
                let (m, n) = (0.3, 0.7);
                chart
                    .draw_series([
                        PathElement::new(vec![(x0 + m, y0 + m), (x0 + n, y0 + n)], ink),
                        PathElement::new(vec![(x0 + m, y0 + n), (x0 + n, y0 + m)], ink),
                    ])
                    .map_err(e)?;
            } else if h.annotate && big {
                let label = short(v);
                let font = (FONT, TICK_SIZE * t * 0.9)
                    .into_font()
                    .color(&style::text_on(fill))
                    .pos(text_anchor());
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (x0 + 0.5, y0 + 0.5),
                        font,
                    )))
                    .map_err(e)?;
            }
        }
    }

    // The colour bar: the value axis drawn as 120 thin bands.
    if let Some(axis) = color_axis {
        let mut cb = ChartBuilder::on(&bar)
            .margin_top(px(10.0))
            .margin_bottom(px(60.0))
            .margin_left(px(6.0))
            .margin_right(px(4.0))
            .y_label_area_size(0)
            .right_y_label_area_size(px(64.0))
            .build_cartesian_2d(Axis::exact(0.0, 1.0), axis.clone())
            .map_err(e)?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc(h.color_label.as_str())
            .label_style(tick_font)
            .axis_desc_style(desc_font)
            .axis_style(style::AXIS.stroke_width(px(1.0)))
            .y_labels(6)
            .draw()
            .map_err(e)?;
        let n = 120;
        let at = |t: f64| {
            if axis.log {
                10f64.powf(axis.lo.log10() + t * (axis.hi.log10() - axis.lo.log10()))
            } else {
                axis.lo + t * (axis.hi - axis.lo)
            }
        };
        cb.draw_series((0..n).map(|i| {
            let (t0, t1) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            // Each band overlaps the next by half a band: anti-aliased edges leave no seams.
            let top = at((t1 + 0.5 / n as f64).min(1.0));
            Rectangle::new(
                [(0.0, at(t0)), (1.0, top)],
                style::viridis((t0 + t1) / 2.0).filled(),
            )
        }))
        .map_err(e)?;
    }
    Ok(())
}

fn text_anchor() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}

/// Three significant digits for a cell label.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        let e = v.abs().log10().floor() as i32;
        format!("{:.1}e{e}", v / 10f64.powi(e))
    } else {
        format_number(v)
    }
}
