//! Where a tensor's bytes live and which copy is current.

/// Where a new tensor's storage is placed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Host memory.
    Host,
    /// Device memory (a pooled range of a wgpu buffer, or of a host block on
    /// the CPU backend).
    Device,
}

/// The state of one copy of a tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CopyState {
    /// No storage on this side.
    Absent,
    /// Storage exists but holds older bytes than the other side.
    Stale,
    /// Storage holds the tensor's current bytes.
    Current,
}

/// Which copies of a tensor exist and which are current.
///
/// When neither side is current the tensor is *unwritten* (created by
/// `empty`): it reads as zeros, and the first read or binding fills the
/// side it touches with zeros without moving any data.
///
/// A device copy spilled under a budget still counts as `Current`: its
/// bytes are kept on the host and go back to the device on its next
/// device use, or on `to_device()`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Residency {
    /// The host copy.
    pub host: CopyState,
    /// The device copy.
    pub device: CopyState,
}

impl Residency {
    /// Neither copy holds written data yet.
    pub fn is_unwritten(&self) -> bool {
        self.host != CopyState::Current && self.device != CopyState::Current
    }

    /// Both copies exist and agree.
    pub fn is_synced(&self) -> bool {
        self.host == CopyState::Current && self.device == CopyState::Current
    }

    pub(crate) fn of(
        has_host: bool,
        host_current: bool,
        has_device: bool,
        device_current: bool,
    ) -> Residency {
        let side = |has, cur| match (has, cur) {
            (false, _) => CopyState::Absent,
            (true, false) => CopyState::Stale,
            (true, true) => CopyState::Current,
        };
        Residency {
            host: side(has_host, host_current),
            device: side(has_device, device_current),
        }
    }
}
