//! Instances made before they are needed, so that a request does not wait for one.
//!
//! Instantiating a connector and later tearing its instance down are the two largest steps a
//! request spends in the runtime that do not depend on the request itself. Each serving thread
//! therefore keeps, per connector, one *spare*: a freshly instantiated instance that no request
//! has used. A request takes the spare; once it has been answered (or abandoned by its caller), a
//! task on the same thread drops the used instance and builds the next spare. (Building it while the request waited for
//! its upstream was tried first: the build then delayed the upstream's answer instead.)
//!
//! Isolation is unchanged: a spare serves exactly one request and is never reused; what it holds
//! before that request comes only from instantiation, which sees no request data. A spare
//! belongs to one loaded connector, so a reloaded connector never runs its predecessor's code.
//! At most [`MAX_SPARES`] spares exist at once (over all threads and connectors), and no more
//! than `--max-instances`; the instance pool keeps slots for them apart from the requests' (see
//! [`super::pool`]), so spares never take a slot a request needs. A spare no request has taken
//! for [`SPARE_MAX_IDLE`] is dropped, giving its slot, its memory and its share of the
//! allowance back: a connector nobody calls does not hold them for good.

use super::{GuestState, VersionedInstance};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;

/// Most spare instances alive at once, over all threads and connectors.
pub(crate) const MAX_SPARES: u32 = 64;

/// How long a spare waits for a request before it is dropped.
pub const SPARE_MAX_IDLE: Duration = Duration::from_secs(60);

/// An instantiated connector no request has used yet.
pub(crate) struct Spare {
    store: Store<GuestState>,
    instance: VersionedInstance,
    /// One of [`MAX_SPARES`]; given back when the spare is taken or dropped.
    _allowance: OwnedSemaphorePermit,
    built_at: Instant,
}

impl Spare {
    pub(crate) fn new(
        store: Store<GuestState>,
        instance: VersionedInstance,
        allowance: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            store,
            instance,
            _allowance: allowance,
            built_at: Instant::now(),
        }
    }

    /// The store and the instance, for the request taking the spare.
    pub(crate) fn into_parts(self) -> (Store<GuestState>, VersionedInstance) {
        (self.store, self.instance)
    }
}

/// One connector's spares: at most one per thread.
#[derive(Default)]
pub(crate) struct Spares {
    per_thread: thread_local::ThreadLocal<Arc<Mutex<Slot>>>,
}

/// A thread's spare for one connector, and whether one is being built.
#[derive(Default)]
struct Slot {
    ready: Option<Spare>,
    building: bool,
}

impl Spares {
    /// This thread's spare, if one is ready.
    pub(crate) fn take(&self) -> Option<Spare> {
        lock(self.slot()).ready.take()
    }

    /// The right to build this thread's spare, if it has none and none is being built.
    pub(crate) fn claim(&self) -> Option<Claim> {
        let slot = self.slot();
        let mut state = lock(slot);
        if state.ready.is_some() || state.building {
            return None;
        }
        state.building = true;
        drop(state);
        Some(Claim { slot: slot.clone() })
    }

    /// Drop every thread's spare that was built `idle_for` ago or longer and is still
    /// untaken; how many were dropped.
    pub(crate) fn drop_idle(&self, idle_for: Duration) -> usize {
        let mut expired = Vec::new();
        for slot in self.per_thread.iter() {
            let mut state = lock(slot);
            if state
                .ready
                .as_ref()
                .is_some_and(|spare| spare.built_at.elapsed() >= idle_for)
            {
                expired.extend(state.ready.take());
            }
        }
        // Dropped outside the locks: resetting an instance's memory takes microseconds.
        expired.len()
    }

    fn slot(&self) -> &Arc<Mutex<Slot>> {
        self.per_thread.get_or_default()
    }
}

/// A build under way for one thread's slot. [`Claim::fill`] ends it; a claim dropped without
/// that (the build failed, panicked or was cancelled) frees the slot for the next attempt.
pub(crate) struct Claim {
    slot: Arc<Mutex<Slot>>,
}

impl Claim {
    /// Finish the build: keep `spare` if there is one.
    pub(crate) fn fill(self, spare: Option<Spare>) {
        lock(&self.slot).ready = spare;
        // `Drop` clears `building`.
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.slot).building = false;
    }
}

/// What is left to do once a request is over, whether it was answered or abandoned (the caller
/// hung up and its future was dropped): drop the used instance, give its pool slot back, and
/// build this thread's next spare.
///
/// None of it need delay the reply — dropping an instance resets its memory — so it runs in a
/// task of its own on the same thread, in the idle moment after the answer has gone out.
pub(crate) struct Aftermath<F: Future<Output = ()> + Send + 'static> {
    used: Option<Store<GuestState>>,
    slot: Option<OwnedSemaphorePermit>,
    next_spare: Option<F>,
}

impl<F: Future<Output = ()> + Send + 'static> Aftermath<F> {
    pub(crate) fn new(slot: OwnedSemaphorePermit, next_spare: Option<F>) -> Self {
        Self {
            used: None,
            slot: Some(slot),
            next_spare,
        }
    }

    /// The request is answered: `used` goes with the rest. (An abandoned request's store is
    /// dropped where it was, with the request.)
    pub(crate) fn tear_down(mut self, used: Store<GuestState>) {
        self.used = Some(used);
    }
}

impl<F: Future<Output = ()> + Send + 'static> Drop for Aftermath<F> {
    fn drop(&mut self) {
        let (used, slot, next_spare) = (self.used.take(), self.slot.take(), self.next_spare.take());
        // Outside a runtime (one shutting down) there is no later moment: drop it all now.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            drop(used);
            drop(slot);
            if let Some(build) = next_spare {
                build.await;
            }
        });
    }
}

/// The slot's state; a panic elsewhere while it was held cannot leave it half-written.
fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_build_per_thread_until_filled_or_abandoned() {
        let spares = Spares::default();
        let claim = spares.claim().expect("first claim");
        assert!(spares.claim().is_none(), "a build is already under way");
        claim.fill(None);
        assert!(spares.take().is_none(), "a failed build leaves nothing to take");
        let abandoned = spares.claim().expect("claimable after a failed build");
        drop(abandoned);
        let again = spares.claim().expect("claimable after an abandoned build");
        again.fill(None);
        // Another thread has its own slot.
        let spares = Arc::new(spares);
        let other = std::thread::spawn({
            let spares = spares.clone();
            move || spares.claim().is_some()
        });
        let _mine = spares.claim().expect("this thread");
        assert!(
            other.join().expect("thread"),
            "the other thread claims its own slot"
        );
    }
}
