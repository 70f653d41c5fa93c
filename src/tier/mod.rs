//! The four tiers of tensor storage, chosen by lifetime (see the crate
//! docs' guide): inline [`small`] tensors, per-frame [`arena`] tensors,
//! [`owned`] tensors and ref-counted [`shared`] ones.

pub mod arena;
pub mod owned;
pub mod pinned;
pub mod shared;
pub mod small;
pub(crate) mod sync;
