//! The tiers of tensor storage. This release has tier 3, owned tensors;
//! the arena, shared and inline tiers build on the same zone.

pub mod owned;
pub mod pinned;
