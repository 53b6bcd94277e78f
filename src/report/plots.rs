//! The report's charts, drawn with plotters' SVG backend: grouped bars (counts per iteration,
//! score histograms, lengths, judge accuracy) and lines (DPO figures per step). Each returns
//! one `<svg>` document as a string, to be inlined in the page.
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;

use super::ReportError;

const SIZE: (u32, u32) = (560, 300);
const FONT: &str = "sans-serif";

/// Colours of the series, in order (chosen green, rejected red come first for histograms).
pub const GREEN: RGBColor = RGBColor(46, 139, 87);
pub const RED: RGBColor = RGBColor(200, 70, 60);
const PALETTE: [RGBColor; 5] = [
    RGBColor(52, 101, 164),
    RGBColor(230, 140, 30),
    RGBColor(120, 80, 160),
    RGBColor(40, 160, 170),
    RGBColor(150, 150, 150),
];

/// The i-th colour of the palette.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One series of bars: a value per category (`None`: not measured, no bar).
pub struct Bars {
    pub name: String,
    pub colour: RGBColor,
    pub values: Vec<Option<f64>>,
}

/// One line: (x, y) points.
pub struct Line {
    pub name: String,
    pub colour: RGBColor,
    pub points: Vec<(f64, f64)>,
}

fn top(max: f64) -> f64 {
    if max <= 0.0 {
        1.0
    } else {
        max * 1.15
    }
}

/// Bars grouped by category, one colour per series, with a legend.
pub fn grouped_bars(
    title: &str,
    categories: &[String],
    series: &[Bars],
    y_desc: &str,
) -> Result<String, ReportError> {
    let n = categories.len().max(1);
    let k = series.len().max(1);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0f64, |a, &b| a.max(b));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(super::plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d((0..n).into_segmented(), 0f64..top(max))
            .map_err(super::plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => categories.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(y_desc)
            .label_style((FONT, 12))
            .draw()
            .map_err(super::plot_err)?;
        // every bar is a slice of its category's segment, offset in pixels from its start
        let width = chart.plotting_area().dim_in_pixel().0 as f64 / n as f64;
        let slot = width * 0.8 / k as f64;
        for (j, s) in series.iter().enumerate() {
            let colour = s.colour;
            let offset = (width * 0.1 + slot * j as f64) as i32;
            let w = (slot as i32 - 2).max(1);
            let rects: Vec<_> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let at = (SegmentValue::Exact(i), 0.0);
                    let base = chart.backend_coord(&at);
                    let tip = chart.backend_coord(&(SegmentValue::Exact(i), (*v)?));
                    Some(
                        EmptyElement::at(at)
                            + Rectangle::new(
                                [(offset, tip.1 - base.1), (offset + w, 0)],
                                colour.filled(),
                            ),
                    )
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(super::plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        legend(&mut chart)?;
        root.present().map_err(super::plot_err)?;
    }
    Ok(svg)
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), ReportError>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 12))
        .draw()
        .map_err(super::plot_err)
}

/// Lines over a shared x axis (with a dot at every point, so a single step still shows).
pub fn lines(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Line],
) -> Result<String, ReportError> {
    let pts = || series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1.0 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let pad = ((y1 - y0) * 0.1).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(super::plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(super::plot_err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FONT, 12))
            .draw()
            .map_err(super::plot_err)?;
        for s in series {
            let colour = s.colour;
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(super::plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(super::plot_err)?;
        }
        legend(&mut chart)?;
        root.present().map_err(super::plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_lines_are_svg_with_their_labels() {
        let svg = grouped_bars(
            "pairs",
            &["it. 1".into(), "it. 2".into()],
            &[
                Bars {
                    name: "pairs".into(),
                    colour: GREEN,
                    values: vec![Some(3.0), Some(2.0)],
                },
                Bars {
                    name: "ties".into(),
                    colour: RED,
                    values: vec![Some(1.0), None],
                },
            ],
            "prompts",
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("it. 2") && svg.contains("ties"), "{svg}");
        let one_step = lines(
            "loss",
            "step",
            "loss",
            &[Line {
                name: "it. 1".into(),
                colour: colour(0),
                points: vec![(1.0, 0.693)],
            }],
        )
        .unwrap();
        assert!(one_step.contains("<circle"), "{one_step}");
    }
}
