//! The `cloudlet worker` process: reads frames on stdin, runs them one at a time, answers on
//! stdout. It opens nothing of its own: the file-descriptor limit is lowered to the three it
//! was given, so JavaScript (which has no file or socket API here anyway) could not open a
//! file or a socket even through a bug in the engine; every I/O is a host call.

use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::engine::{self, Engine, HostIo};
use crate::protocol::{FromWorker, HostOutcome, ToWorker, read_frame, write_frame};

/// Warm runtimes kept per worker.
const MAX_WARM: usize = 32;
/// Compiled versions kept per worker (cheap: bytecode).
const MAX_BUNDLES: usize = 256;
/// Runtimes and bytecode unused this long are dropped: an idle function costs nothing.
const IDLE: Duration = Duration::from_secs(60);

/// Runs the worker until its stdin closes.
pub fn run() -> io::Result<()> {
    confine();
    let (sender, receiver) = mpsc::channel::<ToWorker>();
    std::thread::Builder::new()
        .name("worker-stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            while let Ok(Some(message)) = read_frame::<ToWorker>(&mut stdin) {
                if sender.send(message).is_err() {
                    break;
                }
            }
        })?;
    let mut out = BufWriter::new(io::stdout().lock());
    write_frame(&mut out, &FromWorker::Ready)?;
    let mut engine = Engine::new(MAX_WARM, MAX_BUNDLES);
    loop {
        match receiver.recv_timeout(IDLE / 2) {
            Ok(ToWorker::Compile { files, entry }) => {
                let outcome = engine::compile(&files, &entry);
                write_frame(&mut out, &FromWorker::Compiled { outcome })?;
            }
            Ok(ToWorker::Invoke(invocation)) => {
                let key = invocation.key.clone();
                let mut io = Pipes {
                    out: &mut out,
                    replies: &receiver,
                    failed: None,
                };
                let finished = engine.invoke(*invocation, &mut io);
                if let Some(e) = io.failed {
                    return Err(e);
                }
                match finished {
                    Some(finished) => {
                        write_frame(&mut out, &FromWorker::Finished(Box::new(finished)))?
                    }
                    None => write_frame(&mut out, &FromWorker::NeedCode { key })?,
                }
            }
            // The reply to a call of an invocation that has ended already.
            Ok(ToWorker::HostReply { .. }) => {}
            Err(RecvTimeoutError::Timeout) => engine.drop_idle(IDLE),
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

struct Pipes<'a, W: Write> {
    out: &'a mut W,
    replies: &'a Receiver<ToWorker>,
    failed: Option<io::Error>,
}

impl<W: Write> HostIo for Pipes<'_, W> {
    fn call(&mut self, call: u64, method: &str, args: serde_json::Value) {
        let frame = FromWorker::HostCall {
            call,
            method: method.to_owned(),
            args,
        };
        if let Err(e) = write_frame(self.out, &frame) {
            self.failed.get_or_insert(e);
        }
    }

    fn reply(&mut self, until: Instant) -> Option<(u64, HostOutcome)> {
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(wait) {
                Ok(ToWorker::HostReply { call, outcome }) => return Some((call, outcome)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
}

/// No new files or sockets, no new privileges, no core dumps.
fn confine() {
    let limit = |value| libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit and prctl take plain values and change only this process.
    #[allow(unsafe_code)]
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &limit(0));
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    // Threads are created after this, and need no descriptors.
    let _ = io::stdout().flush();
    #[allow(unsafe_code)]
    // SAFETY: as above.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit(3));
    }
}
