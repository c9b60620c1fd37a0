//! Families that seldom change: a NIC's speed and MTU, a container's CPU limit, the
//! pod behind each veth. At 500 pods they are a third of the exposition's bytes, and
//! every round encoded and compressed them again into the same text.
//!
//! Such families are encoded from rows: what they read of the collector's latest
//! sample, and nothing else. The exposition hashes the rows of each new sample and
//! keeps the last encoding while they hash the same (see
//! [`super::exposition::Exposition::add_steady`]); since the encoding reads only
//! the rows, the same rows give the same text.

use crate::store::Snapshot;
use foldhash::fast::RandomState;
use prometheus_client::encoding::DescriptorEncoder;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// Families encoded from rows of a signal's latest sample.
pub trait SteadyFamilies {
    /// What the families read of the sample.
    type Rows<'a>: Hash;

    /// The rows of the latest sample; None without one.
    fn rows(snap: &Snapshot) -> Option<Self::Rows<'_>>;

    fn encode(rows: Self::Rows<'_>, e: &mut DescriptorEncoder) -> fmt::Result;
}

/// [`SteadyFamilies`] as the exposition keeps them: the hash of the rows they read,
/// alone (to tell whether a kept encoding still holds) or with their encoding (one
/// building of the rows for both).
#[derive(Clone, Copy)]
pub struct Steady {
    key: fn(&Snapshot, &RandomState) -> u64,
    encode: fn(&Snapshot, &RandomState, &mut DescriptorEncoder) -> (u64, fmt::Result),
}

impl Steady {
    pub const fn of<T: SteadyFamilies>() -> Steady {
        Steady {
            key: key_of::<T>,
            encode: encode_of::<T>,
        }
    }
}

fn key_of<T: SteadyFamilies>(snap: &Snapshot, state: &RandomState) -> u64 {
    state.hash_one(T::rows(snap))
}

fn encode_of<T: SteadyFamilies>(
    snap: &Snapshot,
    state: &RandomState,
    e: &mut DescriptorEncoder,
) -> (u64, fmt::Result) {
    let rows = T::rows(snap);
    // As `key_of` hashes it: a reference hashes as what it refers to.
    let key = state.hash_one(&rows);
    (key, rows.map_or(Ok(()), |rows| T::encode(rows, e)))
}

/// How a kept encoding's rows are hashed: per process, with a random seed, so that
/// label values chosen to collide (a pod's name) cannot be made to.
#[derive(Clone)]
pub(super) struct Keyer {
    steady: Steady,
    state: RandomState,
}

impl Keyer {
    pub(super) fn new(steady: Steady) -> Self {
        Self {
            steady,
            state: RandomState::default(),
        }
    }

    /// The hash of the latest sample's rows.
    pub(super) fn key(&self, snap: &Snapshot) -> u64 {
        (self.steady.key)(snap, &self.state)
    }

    /// The families encoded from the latest sample's rows, and their hash.
    pub(super) fn encode(&self, snap: &Snapshot, e: &mut DescriptorEncoder) -> (u64, fmt::Result) {
        (self.steady.encode)(snap, &self.state, e)
    }
}
