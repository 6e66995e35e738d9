//! The pooling allocator, and how its instance slots are shared out.
//!
//! Every instance lives in one of the pool's slots, which are reserved up front. Three kinds of
//! instance need one, and each kind gets its own share so that none can starve another:
//! requests (`--max-instances`, waited on briefly), spares (see [`super::spare`]; never more
//! than requests may use) and the `describe()` call a load or hot reload makes — so a reload
//! succeeds even while every request slot and every spare is taken.

use super::RuntimeLimits;
use super::spare::MAX_SPARES;

/// `describe()` calls that may run at once; more loads wait for one to finish.
const LOAD_SLOTS: u32 = 2;
// With none, every load would wait forever.
const _: () = assert!(LOAD_SLOTS > 0);

/// Linear memories and tables one instance may have. The pool holds this many per slot, so that
/// however connectors mix, every slot can be filled: a connector with more would use up the
/// pool's memories or tables before its slots and starve the others. (Rust, C and Python
/// connectors have 1 memory and 2 tables; QuickJS ones 3 and 3.)
pub(crate) const MAX_MEMORIES_PER_INSTANCE: u32 = 4;
pub(crate) const MAX_TABLES_PER_INSTANCE: u32 = 8;
/// Core instances one component instance may create. The pool only counts these (it reserves
/// nothing for them), so every slot is given the most.
const MAX_CORE_INSTANCES_PER_INSTANCE: u32 = 64;

/// Most bytes of a linear memory kept resident between requests when only dirtied pages are
/// reset; past it the rest of the slot is decommitted as usual.
const KEEP_RESIDENT_WITH_PAGEMAP_SCAN: usize = 4 << 20;

/// How many instances of each kind may exist at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotBudget {
    /// Instances serving requests.
    pub requests: u32,
    /// Spare instances, over all threads and connectors.
    pub spares: u32,
    /// Instances answering `describe()` during a load.
    pub loads: u32,
}

impl SlotBudget {
    pub(crate) fn for_limits(limits: &RuntimeLimits) -> Self {
        Self {
            requests: limits.max_instances,
            // An operator who allows few instances wants little memory held: spares never
            // outnumber request slots.
            spares: MAX_SPARES.min(limits.max_instances),
            loads: LOAD_SLOTS,
        }
    }

    /// Slots the pool reserves.
    pub(crate) fn total(&self) -> u32 {
        self.requests + self.spares + self.loads
    }
}

/// The pooling allocator for `budget`, each instance within `limits`.
pub(crate) fn pooling_config(
    limits: &RuntimeLimits,
    budget: SlotBudget,
) -> wasmtime::PoolingAllocationConfig {
    let slots = budget.total();
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        // Non-Rust toolchains bring several core modules and memories per component.
        .total_core_instances(slots * MAX_CORE_INSTANCES_PER_INSTANCE)
        .total_memories(slots * MAX_MEMORIES_PER_INSTANCE)
        .total_tables(slots * MAX_TABLES_PER_INSTANCE)
        .total_stacks(slots)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_INSTANCE)
        .max_memories_per_component(MAX_MEMORIES_PER_INSTANCE)
        .max_tables_per_component(MAX_TABLES_PER_INSTANCE)
        .max_memory_size(limits.memory_bytes)
        .table_keep_resident(16 << 10);
    // Resetting pages is what per-request instances spend their time on. Where Linux (6.7+)
    // offers PAGEMAP_SCAN, a used slot is reset by rewriting only the pages the guest dirtied,
    // and they stay resident: the next request takes no copy-on-write faults and sends no
    // TLB-shootdown interrupts. Without it, everything kept resident is rewritten on every
    // request whether dirtied or not, so keep only a little.
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_WITH_PAGEMAP_SCAN);
    } else {
        pool.linear_memory_keep_resident(64 << 10);
    }
    pool
}

/// Why `component` cannot share the pool fairly, if it cannot: it needs more memories or tables
/// per instance than each slot holds.
pub(crate) fn oversized(component: &wasmtime::component::Component) -> Option<String> {
    let Some(needs) = component.resources_required() else {
        return Some("it imports core modules, which connectors may not".into());
    };
    if needs.num_memories > MAX_MEMORIES_PER_INSTANCE {
        return Some(format!(
            "an instance needs {} linear memories; at most {MAX_MEMORIES_PER_INSTANCE} are allowed",
            needs.num_memories
        ));
    }
    if needs.num_tables > MAX_TABLES_PER_INSTANCE {
        return Some(format!(
            "an instance needs {} tables; at most {MAX_TABLES_PER_INSTANCE} are allowed",
            needs.num_tables
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose one core instance has `memories` memories and `tables` tables.
    fn component(memories: usize, tables: usize) -> wasmtime::component::Component {
        let text = format!(
            "(component (core module $m {} {}) (core instance (instantiate $m)))",
            "(memory 1) ".repeat(memories),
            "(table 1 funcref) ".repeat(tables)
        );
        let bytes = wat::parse_str(text).expect("valid component text");
        wasmtime::component::Component::new(&wasmtime::Engine::default(), bytes).expect("component")
    }

    #[test]
    fn a_component_needing_more_than_a_slots_share_of_the_pool_is_refused() {
        assert_eq!(oversized(&component(1, 2)), None);
        let most = MAX_MEMORIES_PER_INSTANCE as usize;
        assert_eq!(
            oversized(&component(most, MAX_TABLES_PER_INSTANCE as usize)),
            None
        );
        let memories = oversized(&component(most + 1, 0)).expect("too many memories");
        assert!(memories.contains("5 linear memories"), "{memories}");
        let tables = oversized(&component(1, MAX_TABLES_PER_INSTANCE as usize + 1)).expect("too many tables");
        assert!(tables.contains("9 tables"), "{tables}");
    }

    #[test]
    fn spares_never_outnumber_request_slots_and_loads_always_have_room() {
        let budget = |max_instances| {
            SlotBudget::for_limits(&RuntimeLimits {
                max_instances,
                ..RuntimeLimits::default()
            })
        };
        assert_eq!(
            budget(1),
            SlotBudget {
                requests: 1,
                spares: 1,
                loads: LOAD_SLOTS
            }
        );
        assert_eq!(budget(256).spares, MAX_SPARES);
        assert_eq!(budget(256).total(), 256 + MAX_SPARES + LOAD_SLOTS);
    }
}
