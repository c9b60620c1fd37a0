//! Prometheus text exposition (0.0.4) and OpenMetrics 1.0 from one writer.
//!
//! nodediag writes its own encoder instead of using prometheus-client's: that crate
//! emits OpenMetrics only, and scrapers that do not ask for it must get 0.0.4. Both
//! formats share the sample lines; they differ in counter metadata and the EOF marker.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper lists it in Accept (Prometheus does), else 0.0.4.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

pub struct Encoder {
    out: String,
    format: Format,
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        Self {
            out: String::with_capacity(64 * 1024),
            format,
        }
    }

    /// Starts a metric family. Counter names are given with their `_total` suffix.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let meta_name = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {meta_name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {meta_name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// The series of one histogram: `_bucket` per upper bound (cumulative counts,
    /// ending with +Inf), `_sum` and `_count`. The family is started by the caller.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let bucket = format!("{name}_bucket");
        for &(le, n) in buckets {
            let le = self.le_label(le);
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, n as f64);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }

    /// OpenMetrics wants canonical floats in `le` ("1.0", not "1").
    fn le_label(&self, le: f64) -> String {
        let mut s = String::new();
        write_value(&mut s, le);
        if self.format == Format::OpenMetrics && le.is_finite() && le.fract() == 0.0 {
            s.push_str(".0");
        }
        s
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_per_format() {
        for (format, type_line, eof) in [
            (Format::Text, "# TYPE x_total counter", false),
            (Format::OpenMetrics, "# TYPE x counter", true),
        ] {
            let mut e = Encoder::new(format);
            e.single("x_total", Kind::Counter, "help", 3.0);
            let out = e.finish();
            assert!(out.contains(type_line), "{out}");
            assert!(out.contains("\nx_total 3\n"), "{out}");
            assert_eq!(out.ends_with("# EOF\n"), eof);
        }
    }

    #[test]
    fn labels_and_values_are_escaped() {
        let mut e = Encoder::new(Format::Text);
        e.family("g", Kind::Gauge, "a \\ b\nc");
        e.sample("g", &[("a", "q\"uo\\te\n")], 0.25);
        e.sample("g", &[("a", "x"), ("b", "y")], f64::INFINITY);
        e.sample("g", &[], f64::NAN);
        let out = e.finish();
        assert!(out.contains("# HELP g a \\\\ b\\nc\n"));
        assert!(out.contains("g{a=\"q\\\"uo\\\\te\\n\"} 0.25\n"));
        assert!(out.contains("g{a=\"x\",b=\"y\"} +Inf\n"));
        assert!(out.contains("g NaN\n"));
    }

    #[test]
    fn histograms_have_cumulative_buckets_sum_and_count() {
        for (format, one) in [(Format::Text, "1"), (Format::OpenMetrics, "1.0")] {
            let mut e = Encoder::new(format);
            e.family("h_seconds", Kind::Histogram, "help");
            e.histogram(
                "h_seconds",
                &[("path", "/a")],
                &[(0.01, 2), (1.0, 3), (f64::INFINITY, 4)],
                9.5,
                4,
            );
            let out = e.finish();
            assert!(out.contains("# TYPE h_seconds histogram\n"), "{out}");
            assert!(
                out.contains("h_seconds_bucket{path=\"/a\",le=\"0.01\"} 2\n"),
                "{out}"
            );
            assert!(
                out.contains(&format!("h_seconds_bucket{{path=\"/a\",le=\"{one}\"}} 3\n")),
                "{out}"
            );
            assert!(
                out.contains("h_seconds_bucket{path=\"/a\",le=\"+Inf\"} 4\n"),
                "{out}"
            );
            assert!(out.contains("h_seconds_sum{path=\"/a\"} 9.5\n"), "{out}");
            assert!(out.contains("h_seconds_count{path=\"/a\"} 4\n"), "{out}");
        }
    }

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
    }
}
