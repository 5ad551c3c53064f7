//! The one house style of every figure: sizes, fonts, the colour-blind-safe palette and the
//! viridis colour map.

use std::sync::Once;

use plotters::style::{FontStyle, RGBColor};

/// Figure size in pixels (SVG user units): a 16:10 shape that fits a paper column at 300 dpi
/// when exported as PNG at 2× and a report page at 1×.
pub const WIDTH: u32 = 760;
pub const HEIGHT: u32 = 460;

/// The font family every text uses. SVG leaves the choice to the viewer (no font is embedded);
/// PNG renders with Ubuntu Light, embedded in the binary (see [`register_fonts`]).
pub const FONT: &str = "sans-serif";
pub const TITLE_SIZE: f64 = 19.0;
pub const LABEL_SIZE: f64 = 15.0;
pub const TICK_SIZE: f64 = 13.0;

pub const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
pub const GRID: RGBColor = RGBColor(0xe6, 0xe6, 0xe6);
pub const AXIS: RGBColor = RGBColor(0x88, 0x88, 0x88);
/// Cells and points with no finite value (diverged runs).
pub const MISSING: RGBColor = RGBColor(0xd9, 0xd9, 0xd9);

/// Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms of
/// colour blindness and in greyscale print order.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xF0, 0xE4, 0x42),
];

pub fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Viridis (van der Walt & Smith, matplotlib 2.0 default), sampled at 9 evenly spaced stops
/// from matplotlib's table and interpolated linearly; `t` in [0, 1].
pub fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f64;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + f * (b as f64 - a as f64)).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// Colour of series `i` of `n` ordered ones (layers): viridis without its lightest end, which
/// is hard to see on white.
pub fn ordered(i: usize, n: usize) -> RGBColor {
    viridis(if n <= 1 {
        0.0
    } else {
        0.85 * i as f64 / (n - 1) as f64
    })
}

/// Black or white, whichever reads better on `c` (Rec. 709 luma).
pub fn text_on(c: RGBColor) -> RGBColor {
    let y = 0.2126 * c.0 as f64 + 0.7152 * c.1 as f64 + 0.0722 * c.2 as f64;
    if y > 140.0 {
        INK
    } else {
        RGBColor(255, 255, 255)
    }
}

/// Registers the embedded font for the PNG backend (plotters' `ab_glyph` renderer needs a font
/// for every family it meets, and a fresh machine may have no fonts at all). Ubuntu Light ships
/// inside the `epaint_default_fonts` crate under the Ubuntu Font Licence.
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The bytes are a valid TTF shipped by the crate; failure would leave text unrendered,
            // not crash, so it is not worth an error path.
            let _ = plotters::style::register_font(FONT, style, epaint_default_fonts::UBUNTU_LIGHT);
        }
    });
}
