//! The kernel's LRU maps (`SEEN`, `PROXY_SOCKS`, `DNS_SOCKS`): sized by
//! CPU count before load, and their evictions counted.
//!
//! The kernel's common LRU (kernel/bpf/bpf_lru_list.c) hands free nodes to
//! each CPU's local list `LOCAL_FREE_TARGET` (128) at a time, and once the
//! global free list is empty a CPU refills its own by evicting the oldest
//! entries, live or not. So up to 128 free nodes per possible CPU can sit
//! unused on other CPUs while one CPU evicts: on a 64-CPU node, 8,192 of a
//! map's entries. Each map gets its base size plus `PER_CPU` entries per
//! possible CPU, capped at `MAX_FACTOR` times the base.
//! (`BPF_F_NO_COMMON_LRU` would split the map into per-CPU LRUs of
//! max/ncpus entries each: an entry inserted on one CPU would then be
//! evicted by that CPU's traffic alone, earlier, not later.)
//!
//! Evictions are silent. The kernel counts new keys and deliberate deletes
//! per map (`LRU_OPS`, `tracer_common::lru`); the entries present are
//! counted here by walking the map's keys, so
//! evicted = inserted - deleted - present.

use aya::{
    maps::{HashMap as BpfHashMap, IterableMap, PerCpuArray},
    Ebpf, EbpfLoader, Pod,
};
use tracer_common::{lru, DnsSock, ProxySock};

use super::ProbeError;

/// Extra entries per possible CPU: two batches of the kernel's
/// `LOCAL_FREE_TARGET` (128), for the free and the pending local lists.
const PER_CPU: u32 = 256;
/// At most this many times the base size (a 1,024-CPU node gets 16x).
const MAX_FACTOR: u32 = 16;

/// The LRU maps: name, base size (the size in tracer-ebpf's maps.rs and
/// dns.rs), and their `LRU_OPS` indices (inserted, deleted; `None` for a
/// map whose entries are never deleted on purpose).
pub const MAPS: [(&str, u32, u32, Option<u32>); 3] = [
    ("SEEN", 16_384, lru::SEEN_INSERTED, Some(lru::SEEN_DELETED)),
    (
        "PROXY_SOCKS",
        8_192,
        lru::PROXY_INSERTED,
        Some(lru::PROXY_DELETED),
    ),
    ("DNS_SOCKS", 16_384, lru::DNS_INSERTED, None),
];

/// The size of an LRU map of `base` entries on a node with `cpus`
/// possible CPUs.
pub fn entries(base: u32, cpus: u32) -> u32 {
    base.saturating_add(cpus.saturating_mul(PER_CPU))
        .min(base.saturating_mul(MAX_FACTOR))
}

/// Set every LRU map's size for this node's CPUs, before load.
pub fn size_maps(loader: &mut EbpfLoader<'_>) {
    // The kernel's per-CPU lists exist for every possible CPU; when the
    // count cannot be read, one CPU (the base sizes, as before).
    let cpus = aya::util::nr_cpus().map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
    for (name, base, _, _) in MAPS {
        loader.map_max_entries(name, entries(base, cpus));
    }
}

/// One LRU map's counts since load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LruMap {
    pub name: &'static str,
    pub capacity: u32,
    pub inserted: u64,
    pub deleted: u64,
    pub present: u64,
    /// Entries that disappeared without a delete: evicted to make room.
    pub evicted: u64,
}

impl LruMap {
    fn new(name: &'static str, capacity: u32, inserted: u64, deleted: u64, present: u64) -> Self {
        LruMap {
            name,
            capacity,
            inserted,
            deleted,
            present,
            // Saturating: the counters and the walk are not one snapshot,
            // so an insert between them can make present run ahead.
            evicted: inserted.saturating_sub(deleted).saturating_sub(present),
        }
    }
}

/// The counts of every LRU map of a loaded object. A map missing from the
/// object (none is, in a matching build) is left out.
pub fn read(ebpf: &Ebpf) -> Result<Vec<LruMap>, ProbeError> {
    let ops = ebpf
        .map("LRU_OPS")
        .ok_or(ProbeError::MissingMap("LRU_OPS"))?;
    let ops: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ops).map_err(|source| ProbeError::Map {
            map: "LRU_OPS",
            source,
        })?;
    let sum = |index: u32| -> Result<u64, ProbeError> {
        let values = ops.get(&index, 0).map_err(|source| ProbeError::Map {
            map: "LRU_OPS",
            source,
        })?;
        Ok(values.iter().sum())
    };
    let mut out = Vec::with_capacity(MAPS.len());
    for (name, _, ins, del) in MAPS {
        let Some(map) = ebpf.map(name) else {
            continue;
        };
        let (present, capacity) = match name {
            "SEEN" => count::<u32, u8>(map, name)?,
            "PROXY_SOCKS" => count::<u64, ProxySock>(map, name)?,
            _ => count::<u64, DnsSock>(map, name)?,
        };
        let deleted = match del {
            Some(i) => sum(i)?,
            None => 0,
        };
        out.push(LruMap::new(name, capacity, sum(ins)?, deleted, present));
    }
    Ok(out)
}

/// Entries present in an LRU map (one `BPF_MAP_GET_NEXT_KEY` each, so the
/// walk costs what the map holds, at most its capacity), and the capacity.
fn count<K: Pod, V: Pod>(
    map: &aya::maps::Map,
    name: &'static str,
) -> Result<(u64, u32), ProbeError> {
    let map: BpfHashMap<_, K, V> =
        BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { map: name, source })?;
    let capacity = map.map().info().map_or(0, |i| i.max_entries());
    // Bounded: a key that vanished mid-walk restarts the kernel's walk from
    // the first bucket, so stop at the capacity whatever happens.
    let present = map
        .keys()
        .take(capacity.max(1) as usize)
        .filter(Result::is_ok)
        .count() as u64;
    Ok((present, capacity))
}

/// The counts in words, for the stats lines.
pub fn describe(maps: &[LruMap]) -> String {
    let parts: Vec<String> = maps
        .iter()
        .map(|m| {
            format!(
                "{} {}/{} ({} evicted)",
                m.name, m.present, m.capacity, m.evicted
            )
        })
        .collect();
    format!("kernel LRU maps: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_grow_with_cpus_and_stop_at_the_cap() {
        assert_eq!(entries(8_192, 1), 8_192 + 256);
        assert_eq!(entries(8_192, 2), 8_192 + 512);
        // 64 CPUs: room for every CPU's local free list on top of the base.
        assert_eq!(entries(8_192, 64), 8_192 + 64 * 256);
        assert!(entries(8_192, 64) - 8_192 >= 64 * 128);
        assert_eq!(entries(16_384, 4_096), 16_384 * MAX_FACTOR);
        assert_eq!(entries(u32::MAX, u32::MAX), u32::MAX);
    }

    #[test]
    fn evicted_is_what_vanished_without_a_delete() {
        let m = LruMap::new("SEEN", 100, 500, 300, 100);
        assert_eq!(m.evicted, 100);
        // No eviction: everything inserted is deleted or present.
        assert_eq!(LruMap::new("SEEN", 100, 50, 20, 30).evicted, 0);
        // A walk that saw an insert the counters had not: no underflow.
        assert_eq!(LruMap::new("SEEN", 100, 50, 20, 31).evicted, 0);
        assert!(describe(&[m]).contains("SEEN 100/100 (100 evicted)"));
    }
}
