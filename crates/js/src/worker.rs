//! The `cloudlet worker` process: reads frames on stdin, runs them one at a time, answers on
//! stdout. It opens nothing of its own: the file-descriptor limit is lowered to the ones it
//! holds, and a seccomp filter refuses the system calls that open files or sockets, start
//! programs or reach other processes, so JavaScript (which has no file or socket API here
//! anyway) could not do so even through a bug in the engine; every I/O is a host call.
//!
//! One thread does everything: it waits for input with `poll`, so that it can also sweep idle
//! runtimes and stop at an invocation's deadline, with no reader thread to hand frames over.
//!
//! The server may queue invocations behind the running one, so that the worker goes on to the
//! next without a round trip. None waits long behind another: once the running one has waited
//! on a host call or a timer, or run JavaScript, for [`GIVE_BACK_AFTER`], the worker gives the
//! queued ones back (`Returned`) for the server to run elsewhere.
//!
//! Short calls go first: an invocation that has used [`DEMOTE_AFTER`] of CPU moves its worker to
//! the lowest CPU priority (`SCHED_IDLE`) and off the first processor, so that however many long
//! computations run, the short calls of other workers and the server itself get a processor as
//! soon as they wake. A
//! process may not raise its priority again, so the worker says so when the invocation ends
//! (`retire`) and the server replaces it once it is idle.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::engine::{self, Engine, HostAnswer, HostIo, LONG_RUN};
use crate::protocol::{Bundle, FromWorker, HostOutcome, ToWorker, decode, encode_with};

/// Warm runtimes kept per worker.
const MAX_WARM: usize = 32;
/// Compiled versions kept per worker (cheap: bytecode).
const MAX_BUNDLES: usize = 256;
/// How long the running invocation may keep the ones queued behind it waiting.
pub const GIVE_BACK_AFTER: Duration = LONG_RUN;
/// The CPU time after which an invocation runs at the lowest priority.
pub const DEMOTE_AFTER: Duration = Duration::from_millis(20);

/// Runs the worker until its stdin closes. Runtimes and bytecode unused for `idle` are dropped:
/// an idle function costs nothing.
pub fn run(idle: Duration) -> io::Result<()> {
    let inbox = Rc::new(RefCell::new(Inbox {
        stdin: File::from(io::stdin().as_fd().try_clone_to_owned()?),
        chunk: vec![0; 64 * 1024],
        bytes: Vec::with_capacity(64 * 1024),
        frames: VecDeque::new(),
        replies: VecDeque::new(),
        returned: Vec::new(),
        closed: false,
        cpu_at_start: Duration::ZERO,
        demoted: false,
    }));
    confine()?;
    // The server's first frame names the capabilities' shims.
    let shims = match inbox.borrow_mut().next(Instant::now() + SETUP_TIMEOUT)? {
        Next::Frame(ToWorker::Setup { shims }) => shims,
        _ => return Err(io::Error::other("the first frame was not the setup")),
    };
    // JavaScript that runs long gives back the invocations queued behind it.
    let hook = Rc::clone(&inbox);
    let mut engine = Engine::new(MAX_WARM, MAX_BUNDLES)
        .with_shims(&shims)
        .map_err(io::Error::other)?
        .on_long_run(Rc::new(move || {
            if let Ok(mut inbox) = hook.try_borrow_mut() {
                let _ = inbox.take_in(Instant::now());
                let _ = inbox.give_back();
                inbox.demote_if_long();
            }
        }));
    // Compiled once per process; done before saying ready so that no invocation waits for it.
    engine::warm_up();
    send(&FromWorker::Ready)?;
    let sweep = (idle / 2).max(Duration::from_millis(100));
    loop {
        let next = inbox.borrow_mut().next(Instant::now() + sweep)?;
        match next {
            Next::Frame(ToWorker::Compile { files, entry }) => {
                let outcome = engine::compile(&files, &entry);
                send(&FromWorker::Compiled { outcome })?;
            }
            Next::Frame(ToWorker::Invoke(invocation)) => {
                let id = invocation.id;
                inbox.borrow_mut().cpu_at_start = cpu_time();
                let mut io = Pipes {
                    inbox: &inbox,
                    running: id,
                    give_back_at: Instant::now() + GIVE_BACK_AFTER,
                    failed: None,
                };
                let finished = engine.invoke(*invocation, &mut io);
                if let Some(e) = io.failed {
                    return Err(e);
                }
                // The code of invocations given back is kept all the same: they come again.
                for (key, bundle) in std::mem::take(&mut inbox.borrow_mut().returned) {
                    engine.keep_bundle(&key, bundle);
                }
                match finished {
                    Some(mut finished) => {
                        finished.retire = inbox.borrow().demoted;
                        send(&FromWorker::Finished {
                            id,
                            finished: Box::new(finished),
                        })?
                    }
                    None => send(&FromWorker::NeedCode { id })?,
                }
            }
            // Replies come apart from the frames (see `Inbox::take_in`); a second setup is a
            // mistake of the server's, ignored.
            Next::Frame(ToWorker::HostReply { .. } | ToWorker::Setup { .. }) => {}
            Next::Timeout => engine.drop_idle(idle),
            Next::Closed => return Ok(()),
        }
    }
}

/// How long a new worker waits for the server's setup frame.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes one frame to the server, whole.
fn send(frame: &FromWorker) -> io::Result<()> {
    send_with(frame, &[])
}

/// Writes one frame and its attachment to the server, whole.
fn send_with(frame: &FromWorker, attachment: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(&encode_with(frame, attachment)?)?;
    out.flush()
}

enum Next {
    Frame(ToWorker),
    Timeout,
    Closed,
}

/// What has come in on stdin and is not handled yet; shared by the worker's loop and the
/// engine's long-run hook.
struct Inbox {
    stdin: File,
    /// Where reads land.
    chunk: Vec<u8>,
    /// Bytes of a frame not wholly read yet.
    bytes: Vec<u8>,
    /// Whole frames, in the order they came, but for host replies.
    frames: VecDeque<ToWorker>,
    /// Host replies: invocation, call, outcome, bytes.
    replies: VecDeque<(u64, u64, HostOutcome, Vec<u8>)>,
    /// The code that came with invocations given back.
    returned: Vec<(String, Bundle)>,
    closed: bool,
    /// The process's CPU time when the running invocation started.
    cpu_at_start: Duration,
    /// Whether this process runs at the lowest priority now.
    demoted: bool,
}

impl Inbox {
    /// The next frame, or `Timeout` if none comes before `until`.
    fn next(&mut self, until: Instant) -> io::Result<Next> {
        // No invocation runs here: a reply that came is for one that ended (answered late).
        self.replies.clear();
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Ok(Next::Frame(frame));
            }
            if self.closed {
                return Ok(Next::Closed);
            }
            if !self.take_in(until)? {
                return Ok(Next::Timeout);
            }
        }
    }

    /// The first host reply for invocation `running` that has come; replies for invocations
    /// that have ended (answered late) are dropped.
    fn reply(&mut self, running: u64) -> Option<HostAnswer> {
        while let Some((id, call, outcome, bytes)) = self.replies.pop_front() {
            if id == running {
                return Some((call, outcome, bytes));
            }
        }
        None
    }

    /// Reads what stdin has, once it has something or `until` passes, and takes its whole
    /// frames; `false` if nothing came in time.
    fn take_in(&mut self, until: Instant) -> io::Result<bool> {
        if !readable(&self.stdin, until)? {
            return Ok(false);
        }
        let read = loop {
            match self.stdin.read(&mut self.chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        if read == 0 {
            self.closed = true;
            return Ok(true);
        }
        self.bytes.extend_from_slice(&self.chunk[..read]);
        while let Some(framed) = decode::<ToWorker>(&mut self.bytes)? {
            match framed.message {
                ToWorker::HostReply { id, call, outcome } => {
                    self.replies
                        .push_back((id, call, outcome, framed.attachment));
                }
                other => self.frames.push_back(other),
            }
        }
        Ok(true)
    }

    /// Gives back the invocations waiting, for the server to run elsewhere.
    fn give_back(&mut self) -> io::Result<()> {
        let mut kept = VecDeque::with_capacity(self.frames.len());
        let mut result = Ok(());
        for frame in self.frames.drain(..) {
            match frame {
                ToWorker::Invoke(invocation) => {
                    let invocation = *invocation;
                    if result.is_ok() {
                        result = send(&FromWorker::Returned { id: invocation.id });
                    }
                    if let Some(bundle) = invocation.bundle {
                        self.returned.push((invocation.key, bundle));
                    }
                }
                other => kept.push_back(other),
            }
        }
        self.frames = kept;
        result
    }

    /// Moves the process to the lowest CPU priority once the running invocation has used
    /// [`DEMOTE_AFTER`] of CPU (the process runs nothing else meanwhile): Linux's `SCHED_IDLE`
    /// class, which runs only when nothing else wants the processor (a nice value of 19 still
    /// took time slices from the tasks it competed with: 3 ms at a time under the kernel's EEVDF
    /// scheduler), and off the first processor it may use, which is left to the server, short
    /// calls and everything else. The class alone is not enough: a task woken on a processor
    /// busy with idle-class work still waited there for whole 4 ms ticks now and then (a
    /// neighbour's p99 went from 0.2 ms to 3-8 ms beside five apps computing; with one processor
    /// left to it, 0.45 ms).
    fn demote_if_long(&mut self) {
        if self.demoted || cpu_time().saturating_sub(self.cpu_at_start) < DEMOTE_AFTER {
            return;
        }
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: these calls take plain values or a cpu_set_t this function owns, and change
        // only this process; lowering one's own priority or narrowing one's own processors
        // needs no privilege.
        #[allow(unsafe_code)]
        unsafe {
            if libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) != 0 {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            }
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let mut cpus: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut cpus) == 0 && libc::CPU_COUNT(&cpus) > 1 {
                let all = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
                if let Some(first) = (0..all).find(|&cpu| libc::CPU_ISSET(cpu, &cpus)) {
                    libc::CPU_CLR(first, &mut cpus);
                    libc::sched_setaffinity(0, size, &cpus);
                }
            }
        }
        self.demoted = true;
    }

    fn has_invocations(&self) -> bool {
        self.frames.iter().any(|f| matches!(f, ToWorker::Invoke(_)))
    }
}

/// Waits until `file` has input (or its end) or `until` passes.
fn readable(file: &File, until: Instant) -> io::Result<bool> {
    loop {
        let wait = until.saturating_duration_since(Instant::now());
        let mut fd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis =
            i32::try_from(wait.as_millis().max(u128::from(!wait.is_zero()))).unwrap_or(i32::MAX);
        // SAFETY: `fd` is one valid pollfd for a descriptor this process owns.
        #[allow(unsafe_code)]
        let ready = unsafe { libc::poll(&mut fd, 1, millis) };
        match ready {
            n if n > 0 => return Ok(true),
            0 => return Ok(false),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// The running invocation's side of the pipes.
struct Pipes<'a> {
    inbox: &'a Rc<RefCell<Inbox>>,
    /// The running invocation.
    running: u64,
    /// When the invocations queued behind it are given back if it is still waiting.
    give_back_at: Instant,
    failed: Option<io::Error>,
}

impl Pipes<'_> {
    /// Waits for a host reply until `until`, keeping the frames that come meanwhile; once the
    /// invocation has run for [`GIVE_BACK_AFTER`], the invocations waiting are given back.
    fn wait(&mut self, until: Instant) -> Option<HostAnswer> {
        let give_back_at = self.give_back_at;
        let mut inbox = self.inbox.borrow_mut();
        loop {
            if let Some(reply) = inbox.reply(self.running) {
                return Some(reply);
            }
            let now = Instant::now();
            if now >= give_back_at
                && let Err(e) = inbox.give_back()
            {
                self.failed.get_or_insert(e);
            }
            if inbox.closed {
                self.failed
                    .get_or_insert(io::Error::from(io::ErrorKind::UnexpectedEof));
                return None;
            }
            if now >= until {
                return None;
            }
            let wait = if inbox.has_invocations() {
                until.min(give_back_at)
            } else {
                until
            };
            if let Err(e) = inbox.take_in(wait) {
                self.failed.get_or_insert(e);
                return None;
            }
        }
    }
}

impl HostIo for Pipes<'_> {
    fn call(&mut self, call: u64, capability: &str, args: serde_json::Value, bytes: Vec<u8>) {
        let frame = FromWorker::HostCall {
            id: self.running,
            call,
            capability: capability.to_owned(),
            args,
        };
        if let Err(e) = send_with(&frame, &bytes) {
            self.failed.get_or_insert(e);
        }
    }

    fn reply(&mut self, until: Instant) -> Option<HostAnswer> {
        self.wait(until)
    }

    fn pause(&mut self, until: Instant) {
        // With no host call outstanding, no reply is expected: any that comes is dropped.
        while self.wait(until).is_some() {}
    }
}

/// The CPU time this process has used.
fn cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec owned by this frame.
    #[allow(unsafe_code)]
    let read = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    if read != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// No new files or sockets, no new privileges, no core dumps, and no system call that reaches
/// outside the process.
fn confine() -> io::Result<()> {
    let limit = |value| libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // Descriptors 0 to 3 (stdin, stdout, stderr, and our copy of stdin) stay usable; no
    // other can be opened.
    let _ = io::stdout().flush();
    // SAFETY: setrlimit and prctl take plain values and change only this process.
    #[allow(unsafe_code)]
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &limit(0));
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit(4));
    }
    #[cfg(target_os = "linux")]
    seccomp::install()?;
    Ok(())
}

/// A seccomp filter for the worker: the limit on descriptors alone does not hold against native
/// code run through a bug in the engine (it could close a standard descriptor and open a file or
/// a socket in its place, or signal the server, which runs as the same user). The filter
/// refuses (`EPERM`) every system call that opens a file or a socket, starts a program, signals
/// or inspects another process, changes another process's priority, or reaches a kernel
/// surface the worker has no use for; the worker itself only reads, writes and polls its pipes,
/// allocates memory, reads clocks and lowers its own priority. A list of refusals rather than of
/// allowances: an allocator or the standard library reaching for a call not foreseen here must
/// not kill a worker in production.
#[cfg(target_os = "linux")]
mod seccomp {
    use std::collections::BTreeMap;
    use std::io;

    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };

    /// Refused whatever their arguments.
    const REFUSED: &[libc::c_long] = &[
        // Files: opening, making, naming, mounting.
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_mknodat,
        libc::SYS_linkat,
        libc::SYS_symlinkat,
        libc::SYS_unlinkat,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_mkdirat,
        libc::SYS_fchmodat,
        libc::SYS_fchownat,
        libc::SYS_truncate,
        libc::SYS_chdir,
        libc::SYS_chroot,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_memfd_create,
        // Sockets.
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        // Programs and other processes.
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_kill,
        libc::SYS_tkill,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_rt_tgsigqueueinfo,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_send_signal,
        libc::SYS_pidfd_getfd,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kcmp,
        // Kernel surfaces.
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_personality,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_syslog,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_open,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_creat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mknod,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_link,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_symlink,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_unlink,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rename,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mkdir,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_rmdir,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chmod,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_chown,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_lchown,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_fork,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_vfork,
    ];

    /// Refused unless they name this process: (call, which argument is the process).
    const OWN_ONLY: &[(libc::c_long, u8)] = &[
        (libc::SYS_tgkill, 0),
        (libc::SYS_setpriority, 1),
        (libc::SYS_sched_setscheduler, 0),
        (libc::SYS_sched_setparam, 0),
        (libc::SYS_sched_setattr, 0),
        (libc::SYS_sched_setaffinity, 0),
        (libc::SYS_ioprio_set, 1),
        (libc::SYS_prlimit64, 0),
    ];

    pub fn install() -> io::Result<()> {
        let own = u64::from(std::process::id());
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            REFUSED.iter().map(|call| (*call, Vec::new())).collect();
        for &(call, arg) in OWN_ONLY {
            // Refused when the process named is neither 0 (this one) nor this one's id.
            let other = SeccompRule::new(vec![
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 0)
                    .map_err(failed)?,
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, own)
                    .map_err(failed)?,
            ])
            .map_err(failed)?;
            rules.insert(call, vec![other]);
        }
        // A thread or a process, yes; one in new namespaces (a user namespace's capabilities
        // reach kernel code a worker has no use for), no.
        let namespaces = [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
        ];
        let mut in_namespaces = Vec::new();
        for flag in namespaces {
            let flag = u64::from(flag.unsigned_abs());
            in_namespaces.push(
                SeccompRule::new(vec![
                    SeccompCondition::new(
                        0,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(flag),
                        flag,
                    )
                    .map_err(failed)?,
                ])
                .map_err(failed)?,
            );
        }
        rules.insert(libc::SYS_clone, in_namespaces);
        let arch: seccompiler::TargetArch = std::env::consts::ARCH.try_into().map_err(failed)?;
        let refused = SeccompAction::Errno(u32::try_from(libc::EPERM).map_err(failed)?);
        let filter =
            SeccompFilter::new(rules, SeccompAction::Allow, refused, arch).map_err(failed)?;
        let program: BpfProgram = filter.try_into().map_err(failed)?;
        seccompiler::apply_filter(&program).map_err(failed)?;
        seccompiler::apply_filter(&by_number()).map_err(failed)
    }

    /// A second filter, of what the first can not say: `clone3` answers that it does not
    /// exist (its flags are in memory a filter can not read; the C library then makes threads
    /// with `clone`, whose flags the first filter reads), and on x86_64 every call made through
    /// the x32 ABI is refused (its numbers have bit 30 set, under the same audit architecture,
    /// so the first filter's exact x86_64 numbers let them through on a kernel with x32 on;
    /// calls through the 32-bit ABI are of another architecture, which the first filter kills).
    fn by_number() -> BpfProgram {
        // BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JEQ | BPF_K, BPF_JMP | BPF_JGE | BPF_K and
        // BPF_RET | BPF_K.
        const LOAD_WORD: u16 = 0x20;
        const JUMP_IF_EQUAL: u16 = 0x15;
        const JUMP_IF_AT_LEAST: u16 = 0x35;
        const RETURN: u16 = 0x06;
        let op = |code, k, jt, jf| seccompiler::sock_filter { code, jt, jf, k };
        let errno = |e: libc::c_int| libc::SECCOMP_RET_ERRNO | e.unsigned_abs();
        let clone3 = u32::try_from(libc::SYS_clone3).unwrap_or(u32::MAX);
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut program = vec![
            // The call's number, at the start of `seccomp_data`.
            op(LOAD_WORD, 0, 0, 0),
            op(JUMP_IF_EQUAL, clone3, 0, 1),
            op(RETURN, errno(libc::ENOSYS), 0, 0),
        ];
        #[cfg(target_arch = "x86_64")]
        program.extend([
            op(JUMP_IF_AT_LEAST, 0x4000_0000, 0, 1),
            op(RETURN, errno(libc::EPERM), 0, 0),
        ]);
        program.push(op(RETURN, libc::SECCOMP_RET_ALLOW, 0, 0));
        program
    }

    fn failed(e: impl std::fmt::Display) -> io::Error {
        io::Error::other(format!("seccomp: {e}"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Set in the child process that [`a_confined_worker_opens_nothing_and_signals_no_one`]
    /// starts: the confinement applies to a whole process, not to one test among others.
    const CHILD: &str = "CLOUDLET_TEST_CONFINED_CHILD";

    /// What a system call answered: its result, or the error number.
    fn outcome(result: libc::c_long) -> String {
        if result >= 0 {
            format!("ok:{result}")
        } else {
            format!(
                "errno:{}",
                io::Error::last_os_error().raw_os_error().unwrap_or(0)
            )
        }
    }

    #[test]
    fn confined_child() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let parent = libc::c_long::from(std::os::unix::process::parent_id());
        confine().unwrap();
        // SAFETY: plain system calls with valid arguments; their effects are the test.
        #[allow(unsafe_code)]
        let seen = unsafe {
            let socket = libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
            let socket = outcome(socket);
            // A process in a new user namespace (with CLONE_THREAD, which makes it invalid
            // anyway: unfiltered, the call fails with EINVAL and makes no process), and
            // `clone3`, whose flags no filter can read.
            let namespaced = outcome(libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWUSER | libc::CLONE_THREAD,
                0,
                0,
                0,
                0,
            ));
            let clone3 = outcome(libc::syscall(libc::SYS_clone3, 0, 0));
            // The same call through the x32 ABI (its number with bit 30 set).
            let x32 = outcome(libc::syscall(
                libc::SYS_socket | 0x4000_0000,
                libc::AF_INET,
                libc::SOCK_STREAM,
                0,
            ));
            // A standard descriptor closed frees its number for a file: the filter, not the
            // limit on descriptors, must stop the open.
            libc::close(2);
            let path = c"/etc/hostname";
            let open = outcome(libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_RDONLY,
            ));
            let signal = outcome(libc::syscall(libc::SYS_kill, parent, 0));
            let exec = outcome(libc::syscall(
                libc::SYS_execve,
                c"/bin/true".as_ptr(),
                std::ptr::null::<*const libc::c_char>(),
                std::ptr::null::<*const libc::c_char>(),
            ));
            let renice = outcome(libc::syscall(
                libc::SYS_setpriority,
                libc::PRIO_PROCESS,
                parent,
                19,
            ));
            let own = outcome(libc::syscall(
                libc::SYS_setpriority,
                libc::PRIO_PROCESS,
                0,
                19,
            ));
            let memory = outcome(libc::syscall(
                libc::SYS_mmap,
                0,
                1 << 20,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            ));
            format!(
                "socket={socket} x32={x32} clone={namespaced} clone3={clone3} open={open} kill={signal} execve={exec} renice={renice} own={} mmap={}",
                own.split(':').next().unwrap_or(""),
                memory.split(':').next().unwrap_or("")
            )
        };
        println!("CONFINED {seen}");
    }

    #[test]
    fn a_confined_worker_opens_nothing_and_signals_no_one() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "worker::tests::confined_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let seen = stdout
            .lines()
            .find_map(|line| line.split_once("CONFINED ").map(|(_, seen)| seen))
            .unwrap_or_else(|| panic!("no answer from the child: {stdout}"));
        let eperm = format!("errno:{}", libc::EPERM);
        let enosys = format!("errno:{}", libc::ENOSYS);
        assert_eq!(
            seen,
            format!(
                "socket={eperm} x32={eperm} clone={eperm} clone3={enosys} open={eperm} kill={eperm} execve={eperm} renice={eperm} own=ok mmap=ok"
            ),
            "{stdout}"
        );
    }
}
