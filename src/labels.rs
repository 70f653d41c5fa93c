//! Labels for tensors and arenas, and the live bytes each label holds.
//!
//! A zone interns up to [`MAX_LABELS`] names; a labeled tensor keeps the
//! one-byte id, so a label costs an unlabeled tensor nothing and a labeled
//! one an atomic add where its storage changes.

use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::stats::{HostDevice, HostDeviceCounter};

/// Distinct labels one zone can name (ids 1..=255; 0 is "no label").
pub(crate) const MAX_LABELS: usize = 255;

/// The zone's labels: names by id and the bytes each holds.
#[derive(Debug)]
pub(crate) struct Labels {
    names: Mutex<Vec<String>>,
    bytes: Box<[HostDeviceCounter]>,
}

impl Default for Labels {
    fn default() -> Labels {
        Labels {
            names: Mutex::new(Vec::new()),
            bytes: (0..=MAX_LABELS)
                .map(|_| HostDeviceCounter::default())
                .collect(),
        }
    }
}

impl Labels {
    /// The id of `name`, interned on first use.
    pub(crate) fn id(&self, name: &str) -> Result<u8> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let i = match names.iter().position(|n| n == name) {
            Some(i) => i,
            None if names.len() < MAX_LABELS => {
                names.push(name.to_string());
                names.len() - 1
            }
            None => return Err(Error::TooManyLabels { max: MAX_LABELS }),
        };
        // i < MAX_LABELS = 255, so i + 1 fits.
        Ok(u8::try_from(i + 1).unwrap_or(u8::MAX))
    }

    /// The name of a nonzero id.
    pub(crate) fn name(&self, id: u8) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.get(usize::from(id).checked_sub(1)?).cloned()
    }

    /// Adds (`add`) or takes away `held` for label `id` (0: nothing).
    pub(crate) fn count(&self, id: u8, held: HostDevice, add: bool) {
        let Some(b) = self.bytes.get(usize::from(id)).filter(|_| id != 0) else {
            return;
        };
        if add {
            b.add(held);
        } else {
            b.sub(held);
        }
    }

    /// Every label holding bytes, with what it holds, largest device
    /// holders first.
    pub(crate) fn snapshot(&self) -> Vec<(String, HostDevice)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, HostDevice)> = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let b = self.bytes.get(i + 1)?;
                let held = b.get();
                (held != HostDevice::default()).then(|| (n.clone(), held))
            })
            .collect();
        out.sort_by(|a, b| b.1.device.cmp(&a.1.device).then(b.1.host.cmp(&a.1.host)));
        out
    }
}
