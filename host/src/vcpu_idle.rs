//! Whether this machine halts an idle CPU the moment it is idle, and the hint logged at start.
//!
//! In a VM whose guest kernel uses the `haltpoll` cpuidle driver with guest halt polling
//! turned off (`guest_halt_poll_ns=0`, as on Firecracker guests), an idle vCPU halts at once
//! and waking it again costs tens of microseconds. A gateway at low concurrency waits on the
//! network twice per request, so it pays that twice: measured here, 100 µs of a 250 µs
//! request at one connection (BENCHMARKS.md, sixth pass). Letting the guest poll briefly before
//! halting removes most of it for little CPU; only the machine's administrator can set that,
//! so the gateway says how.

use std::path::Path;

const DRIVER: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
const GUEST_HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The operator's hint, if idle vCPUs halt at once here.
pub fn halting_hint() -> Option<&'static str> {
    let read = |path: &str| std::fs::read_to_string(Path::new(path)).ok();
    halts_at_once(read(DRIVER).as_deref(), read(GUEST_HALT_POLL_NS).as_deref()).then_some(
        "idle vCPUs halt at once on this VM (cpuidle haltpoll, guest_halt_poll_ns=0): waking them \
         adds ~100 us to each request at low concurrency. As root, \
         `echo 200000 > /sys/module/haltpoll/parameters/guest_halt_poll_ns` (or boot with \
         haltpoll.guest_halt_poll_ns=200000) removes most of it; `--busy-poll-us` is the \
         in-process alternative",
    )
}

/// Whether the cpuidle `driver` and the `guest_halt_poll_ns` setting mean idle vCPUs halt at
/// once.
fn halts_at_once(driver: Option<&str>, guest_halt_poll_ns: Option<&str>) -> bool {
    driver.map(str::trim) == Some("haltpoll") && guest_halt_poll_ns.map(str::trim) == Some("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_haltpoll_without_guest_polling_halts_at_once() {
        assert!(halts_at_once(Some("haltpoll\n"), Some("0\n")));
        assert!(!halts_at_once(Some("haltpoll\n"), Some("200000\n")));
        assert!(!halts_at_once(Some("intel_idle\n"), None));
        assert!(!halts_at_once(None, None));
    }
}
