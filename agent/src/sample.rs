//! What a collector hands to the store: a typed sample, or why there is none. Shared
//! by every layer, so it depends on nothing of nodediag but the kernel's read error.

use crate::kernel::ReadError;
use serde::Serialize;
use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

/// A collector's sample. `COLLECTOR` is the signal's one name: the scheduler, the store,
/// the API and the flags all take it from here, so they cannot disagree.
pub trait Sample: Serialize + Debug + Send + Sync + 'static {
    const COLLECTOR: &'static str;

    /// Parts of the signal this host could not give; the report lists them as partial.
    fn unavailable(&self) -> &[Unavailable];

    /// What the rule window keeps of this sample once a newer one has arrived: only
    /// what some rule or view reads from older samples, so memory grows with what
    /// the rules need, not with whole samples. The newest sample is always kept
    /// whole. An override must say which reader needs each part it keeps; the rule
    /// tests run on compacted histories, since they go through the store.
    fn compact(&self) -> Compacted<Self>
    where
        Self: Sized,
    {
        Compacted::Whole
    }

    /// Whether the window may keep fewer older samples when they come often (at
    /// most 22 to a window): true when rules read only how counters rose between
    /// samples, which samples a few seconds apart show as well as every one; false
    /// when each sample holds what happened in its own interval (probe latencies,
    /// events) and rules add the samples up, or take their peak.
    const THINNABLE: bool = false;
}

/// What the rule window keeps of a sample that is no longer the newest.
#[derive(Debug)]
pub enum Compacted<T> {
    /// All of it: rules read every part of older samples.
    Whole,
    /// The parts rules read from older samples.
    Part(T),
    /// Nothing: rules read only the newest sample.
    Nothing,
}

/// A sample whose type the store does not know; rules and renderers get the typed one
/// back with [`AnySample::downcast`].
pub trait AnySample: Debug + Send + Sync {
    fn collector(&self) -> &'static str;
    fn unavailable(&self) -> &[Unavailable];
    fn to_json(&self) -> serde_json::Value;
    fn as_any(&self) -> &dyn Any;
    /// [`Sample::compact`], erased.
    fn compact_any(&self) -> Compacted<Arc<dyn AnySample>>;
    /// [`Sample::THINNABLE`], erased.
    fn thinnable(&self) -> bool;
}

impl<T: Sample> AnySample for T {
    fn collector(&self) -> &'static str {
        T::COLLECTOR
    }

    fn unavailable(&self) -> &[Unavailable] {
        Sample::unavailable(self)
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn compact_any(&self) -> Compacted<Arc<dyn AnySample>> {
        match self.compact() {
            Compacted::Whole => Compacted::Whole,
            Compacted::Part(p) => Compacted::Part(Arc::new(p)),
            Compacted::Nothing => Compacted::Nothing,
        }
    }

    fn thinnable(&self) -> bool {
        T::THINNABLE
    }
}

impl dyn AnySample + '_ {
    pub fn downcast<T: Sample>(&self) -> Option<&T> {
        self.as_any().downcast_ref()
    }
}

/// A part of a signal the host could not give, with what to do about it. Samples carry
/// these so nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unavailable {
    pub what: String,
    pub hint: String,
    /// The part exists on this host but could not be read or parsed: a defect to look
    /// at, not a feature the host lacks. `check` cannot vouch for its findings then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

impl Unavailable {
    /// A part the host does not have (an old kernel, a module not loaded).
    pub fn new(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            hint: hint.into(),
            unreadable: false,
        }
    }

    /// A file that is there but did not read or parse, named with its problem.
    pub fn unreadable(e: &crate::kernel::ReadError) -> Self {
        Self {
            what: e.path.display().to_string(),
            hint: e.source.to_string(),
            unreadable: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The kernel feature is missing on this host: not a failure of nodediag.
    #[error("{}: unavailable ({})", .0.what, .0.hint)]
    Unavailable(Unavailable),
    /// A file or socket that should have answered did not, or answered nonsense.
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    Failed(String),
}

impl CollectError {
    pub fn unavailable(what: impl Into<String>, hint: impl Into<String>) -> Self {
        CollectError::Unavailable(Unavailable::new(what, hint))
    }
}
