//! `/proc/<pid>/cgroup` text -> unit, container id, runtime, pod UID.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_user::enrich::cgroup::parse_proc_cgroup;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let info = parse_proc_cgroup(text);
    // Invariants: whatever is found comes from the chosen path.
    if let Some(unit) = &info.unit {
        assert!(info.path.contains(unit.as_str()) || unit.contains('\\'));
    }
    if let Some(id) = &info.container_id {
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if !info.path.is_empty() {
        assert!(info.path.starts_with('/'));
    }
});
