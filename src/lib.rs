#![doc = include_str!("../README.md")]
#![doc = include_str!("tiers.md")]
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod backend;
mod child;
mod dtype;
mod error;
pub mod kernels;
mod labels;
mod leaks;
mod local;
mod pool;
mod residency;
mod shape;
mod spill;
mod stats;
mod tier;
mod trace;
mod track;
mod zone;

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use residency::{CopyState, Location, Residency};
pub use shape::{IntoShape, Shape};
pub use stats::{DTypeUsage, HostDevice, Rates, TierUsage, Transfers, ZoneStats};
pub use tier::arena::{Arena, ArenaTensor};
pub use tier::owned::Tensor;
pub use tier::pinned::PinnedBuffer;
pub use tier::shared::{SharedMut, SharedRead, SharedTensor, WeakTensor};
pub use tier::small::SmallTensor;
pub use trace::{Direction, Event, Tier, Trace, TraceEvent};
pub use track::{Leak, LeakKind};
pub use zone::{
    BackendChoice, BackendInfo, BackendKind, DriverReport, LeakHook, Zone, ZoneBuilder,
    BACKEND_ENV, TRACK_ENV,
};

pub use half::{bf16, f16};
pub use wgpu;
