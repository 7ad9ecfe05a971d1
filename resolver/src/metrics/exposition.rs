//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Why not a client crate: both Rust clients keep their own metric objects and encode those,
//! while ours are cells each listener thread writes alone, summed only when scraped, so a
//! crate would be used for its encoder alone; and `prometheus-client` encodes OpenMetrics,
//! whose `_total` samples under a TYPE line without the suffix `promtool check metrics`
//! (which reads 0.0.4) does not accept as one family. The format is a few lines of rules,
//! all of them here, and promtool checks the output in the tests.

use std::fmt::Write;

/// The `Content-Type` of what [`Exposition`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Cumulative bucket counts of a histogram at scrape time, with their upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue<'a> {
    /// Upper bounds, ascending, in the metric's unit (seconds); `+Inf` is implied.
    pub bounds: &'a [f64],
    /// Observations in each bucket, not cumulative: `bounds.len() + 1` counts, the last one
    /// above every bound.
    pub counts: Vec<u64>,
    /// Sum of every observation, in the metric's unit.
    pub sum: f64,
}

/// The exposition being written: families one after another, each with its HELP and TYPE
/// lines before its samples (the format wants a family's samples together).
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Start family `name` (its samples follow). `name` must be a valid metric name: it is
    /// always a constant of ours.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(valid_name(name), "metric name {name:?}");
        let _ = write!(self.out, "# HELP {name} ");
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.word());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        self.out.push(' ');
        self.value(value);
        self.out.push('\n');
    }

    /// A whole family of one sample without labels.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram of the current family: its buckets (cumulative, `le`
    /// added to `labels`), `_sum` and `_count`.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramValue<'_>) {
        let mut cumulative = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = match h.bounds.get(i) {
                Some(b) => format_float(*b),
                None => "+Inf".to_string(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        self.out.push(' ');
        self.value(h.sum);
        let _ = write!(self.out, "\n{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// What was written.
    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            debug_assert!(valid_name(k), "label name {k:?}");
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "{k}=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn value(&mut self, v: f64) {
        self.out.push_str(&format_float(v));
    }
}

/// A sample value as the format spells it (Go's float syntax: `+Inf`, `-Inf`, `NaN`).
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms_are_written_as_the_format_says() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "Things \\ counted\nhere.");
        e.sample("x_total", &[("network", "a\"b\\c\nd")], 3.0);
        e.family("d_seconds", Kind::Histogram, "Durations.");
        e.histogram(
            "d_seconds",
            &[("source", "local")],
            &HistogramValue {
                bounds: &[0.001, 0.5],
                counts: vec![2, 1, 4],
                sum: 7.25,
            },
        );
        e.single("up", Kind::Gauge, "Up.", 1.0);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things \\\\ counted\\nhere.\n# TYPE x_total counter\n\
             x_total{network=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP d_seconds Durations.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{source=\"local\",le=\"0.001\"} 2\n\
             d_seconds_bucket{source=\"local\",le=\"0.5\"} 3\n\
             d_seconds_bucket{source=\"local\",le=\"+Inf\"} 7\n\
             d_seconds_sum{source=\"local\"} 7.25\n\
             d_seconds_count{source=\"local\"} 7\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n"
        );
    }

    #[test]
    fn floats_take_the_formats_spelling() {
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(0.000005), "0.000005");
        assert_eq!(format_float(12.0), "12");
        assert!(valid_name("attach_agent_dns_queries_total"));
        assert!(!valid_name("9lives"));
    }
}
