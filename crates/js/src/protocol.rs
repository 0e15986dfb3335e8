//! What the server and a worker process say to each other, and how it is framed on the pipes.
//!
//! Each message is one frame: a little-endian `u32` length, then that many bytes of JSON. The
//! server writes to the worker's stdin and reads its stdout; nothing else crosses.
//!
//! A worker runs its invocations one at a time, in the order they arrive, but the server may send
//! one while another runs (so the worker never waits for it): frames about an invocation carry
//! its `id`. A worker whose running invocation waits on a host call gives back the ones queued
//! behind it (`Returned`), which the server runs elsewhere.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The largest frame either side accepts (a deploy's sources, a function's result).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// A function version compiled to QuickJS bytecode: one entry per module file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bundle {
    /// The QuickJS version that wrote the bytecode; other versions must compile again.
    pub engine: String,
    pub entry: String,
    /// Module name → bytecode, base64.
    pub modules: BTreeMap<String, String>,
}

/// The limits of one invocation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: usize,
    pub stack_bytes: usize,
    /// Wall time, JavaScript and waiting together.
    pub timeout_ms: u64,
    pub max_result_bytes: usize,
    pub max_log_lines: usize,
}

/// Server → worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    Compile {
        files: BTreeMap<String, String>,
        entry: String,
    },
    Invoke(Box<Invocation>),
    /// The answer to a host call of invocation `id`; one that comes after that invocation ended
    /// (its caller answered late) is dropped.
    HostReply {
        id: u64,
        call: u64,
        outcome: HostOutcome,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invocation {
    /// Names this invocation in the frames about it; unique per server.
    pub id: u64,
    /// Names the compiled code: warm runtimes are kept per key (app, function, version).
    pub key: String,
    /// Sent when the worker may not have the code yet.
    pub bundle: Option<Bundle>,
    /// JSON passed through as it came, never taken apart on the way.
    pub event: Box<RawValue>,
    /// What becomes `ctx` (besides its methods): auth, env, request id, …
    pub context: Box<RawValue>,
    pub limits: Limits,
    /// Seeds `crypto.getRandomValues` for this invocation.
    pub seed: [u8; 32],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum HostOutcome {
    Ok { value: serde_json::Value },
    Error { code: String, message: String },
}

/// Worker → server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    Ready,
    Compiled {
        outcome: Result<Bundle, CompileError>,
    },
    /// The running invocation asks the server for something (`ctx.db`, `fetch`, …).
    HostCall {
        id: u64,
        call: u64,
        method: String,
        args: serde_json::Value,
    },
    Finished {
        id: u64,
        finished: Box<Finished>,
    },
    /// The worker does not have the invocation's code: send it again with the bundle.
    NeedCode {
        id: u64,
    },
    /// Not run: it was queued behind an invocation that waits on a host call.
    Returned {
        id: u64,
    },
}

/// Borrows what [`ToWorker::Invoke`] owns, to send an invocation without copying it.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvokeRef<'a> {
    Invoke(&'a Invocation),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct CompileError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finished {
    pub outcome: Outcome,
    pub logs: Vec<LogLine>,
    /// Lines left out over the limit.
    pub logs_dropped: usize,
    /// The runtime's heap in use when the invocation ended.
    pub memory_bytes: usize,
    /// Whether the runtime was created for this invocation.
    pub cold: bool,
    /// Time inside the worker, from receiving the invocation to its end.
    pub micros: u64,
    /// The worker lowered its own CPU priority for this invocation, which computed long (see
    /// `worker::DEMOTE_AFTER`), and can not raise it again: retire it once it is idle.
    #[serde(default)]
    pub retire: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The function's result, as JSON (`undefined` becomes `null`).
    Ok {
        json: Box<RawValue>,
    },
    /// The function threw or rejected: the message goes to the caller, the stack to the log.
    Error {
        message: String,
        stack: String,
    },
    Timeout,
    MemoryLimit,
    ResultTooLarge {
        bytes: usize,
    },
}

impl PartialEq for Outcome {
    fn eq(&self, other: &Self) -> bool {
        use Outcome::*;
        match (self, other) {
            (Ok { json: a }, Ok { json: b }) => a.get() == b.get(),
            (
                Error {
                    message: a,
                    stack: s,
                },
                Error {
                    message: b,
                    stack: t,
                },
            ) => a == b && s == t,
            (Timeout, Timeout) | (MemoryLimit, MemoryLimit) => true,
            (ResultTooLarge { bytes: a }, ResultTooLarge { bytes: b }) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

/// One frame, length first, ready to write in one call.
pub fn encode(message: &impl Serialize) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, message).map_err(io::Error::other)?;
    let length = u32::try_from(frame.len() - 4).map_err(io::Error::other)?;
    frame[..4].copy_from_slice(&length.to_le_bytes());
    Ok(frame)
}

/// Takes the first whole frame off the front of `buffer`, if it holds one.
pub fn decode<T: for<'de> Deserialize<'de>>(buffer: &mut Vec<u8>) -> io::Result<Option<T>> {
    let Some(length) = buffer.get(..4) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if length > MAX_FRAME {
        return Err(io::Error::other(format!("a frame of {length} bytes")));
    }
    if buffer.len() < 4 + length {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buffer[4..4 + length]).map_err(io::Error::other);
    buffer.drain(..4 + length);
    message.map(Some)
}
