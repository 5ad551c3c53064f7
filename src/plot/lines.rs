//! Line charts: series with optional ±stderr bands, markers, dashes and a second y axis.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::Axis;
use super::style::{self, FONT, GRID, INK, LABEL_SIZE, TICK_SIZE, TITLE_SIZE};
use super::{LineChart, Series, SeriesColor, Stroke};

type Res = Result<(), String>;

fn color(s: &Series, i: usize) -> RGBColor {
    match s.color {
        SeriesColor::Auto => style::palette(i),
        SeriesColor::Palette(k) => style::palette(k),
        SeriesColor::Ordered(k, n) => style::ordered(k, n),
    }
}

fn values<'a>(series: impl Iterator<Item = &'a Series>, x: bool) -> Vec<f64> {
    let mut v = Vec::new();
    for s in series {
        if x {
            v.extend(s.points.iter().map(|p| p.0));
            v.extend(s.band.iter().map(|p| p.0));
        } else {
            v.extend(s.points.iter().map(|p| p.1));
            v.extend(s.band.iter().flat_map(|p| [p.1, p.2]));
        }
    }
    v
}

/// The corner with the fewest points, for the legend.
fn legend_corner(c: &LineChart, x: &Axis, y: &Axis, y2: &Axis) -> SeriesLabelPosition {
    let mut counts = [0usize; 4]; // UR, LR, UL, LL
    for s in &c.series {
        let y = if s.secondary { y2 } else { y };
        for &(px, py) in &s.points {
            if !x.drawable(px) || !y.drawable(py) {
                continue;
            }
            let (tx, ty) = (x.t(px), y.t(py));
            let right = tx > 0.55;
            let left = tx < 0.45;
            if right && ty > 0.55 {
                counts[0] += 1;
            }
            if right && ty < 0.45 {
                counts[1] += 1;
            }
            if left && ty > 0.55 {
                counts[2] += 1;
            }
            if left && ty < 0.45 {
                counts[3] += 1;
            }
        }
    }
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerLeft,
    ][best]
        .clone()
}

pub(super) fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &LineChart,
    s: f64,
    t: f64,
) -> Res {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let px = |v: f64| (v * s).round() as u32;
    area.fill(&WHITE).map_err(e)?;
    let has_secondary = c.series.iter().any(|x| x.secondary);
    let x_axis = Axis::fit(values(c.series.iter(), true), c.x_log).map(|a| Axis {
        integer: c.x_integer,
        ..a
    });
    let y_axis = Axis::fit(
        values(c.series.iter().filter(|x| !x.secondary), false),
        c.y_log,
    );
    let (Some(x_axis), Some(y_axis)) = (x_axis, y_axis) else {
        let text = format!("{}: no finite data to plot", c.title);
        area.draw(&Text::new(
            text,
            (px(40.0) as i32, px(40.0) as i32),
            (FONT, LABEL_SIZE * t).into_font().color(&INK),
        ))
        .map_err(e)?;
        return Ok(());
    };
    let y2_axis = if has_secondary {
        Axis::fit(
            values(c.series.iter().filter(|x| x.secondary), false),
            c.y2_log,
        )
        .unwrap_or_else(|| y_axis.clone())
    } else {
        y_axis.clone()
    };
    let corner = legend_corner(c, &x_axis, &y_axis, &y2_axis);

    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&c.title, (FONT, TITLE_SIZE * t).into_font().color(&INK))
        .margin(px(14.0))
        .x_label_area_size(px(50.0))
        .y_label_area_size(px(74.0));
    if has_secondary {
        builder.right_y_label_area_size(px(74.0));
    }
    let mut chart = builder
        .build_cartesian_2d(x_axis.clone(), y_axis.clone())
        .map_err(e)?
        .set_secondary_coord(x_axis.clone(), y2_axis.clone());
    let tick_font = (FONT, TICK_SIZE * t).into_font().color(&INK);
    let desc_font = (FONT, LABEL_SIZE * t).into_font().color(&INK);
    chart
        .configure_mesh()
        .x_desc(c.x_label.as_str())
        .y_desc(c.y_label.as_str())
        .label_style(tick_font.clone())
        .axis_desc_style(desc_font.clone())
        .bold_line_style(GRID.stroke_width(px(1.0)))
        .light_line_style(RGBColor(0xf4, 0xf4, 0xf4).stroke_width(px(1.0)))
        .axis_style(style::AXIS.stroke_width(px(1.0)))
        .set_all_tick_mark_size(px(4.0))
        .x_labels(8)
        .y_labels(8)
        .draw()
        .map_err(e)?;
    if has_secondary {
        chart
            .configure_secondary_axes()
            .y_desc(c.y2_label.as_str())
            .label_style(tick_font)
            .axis_desc_style(desc_font)
            .axis_style(style::AXIS.stroke_width(px(1.0)))
            .y_labels(8)
            .draw()
            .map_err(e)?;
    }

    let width = px(2.0);
    for (i, series) in c.series.iter().enumerate() {
        let col = color(series, i);
        let (xa, ya) = (&x_axis, if series.secondary { &y2_axis } else { &y_axis });
        let (xa, ya) = (xa.clone(), ya.clone());
        let ok = |x: f64, y: f64| xa.drawable(x) && ya.drawable(y);

        // Band: the upper edge forward, the lower edge back.
        let upper: Vec<(f64, f64)> = series
            .band
            .iter()
            .filter(|b| ok(b.0, b.1) && ok(b.0, b.2))
            .map(|b| (b.0, b.2))
            .collect();
        if upper.len() > 1 {
            let mut poly = upper.clone();
            poly.extend(
                series
                    .band
                    .iter()
                    .rev()
                    .filter(|b| ok(b.0, b.1) && ok(b.0, b.2))
                    .map(|b| (b.0, b.1)),
            );
            let shape = Polygon::new(poly, col.mix(0.2).filled());
            if series.secondary {
                chart
                    .draw_secondary_series(std::iter::once(shape))
                    .map_err(e)?;
            } else {
                chart.draw_series(std::iter::once(shape)).map_err(e)?;
            }
        }

        // Segments between non-drawable points.
        let mut segments: Vec<Vec<(f64, f64)>> = vec![vec![]];
        for &(x, y) in &series.points {
            if ok(x, y) {
                if let Some(seg) = segments.last_mut() {
                    seg.push((x, y));
                }
            } else if segments.last().is_some_and(|seg| !seg.is_empty()) {
                segments.push(vec![]);
            }
        }
        let line_style = col.stroke_width(width);
        let mut labelled = false;
        for seg in segments.iter().filter(|seg| !seg.is_empty()) {
            let dashed = match series.stroke {
                Stroke::Solid => false,
                Stroke::Dashed => true,
                Stroke::Hidden | Stroke::Dots => break,
            };
            let anno = match (dashed, series.secondary) {
                (false, false) => chart
                    .draw_series(LineSeries::new(seg.clone(), line_style))
                    .map_err(e)?,
                (false, true) => chart
                    .draw_secondary_series(LineSeries::new(seg.clone(), line_style))
                    .map_err(e)?,
                (true, false) => chart
                    .draw_series(DashedLineSeries::new(
                        seg.clone(),
                        px(7.0),
                        px(5.0),
                        line_style,
                    ))
                    .map_err(e)?,
                (true, true) => chart
                    .draw_secondary_series(DashedLineSeries::new(
                        seg.clone(),
                        px(7.0),
                        px(5.0),
                        line_style,
                    ))
                    .map_err(e)?,
            };
            if !labelled && !series.label.is_empty() {
                let l = px(22.0) as i32;
                anno.label(series.label.as_str()).legend(move |(x, y)| {
                    let pts = if dashed {
                        vec![(x, y), (x + l / 3, y)]
                    } else {
                        vec![(x, y), (x + l, y)]
                    };
                    PathElement::new(pts, line_style)
                });
                labelled = true;
            }
        }
        if series.markers || matches!(series.stroke, Stroke::Hidden | Stroke::Dots) {
            let pts: Vec<(f64, f64)> = segments.concat();
            let r = px(if series.stroke == Stroke::Dots {
                1.6
            } else {
                3.5
            });
            let marks = pts.into_iter().map(|p| Circle::new(p, r, col.filled()));
            let anno = if series.secondary {
                chart.draw_secondary_series(marks).map_err(e)?
            } else {
                chart.draw_series(marks).map_err(e)?
            };
            if !labelled && !series.label.is_empty() {
                anno.label(series.label.as_str())
                    .legend(move |(x, y)| Circle::new((x + 8, y), r, col.filled()));
            }
        }
        // A line that ends in non-finite values diverged: a cross where it left the chart.
        let last_finite = series.points.iter().rposition(|p| ok(p.0, p.1));
        if let Some(k) = last_finite {
            if series.points[k + 1..].iter().any(|p| !p.1.is_finite()) {
                let cross = Cross::new(series.points[k], px(6.0) as i32, col.stroke_width(width));
                if series.secondary {
                    chart
                        .draw_secondary_series(std::iter::once(cross))
                        .map_err(e)?;
                } else {
                    chart.draw_series(std::iter::once(cross)).map_err(e)?;
                }
            }
        }
    }

    if c.series.iter().any(|x| !x.label.is_empty()) {
        chart
            .configure_series_labels()
            .position(corner)
            .margin(px(10.0))
            .legend_area_size(px(26.0))
            .background_style(WHITE.mix(0.88))
            .border_style(GRID.stroke_width(px(1.0)))
            .label_font((FONT, TICK_SIZE * t).into_font().color(&INK))
            .draw()
            .map_err(e)?;
    }
    Ok(())
}
