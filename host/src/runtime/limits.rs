//! Per-request resource limits enforced inside one Store.

use wasmtime::ResourceLimiter;

/// Caps the *total* linear memory of one request's instance (a component may have several
/// memories — QuickJS has three — and `StoreLimits` would cap each separately), and records
/// when the cap was hit so a resulting trap can be reported as `connector_memory_limit`.
#[derive(Debug)]
pub struct MemoryBudget {
    max_total_bytes: usize,
    used_bytes: usize,
    max_table_elements: usize,
    exhausted: bool,
}

impl MemoryBudget {
    /// A budget of `max_total_bytes` across all memories.
    pub fn new(max_total_bytes: usize) -> Self {
        Self {
            max_total_bytes,
            used_bytes: 0,
            max_table_elements: 100_000,
            exhausted: false,
        }
    }

    /// Whether a growth request was refused because of this budget.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.used_bytes.saturating_add(growth);
        if total > self.max_total_bytes {
            self.exhausted = true;
            return Ok(false);
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_all_memories_together() -> wasmtime::Result<()> {
        let mut budget = MemoryBudget::new(100);
        assert!(budget.memory_growing(0, 60, None)?);
        assert!(
            budget.memory_growing(0, 40, None)?,
            "second memory fits the remainder"
        );
        assert!(!budget.exhausted());
        assert!(
            !budget.memory_growing(40, 41, None)?,
            "one byte over the total is refused"
        );
        assert!(budget.exhausted());
        Ok(())
    }
}
