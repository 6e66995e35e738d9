//! Keeping the CPUs out of idle halt while requests are being served (opt-in, `--busy-poll-us`).
//!
//! On a virtual machine, a CPU with nothing to run halts, and waking a halted virtual CPU takes
//! the hypervisor tens of microseconds — paid again at every step of a request that waits: the
//! request's arrival, the upstream's answer. Measured on the project's VM, it was most of the
//! gateway's latency over a plain proxy at one connection (BENCHMARKS.md, fifth pass). Linux's
//! `haltpoll` idle driver fixes this by polling before halting, when the host enables it.
//!
//! Where it is not enabled, this module does the same from inside the gateway: one thread per
//! CPU, at `SCHED_IDLE` priority (it runs only when nothing else on that CPU wants to, and gives
//! way at once), spins while any request is in flight and for a linger time after the last one
//! began or ended, then sleeps until the next request. It yields its CPU now and then, and steps
//! aside while more requests are in flight than there are CPUs (they have work of their own
//! then). The price is CPU time: while traffic flows, every otherwise idle cycle is spent
//! spinning. Off by default.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Pause instructions between two looks at the shared state (~2 µs): a look reads cache
/// lines the serving threads write, so looking on every iteration would slow them down.
const PAUSES_PER_LOOK: u32 = 32;

/// How long a spinner steps aside when more requests are in flight than there are CPUs: the
/// CPUs then have work of their own, and a spinner would only compete with it.
const SATURATED_BACKOFF: Duration = Duration::from_micros(200);

/// Looks between two yields of the CPU (~250 µs). A woken request preempts a `SCHED_IDLE`
/// spinner at once, but the scheduler may also pick the spinner while a request's thread is
/// runnable and then leave it running until the next tick (milliseconds): yielding bounds that.
/// Yielding every ~30 µs cost most of the latency the spinning saves (BENCHMARKS.md).
const LOOKS_PER_YIELD: u32 = 128;

/// What the serving threads report and the spinners read.
#[derive(Debug)]
pub struct BusyPoll {
    /// Requests being served now.
    in_flight: AtomicUsize,
    /// When a request last began or ended, in nanoseconds since `epoch`.
    last_activity_nanos: AtomicU64,
    epoch: Instant,
    /// How long to keep spinning after the last activity.
    linger: Duration,
    /// More requests in flight than this (the CPU count) and the spinners step aside.
    saturated_above: usize,
    /// Spinners asleep; the next request wakes them.
    sleepers: AtomicUsize,
    wake: (Mutex<()>, Condvar),
}

/// Marks a request in flight for as long as it lives.
#[derive(Debug)]
pub struct Active<'a> {
    poll: &'a BusyPoll,
}

impl BusyPoll {
    /// Start one spinner per CPU this process may run on, spinning for `linger` after the
    /// last request activity. A spinner that cannot lower its priority to `SCHED_IDLE` is not
    /// started (at normal priority it would take CPU time from requests).
    pub fn start(linger: Duration) -> Arc<Self> {
        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        let poll = Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last_activity_nanos: AtomicU64::new(0),
            epoch: Instant::now(),
            linger,
            saturated_above: cpus.len().max(1),
            sleepers: AtomicUsize::new(0),
            wake: (Mutex::new(()), Condvar::new()),
        });
        let mut started = 0;
        for cpu in cpus {
            let spinner = poll.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-poll-{}", cpu.id))
                .spawn(move || {
                    if let Err(error) = lowest_priority() {
                        tracing::warn!(
                            ?error,
                            "busy poll: cannot run at SCHED_IDLE priority; this CPU is not polled"
                        );
                        return;
                    }
                    // Pinned: each CPU gets its own spinner, wherever the scheduler puts the rest.
                    core_affinity::set_for_current(cpu);
                    spinner.spin_forever();
                });
            match spawned {
                Ok(_) => started += 1,
                Err(error) => tracing::warn!(%error, "busy poll: could not start a spinner"),
            }
        }
        tracing::info!(
            cpus = started,
            linger_us = linger.as_micros() as u64,
            "busy poll on"
        );
        poll
    }

    /// A request began; it ends when the returned guard is dropped.
    pub fn begin(&self) -> Active<'_> {
        // SeqCst here and in `sleep`: either this sees a spinner going to sleep, or that
        // spinner sees this request and does not sleep.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let (lock, condvar) = &self.wake;
            let _guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            condvar.notify_all();
        }
        Active { poll: self }
    }

    /// Spinners asleep now (none while requests are in flight or were recently).
    pub fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }

    fn touch(&self) {
        let nanos = self.epoch.elapsed().as_nanos() as u64;
        self.last_activity_nanos.store(nanos, Ordering::Relaxed);
    }

    fn should_spin(&self) -> bool {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return true;
        }
        let last = Duration::from_nanos(self.last_activity_nanos.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last) < self.linger
    }

    fn spin_forever(&self) {
        loop {
            let mut looks = 0;
            while self.should_spin() {
                if self.in_flight.load(Ordering::Relaxed) > self.saturated_above {
                    std::thread::sleep(SATURATED_BACKOFF);
                    continue;
                }
                for _ in 0..PAUSES_PER_LOOK {
                    std::hint::spin_loop();
                }
                looks += 1;
                if looks == LOOKS_PER_YIELD {
                    looks = 0;
                    std::thread::yield_now();
                }
            }
            self.sleep();
        }
    }

    /// Sleep until a request begins.
    fn sleep(&self) {
        let (lock, condvar) = &self.wake;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // A request that began after the last look saw no sleeper and woke nobody: look again.
        while !self.should_spin() {
            guard = condvar.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.poll.touch();
        self.poll.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lowest_priority() -> Result<(), thread_priority::Error> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poll `condition` for up to two seconds.
    fn eventually(condition: impl Fn() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            if condition() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn spinners_sleep_when_idle_and_wake_for_a_request() {
        let poll = BusyPoll::start(Duration::from_millis(5));
        let spinners = core_affinity::get_core_ids().unwrap_or_default().len();
        assert!(spinners > 0);
        assert!(
            eventually(|| poll.sleepers() == spinners),
            "no request: every spinner sleeps"
        );
        let active = poll.begin();
        assert!(eventually(|| poll.sleepers() == 0), "a request wakes them all");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            poll.sleepers(),
            0,
            "they spin for as long as a request is in flight"
        );
        drop(active);
        assert!(
            eventually(|| poll.sleepers() == spinners),
            "and sleep again after the linger time"
        );
    }
}
