//! The SVG plot: one-way p50 latency, payload written and read, against
//! payload size, one line per transport, log-log.

use crate::report::{format_ns, LatencyRow, PayloadMode, Report};
use plotters::prelude::*;
use std::path::Path;

/// Size of the picture in pixels.
const SIZE: (u32, u32) = (1000, 650);

/// Line colours, distinguishable on white (Tableau 10).
const COLORS: [RGBColor; 10] = [
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
];

/// `v` with an SI suffix and no unit: `10`, `1k`, `16M`.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

/// Draws the plot into `path`.
pub(crate) fn write_svg(report: &Report, path: &Path) -> Result<(), String> {
    let rows: Vec<&LatencyRow> = report
        .latency
        .iter()
        .filter(|r| r.mode == PayloadMode::Written && r.p50_ns > 0.0)
        .collect();
    if rows.is_empty() {
        return Err("no latency measurement with the payload written to plot".into());
    }
    let mut transports: Vec<&str> = Vec::new();
    for r in &rows {
        if !transports.contains(&r.transport.as_str()) {
            transports.push(&r.transport);
        }
    }
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        (lo / 1.5, hi * 1.5)
    };
    let (x0, x1) = range(&mut rows.iter().map(|r| r.size as f64));
    let (y0, y1) = range(&mut rows.iter().map(|r| r.p50_ns));
    let draw_err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    let caption = format!(
        "one-way latency (p50), payload written + read — {} CPUs, {}",
        report.machine.cpus, report.machine.cpu_model
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("payload size (bytes)")
        .y_desc("one-way latency (p50)")
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| format_ns(*v))
        .draw()
        .map_err(|e| draw_err(&e))?;
    for (i, transport) in transports.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.transport == *transport)
            .map(|r| (r.size as f64, r.p50_ns))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| draw_err(&e))?
            .label(*transport)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| draw_err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw_err(&e))?;
    root.present().map_err(|e| draw_err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_a_synthetic_report() {
        let report = crate::report::tests::synthetic();
        let path =
            std::env::temp_dir().join(format!("shmbox-bench-plot-{}.svg", std::process::id()));
        report.write_svg(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
        assert!(svg.contains("shmbox spin"));
        assert!(svg.contains("payload size (bytes)"));
        assert!(svg.contains("<polyline"));
    }
}
