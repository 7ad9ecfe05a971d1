//! The results as SVG charts beside `compare.json`: CPU per query by server and query kind,
//! latency percentiles at each offered load, and connect time against the containers already
//! on the bridge with the kernel floor and netavark. README shows those of a real run.
//!
//! plotters without its font features: SVG text is left to the viewer (no system fonts are
//! read), and text extents are estimated, which is all the layout needs.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::connect::AgentFigures;
use crate::forward::{ForwardFigures, Mode};
use crate::peers::{Form, Kind};
use crate::report::Point;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const SIZE: (u32, u32) = (960, 520);

/// One percentile of a latency run.
type Percentile = fn(&crate::dnsperf::Latency) -> f64;

/// One bar: its group on the x axis, its series (colour), its height.
struct Bar {
    group: String,
    series: String,
    value: f64,
}

/// Write every chart the results allow into `dir`; the files written.
pub(crate) fn write_all(
    dir: &Path,
    points: &[Point],
    agent: Option<&AgentFigures>,
    forwarding: Option<&ForwardFigures>,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut bars: Vec<Bar> = points
        .iter()
        .map(|p| Bar {
            group: p.server.short().into(),
            series: format!(
                "{}, {} names",
                match p.form {
                    Form::Bare => "local, bare name",
                    Form::Qualified => "local, NAME.NETWORK",
                },
                p.names
            ),
            value: p.saturation.cpu_us_per_query,
        })
        .collect();
    if let Some(f) = forwarding {
        bars.extend(f.points.iter().map(|p| Bar {
            group: p.server.short().into(),
            series: match p.mode {
                Mode::Cached => "forwarded, from cache".into(),
                Mode::Uncacheable => "forwarded, TTL 0 (every query upstream)".into(),
            },
            value: p.saturation.cpu_us_per_query,
        }));
    }
    if !bars.is_empty() {
        let path = dir.join("cpu-per-query.svg");
        grouped_bars(
            &path,
            "CPU per query at saturation (lower is better)",
            "CPU µs per query",
            &bars,
        )?;
        written.push(path);
    }
    if points.iter().any(|p| !p.latency.is_empty()) {
        let path = dir.join("latency.svg");
        latency_lines(&path, points)?;
        written.push(path);
    }
    if let Some(a) = agent {
        if !a.growth.is_empty() {
            let path = dir.join("connect.svg");
            connect_lines(&path, a)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// In order of first appearance.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for i in items {
        if !v.iter().any(|x| x == i) {
            v.push(i.to_string());
        }
    }
    v
}

fn grouped_bars(path: &Path, title: &str, y_desc: &str, bars: &[Bar]) -> Result<()> {
    let groups = distinct(bars.iter().map(|b| b.group.as_str()));
    let series = distinct(bars.iter().map(|b| b.series.as_str()));
    let top = bars.iter().map(|b| b.value).fold(0.0, f64::max) * 1.25;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..top.max(1e-3))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .draw()?;
    let width = 0.8 / series.len() as f64;
    for (s, name) in series.iter().enumerate() {
        let colour = Palette99::pick(s).to_rgba();
        let mine: Vec<(usize, f64)> = bars
            .iter()
            .filter(|b| &b.series == name)
            .filter_map(|b| Some((groups.iter().position(|g| *g == b.group)?, b.value)))
            .collect();
        chart
            .draw_series(mine.iter().map(|&(g, v)| {
                let x0 = g as f64 + 0.1 + width * s as f64;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.92, v)], colour.filled())
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled()));
        chart.draw_series(mine.iter().map(|&(g, v)| {
            let x = g as f64 + 0.1 + width * (s as f64 + 0.46);
            Text::new(
                format!("{v:.1}"),
                (x, v + top * 0.01),
                ("sans-serif", 11)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    // The groups' names under their bars (the x axis is a plain range).
    for (g, name) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        root.draw(&Text::new(
            name.clone(),
            (px, py + 8),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// p50, p99 and p99.9 against the offered load, a line per server (bare names, the fewest
/// names measured).
fn latency_lines(path: &Path, points: &[Point]) -> Result<()> {
    let fewest = points.iter().map(|p| p.names).min().unwrap_or(0);
    let shown: Vec<&Point> = points
        .iter()
        .filter(|p| p.names == fewest && p.form == Form::Bare && !p.latency.is_empty())
        .collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(40);
    head.titled(
        &format!("Latency at a fixed offered load, {fewest} names, bare names (lower is better)"),
        ("sans-serif", 22),
    )?;
    let panels = body.split_evenly((1, 3));
    let rates: Vec<f64> = shown
        .iter()
        .flat_map(|p| p.latency.iter().map(|l| f64::from(l.rate) / 1e3))
        .collect();
    let x_max = rates.iter().copied().fold(1.0, f64::max) * 1.1;
    let x_min = rates.iter().copied().fold(f64::MAX, f64::min).min(x_max) * 0.8;
    let pick: [(&str, Percentile); 3] = [
        ("p50", |l| l.p50_ms),
        ("p99", |l| l.p99_ms),
        ("p99.9", |l| l.p999_ms),
    ];
    let y_max = shown
        .iter()
        .flat_map(|p| p.latency.iter().map(|l| l.p999_ms))
        .fold(0.01, f64::max)
        * 2.0;
    for (i, (panel, (name, of))) in panels.iter().zip(pick).enumerate() {
        panel_lines(panel, name, x_min..x_max, y_max, &shown, of, i == 0)?;
    }
    root.present()?;
    Ok(())
}

fn panel_lines(
    panel: &DrawingArea<SVGBackend<'_>, Shift>,
    name: &str,
    x: std::ops::Range<f64>,
    y_max: f64,
    shown: &[&Point],
    of: Percentile,
    legend: bool,
) -> Result<()> {
    let mut chart = ChartBuilder::on(panel)
        .caption(name, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(x, (0.005f64..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered load, thousand q/s")
        .y_desc("ms (log)")
        .draw()?;
    for (s, p) in shown.iter().enumerate() {
        let colour = Palette99::pick(s).to_rgba();
        let line: Vec<(f64, f64)> = p
            .latency
            .iter()
            .map(|l| (f64::from(l.rate) / 1e3, of(l).max(0.005)))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
            .label(p.server.short())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], colour.stroke_width(2)));
        chart.draw_series(line.iter().map(|&xy| Circle::new(xy, 3, colour.filled())))?;
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// A connect's p50 against the containers already on the bridge: the agent, the kernel floor
/// and netavark.
fn connect_lines(path: &Path, a: &AgentFigures) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = a.growth.last().map_or(1, |g| g.containers).max(1) as f64;
    let y_max = a
        .growth
        .iter()
        .flat_map(|g| {
            [
                g.agent_p50_ms,
                g.floor_p50_ms,
                g.netavark_p50_ms.unwrap_or(0.0),
            ]
        })
        .fold(0.1, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Connect time as the bridge fills: {} containers over {} bridge{} (p50 of each {}th)",
                a.containers,
                a.bridges,
                if a.bridges == 1 { "" } else { "s" },
                a.growth.len()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (0.05f64..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("containers already connected")
        .y_desc("ms per connect (log)")
        .draw()?;
    let series: [(&str, Vec<(f64, f64)>); 3] = [
        (
            "attach-agent connect (API call)",
            a.growth
                .iter()
                .map(|g| (f64::from(g.containers), g.agent_p50_ms))
                .collect(),
        ),
        (
            "kernel floor (the same netlink requests)",
            a.growth
                .iter()
                .map(|g| (f64::from(g.containers), g.floor_p50_ms))
                .collect(),
        ),
        (
            "netavark 1.4 setup",
            a.growth
                .iter()
                .filter_map(|g| Some((f64::from(g.containers), g.netavark_p50_ms?)))
                .collect(),
        ),
    ];
    for (s, (name, line)) in series.into_iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let colour = Palette99::pick(s).to_rgba();
        chart
            .draw_series(LineSeries::new(
                line.iter().map(|&(x, y)| (x, y.max(0.05))),
                colour.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

impl Kind {
    /// As the charts' axes and legends name it.
    pub(crate) fn short(self) -> &'static str {
        match self {
            Kind::Echo => "echo floor",
            Kind::Ours => "resolver",
            Kind::OursMetricsOff => "resolver, metrics off",
            Kind::Dnsmasq => "dnsmasq",
            Kind::Aardvark => "aardvark-dns",
            Kind::Agent => "agent (namespaces)",
            Kind::Docker => "Docker 20.10",
        }
    }
}
