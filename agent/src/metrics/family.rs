//! One call per metric family, over prometheus-client's [`DescriptorEncoder`]: the
//! family's name as it is exposed, its help, and its series as they are in the store
//! at scrape time. A family without series is left out, as prometheus-client leaves
//! out an empty `Family`, so nothing is exposed for a source that is gone.
//!
//! Names are written in full (`nodediag_disk_read_time_seconds_total`), so that the
//! code reads like the exposition and a search finds them. The descriptor given to
//! the client is derived: a counter loses `_total`, which the client appends itself
//! (the OpenMetrics `# TYPE` line names the family without it), and a name ending in
//! a base unit declares it (`# UNIT` in OpenMetrics, `unit` in protobuf).

use super::histogram::{self, HistogramSeries};
use prometheus_client::encoding::{
    CounterValueEncoder, DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet,
    GaugeValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::fmt;

/// The label set of an unlabelled series.
pub const NO_LABELS: [(&str, &str); 0] = [];

static SECONDS: Unit = Unit::Seconds;
static BYTES: Unit = Unit::Bytes;

/// A sample's value. Integers are written as integers in the text formats
/// (`nodediag_conntrack_entries 250000`, not `250000.0`), and so is a float with no
/// fractional part, as nodediag wrote them before it used the client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    /// OpenMetrics has no spelling for an infinite or NaN value that every encoder
    /// writes right, and nodediag has no such value to expose: such a series is left
    /// out rather than written wrong.
    fn is_finite(self) -> bool {
        match self {
            Value::Int(_) => true,
            Value::Float(f) => f.is_finite(),
        }
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(u64::from(v))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        if v.fract() == 0.0 && (0.0..1e15).contains(&v) {
            Value::Int(v as u64)
        } else {
            Value::Float(v)
        }
    }
}

impl EncodeGaugeValue for Value {
    fn encode(&self, e: &mut GaugeValueEncoder) -> fmt::Result {
        match self {
            Value::Int(v) => EncodeGaugeValue::encode(v, e),
            Value::Float(v) => EncodeGaugeValue::encode(v, e),
        }
    }
}

impl EncodeCounterValue for Value {
    fn encode(&self, e: &mut CounterValueEncoder) -> fmt::Result {
        match self {
            Value::Int(v) => EncodeCounterValue::encode(v, e),
            Value::Float(v) => EncodeCounterValue::encode(v, e),
        }
    }
}

/// The client's descriptor for an exposed name: (name, unit).
fn descriptor(name: &str, kind: MetricType) -> (&str, Option<&'static Unit>) {
    let base = match kind {
        MetricType::Counter => {
            debug_assert!(name.ends_with("_total"), "counter {name} without _total");
            name.strip_suffix("_total").unwrap_or(name)
        }
        _ => name,
    };
    for (suffix, unit) in [("_seconds", &SECONDS), ("_bytes", &BYTES)] {
        if let Some(stem) = base.strip_suffix(suffix) {
            return (stem, Some(unit));
        }
    }
    (base, None)
}

/// Families encoded from what the caller holds, as the `Collector`s of `metrics` and
/// `http` do at scrape time.
pub trait Families {
    fn gauge<L, V>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
        V: Into<Value>;

    /// `name` ends in `_total`.
    fn counter<L, V>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
        V: Into<Value>;

    fn histogram<'h, L>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, HistogramSeries<'h>)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet;

    /// A family of one unlabelled series.
    fn gauge_value(&mut self, name: &str, help: &str, value: impl Into<Value>) -> fmt::Result {
        self.gauge(name, help, [(NO_LABELS, value)])
    }

    fn counter_value(&mut self, name: &str, help: &str, value: impl Into<Value>) -> fmt::Result {
        self.counter(name, help, [(NO_LABELS, value)])
    }
}

impl Families for DescriptorEncoder<'_> {
    fn gauge<L, V>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
        V: Into<Value>,
    {
        scalars(self, name, help, MetricType::Gauge, series)
    }

    fn counter<L, V>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
        V: Into<Value>,
    {
        scalars(self, name, help, MetricType::Counter, series)
    }

    fn histogram<'h, L>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (L, HistogramSeries<'h>)>,
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
    {
        let mut series = series.into_iter().peekable();
        if series.peek().is_none() {
            return Ok(());
        }
        let (base, unit) = descriptor(name, MetricType::Histogram);
        let mut family = self.encode_descriptor(base, help, unit, MetricType::Histogram)?;
        for (labels, h) in series {
            histogram::encode(&mut family.encode_family(&labels)?, &h)?;
        }
        Ok(())
    }
}

fn scalars<L, V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    V: Into<Value>,
{
    let mut series = series
        .into_iter()
        .map(|(l, v)| (l, v.into()))
        .filter(|(_, v)| v.is_finite())
        .peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let (base, unit) = descriptor(name, kind);
    let mut family = e.encode_descriptor(base, help, unit, kind)?;
    for (labels, value) in series {
        let mut one = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => one.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
            _ => one.encode_gauge(&value)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_drop_total_and_name_base_units() {
        let d = |n, k| {
            let (base, unit) = descriptor(n, k);
            (base, unit.map(Unit::as_str))
        };
        assert_eq!(
            d("nodediag_disk_read_time_seconds_total", MetricType::Counter),
            ("nodediag_disk_read_time", Some("seconds"))
        );
        assert_eq!(
            d("nodediag_conntrack_drop_total", MetricType::Counter),
            ("nodediag_conntrack_drop", None)
        );
        assert_eq!(
            d("nodediag_memory_total_bytes", MetricType::Gauge),
            ("nodediag_memory_total", Some("bytes"))
        );
        assert_eq!(
            d("nodediag_nic_speed_bytes_per_second", MetricType::Gauge),
            ("nodediag_nic_speed_bytes_per_second", None)
        );
        assert_eq!(
            d("nodediag_fsync_duration_seconds", MetricType::Histogram),
            ("nodediag_fsync_duration", Some("seconds"))
        );
    }

    #[test]
    fn whole_floats_are_integers_and_others_stay_floats() {
        assert_eq!(Value::from(16_777_216_000.0), Value::Int(16_777_216_000));
        assert_eq!(Value::from(0.0), Value::Int(0));
        assert_eq!(Value::from(0.1049), Value::Float(0.1049));
        assert_eq!(Value::from(-1.0), Value::Float(-1.0));
        assert!(!Value::from(f64::NAN).is_finite());
        assert!(!Value::from(f64::INFINITY).is_finite());
    }
}
