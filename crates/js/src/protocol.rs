//! What the server and a worker process say to each other, and how it is framed on the pipes.
//!
//! Each message is one frame: a little-endian `u32` length of the rest, a `u32` length of the
//! message, the message as JSON, then raw bytes: an attachment, empty for most frames, that
//! carries a host call's or a reply's binary data as it is (an image a function fetched, a file
//! it stores), never squeezed through text. The server writes to the worker's stdin and reads
//! its stdout; nothing else crosses.
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
/// The largest host call or reply, its JSON and its attachment together: well under a frame, so
/// that one call can never make a frame too large for the other side.
pub const MAX_HOST_CALL: usize = 16 * 1024 * 1024;

/// A capability's JavaScript: a module whose default export takes the capability's side of the
/// bridge and returns what it adds to `ctx` and to the globals (see `prelude.js`). The server
/// sends a worker the shims of its capabilities once, before anything else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shim {
    /// The capability's host-call name (`db`, `fetch`, …).
    pub name: String,
    pub source: String,
}

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
    /// The first frame: the shims every runtime installs after the prelude.
    Setup {
        shims: Vec<Shim>,
    },
    Compile {
        files: BTreeMap<String, String>,
        entry: String,
    },
    Invoke(Box<Invocation>),
    /// The answer to a host call of invocation `id`, with the reply's bytes as the attachment;
    /// one that comes after that invocation ended (its caller answered late) is dropped.
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
    /// The running invocation asks a capability for something (`ctx.db`, `fetch`, …), with the
    /// call's bytes as the attachment.
    HostCall {
        id: u64,
        call: u64,
        capability: String,
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
    /// When the line was written, in Unix microseconds: see the engine's `State::log`.
    pub at_us: i64,
}

/// One frame without an attachment, ready to write in one call.
pub fn encode(message: &impl Serialize) -> io::Result<Vec<u8>> {
    encode_with(message, &[])
}

/// One frame: the message and its attachment, lengths first, ready to write in one call.
pub fn encode_with(message: &impl Serialize, attachment: &[u8]) -> io::Result<Vec<u8>> {
    let mut frame = vec![0u8; 8];
    serde_json::to_writer(&mut frame, message).map_err(io::Error::other)?;
    let json = u32::try_from(frame.len() - 8).map_err(io::Error::other)?;
    frame.extend_from_slice(attachment);
    let length = u32::try_from(frame.len() - 4).map_err(io::Error::other)?;
    if frame.len() - 4 > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a frame of {} bytes",
            frame.len() - 4
        )));
    }
    frame[..4].copy_from_slice(&length.to_le_bytes());
    frame[4..8].copy_from_slice(&json.to_le_bytes());
    Ok(frame)
}

/// A message and the bytes attached to it.
#[derive(Debug)]
pub struct Framed<T> {
    pub message: T,
    pub attachment: Vec<u8>,
}

/// Takes the first whole frame off the front of `buffer`, if it holds one.
pub fn decode<T: for<'de> Deserialize<'de>>(buffer: &mut Vec<u8>) -> io::Result<Option<Framed<T>>> {
    let Some(head) = buffer.get(..8) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let json = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if length > MAX_FRAME || json + 4 > length {
        return Err(io::Error::other(format!(
            "a frame of {length} bytes with {json} of JSON"
        )));
    }
    if buffer.len() < 4 + length {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buffer[8..8 + json]).map_err(io::Error::other);
    let attachment = buffer[8 + json..4 + length].to_vec();
    buffer.drain(..4 + length);
    message.map(|message| {
        Some(Framed {
            message,
            attachment,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_attachment_as_it_is_and_come_apart_whole() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        let mut buffer = encode_with(&ToWorker::Setup { shims: Vec::new() }, &bytes).unwrap();
        buffer.extend(encode(&FromWorker::Ready).unwrap());
        let mut partial = buffer[..10].to_vec();
        assert!(decode::<ToWorker>(&mut partial).unwrap().is_none());
        let first = decode::<ToWorker>(&mut buffer).unwrap().unwrap();
        assert!(matches!(first.message, ToWorker::Setup { .. }));
        assert_eq!(first.attachment, bytes);
        let second = decode::<FromWorker>(&mut buffer).unwrap().unwrap();
        assert!(matches!(second.message, FromWorker::Ready));
        assert!(second.attachment.is_empty() && buffer.is_empty());
        let mut lying = vec![8, 0, 0, 0, 200, 0, 0, 0];
        lying.extend([0u8; 8]);
        assert!(decode::<FromWorker>(&mut lying).is_err());
    }
}
