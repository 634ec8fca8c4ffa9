//! The proxy variables of the current process, read from its environment
//! block by the kernel side, in the process's own context.
//!
//! Why: `curl` through a dead proxy dials, fails and exits within
//! milliseconds, before userspace can read /proc/<pid>/environ (measured:
//! 19 of 20 such events had no proxy environment). The block lives in the
//! process's memory between `mm->env_start` and `mm->env_end`
//! (include/linux/mm_types.h), the same bytes /proc/<pid>/environ returns
//! (fs/proc/base.c, environ_read). It is read once per process per exec,
//! at its first connect, so a connect storm pays nothing.
//!
//! Only entries whose key is a proxy variable (`HTTP_PROXY`, `HTTPS_PROXY`,
//! `NO_PROXY`, `ALL_PROXY`, any case) are copied out; of `REQUEST_METHOD`
//! only two bits leave the kernel. No other variable ever does.
//!
//! A user-memory read from a non-sleepable program fails on a page that is
//! not resident: the walk stops there and says so (`envcap::FAULT`), and
//! userspace falls back to /proc. A freshly exec'd process's block is
//! resident (it was just written by execve).

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_probe_read_user_str},
};
use tracer_common::{envcap, ProcEvent, ENV_CAP, ENV_ENTRY_MAX};

use crate::{config, emit::zero};

/// Bytes of each entry read to look at its key, and the stride used to
/// skip over long entries (LS_COLORS is about 1.5 KB).
pub const HEAD_LEN: usize = 256;
/// Reads per walk at most: 512 entries, or about 128 KB of environment.
/// Bounded so the verifier can prove the loop ends.
const MAX_STEPS: u32 = 512;

/// A key to recognise in the first 16 bytes of an entry, as masks over two
/// little-endian u64 words: `(word | case) & mask == pattern`.
struct Key {
    pattern: [u64; 2],
    case: [u64; 2],
    mask: [u64; 2],
}

/// Builds a `Key` for `name` (including its '='). With `fold`, letters
/// match in either case: OR-ing 0x20 maps 'H' and 'h' (and only those) to
/// 'h'. '_' and '=' are compared exactly.
const fn key(name: &[u8], fold: bool) -> Key {
    let mut k = Key {
        pattern: [0; 2],
        case: [0; 2],
        mask: [0; 2],
    };
    let mut i = 0;
    while i < name.len() && i < 16 {
        let mut b = name[i];
        let letter = b.is_ascii_alphabetic();
        if fold && letter {
            b |= 0x20;
            k.case[i / 8] |= 0x20 << ((i % 8) * 8);
        }
        k.pattern[i / 8] |= (b as u64) << ((i % 8) * 8);
        k.mask[i / 8] |= 0xff << ((i % 8) * 8);
        i += 1;
    }
    k
}

const PROXY_KEYS: [Key; 4] = [
    key(b"http_proxy=", true),
    key(b"https_proxy=", true),
    key(b"no_proxy=", true),
    key(b"all_proxy=", true),
];
/// Go reads exactly `REQUEST_METHOD`.
const REQUEST_METHOD: Key = key(b"REQUEST_METHOD=", false);
/// `REQUEST_METHOD=` plus its NUL: a longer string has a value.
const REQUEST_METHOD_EMPTY_LEN: i64 = 16;

#[inline(always)]
fn matches(w: &[u64; 2], k: &Key) -> bool {
    ((w[0] | k.case[0]) & k.mask[0]) == k.pattern[0]
        && ((w[1] | k.case[1]) & k.mask[1]) == k.pattern[1]
}

#[inline(always)]
fn is_proxy_key(w: &[u64; 2]) -> bool {
    matches(w, &PROXY_KEYS[0])
        || matches(w, &PROXY_KEYS[1])
        || matches(w, &PROXY_KEYS[2])
        || matches(w, &PROXY_KEYS[3])
}

/// Fill `ev.env` with the current task's proxy entries and `ev.env_flags`
/// with how the walk went. `ev.env` must be zeroed already. `head` is
/// scratch space on the caller's stack (it holds the start of every
/// entry, secrets included, so it must be memory no one else sees).
#[inline(always)]
pub fn capture(ev: &mut ProcEvent, head: &mut [u8; HEAD_LEN]) {
    let off = config::offsets();
    if off.task_mm == 0 || off.mm_env_start == 0 || off.mm_env_end == 0 {
        ev.env_flags |= envcap::NO_OFFSETS;
        return;
    }
    // SAFETY (all kernel reads): bpf_probe_read_kernel copes with any
    // address; the offsets come from this kernel's BTF.
    let read = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(0);
    let task = unsafe { bpf_get_current_task() };
    let mm = read(task + u64::from(off.task_mm));
    if mm == 0 {
        ev.env_flags |= envcap::NO_ENV;
        return;
    }
    let start = read(mm + u64::from(off.mm_env_start));
    let end = read(mm + u64::from(off.mm_env_end));
    // An empty environment (start == end) is a complete, empty read.
    if start == 0 || end < start {
        ev.env_flags |= envcap::NO_ENV;
        return;
    }

    let mut pos = start;
    let mut at_entry_start = true;
    let mut used: usize = 0;
    let mut steps: u32 = 0;
    while steps < MAX_STEPS {
        if pos >= end {
            ev.env_flags |= envcap::COMPLETE;
            break;
        }
        steps += 1;
        // SAFETY: user memory of the current task; the helper copes with
        // any address and NUL-terminates within HEAD_LEN.
        let n = unsafe {
            bpf_probe_read_user_str(
                head.as_mut_ptr().cast::<c_void>(),
                HEAD_LEN as u32,
                pos as *const c_void,
            )
        };
        if n <= 0 {
            ev.env_flags |= envcap::FAULT;
            break;
        }
        if at_entry_start {
            // SAFETY: head is HEAD_LEN (>= 16) bytes; unaligned reads.
            let w = unsafe {
                [
                    core::ptr::read_unaligned(head.as_ptr().cast::<u64>()),
                    core::ptr::read_unaligned(head.as_ptr().add(8).cast::<u64>()),
                ]
            };
            if is_proxy_key(&w) {
                if used >= ENV_CAP {
                    ev.env_flags |= envcap::TRUNCATED;
                } else {
                    // The mask is a no-op (used < ENV_CAP) that lets the
                    // verifier see the copy stays inside `env`.
                    let at = used & (ENV_CAP - 1);
                    // SAFETY: at < ENV_CAP and the copy is at most
                    // ENV_ENTRY_MAX bytes of a buffer ENV_CAP +
                    // ENV_ENTRY_MAX long.
                    let m = unsafe {
                        bpf_probe_read_user_str(
                            ev.env.as_mut_ptr().add(at).cast::<c_void>(),
                            ENV_ENTRY_MAX as u32,
                            pos as *const c_void,
                        )
                    };
                    if m <= 0 {
                        ev.env_flags |= envcap::FAULT;
                        break;
                    }
                    let m = m as usize;
                    if m >= ENV_ENTRY_MAX || used + m > ENV_CAP {
                        // Cut short or does not fit: leave it out whole.
                        ev.env_flags |= envcap::TRUNCATED;
                    } else {
                        used += m;
                        // Its full length is known: go straight to the next.
                        pos += m as u64;
                        continue;
                    }
                }
            } else if matches(&w, &REQUEST_METHOD) {
                ev.env_flags |= envcap::REQUEST_METHOD_PRESENT;
                if n > REQUEST_METHOD_EMPTY_LEN {
                    ev.env_flags |= envcap::REQUEST_METHOD_SET;
                }
            }
        }
        if n as usize >= HEAD_LEN {
            // Possibly cut at HEAD_LEN - 1 bytes: go on inside the entry. If
            // it ended exactly there, the next read is an empty string.
            pos += HEAD_LEN as u64 - 1;
            at_entry_start = false;
        } else {
            pos += n as u64;
            at_entry_start = true;
        }
    }
    if steps >= MAX_STEPS && pos < end {
        ev.env_flags |= envcap::TOO_LONG;
    }
    ev.env_len = used as u32;
    ev.env_steps = steps;
    // An entry left out (too long, or cut by a fault) was copied past
    // `used` before its length was known: clear it. Every copy started at
    // an offset <= `used` and wrote at most ENV_ENTRY_MAX bytes, so
    // [used, used + ENV_ENTRY_MAX) holds all that is left of them.
    if used <= ENV_CAP {
        // SAFETY: used <= ENV_CAP, so the range ends within `env`
        // (ENV_CAP + ENV_ENTRY_MAX bytes).
        unsafe { zero(ev.env.as_mut_ptr().add(used), ENV_ENTRY_MAX as u32) };
    }
}
