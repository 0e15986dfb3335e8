//! The `cloudlet worker` process: reads frames on stdin, runs them one at a time, answers on
//! stdout. It opens nothing of its own: the file-descriptor limit is lowered to the ones it
//! holds, so JavaScript (which has no file or socket API here anyway) could not open a file or a
//! socket even through a bug in the engine; every I/O is a host call.
//!
//! One thread does everything: it waits for input with `poll`, so that it can also sweep idle
//! runtimes and stop at an invocation's deadline, with no reader thread to hand frames over.
//!
//! The server may queue an invocation behind the running one, so that the worker goes on to it
//! without a round trip. If the running one waits on a host call for longer than
//! [`GIVE_BACK_AFTER`], the queued ones are given back to run elsewhere.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use crate::engine::{self, Engine, HostIo};
use crate::protocol::{Bundle, FromWorker, HostOutcome, ToWorker, read_frame, write_frame};

/// Warm runtimes kept per worker.
const MAX_WARM: usize = 32;
/// Compiled versions kept per worker (cheap: bytecode).
const MAX_BUNDLES: usize = 256;
/// How long a host call may keep the invocations queued behind it waiting.
pub const GIVE_BACK_AFTER: Duration = Duration::from_millis(1);

/// Runs the worker until its stdin closes. Runtimes and bytecode unused for `idle` are dropped:
/// an idle function costs nothing.
pub fn run(idle: Duration) -> io::Result<()> {
    // Our own buffered reader over stdin (std's has a buffer `poll` cannot see into).
    let mut input = Input(BufReader::new(File::from(
        io::stdin().as_fd().try_clone_to_owned()?,
    )));
    confine();
    // Compiled once per process; done before saying ready so that no invocation waits for it.
    engine::warm_up();
    let mut out = BufWriter::new(io::stdout().lock());
    write_frame(&mut out, &FromWorker::Ready)?;
    let mut engine = Engine::new(MAX_WARM, MAX_BUNDLES);
    let sweep = (idle / 2).max(Duration::from_millis(100));
    // Frames that arrived while an invocation waited on a host call, in order.
    let mut held = VecDeque::new();
    loop {
        let next = match held.pop_front() {
            Some(frame) => Next::Frame(frame),
            None => input.next(Instant::now() + sweep)?,
        };
        match next {
            Next::Frame(ToWorker::Compile { files, entry }) => {
                let outcome = engine::compile(&files, &entry);
                write_frame(&mut out, &FromWorker::Compiled { outcome })?;
            }
            Next::Frame(ToWorker::Invoke(invocation)) => {
                let id = invocation.id;
                let mut io = Pipes {
                    out: &mut out,
                    input: &mut input,
                    held: &mut held,
                    running: id,
                    returned: Vec::new(),
                    failed: None,
                };
                let finished = engine.invoke(*invocation, &mut io);
                // The code of invocations given back is kept all the same: they come again.
                for (key, bundle) in std::mem::take(&mut io.returned) {
                    engine.keep_bundle(&key, bundle);
                }
                if let Some(e) = io.failed {
                    return Err(e);
                }
                match finished {
                    Some(finished) => write_frame(
                        &mut out,
                        &FromWorker::Finished {
                            id,
                            finished: Box::new(finished),
                        },
                    )?,
                    None => write_frame(&mut out, &FromWorker::NeedCode { id })?,
                }
            }
            // The reply to a call of an invocation that has ended already.
            Next::Frame(ToWorker::HostReply { .. }) => {}
            Next::Timeout => engine.drop_idle(idle),
            Next::Closed => return Ok(()),
        }
    }
}

enum Next {
    Frame(ToWorker),
    Timeout,
    Closed,
}

struct Input(BufReader<File>);

impl Input {
    /// The next frame, or `Timeout` if none starts arriving before `until`.
    fn next(&mut self, until: Instant) -> io::Result<Next> {
        if self.0.buffer().is_empty() && !readable(self.0.get_ref(), until)? {
            return Ok(Next::Timeout);
        }
        Ok(match read_frame::<ToWorker>(&mut self.0)? {
            Some(frame) => Next::Frame(frame),
            None => Next::Closed,
        })
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

struct Pipes<'a, W: Write> {
    out: &'a mut W,
    input: &'a mut Input,
    held: &'a mut VecDeque<ToWorker>,
    /// The running invocation.
    running: u64,
    /// The code that came with invocations given back.
    returned: Vec<(String, Bundle)>,
    failed: Option<io::Error>,
}

impl<W: Write> Pipes<'_, W> {
    fn send(&mut self, frame: &FromWorker) {
        if let Err(e) = write_frame(self.out, frame) {
            self.failed.get_or_insert(e);
        }
    }

    /// Gives back the invocations held, for the server to run elsewhere.
    fn give_back(&mut self) {
        let mut kept = VecDeque::new();
        while let Some(frame) = self.held.pop_front() {
            match frame {
                ToWorker::Invoke(invocation) => {
                    let invocation = *invocation;
                    self.send(&FromWorker::Returned { id: invocation.id });
                    if let Some(bundle) = invocation.bundle {
                        self.returned.push((invocation.key, bundle));
                    }
                }
                other => kept.push_back(other),
            }
        }
        *self.held = kept;
    }

    /// Waits for a host reply until `until`, holding the frames that come meanwhile; past
    /// [`GIVE_BACK_AFTER`], the invocations held are given back.
    fn wait(&mut self, until: Instant) -> Option<(u64, HostOutcome)> {
        let give_back_at = Instant::now() + GIVE_BACK_AFTER;
        loop {
            let late = Instant::now() >= give_back_at;
            if late && !self.held.is_empty() {
                self.give_back();
            }
            let wait = if late || self.held.is_empty() {
                until
            } else {
                until.min(give_back_at)
            };
            match self.input.next(wait) {
                Ok(Next::Frame(ToWorker::HostReply { call, outcome })) => {
                    return Some((call, outcome));
                }
                Ok(Next::Frame(frame)) => self.held.push_back(frame),
                Ok(Next::Timeout) if Instant::now() < until => {}
                Ok(Next::Timeout) => return None,
                Ok(Next::Closed) => {
                    self.failed
                        .get_or_insert(io::Error::from(io::ErrorKind::UnexpectedEof));
                    return None;
                }
                Err(e) => {
                    self.failed.get_or_insert(e);
                    return None;
                }
            }
        }
    }
}

impl<W: Write> HostIo for Pipes<'_, W> {
    fn call(&mut self, call: u64, method: &str, args: serde_json::Value) {
        let frame = FromWorker::HostCall {
            id: self.running,
            call,
            method: method.to_owned(),
            args,
        };
        self.send(&frame);
    }

    fn reply(&mut self, until: Instant) -> Option<(u64, HostOutcome)> {
        self.wait(until)
    }

    fn pause(&mut self, until: Instant) {
        // With no host call outstanding, a reply is one an earlier invocation left unawaited.
        while self.wait(until).is_some() {}
    }
}

/// No new files or sockets, no new privileges, no core dumps.
fn confine() {
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
}
