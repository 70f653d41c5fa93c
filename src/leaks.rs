//! The leak report of tracked zones: what is still alive, on demand and
//! when the zone's last handle outside its tensors and arenas is dropped.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::track::{Leak, LeakKind, Meta};
use crate::zone::{LeakHook, Zone};

impl Zone {
    /// The tensors (owned and shared) and arenas alive now, oldest first,
    /// with label, dtype, shape and bytes. Empty unless the zone tracks
    /// them ([`crate::ZoneBuilder::track_tensors`]: the default in debug
    /// builds, and always with a device budget).
    ///
    /// ```
    /// use tensorzone::{BackendChoice, LeakKind, Location, Tensor, Zone};
    /// let zone = Zone::builder().backend(BackendChoice::Cpu).track_tensors(true).build().unwrap();
    /// let t = Tensor::<f32>::zeros(&zone, [2, 3], Location::Device).unwrap().with_label("cache").unwrap();
    /// let leaks = zone.leaks();
    /// assert_eq!(leaks.len(), 1);
    /// assert_eq!((leaks[0].kind, leaks[0].label.as_deref(), leaks[0].bytes), (LeakKind::Tensor, Some("cache"), 24));
    /// drop(t);
    /// assert!(zone.leaks().is_empty());
    /// ```
    pub fn leaks(&self) -> Vec<Leak> {
        self.inner
            .tracking
            .registry
            .live()
            .iter()
            .map(|cell| self.leak_of(&cell.meta))
            .collect()
    }

    fn leak_of(&self, m: &Meta) -> Leak {
        let label = m.label.load(Ordering::Relaxed);
        let (dtype, dims) = m.shape.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Leak {
            kind: m.kind,
            label: (label != 0)
                .then(|| self.inner.labels.name(label))
                .flatten(),
            dtype,
            dims,
            bytes: m.bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether the zone keeps an entry per tensor and arena
    /// ([`crate::ZoneBuilder::track_tensors`]: the default in debug builds,
    /// and always with a device budget).
    pub fn tracks_tensors(&self) -> bool {
        self.inner.tracked
    }

    /// Sets what runs when a tracked zone's last handle is dropped while
    /// tensors or arenas are alive: it gets the zone's label and
    /// [`Zone::leaks`]. Without a hook the report goes to stderr.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tensorzone::{BackendChoice, Location, Tensor, Zone};
    /// let zone = Zone::builder().backend(BackendChoice::Cpu).track_tensors(true).build().unwrap();
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let sink = Arc::clone(&seen);
    /// zone.set_leak_hook(Box::new(move |_zone, leaks| sink.lock().unwrap().extend_from_slice(leaks)));
    /// let t = Tensor::<u8>::zeros(&zone, [16], Location::Host).unwrap();
    /// drop(zone); // `t` is still alive: reported
    /// assert_eq!(seen.lock().unwrap()[0].bytes, 16);
    /// # drop(t);
    /// ```
    pub fn set_leak_hook(&self, hook: LeakHook) {
        *self
            .inner
            .tracking
            .leak_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// Runs the leak report if this handle is the last one outside the
    /// zone's tensors and arenas (each holds one) and some are alive.
    #[cold]
    fn report_leaks_if_last(&self) {
        self.report_leaks_if_unheld(1);
    }

    /// Runs the leak report if the zone's handles are one per tracked
    /// tensor or arena plus `extra` (the handle being dropped, if any): no
    /// user handle is left. A pinned buffer also holds a handle, so a zone
    /// dropped while one is alive reports nothing.
    pub(crate) fn report_leaks_if_unheld(&self, extra: usize) {
        let tracking = &self.inner.tracking;
        // Read under the registry's lock: every entry counted then has its
        // handle already, except a pending one, whose tensor the pool may
        // not have built yet (it takes its handle after its entry). Such a
        // tensor would pass for a user's handle, so with any pending the
        // report waits for a tensor to take its entry over.
        let verdict = || {
            tracking.registry.with_counts(|live, pending| {
                let handles = Arc::strong_count(&self.inner);
                if live == 0 {
                    // A wait that saw leaks ends here if no handle is left
                    // beyond the one being dropped.
                    match handles <= extra {
                        true => Verdict::Nothing,
                        false => Verdict::Held,
                    }
                } else if handles < live + extra {
                    // Fewer handles than entries: pending ones whose tensors
                    // have none yet, and maybe no user's left: wait for them.
                    if pending > 0 {
                        Verdict::Wait
                    } else {
                        Verdict::Unclear
                    }
                } else if handles > live + extra {
                    Verdict::MoreHandles
                } else if pending > 0 {
                    Verdict::Wait
                } else {
                    Verdict::Report
                }
            })
        };
        let returned = crate::local::returned();
        let verdict = match verdict() {
            // More handles than tensors: a user's, or for a moment an
            // exiting thread's, whose range cache gives its ranges back
            // through one. If one was, wait for those and count again.
            Verdict::MoreHandles
                if crate::local::returning() || crate::local::returned() != returned =>
            {
                crate::local::wait_returned();
                verdict()
            }
            v => v,
        };
        match verdict {
            Verdict::Unclear => {}
            // A user holds the zone: no report is due, and a wait's list
            // was taken while one did.
            Verdict::MoreHandles | Verdict::Held => {
                // A load first: this runs on every drop of a tracked
                // tensor, and a wait is rare.
                let waits = &tracking.leak_check_waits;
                if waits.load(Ordering::Acquire) && waits.swap(false, Ordering::AcqRel) {
                    self.take_leaks_seen().clear();
                }
            }
            // The list is taken once, when the wait begins; the report adds
            // what is alive at its end. (Taking it at every drop meanwhile
            // would cost each drop the whole list.)
            Verdict::Wait => {
                if !tracking.leak_check_waits.swap(true, Ordering::AcqRel) {
                    self.note_leaks_seen();
                }
            }
            // Nothing is alive now, but what a wait saw alive was leaked.
            Verdict::Nothing => {
                let seen = std::mem::take(&mut *self.take_leaks_seen());
                if !seen.is_empty() {
                    self.report_once(seen.into_iter().map(|(_, l)| l).collect());
                }
            }
            Verdict::Report => {
                self.note_leaks_seen();
                let seen = std::mem::take(&mut *self.take_leaks_seen());
                self.report_once(seen.into_iter().map(|(_, l)| l).collect());
            }
        }
    }

    fn take_leaks_seen(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Leak)>> {
        self.inner
            .tracking
            .leaks_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what is alive now to the list a waiting leak check keeps (a
    /// tensor already in it gets its latest description), in creation
    /// order.
    fn note_leaks_seen(&self) {
        let live = self.inner.tracking.registry.live();
        let mut seen = self.take_leaks_seen();
        for cell in live {
            let leak = self.leak_of(&cell.meta);
            match seen.binary_search_by_key(&cell.seq, |(seq, _)| *seq) {
                Ok(i) => seen[i].1 = leak,
                Err(i) => seen.insert(i, (cell.seq, leak)),
            }
        }
    }

    /// The leak check a pending entry put off ([`Zone::report_leaks_if_unheld`]),
    /// run by the tensor that just took its entry over and holds one handle.
    pub(crate) fn leak_check_after_adopt(&self) {
        if self.inner.tracking.leak_check_waits.load(Ordering::Acquire) {
            self.report_leaks_if_unheld(0);
        }
    }

    /// Sends `leaks` to the hook (or stderr), once per zone.
    fn report_once(&self, leaks: Vec<Leak>) {
        let tracking = &self.inner.tracking;
        if tracking.leaks_reported.swap(true, Ordering::AcqRel) {
            return;
        }
        let hook = tracking.leak_hook.lock().unwrap_or_else(|p| p.into_inner());
        match hook.as_ref() {
            Some(h) => h(self.label(), &leaks),
            None => eprint!("{}", leak_text(self.label(), &leaks)),
        }
    }
}

/// The default report: one line per leak.
fn leak_text(zone: &str, leaks: &[Leak]) -> String {
    let total: u64 = leaks.iter().map(|l| l.bytes).sum();
    let mut out = format!(
        "tensorzone: zone {zone:?} dropped with {} live allocations ({total} bytes):\n",
        leaks.len()
    );
    for l in leaks {
        let what = match l.kind {
            LeakKind::Tensor => "tensor",
            LeakKind::Arena => "arena",
        };
        let _ = writeln!(
            out,
            "  {what} {} {} {:?}: {} bytes",
            l.label.as_deref().unwrap_or("(no label)"),
            l.dtype.map_or_else(String::new, |d| d.to_string()),
            l.dims,
            l.bytes
        );
    }
    out
}

/// What a leak check finds ([`Zone::report_leaks_if_unheld`]).
enum Verdict {
    /// No tracked tensor or arena is alive, and no handle but the one
    /// being dropped.
    Nothing,
    /// Fewer handles than entries and none pending: for a moment, during
    /// a drop; decide at the next check.
    Unclear,
    /// Nothing tracked is alive, and a handle beyond the one being
    /// dropped: a user's.
    Held,
    /// A handle beyond the tensors' and arenas': a user still holds one.
    MoreHandles,
    /// Entries whose tensors may not hold their handle yet: decide later.
    Wait,
    /// Only tensors and arenas hold the zone: report what they are.
    Report,
}

impl Drop for Zone {
    #[inline(always)]
    fn drop(&mut self) {
        if self.inner.tracked {
            self.report_leaks_if_last();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn the_default_report_names_each_leak() {
        let leaks = [
            Leak {
                kind: LeakKind::Tensor,
                label: Some("weights".into()),
                dtype: Some(DType::F32),
                dims: vec![2, 3],
                bytes: 24,
            },
            Leak {
                kind: LeakKind::Arena,
                label: None,
                dtype: None,
                dims: vec![],
                bytes: 4096,
            },
        ];
        let text = leak_text("z", &leaks);
        assert_eq!(
            text,
            "tensorzone: zone \"z\" dropped with 2 live allocations (4120 bytes):\n  \
             tensor weights f32 [2, 3]: 24 bytes\n  arena (no label)  []: 4096 bytes\n"
        );
    }
}
