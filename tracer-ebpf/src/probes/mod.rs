//! One module per kernel hook.
//!
//! Default ("socket") mode attaches only hooks that fire on socket events,
//! so unrelated syscalls of other processes pay nothing:
//! - `connect_hook`: cgroup/connect4 + cgroup/connect6 (start of a TCP attempt)
//! - `sock_state`: raw tracepoint inet_sock_set_state (SYN sent, handshake
//!   done, closed; the process is announced at SYN sent); with the `sks`
//!   experiment, `sock_state_sks` (tp_btf, socket storage) instead
//! - (no hook) an attempt that fails inside connect() before its SYN has no
//!   socket event after connect4; userspace finds it in `CONNS` a second
//!   later (tracer-user probe::Probes::failed_early)
//! - `process_exec`: raw tracepoints sched_process_exec/exit (forget
//!   per-process state)
//!
//! - `proxy_payload`: cgroup_skb egress/ingress (`proxy_egress`,
//!   `proxy_ingress`): the request and status lines of sockets that dialled
//!   a proxy; attached only to the cgroups of processes with a proxy
//!
//! `--dns` adds `dns` (cgroup connect/sendmsg hooks that mark sockets
//! talking to port 53, cgroup_skb egress/ingress that copy their messages).
//!
//! None of these needs tracefs. Only syscall mode's classic tracepoints do.
//!
//! Syscall mode adds `sys_connect` (syscalls:sys_enter/exit_connect) for
//! what only the syscall's return value shows: UDP and AF_UNIX results and
//! errors raised before a SYN is sent.

pub mod connect_hook;
pub mod dns;
pub mod process_exec;
pub mod proxy_payload;
pub mod sock_state;
#[cfg(feature = "sks")]
pub mod sock_state_sks;
pub mod sys_connect;
