//! `/metrics` through prometheus-client: nodediag's own families, then one set per
//! signal, then what the HTTP server adds, in the format the scraper asks for.
//!
//! A signal's families are encoded from its collector's latest sample and kept,
//! per format, until that collector records again: a scrape sends them as they are
//! and encodes only the small families that change with every request.
//! [`Exposition::warm_signal`] encodes a signal's families as soon as its collector
//! records, in the formats scrapers asked for lately and only when their next scrape
//! may come before the collector records again, so a scrape does not wait for the
//! encoding of hundreds of pods' series and no encoding is made that none reads.
//! For a scraper that asks for gzip, each encoding is compressed once, beside it
//! ([`super::gzip`]); when no scraper asked for it plain lately, text is compressed
//! as it is encoded and only the compressed piece is kept.
//!
//! A signal's steady families ([`super::steady`]: limits, link settings, the pod
//! behind each veth) are kept past their collection while what they read hashes the
//! same, so most rounds encode only the counters.
//!
//! Encoding from the latest samples means series whose source is gone (a container,
//! a veth, a directory, a DNS server) are not exposed any more, with no registered
//! metric to forget to remove.

use super::family::Families;
use super::gzip::{self, Caller, Piece, PieceWriter};
use super::steady::{Keyer, Steady};
use crate::store::{Snapshot, Store};
use axum::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_protobuf, prometheus_text, text, DescriptorEncoder};
use prometheus_client::registry::Registry;
use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A format scraped within this long is kept encoded ahead of the next scrape.
const WARM_FOR: Duration = Duration::from_secs(10 * 60);

/// How long after a collector records a scrape still takes the signal's previous
/// encoding while the new one is made off the serving threads. Encoding in the
/// scrape instead (the families of 500 pods take milliseconds) was what a scrape
/// waited for in the slowest one percent at `--interval 1s`. The bound only matters
/// if that encoding never ends.
const WARMING_AT_MOST: Duration = Duration::from_secs(1);

/// How much later than one interval from now a collector's next encoding may be
/// ready: its collection may take longer next time, and a scraper may come a little
/// early. Encoding for a scrape that then comes after it costs one encoding; missing
/// one costs that scrape the encoding's time.
fn warming_slack(interval: Duration) -> Duration {
    (interval / 4).max(Duration::from_secs(1))
}

/// How a signal encodes its families from a snapshot of the store.
pub type EncodeFn = fn(&Snapshot, &mut DescriptorEncoder) -> fmt::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: what a scraper gets unless it asks for another.
    Text,
    OpenMetrics,
    /// The `io.prometheus.client.MetricFamily` protobuf messages, length-delimited:
    /// the one format with native histograms.
    Protobuf,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Text, Format::OpenMetrics, Format::Protobuf];

    /// The format of the first media range in the scraper's Accept header, by
    /// preference (q), that nodediag serves; text 0.0.4 when none is, as
    /// client_golang's `expfmt.Negotiate` does. Prometheus lists protobuf first when
    /// it ingests native histograms, OpenMetrics first otherwise.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut ranges: Vec<(f32, Option<Format>)> = accept
            .unwrap_or("")
            .split(',')
            .map(media_range)
            .filter(|(q, _)| *q > 0.0)
            .collect();
        // Stable: equally preferred ranges keep the scraper's order.
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranges
            .into_iter()
            .find_map(|(_, f)| f)
            .unwrap_or(Format::Text)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
        }
    }

    /// The `format` label of `nodediag_scrapes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::OpenMetrics => "openmetrics",
            Format::Protobuf => "protobuf",
        }
    }
}

/// (q, the format it names if nodediag serves it) of one media range.
fn media_range(range: &str) -> (f32, Option<Format>) {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    let mut q = 1.0;
    let (mut version, mut proto, mut encoding) = (None, None, None);
    for param in parts {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "q" => q = v.parse().unwrap_or(0.0),
            "version" => version = Some(v),
            "proto" => proto = Some(v),
            "encoding" => encoding = Some(v),
            _ => {}
        }
    }
    let format = match (media.as_str(), version) {
        ("application/vnd.google.protobuf", _)
            if proto == Some("io.prometheus.client.MetricFamily")
                && encoding == Some("delimited") =>
        {
            Some(Format::Protobuf)
        }
        ("text/plain", None | Some("0.0.4")) => Some(Format::Text),
        ("application/openmetrics-text", None | Some("1.0.0") | Some("0.0.1")) => {
            Some(Format::OpenMetrics)
        }
        _ => None,
    };
    (q, format)
}

#[derive(Debug, thiserror::Error)]
#[error("encoding /metrics as {format:?}: {reason}")]
pub struct EncodeError {
    format: Format,
    reason: String,
}

impl EncodeError {
    fn gzip(format: Format, e: flate2::CompressError) -> Self {
        Self {
            format,
            reason: format!("gzip: {e}"),
        }
    }

    fn unwritten(format: Format) -> Self {
        Self {
            format,
            reason: "a family could not be written".into(),
        }
    }
}

/// Scrapes served, and when each format was asked for.
#[derive(Debug)]
struct Scrapes {
    count: [AtomicU64; 3],
    cadence: Mutex<[Cadence; 3]>,
    epoch: Instant,
}

/// When a format was last scraped and how often, in milliseconds after
/// [`Scrapes::epoch`].
#[derive(Debug, Default, Clone, Copy)]
struct Cadence {
    /// When a scrape of it last asked for gzip, and when for it plain; 0: never.
    last_gzip: u64,
    last_plain: u64,
    /// The gaps between the last scrapes; 0: not seen yet.
    gaps: [u64; GAPS_KEPT],
    next_gap: usize,
}

/// How many gaps between scrapes the next one is predicted from: the shortest of
/// them, so that two scrapers (a Prometheus pair) are taken at their closest.
const GAPS_KEPT: usize = 4;

impl Cadence {
    /// When it was last scraped, either way; 0: never.
    fn last(&self) -> u64 {
        self.last_gzip.max(self.last_plain)
    }

    fn add(&mut self, ms: u64, gzip: bool) {
        if self.last() > 0 {
            self.gaps[self.next_gap] = ms.saturating_sub(self.last()).max(1);
            self.next_gap = (self.next_gap + 1) % GAPS_KEPT;
        }
        match gzip {
            true => self.last_gzip = ms,
            false => self.last_plain = ms,
        }
    }

    /// Whether the next scrape may come by `deadline`: yes unless its gaps are known
    /// and the shortest of them puts it later.
    fn may_come_by(&self, deadline: u64) -> bool {
        match self.gaps.iter().filter(|g| **g > 0).min() {
            Some(gap) => self.last() + gap <= deadline,
            None => true,
        }
    }
}

impl Default for Scrapes {
    fn default() -> Self {
        Self {
            count: Default::default(),
            cadence: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

impl Scrapes {
    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    fn cadence(&self) -> std::sync::MutexGuard<'_, [Cadence; 3]> {
        self.cadence.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, f: Format, gzip: bool) {
        self.count[f as usize].fetch_add(1, Ordering::Relaxed);
        let now = self.now();
        self.cadence()[f as usize].add(now, gzip);
    }

    fn get(&self, f: Format) -> u64 {
        self.count[f as usize].load(Ordering::Relaxed)
    }

    /// Formats a scraper asked for within [`WARM_FOR`] whose next scrape may come
    /// within `within` from now, each with how it was asked for then: plain, in
    /// gzip, or both.
    fn expected(&self, within: Duration) -> Vec<(Format, Asked)> {
        let now = self.now();
        let deadline = now + within.as_millis() as u64;
        let lately = |at: u64| at > 0 && now.saturating_sub(at) <= WARM_FOR.as_millis() as u64;
        let cadence = self.cadence();
        Format::ALL
            .into_iter()
            .filter_map(|f| {
                let c = &cadence[f as usize];
                let asked = Asked {
                    plain: lately(c.last_plain),
                    gzip: lately(c.last_gzip),
                };
                ((asked.plain || asked.gzip) && c.may_come_by(deadline)).then_some((f, asked))
            })
            .collect()
    }
}

/// How a format was asked for lately.
#[derive(Debug, Clone, Copy)]
struct Asked {
    plain: bool,
    gzip: bool,
}

/// What `/metrics` encodes.
pub struct Exposition {
    /// nodediag's own families, encoded at every scrape.
    own: Registry,
    signals: Vec<CachedSignal>,
    /// What else is added (the HTTP server's families), encoded at every scrape.
    extra: Registry,
    store: Arc<Store>,
    scrapes: Arc<Scrapes>,
}

impl Exposition {
    /// nodediag's own families (build, collectors, rules, findings, scrapes) come
    /// first; then the signals', then whatever else is added, in that order.
    pub fn new(store: Arc<Store>) -> Self {
        let scrapes = Arc::new(Scrapes::default());
        let mut own = Registry::default();
        own.register_collector(Box::new(OwnFamilies {
            store: store.clone(),
            scrapes: scrapes.clone(),
        }));
        Self {
            own,
            signals: Vec::new(),
            extra: Registry::default(),
            store,
            scrapes,
        }
    }

    /// A signal's families, encoded by `encode` from the latest sample of the
    /// collector called `name`.
    pub fn add_signal(&mut self, name: &'static str, encode: EncodeFn) {
        let encoder = Encoder::Plain(encode);
        self.signals
            .push(CachedSignal::new(name, self.store.clone(), encoder));
    }

    /// A signal's families that seldom change, encoded by `steady` from the latest
    /// sample of the collector called `name`: kept past the collection they were
    /// encoded from for as long as later ones' rows hash the same.
    pub fn add_steady(&mut self, name: &'static str, steady: Steady) {
        let encoder = Encoder::Steady(Keyer::new(steady));
        self.signals
            .push(CachedSignal::new(name, self.store.clone(), encoder));
    }

    pub fn add(&mut self, collector: Box<dyn Collector>) {
        self.extra.register_collector(collector);
    }

    /// Encodes one scrape and counts it (the scrape sees itself counted): the parts
    /// a response sends, in gzip if `gzip`.
    pub fn scrape(&self, format: Format, gzip: bool) -> Result<Vec<Bytes>, EncodeError> {
        self.scrapes.add(format, gzip);
        if gzip {
            self.gzip_parts(format)
        } else {
            self.parts(format)
        }
    }

    /// The collector called `name` is about to record: until [`Self::warm_signal`]
    /// has encoded what it records (or [`WARMING_AT_MOST`]), scrapes take the
    /// signal's previous encoding.
    pub fn will_warm(&self, name: &str) {
        for s in self.signals.iter().filter(|s| s.name == name) {
            s.lock().warming_since = Some(Instant::now());
        }
    }

    /// Encodes the families of the signal called `name`, if its collector recorded
    /// since, in each format scraped lately whose next scrape may come before the
    /// collector records again: called as soon as it records, so that the next scrape
    /// finds them ready. An encoding the next scrape would not read is not made
    /// (about three in four at the default interval and Prometheus's default scrape
    /// interval, 1m); should the scrape come earlier after all, it encodes for itself.
    pub fn warm_signal(&self, name: &str) -> Result<(), EncodeError> {
        let signals = || self.signals.iter().filter(|s| s.name == name);
        let interval = self
            .store
            .read(|s| s.collectors.get(name).map(|c| c.interval))
            .unwrap_or_default();
        let warmed = self
            .scrapes
            .expected(interval + warming_slack(interval))
            .into_iter()
            .try_for_each(|(format, asked)| {
                // Plain first: compressing it then encodes nothing again.
                signals().try_for_each(|s| {
                    if asked.plain {
                        s.encoded(format, false)?;
                    }
                    if asked.gzip {
                        s.compressed(format, false)?;
                    }
                    Ok(())
                })
            });
        for s in signals() {
            s.lock().warming_since = None;
        }
        warmed
    }

    /// Encodes everything, without counting a scrape.
    pub fn encode(&self, format: Format) -> Result<Vec<u8>, EncodeError> {
        Ok(self.parts(format)?.concat())
    }

    /// The exposition in the parts it is kept in, in order: a response sends them
    /// as they are, where copying the signals' encodings (900 KB at 500 pods) into
    /// one buffer was a sixth of a scrape's CPU.
    fn parts(&self, format: Format) -> Result<Vec<Bytes>, EncodeError> {
        self.in_order(format, |b| Ok(Bytes::from(b)), |s| s.encoded(format, true))
    }

    /// [`Self::parts`] as one gzip stream: the signals' pieces as they were
    /// compressed when encoded, the rest compressed now.
    fn gzip_parts(&self, format: Format) -> Result<Vec<Bytes>, EncodeError> {
        let pieces = self.in_order(
            format,
            |b| compress(&b, format, Caller::Request),
            |s| s.compressed(format, true),
        )?;
        Ok(gzip::stream(pieces.iter().map(|p| &**p)))
    }

    /// The exposition's parts in their order: nodediag's own families, each
    /// signal's as `kept` has them, what else is added, and OpenMetrics' `# EOF`;
    /// what is encoded now goes through `fresh`.
    fn in_order<T>(
        &self,
        format: Format,
        fresh: impl Fn(Vec<u8>) -> Result<T, EncodeError>,
        kept: impl Fn(&CachedSignal) -> Result<T, EncodeError>,
    ) -> Result<Vec<T>, EncodeError> {
        let mut parts = Vec::with_capacity(self.signals.len() + 3);
        parts.push(fresh(encode_registry(&self.own, format)?)?);
        for s in &self.signals {
            parts.push(kept(s)?);
        }
        parts.push(fresh(encode_registry(&self.extra, format)?)?);
        if format == Format::OpenMetrics {
            parts.push(fresh(b"# EOF\n".to_vec())?);
        }
        Ok(parts)
    }
}

/// `bytes` as a piece of a gzip response in `format`.
fn compress(bytes: &[u8], format: Format, caller: Caller) -> Result<Arc<Piece>, EncodeError> {
    Piece::compress(bytes, caller)
        .map(Arc::new)
        .map_err(|e| EncodeError::gzip(format, e))
}

/// A registry's families in `format`; OpenMetrics without its `# EOF`, which only
/// the whole exposition ends with.
fn encode_registry(registry: &Registry, format: Format) -> Result<Vec<u8>, EncodeError> {
    encode_registry_sized(registry, format, 0)
}

/// As [`encode_registry`], into a buffer sized for `expected` bytes (and a little
/// more): a signal's encoding is about as long as its last one, and growing to
/// 250 KB by doubling copied the cgroup families four times a round at 500 pods.
fn encode_registry_sized(
    registry: &Registry,
    format: Format,
    expected: usize,
) -> Result<Vec<u8>, EncodeError> {
    match format {
        Format::Protobuf => prometheus_protobuf::encode_to_vec(registry).map_err(|e| EncodeError {
            format,
            reason: e.to_string(),
        }),
        Format::Text | Format::OpenMetrics => {
            let mut out = String::with_capacity(expected + expected / 16);
            write_text(registry, format, &mut out).map_err(|_| EncodeError::unwritten(format))?;
            Ok(out.into_bytes())
        }
    }
}

/// A registry's families as text: 0.0.4, or OpenMetrics without its `# EOF`.
fn write_text(registry: &Registry, format: Format, out: &mut impl fmt::Write) -> fmt::Result {
    match format {
        Format::OpenMetrics => text::encode_registry(out, registry),
        _ => prometheus_text::encode(out, registry),
    }
}

/// A registry's families in `format`, compressed as they are encoded into a piece
/// about `expected` bytes long: text is never kept whole, only protobuf is.
fn encode_compressed(
    registry: &Registry,
    format: Format,
    expected: usize,
    caller: Caller,
) -> Result<Arc<Piece>, EncodeError> {
    if format == Format::Protobuf {
        return compress(&encode_registry(registry, format)?, format, caller);
    }
    let mut out = PieceWriter::new(expected + expected / 16, caller);
    let written = write_text(registry, format, &mut out);
    // A failed write may be the compressor's: its error says more.
    let piece = out.finish().map_err(|e| EncodeError::gzip(format, e))?;
    written.map_err(|_| EncodeError::unwritten(format))?;
    Ok(Arc::new(piece))
}

/// One signal's families, and their last encoding in each format with the
/// collection it was made from.
struct CachedSignal {
    name: &'static str,
    store: Arc<Store>,
    /// For steady families: the hash of what they were encoded from.
    keyer: Option<Keyer>,
    registry: Registry,
    encoded: Mutex<Encodings>,
}

#[derive(Default)]
struct Encodings {
    /// By format: the encoding and the collection it was made from.
    by_format: [Option<Encoded>; 3],
    /// When the collector was about to record, until its new sample is encoded.
    warming_since: Option<Instant>,
}

/// Which collection of the collector an encoding was made from: its runs so far,
/// and whether its samples were shown (a failing collector's are not).
type Source = Option<(u64, bool)>;

#[derive(Clone)]
struct Encoded {
    source: Source,
    /// Steady families only: the hash of the rows encoded.
    key: Option<u64>,
    /// The text (or protobuf) plain scrapes get; not made while only gzip scrapes
    /// asked for it.
    bytes: Option<Bytes>,
    /// The same families compressed, once a scrape asked for gzip.
    gzip: Option<Arc<Piece>>,
}

impl Encoded {
    /// How long a new encoding is likely to be, compressed if `gzip`: as long as
    /// this one.
    fn len(&self, gzip: bool) -> usize {
        match (gzip, &self.bytes, &self.gzip) {
            (true, _, Some(p)) => p.compressed_len(),
            // Text compresses about 16 to 1.
            (true, Some(b), None) => b.len() / 16,
            (false, Some(b), _) => b.len(),
            (false, None, Some(p)) => p.plain_len(),
            (_, None, None) => 0,
        }
    }
}

thread_local! {
    /// The collection a signal's families were last encoded from on this thread
    /// (and for steady families, the hash of their rows), read in the same snapshot
    /// as the sample itself: what the encoding is kept under, so that two encodings
    /// kept under one source are of one sample.
    static ENCODED_FROM: Cell<(Source, Option<u64>)> = const { Cell::new((None, None)) };
}

fn source_in(snap: &Snapshot, name: &str) -> Source {
    let c = snap.collectors.get(name)?;
    Some((c.runs_total, c.is_ok()))
}

impl CachedSignal {
    fn new(name: &'static str, store: Arc<Store>, encoder: Encoder) -> Self {
        let keyer = match &encoder {
            Encoder::Steady(keyer) => Some(keyer.clone()),
            Encoder::Plain(_) => None,
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SignalFamilies {
            name,
            store: store.clone(),
            encoder,
        }));
        Self {
            name,
            store,
            keyer,
            registry,
            encoded: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Encodings> {
        self.encoded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The families in `format`, encoded again only when the collector recorded
    /// since the last time; for a scrape, the previous encoding while the new one
    /// is being made ahead of it. Two scrapes missing at once both encode; either
    /// result is kept.
    fn encoded(&self, format: Format, scrape: bool) -> Result<Bytes, EncodeError> {
        let (kept, hint) = self.servable(format, scrape, false);
        if let Some(bytes) = kept.and_then(|k| k.bytes) {
            return Ok(bytes);
        }
        let (bytes, from) =
            self.encode_now(|r| encode_registry_sized(r, format, hint).map(Bytes::from))?;
        self.keep(format, from, Some(bytes.clone()), None);
        Ok(bytes)
    }

    /// [`Self::encoded`], compressed: once per encoding, kept beside it. Without a
    /// plain encoding to compress, text is compressed as it is encoded and kept only
    /// compressed.
    fn compressed(&self, format: Format, scrape: bool) -> Result<Arc<Piece>, EncodeError> {
        let (kept, hint) = self.servable(format, scrape, true);
        let caller = if scrape {
            Caller::Request
        } else {
            Caller::Ahead
        };
        match kept {
            Some(Encoded {
                gzip: Some(piece), ..
            }) => Ok(piece),
            Some(Encoded {
                source,
                key,
                bytes: Some(bytes),
                ..
            }) => {
                let piece = compress(&bytes, format, caller)?;
                self.keep(format, (source, key), None, Some(piece.clone()));
                Ok(piece)
            }
            _ => {
                let (piece, from) =
                    self.encode_now(|r| encode_compressed(r, format, hint, caller))?;
                self.keep(format, from, None, Some(piece.clone()));
                Ok(piece)
            }
        }
    }

    /// Encodes the families now, with the collection they were encoded from.
    fn encode_now<T>(
        &self,
        encode: impl FnOnce(&Registry) -> Result<T, EncodeError>,
    ) -> Result<(T, (Source, Option<u64>)), EncodeError> {
        ENCODED_FROM.set((None, None));
        let encoded = encode(&self.registry)?;
        Ok((encoded, ENCODED_FROM.take()))
    }

    /// For steady families: an encoding kept in `format` of another collection than
    /// `source` is this one's too when the rows of `source`'s sample hash the same,
    /// and is kept under it from now on. The rows are hashed once per collection.
    fn follow_unchanged(&self, keyer: &Keyer, format: Format, source: Source) {
        let kept_key = match &self.lock().by_format[format as usize] {
            Some(Encoded {
                source: kept,
                key: Some(key),
                ..
            }) if *kept != source => *key,
            _ => return,
        };
        let snap = self.store.read(|s| s.latest_of(self.name));
        let (now, key) = (source_in(&snap, self.name), keyer.key(&snap));
        if now != source || key != kept_key {
            return;
        }
        if let Some(k) = &mut self.lock().by_format[format as usize] {
            if k.key == Some(key) {
                k.source = source;
            }
        }
    }

    /// What is kept in `format` that a request may take now: the encoding of the
    /// collector's latest collection; for a scrape, also the one before while the
    /// latest is being encoded ahead of it. And how long a new encoding is likely
    /// to be, compressed if `gzip`.
    fn servable(&self, format: Format, scrape: bool, gzip: bool) -> (Option<Encoded>, usize) {
        let source = self.store.read(|s| source_in(s, self.name));
        if let Some(keyer) = &self.keyer {
            self.follow_unchanged(keyer, format, source);
        }
        let e = self.lock();
        let Some(k) = &e.by_format[format as usize] else {
            return (None, 0);
        };
        // Only the collection before the one being encoded: an older encoding (the
        // last were not warmed) is not served for a newer.
        let warming = e
            .warming_since
            .is_some_and(|t| t.elapsed() < WARMING_AT_MOST)
            && k.source.zip(source).is_some_and(|(a, s)| a.0 + 1 == s.0);
        let servable = (k.source == source || (scrape && warming)).then(|| k.clone());
        (servable, k.len(gzip))
    }

    /// Keeps an encoding of the collection `source`: beside what is kept of the
    /// same collection (which stays as it is), or in place of what is kept of
    /// another.
    fn keep(
        &self,
        format: Format,
        (source, key): (Source, Option<u64>),
        bytes: Option<Bytes>,
        gzip: Option<Arc<Piece>>,
    ) {
        let mut e = self.lock();
        match &mut e.by_format[format as usize] {
            Some(k) if k.source == source => {
                k.bytes = k.bytes.take().or(bytes);
                k.gzip = k.gzip.take().or(gzip);
            }
            slot => {
                *slot = Some(Encoded {
                    source,
                    key,
                    bytes,
                    gzip,
                })
            }
        }
    }
}

/// nodediag's own families, and the scrapes by format.
struct OwnFamilies {
    store: Arc<Store>,
    scrapes: Arc<Scrapes>,
}

impl fmt::Debug for OwnFamilies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnFamilies")
    }
}

impl Collector for OwnFamilies {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.store.read(|snap| super::own_families(snap, &mut e))?;
        e.counter(
            "nodediag_scrapes_total",
            "Scrapes of /metrics, by the exposition format negotiated from the scraper's Accept header (protobuf: the one with native histograms).",
            Format::ALL.map(|f| ([("format", f.as_str())], self.scrapes.get(f))),
        )
    }
}

/// One signal's families, read from the latest samples at each scrape.
struct SignalFamilies {
    name: &'static str,
    store: Arc<Store>,
    encoder: Encoder,
}

/// How a signal's families are encoded: all of them from the sample, or steady ones
/// from rows whose hash is kept with the encoding.
enum Encoder {
    Plain(EncodeFn),
    Steady(Keyer),
}

impl fmt::Debug for SignalFamilies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignalFamilies({})", self.name)
    }
}

impl Collector for SignalFamilies {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        // Outside the store's lock: a collector recording meanwhile would wait for
        // this encoding, and every scrape after it for the collector.
        let snap = self.store.read(|s| s.latest_of(self.name));
        let source = source_in(&snap, self.name);
        let (key, encoded) = match &self.encoder {
            Encoder::Plain(encode) => (None, encode(&snap, &mut e)),
            Encoder::Steady(keyer) => {
                let (key, encoded) = keyer.encode(&snap, &mut e);
                (Some(key), encoded)
            }
        };
        ENCODED_FROM.set((source, key));
        encoded
    }
}

#[cfg(test)]
impl Exposition {
    /// One signal's families alone, for its tests.
    pub(crate) fn of_signal<S: crate::sample::Sample>(store: Arc<Store>, encode: EncodeFn) -> Self {
        let mut e = Self {
            own: Registry::default(),
            ..Self::new(store)
        };
        e.add_signal(S::COLLECTOR, encode);
        e
    }

    pub(crate) fn text(&self, format: Format) -> String {
        String::from_utf8(self.encode(format).expect("encodes")).expect("utf-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    #[test]
    fn negotiation_follows_accept_and_its_preferences() {
        let n = |a: &str| Format::negotiate(Some(a));
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(n("*/*"), Format::Text);
        assert_eq!(n(""), Format::Text);
        // Prometheus 2.42 without and with --enable-feature=native-histograms.
        assert_eq!(
            n("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::OpenMetrics
        );
        assert_eq!(
            n("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            Format::Protobuf
        );
        // q decides, not the order; q=0 refuses; unknown versions and encodings are
        // not served.
        assert_eq!(
            n("application/openmetrics-text; q=0.2, text/plain; version=0.0.4; q=0.9"),
            Format::Text
        );
        assert_eq!(
            n("application/openmetrics-text;q=0, text/plain;q=0.1"),
            Format::Text
        );
        assert_eq!(
            n("application/openmetrics-text;version=2.0.0, application/openmetrics-text;version=1.0.0;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(
            n("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text,application/openmetrics-text;q=0.5"),
            Format::OpenMetrics
        );
        assert_eq!(
            n("Application/OpenMetrics-Text; Version=\"1.0.0\""),
            Format::OpenMetrics
        );
    }

    #[derive(Debug, serde::Serialize)]
    struct Probe;
    impl crate::sample::Sample for Probe {
        const COLLECTOR: &'static str = "probe";
        fn unavailable(&self) -> &[crate::sample::Unavailable] {
            &[]
        }
    }

    static ENCODED: AtomicUsize = AtomicUsize::new(0);

    fn encode_probe(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
        ENCODED.fetch_add(1, Ordering::SeqCst);
        encode_runs(snap, e)
    }

    /// As [`encode_probe`], uncounted: for tests that run beside the one counting.
    fn encode_runs(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
        if snap.latest::<Probe>().is_none() {
            return Ok(());
        }
        let runs = snap.collectors.get("probe").map_or(0, |c| c.runs_total);
        e.gauge_value("probe_runs", "Collections of the probe.", runs)
    }

    /// A store whose collector "probe" samples every `interval_s` seconds.
    fn probe_store(interval_s: u64) -> Arc<Store> {
        let store = Arc::new(Store::new("n".into(), std::time::Duration::from_secs(60)));
        store.register("probe", std::time::Duration::from_secs(interval_s));
        store
    }

    fn record_probe(store: &Store) {
        let at = std::time::SystemTime::now();
        store.record("probe", at, std::time::Duration::ZERO, Ok(Arc::new(Probe)));
    }

    #[test]
    fn a_signals_families_are_encoded_again_only_after_its_collector_records() {
        let store = probe_store(1);
        let record = || record_probe(&store);
        let encoded = || ENCODED.load(Ordering::SeqCst);
        let e = Exposition::of_signal::<Probe>(store.clone(), encode_probe);
        record();
        let scrape = |f| String::from_utf8(e.scrape(f, false).unwrap().concat()).unwrap();
        assert!(scrape(Format::Text).contains("probe_runs 1\n"));
        assert!(scrape(Format::Text).contains("probe_runs 1\n"));
        assert_eq!(
            encoded(),
            1,
            "the second scrape copies the first's encoding"
        );
        scrape(Format::OpenMetrics);
        assert_eq!(encoded(), 2, "each format is encoded once");
        record();
        assert!(scrape(Format::Text).contains("probe_runs 2\n"));
        assert_eq!(encoded(), 3, "a new sample is encoded again");
        // Warming encodes the formats scraped lately, ahead of the next scrape.
        record();
        e.warm_signal("another").unwrap();
        assert_eq!(encoded(), 3, "only the signal named is warmed");
        e.warm_signal("probe").unwrap();
        assert_eq!(encoded(), 5, "text and OpenMetrics were scraped lately");
        assert!(scrape(Format::Text).contains("probe_runs 3\n"));
        assert!(scrape(Format::OpenMetrics).ends_with("probe_runs 3\n# EOF\n"));
        assert_eq!(encoded(), 5, "the scrapes found them ready");
        // While a recorded sample is being warmed, scrapes take the last encoding.
        e.will_warm("probe");
        record();
        assert!(scrape(Format::Text).contains("probe_runs 3\n"));
        assert_eq!(encoded(), 5, "the scrape did not encode");
        e.warm_signal("probe").unwrap();
        assert!(scrape(Format::Text).contains("probe_runs 4\n"));
        assert_eq!(encoded(), 7);
        // ... but not longer than WARMING_AT_MOST, should the warming never end.
        e.will_warm("probe");
        record();
        e.signals[0].lock().warming_since = Some(Instant::now() - WARMING_AT_MOST);
        assert!(scrape(Format::Text).contains("probe_runs 5\n"));
        assert_eq!(encoded(), 8, "the scrape encoded");
        e.warm_signal("probe").unwrap();
        // A collector that fails hides its samples at once.
        store.mark_hung("probe", std::time::SystemTime::now());
        assert_eq!(scrape(Format::Text), "");
    }

    /// Where [`encode_held`] tells it has started, and waits to be let go.
    type Held = (mpsc::Sender<()>, mpsc::Receiver<()>);
    static HELD: Mutex<Option<Held>> = Mutex::new(None);

    fn encode_held(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
        if let Some((started, go)) = HELD.lock().unwrap().take() {
            started.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(60)).ok();
        }
        encode_runs(snap, e)
    }

    #[test]
    fn a_collector_records_while_its_families_are_being_encoded() {
        let store = probe_store(1);
        record_probe(&store);
        let e = Arc::new(Exposition::of_signal::<Probe>(store.clone(), encode_held));
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        *HELD.lock().unwrap() = Some((started_tx, go_rx));
        let encoding = {
            let e = e.clone();
            std::thread::spawn(move || e.encode(Format::Text))
        };
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the encoding started");
        // Were the store locked for the encoding, the collector would wait for it,
        // and every scrape after the collector.
        let (recorded_tx, recorded) = mpsc::channel();
        let recording = {
            let store = store.clone();
            std::thread::spawn(move || {
                record_probe(&store);
                recorded_tx.send(()).unwrap();
            })
        };
        let in_time = recorded.recv_timeout(Duration::from_secs(10));
        go.send(()).unwrap();
        let text = String::from_utf8(encoding.join().unwrap().unwrap()).unwrap();
        recording.join().unwrap();
        assert!(in_time.is_ok(), "the collector waited for the encoding");
        assert!(
            text.contains("probe_runs 1\n"),
            "encoded from the sample it started with: {text:?}"
        );
    }

    #[test]
    fn the_next_scrape_is_expected_from_the_shortest_recent_gap() {
        let mut c = Cadence::default();
        assert!(c.may_come_by(0), "never scraped: any time");
        c.add(1_000, false);
        assert!(c.may_come_by(1_000), "one scrape: no gap known yet");
        c.add(61_000, false);
        assert!(!c.may_come_by(120_000));
        assert!(c.may_come_by(121_000));
        // Two scrapers 10 s apart, each every 60 s: the closer pair counts, until it
        // is out of the gaps kept.
        c.add(71_000, false);
        c.add(121_000, false);
        assert!(c.may_come_by(131_000) && !c.may_come_by(130_999));
        for at in [181_000, 241_000, 301_000, 361_000] {
            c.add(at, false);
        }
        assert!(!c.may_come_by(420_999) && c.may_come_by(421_000));
    }

    #[test]
    fn a_signal_is_warmed_only_for_a_scrape_before_its_next_collection() {
        let store = probe_store(15);
        let record = || record_probe(&store);
        let e = Exposition::of_signal::<Probe>(store.clone(), encode_runs);
        let scrape = |f| String::from_utf8(e.scrape(f, false).unwrap().concat()).unwrap();
        let text_scraped_every =
            |ms| e.scrapes.cadence()[Format::Text as usize].gaps = [ms; GAPS_KEPT];
        // Scraped every 60 s, last just now: the next scrape comes after the next
        // two collections.
        record();
        scrape(Format::Text);
        text_scraped_every(60_000);
        let text_kept = || {
            e.signals[0].lock().by_format[Format::Text as usize]
                .as_ref()
                .map(|k| (k.source, k.bytes.clone()))
        };
        let before = text_kept();
        e.will_warm("probe");
        record();
        e.warm_signal("probe").unwrap();
        assert_eq!(before, text_kept(), "not warmed");
        // A scrape that comes anyway encodes the latest collection for itself, and
        // one while the next is warmed does not take the encoding two collections old.
        e.will_warm("probe");
        record();
        assert!(scrape(Format::Text).contains("probe_runs 3\n"));
        e.warm_signal("probe").unwrap();
        // Scraped every 10 s: warmed for the next.
        text_scraped_every(10_000);
        e.will_warm("probe");
        record();
        e.warm_signal("probe").unwrap();
        let (source, bytes) = text_kept().expect("warmed");
        assert_eq!(source, Some((4, true)));
        let bytes = bytes.expect("plain, as it was scraped");
        assert!(String::from_utf8_lossy(&bytes).contains("probe_runs 4\n"));
    }

    #[test]
    fn a_gzip_scrape_reads_as_the_plain_one_and_compresses_each_encoding_once() {
        use std::io::Read;
        let store = probe_store(15);
        let e = Exposition::of_signal::<Probe>(store.clone(), encode_probe_text);
        let gunzip = |parts: Vec<Bytes>| {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&parts.concat()[..])
                .read_to_end(&mut out)
                .expect("one gzip stream");
            out
        };
        let kept = |f: Format| e.signals[0].lock().by_format[f as usize].clone();
        let piece = || kept(Format::Text)?.gzip;
        record_probe(&store);
        // Plain first: compressed from the plain encoding. Gzip first: encoded
        // straight into the compressor, and encoded plain only when asked.
        for f in [Format::Text, Format::Protobuf] {
            let plain = e.scrape(f, false).unwrap().concat();
            assert_eq!(gunzip(e.scrape(f, true).unwrap()), plain, "{f:?}");
        }
        let zipped = gunzip(e.scrape(Format::OpenMetrics, true).unwrap());
        assert!(kept(Format::OpenMetrics).unwrap().bytes.is_none());
        let plain = e.scrape(Format::OpenMetrics, false).unwrap().concat();
        assert_eq!(zipped, plain);
        assert!(String::from_utf8(plain).unwrap().contains("probe_text{"));
        let first = piece().expect("kept beside its encoding");
        e.scrape(Format::Text, true).unwrap();
        assert!(Arc::ptr_eq(&first, &piece().unwrap()), "compressed again");
        // Warmed for a scraper that asked only for gzip: compressed, and no plain
        // text kept.
        e.scrapes.cadence()[Format::Text as usize].last_plain = 0;
        e.will_warm("probe");
        record_probe(&store);
        e.warm_signal("probe").unwrap();
        let warmed = kept(Format::Text).expect("warmed");
        assert!(warmed.bytes.is_none(), "plain text kept for no one");
        let warmed = warmed.gzip.expect("compressed when warmed");
        assert!(!Arc::ptr_eq(&first, &warmed));
        let text = gunzip(e.scrape(Format::Text, true).unwrap());
        assert!(String::from_utf8(text).unwrap().contains("probe_runs 2\n"));
        assert!(Arc::ptr_eq(&warmed, &piece().unwrap()));
        // Asked both ways: both warmed, from one encoding.
        e.scrape(Format::Text, false).unwrap();
        e.will_warm("probe");
        record_probe(&store);
        e.warm_signal("probe").unwrap();
        let both = kept(Format::Text).expect("warmed");
        let (bytes, piece) = (both.bytes.expect("plain"), both.gzip.expect("gzip"));
        assert_eq!(gunzip(gzip::stream([&*piece])), bytes);
    }

    #[derive(Debug, serde::Serialize)]
    struct Level(u64);
    impl crate::sample::Sample for Level {
        const COLLECTOR: &'static str = "level";
        fn unavailable(&self) -> &[crate::sample::Unavailable] {
            &[]
        }
    }

    static LEVELS_ENCODED: AtomicUsize = AtomicUsize::new(0);

    /// The level as a steady family.
    struct Levels;
    impl crate::metrics::steady::SteadyFamilies for Levels {
        type Rows<'a> = u64;
        fn rows(snap: &Snapshot) -> Option<u64> {
            snap.latest::<Level>().map(|(_, l)| l.0)
        }
        fn encode(level: u64, e: &mut DescriptorEncoder) -> fmt::Result {
            LEVELS_ENCODED.fetch_add(1, Ordering::SeqCst);
            e.gauge_value("level", "The level.", level)
        }
    }

    #[test]
    fn steady_families_are_encoded_again_only_when_what_they_read_changes() {
        use crate::metrics::steady::Steady;
        let store = Arc::new(Store::new("n".into(), std::time::Duration::from_secs(60)));
        store.register("level", std::time::Duration::from_secs(15));
        let record = |level| {
            let at = std::time::SystemTime::now();
            store.record(
                "level",
                at,
                std::time::Duration::ZERO,
                Ok(Arc::new(Level(level))),
            );
        };
        let encoded = || LEVELS_ENCODED.load(Ordering::SeqCst);
        let mut e = Exposition::new(store.clone());
        e.own = Registry::default();
        e.add_steady("level", Steady::of::<Levels>());
        let scrape = |f| String::from_utf8(e.scrape(f, false).unwrap().concat()).unwrap();
        let gzip_piece = || e.signals[0].lock().by_format[Format::Text as usize].clone();
        record(7);
        assert!(scrape(Format::Text).contains("level 7\n"));
        e.scrape(Format::Text, true).unwrap();
        let first = gzip_piece().and_then(|k| k.gzip).expect("compressed");
        assert_eq!(encoded(), 1);
        // A new collection with the same level: the encoding and its compressed
        // piece are kept, now under the new collection.
        record(7);
        assert!(scrape(Format::Text).contains("level 7\n"));
        e.scrape(Format::Text, true).unwrap();
        let kept = gzip_piece().unwrap();
        assert_eq!(kept.source, Some((2, true)));
        assert!(Arc::ptr_eq(&first, &kept.gzip.unwrap()), "compressed again");
        e.will_warm("level");
        record(7);
        e.warm_signal("level").unwrap();
        assert_eq!(encoded(), 1, "encoded again for the same level");
        // Another level: encoded again.
        record(8);
        assert!(scrape(Format::Text).contains("level 8\n"));
        assert_eq!(encoded(), 2);
        e.will_warm("level");
        record(9);
        e.warm_signal("level").unwrap();
        assert_eq!(encoded(), 3, "warmed for a level that changed");
        assert!(scrape(Format::Text).contains("level 9\n"));
        // A collector that fails hides its samples: the rows are gone.
        store.mark_hung("level", std::time::SystemTime::now());
        assert_eq!(scrape(Format::Text), "");
    }

    /// As [`encode_runs`], with a family long enough for the compressor to write
    /// several blocks.
    fn encode_probe_text(snap: &Snapshot, e: &mut DescriptorEncoder) -> fmt::Result {
        encode_runs(snap, e)?;
        e.gauge(
            "probe_text",
            "Lines enough for more than one block.",
            (0..20_000u32).map(|i| ([("line", i.to_string())], i % 7)),
        )
    }

    #[test]
    fn scrapes_are_counted_by_format_and_seen_in_the_next_scrape() {
        let store = Arc::new(Store::new("n".into(), std::time::Duration::from_secs(60)));
        let e = Exposition::new(store);
        e.scrape(Format::Protobuf, false).unwrap();
        e.scrape(Format::OpenMetrics, true).unwrap();
        let text = String::from_utf8(e.scrape(Format::Text, false).unwrap().concat()).unwrap();
        for line in [
            "nodediag_scrapes_total{format=\"text\"} 1\n",
            "nodediag_scrapes_total{format=\"openmetrics\"} 1\n",
            "nodediag_scrapes_total{format=\"protobuf\"} 1\n",
            "# TYPE nodediag_scrapes_total counter\n",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        let om = String::from_utf8(e.encode(Format::OpenMetrics).unwrap()).unwrap();
        assert!(om.contains("# TYPE nodediag_scrapes counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"));
    }
}
