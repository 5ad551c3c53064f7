//! Figures: line charts (with ±stderr bands, log axes, an optional second y axis) and heatmaps
//! (with a colour bar and marked missing cells), drawn with `plotters` in one house style
//! ([`style`]). A [`Figure`] is plain data; [`figures`] builds them from the store, and
//! [`Figure::render`] draws one as SVG text (for the report: no font needed, the browser
//! picks one) or as PNG (rendered with an embedded font, so no system font is needed).
//! [`images`] composes raster figures (a segmentation run's images beside their masks) pixel by
//! pixel.

pub mod axis;
pub mod figures;
pub mod generative;
mod heatmap;
pub mod images;
mod lines;
pub mod style;

use std::path::Path;

use crate::Error;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Svg,
    Png,
}

/// One line (and optional band) of a line chart.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    /// `(x, y)`, sorted by x. Non-finite y ends a segment (a diverged run's line stops there).
    pub points: Vec<(f64, f64)>,
    /// `(x, lo, hi)`: a shaded band (mean ± stderr over seeds).
    pub band: Vec<(f64, f64, f64)>,
    pub stroke: Stroke,
    /// Draw a marker at each point (few points: sweeps, theory).
    pub markers: bool,
    /// Colour: an index into the palette, or a position among `n` ordered series (layers).
    pub color: SeriesColor,
    /// Plot against the secondary (right) y axis.
    pub secondary: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stroke {
    #[default]
    Solid,
    Dashed,
    /// Markers only (measured points next to a fitted curve).
    Hidden,
    /// Small dots only: a scatter of many points (samples beside data).
    Dots,
}

#[derive(Clone, Copy, Debug, Default)]
pub enum SeriesColor {
    #[default]
    Auto,
    Palette(usize),
    Ordered(usize, usize),
}

#[derive(Clone, Debug, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    /// Whole-number x ticks only (layers).
    pub x_integer: bool,
    pub y_log: bool,
    /// Label of the right axis; used when a series has `secondary`.
    pub y2_label: String,
    pub y2_log: bool,
    pub series: Vec<Series>,
}

/// A heatmap: `values[row][col]`; a non-finite value is a missing (diverged) cell, drawn grey
/// with a cross.
#[derive(Clone, Debug, Default)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub columns: Vec<String>,
    pub rows: Vec<String>,
    pub values: Vec<Vec<f64>>,
    pub color_label: String,
    pub log_color: bool,
    /// Write each cell's value inside it (small grids such as phase diagrams).
    pub annotate: bool,
}

#[derive(Clone, Debug)]
pub enum Figure {
    Lines(LineChart),
    Heatmap(Heatmap),
}

impl Figure {
    pub fn title(&self) -> &str {
        match self {
            Figure::Lines(c) => &c.title,
            Figure::Heatmap(h) => &h.title,
        }
    }

    /// The figure as an SVG document.
    pub fn to_svg(&self) -> Result<String, Error> {
        // Text extents (for layout) come from the embedded font even in SVG.
        style::register_fonts();
        let mut out = String::new();
        {
            let backend =
                plotters::backend::SVGBackend::with_string(&mut out, (style::WIDTH, style::HEIGHT));
            // plotters writes SVG font sizes in points (× 0.806 of the pixel size asked for);
            // scale them back so that SVG and PNG text match.
            self.draw_scaled(backend, 1.0, 1.24)?;
        }
        Ok(out)
    }

    /// The figure as a PNG file at `scale` × the nominal size (2 for print).
    pub fn to_png(&self, path: &Path, scale: u32) -> Result<(), Error> {
        style::register_fonts();
        let size = (style::WIDTH * scale, style::HEIGHT * scale);
        // The bitmap backend encodes the PNG (by extension) when the figure is presented.
        let backend = plotters::backend::BitMapBackend::new(path, size);
        axis::with_png_glyphs(|| self.draw_scaled(backend, scale as f64, scale as f64))
    }

    /// Writes the figure to `path` in `format`.
    pub fn save(&self, path: &Path, format: Format) -> Result<(), Error> {
        match format {
            Format::Svg => {
                std::fs::write(path, self.to_svg()?).map_err(Error::io(path.to_path_buf()))
            }
            Format::Png => self.to_png(path, 2),
        }
    }

    fn draw_scaled<DB: plotters::backend::DrawingBackend>(
        &self,
        backend: DB,
        scale: f64,
        text_scale: f64,
    ) -> Result<(), Error> {
        use plotters::prelude::IntoDrawingArea;
        let area = backend.into_drawing_area();
        let r = match self {
            Figure::Lines(c) => lines::draw(&area, c, scale, text_scale),
            Figure::Heatmap(h) => heatmap::draw(&area, h, scale, text_scale),
        };
        r.and_then(|()| area.present().map_err(|e| e.to_string()))
            .map_err(|message| Error::Failed {
                what: format!("figure \"{}\"", self.title()),
                message,
                hint: "this is a bug in the plotting code; please report it with the run".into(),
            })
    }
}
