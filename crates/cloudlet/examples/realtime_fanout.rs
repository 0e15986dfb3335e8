//! A load client for `bench/realtime.py`: one publish to thousands of WebSocket subscribers,
//! timed from the publish request to the last subscriber's receipt.
//!
//! The Node.js client of the bench (`bench/realtime.mjs`) takes in every frame on one thread of
//! JavaScript, which on a two-processor machine costs about as much as the server's sending: its
//! own time is most of what it measures. This client takes frames in on one thread of Rust, with
//! as little work of its own per frame as it can: one `epoll` for every socket, one `read` per
//! frame, and the frame's header and JSON looked at only as far as the checks need (its type,
//! channel and `seq`), so that what is measured is mostly the server. It speaks the protocol
//! both servers of the bench speak (Cloudlet and `bench/peers/realtime/server.mjs`): a bearer
//! token in the upgrade request, `ready`, `subscribe` and `subscribed`, `message` frames with a
//! channel and a `seq`, and the pings it answers (the protocol's and the application's). The
//! upgrade and the subscriptions run on a Tokio thread; the publishes, one at a time, on
//! another, which waits for them.
//!
//! ```text
//! cargo build --release -p cloudlet --example realtime_fanout
//! target/release/examples/realtime_fanout '{"port": 18780, "app": "rt", "admin_token": "…",
//!     "tokens_file": "tokens.txt", "small": 2000, "big": 10000, "publishes": 50,
//!     "big_publishes": 20, "gap_ms": 20}'
//! ```
//!
//! It opens `big` sockets (256 at a time, each with the token of line `i % lines` of
//! `tokens_file`), subscribes all of them to `f:b` and the first `small` also to `f:a`, then
//! publishes to `f:a` `publishes` times and to `f:b` `big_publishes` times, one at a time, each
//! after the last receipt of the one before and a gap of `gap_ms` (and one untimed publish to
//! each first). It prints one line of JSON: the latencies' p50, p99 and max for each channel,
//! and the gaps and repeats seen in the subscribers' `seq`s. A publish that has not reached
//! every subscriber within 10 s fails the run.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// How many sockets connect at once.
const CONNECT_WIDTH: usize = 256;
/// How long one publish may take to reach every subscriber.
const PUBLISH_WITHIN: Duration = Duration::from_secs(10);

/// One channel's receipts of the publish in flight.
struct Receipts {
    expected: AtomicUsize,
    got: AtomicUsize,
    /// When the last expected receipt came, in microseconds since `start`.
    last_us: AtomicU64,
    done: Notify,
    start: Instant,
}

impl Receipts {
    fn new(start: Instant) -> Receipts {
        Receipts {
            expected: AtomicUsize::new(usize::MAX),
            got: AtomicUsize::new(0),
            last_us: AtomicU64::new(0),
            done: Notify::new(),
            start,
        }
    }

    fn arm(&self, expected: usize) {
        self.got.store(0, Ordering::SeqCst);
        self.expected.store(expected, Ordering::SeqCst);
    }

    fn receipt(&self) {
        let got = self.got.fetch_add(1, Ordering::SeqCst) + 1;
        if got == self.expected.load(Ordering::SeqCst) {
            let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.last_us.store(us, Ordering::SeqCst);
            self.done.notify_waiters();
        }
    }
}

/// What every socket reports to.
struct Tally {
    small: Receipts,
    big: Receipts,
    gaps: AtomicU64,
    repeats: AtomicU64,
}

fn main() -> Result<(), Failure> {
    let settings: Value = serde_json::from_str(
        &std::env::args()
            .nth(1)
            .ok_or("usage: realtime_fanout SETTINGS_JSON")?,
    )?;
    // One thread, as the Node.js client has: the other processor stays the server's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&settings))?;
    println!("{result}");
    Ok(())
}

fn number(settings: &Value, key: &str) -> Result<usize, Failure> {
    let n = settings[key]
        .as_u64()
        .ok_or_else(|| format!("settings: {key} is not a number"))?;
    Ok(usize::try_from(n)?)
}

fn text<'a>(settings: &'a Value, key: &str) -> Result<&'a str, Failure> {
    Ok(settings[key]
        .as_str()
        .ok_or_else(|| format!("settings: {key} is not a string"))?)
}

async fn run(settings: &Value) -> Result<Value, Failure> {
    let port = number(settings, "port")?;
    let app = text(settings, "app")?;
    let (small, big) = (number(settings, "small")?, number(settings, "big")?);
    let tokens: Vec<String> = std::fs::read_to_string(text(settings, "tokens_file")?)?
        .lines()
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() || small == 0 || small > big {
        return Err("no tokens, or not 1 ..= big small subscribers".into());
    }
    let tally = Arc::new(Tally {
        small: Receipts::new(Instant::now()),
        big: Receipts::new(Instant::now()),
        gaps: AtomicU64::new(0),
        repeats: AtomicU64::new(0),
    });

    let started = Instant::now();
    let sockets: Vec<Result<Subscriber, Failure>> = stream::iter(0..big)
        .map(|i| open(port, app, &tokens[i % tokens.len()], i < small))
        .buffer_unordered(CONNECT_WIDTH)
        .collect()
        .await;
    let connect_secs = started.elapsed().as_secs_f64();
    let sockets = sockets.into_iter().collect::<Result<Vec<_>, _>>()?;
    let open_sockets = sockets.len();
    let reader = Arc::clone(&tally);
    let reading = std::thread::spawn(move || read_all(sockets, &reader));

    let client = reqwest::Client::new();
    let admin = text(settings, "admin_token")?;
    let gap = Duration::from_millis(u64::try_from(number(settings, "gap_ms")?)?);
    let publish_url = |channel: &str| {
        format!("http://127.0.0.1:{port}/v1/admin/apps/{app}/realtime/channels/{channel}/messages")
    };
    let mut results = Vec::new();
    for (channel, receipts, expected, count) in [
        ("f:a", &tally.small, small, number(settings, "publishes")?),
        ("f:b", &tally.big, big, number(settings, "big_publishes")?),
    ] {
        let url = publish_url(channel);
        let mut latencies = Vec::with_capacity(count);
        // One publish first, untimed: the HTTP connection is made, and every subscriber has
        // taken in a frame of the channel.
        for k in 0..=count {
            receipts.arm(expected);
            let done = receipts.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            let sent = receipts.start.elapsed();
            let answer = client
                .post(&url)
                .bearer_auth(admin)
                .json(&json!({ "data": { "k": k } }))
                .send()
                .await?;
            if !answer.status().is_success() {
                return Err(format!("publish to {channel}: {}", answer.status()).into());
            }
            // A publish that never reached everyone ends the measurement: its late receipts
            // would be counted for the next one.
            if tokio::time::timeout(PUBLISH_WITHIN, done).await.is_err() {
                if reading.is_finished() {
                    return Err(match reading.join() {
                        Ok(Err(e)) => e,
                        _ => "the reading thread ended".into(),
                    });
                }
                let got = receipts.got.load(Ordering::SeqCst);
                return Err(
                    format!("publish {k} to {channel}: {got} of {expected} receipts").into(),
                );
            }
            if k > 0 {
                let last = Duration::from_micros(receipts.last_us.load(Ordering::SeqCst));
                latencies.push(last.saturating_sub(sent).as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(gap).await;
        }
        results.push(summary(expected, count, latencies));
    }
    let [fanout_small, fanout_big] =
        <[Value; 2]>::try_from(results).map_err(|_| "two channels measured, not two results")?;
    Ok(json!({
        "sockets": open_sockets,
        "connect_seconds": (connect_secs * 1000.0).round() / 1000.0,
        "fanout_small": fanout_small,
        "fanout_big": fanout_big,
        "gaps": tally.gaps.load(Ordering::SeqCst),
        "repeats": tally.repeats.load(Ordering::SeqCst),
    }))
}

/// A subscriber's socket, subscribed: what was read of it past its last whole frame, and the
/// last `seq` it saw of each channel.
struct Subscriber {
    stream: std::net::TcpStream,
    pending: Vec<u8>,
    last_a: Option<u64>,
    last_b: Option<u64>,
}

/// Connects with `token` (a WebSocket upgrade), waits for `ready`, and subscribes to `f:b` (and
/// `f:a`).
async fn open(port: usize, app: &str, token: &str, small: bool) -> Result<Subscriber, Failure> {
    let mut stream = TcpStream::connect(format!("127.0.0.1:{port}")).await?;
    stream.set_nodelay(true)?;
    let upgrade = format!(
        "GET /v1/apps/{app}/realtime HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\
         upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nauthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(upgrade.as_bytes()).await?;
    let mut pending = Vec::new();
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if stream.read_buf(&mut pending).await? == 0 {
            return Err("closed during the upgrade".into());
        }
    };
    if !pending.starts_with(b"HTTP/1.1 101") {
        let head = String::from_utf8_lossy(&pending[..head_end]);
        return Err(format!("upgrade refused: {head}").into());
    }
    pending.drain(..head_end);
    expect(&mut stream, &mut pending, "ready").await?;
    let mut channels = vec![("fb", "f:b")];
    if small {
        channels.push(("fa", "f:a"));
    }
    for (id, channel) in channels {
        let subscribe = json!({ "type": "subscribe", "id": id, "channel": channel });
        stream
            .write_all(&client_frame(TEXT, subscribe.to_string().as_bytes()))
            .await?;
        expect(&mut stream, &mut pending, "subscribed").await?;
    }
    Ok(Subscriber {
        stream: stream.into_std()?,
        pending,
        last_a: None,
        last_b: None,
    })
}

/// Reads until a message of type `kind` (answering pings); an error message fails.
async fn expect(stream: &mut TcpStream, pending: &mut Vec<u8>, kind: &str) -> Result<(), Failure> {
    loop {
        while let Some((opcode, payload)) = frame(pending)? {
            let message: Option<Value> = match opcode {
                TEXT => Some(serde_json::from_slice(&pending[payload.clone()])?),
                PING => {
                    let pong = client_frame(PONG, &pending[payload.clone()]);
                    stream.write_all(&pong).await?;
                    None
                }
                CLOSE => return Err(format!("closed before {kind}").into()),
                _ => None,
            };
            pending.drain(..payload.end);
            let Some(message) = message else { continue };
            match message["type"].as_str() {
                Some(t) if t == kind => return Ok(()),
                Some("error") => return Err(format!("refused: {message}").into()),
                Some("ping") => {
                    let pong = client_frame(TEXT, br#"{"type":"pong"}"#);
                    stream.write_all(&pong).await?;
                }
                _ => {}
            }
        }
        if stream.read_buf(pending).await? == 0 {
            return Err(format!("closed before {kind}").into());
        }
    }
}

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The first whole frame of `buf`: its opcode and where its payload is (it ends the frame);
/// `None` until it has all come. A server's frames are never masked, and these servers' never
/// fragmented: either fails the run.
fn frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>)>, Failure> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x80 == 0 || second & 0x80 != 0 {
        return Err("a fragmented or masked frame from the server".into());
    }
    let (length, at) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(n) => (u64::from(u16::from_be_bytes([n[0], n[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|n| <[u8; 8]>::try_from(n).ok()) {
            Some(n) => (u64::from_be_bytes(n), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let end = at + usize::try_from(length)?;
    Ok((buf.len() >= end).then_some((first & 0x0f, at..end)))
}

/// A client's frame (masked, as a client's must be) of `payload`.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Takes in every subscriber's frames, on this thread, until they close: one `epoll` for all,
/// one `read` for what a socket has (a read shorter than the buffer took all there was: the
/// next frame is a new readiness).
fn read_all(subscribers: Vec<Subscriber>, tally: &Tally) -> Result<(), Failure> {
    let mut poll = mio::Poll::new()?;
    let mut sockets = Vec::with_capacity(subscribers.len());
    for (i, subscriber) in subscribers.into_iter().enumerate() {
        let mut stream = mio::net::TcpStream::from_std(subscriber.stream);
        poll.registry()
            .register(&mut stream, mio::Token(i), mio::Interest::READABLE)?;
        let mut socket = Socket {
            stream,
            pending: subscriber.pending,
            last_a: subscriber.last_a,
            last_b: subscriber.last_b,
        };
        socket.take_frames(tally)?;
        sockets.push(socket);
    }
    let mut events = mio::Events::with_capacity(1024);
    let mut buf = vec![0; 64 * 1024];
    let mut open = sockets.len();
    while open > 0 {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            polled => polled?,
        }
        for event in &events {
            let socket = &mut sockets[event.token().0];
            loop {
                match socket.stream.read(&mut buf) {
                    Ok(0) => {
                        poll.registry().deregister(&mut socket.stream)?;
                        open -= 1;
                        break;
                    }
                    Ok(n) => {
                        socket.pending.extend_from_slice(&buf[..n]);
                        socket.take_frames(tally)?;
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// A subscriber's socket as the reading thread has it.
struct Socket {
    stream: mio::net::TcpStream,
    pending: Vec<u8>,
    last_a: Option<u64>,
    last_b: Option<u64>,
}

impl Socket {
    /// Counts the whole frames a socket has read: a channel's message is a receipt (and its `seq`
    /// is checked against the last one's); pings are answered.
    fn take_frames(&mut self, tally: &Tally) -> Result<(), Failure> {
        let Socket {
            stream,
            pending,
            last_a,
            last_b,
        } = self;
        let mut taken = 0;
        while let Some((opcode, payload)) = frame(&pending[taken..])? {
            let payload = taken + payload.start..taken + payload.end;
            taken = payload.end;
            let body = &pending[payload.clone()];
            match opcode {
                TEXT => {
                    let text = std::str::from_utf8(body)?;
                    if text.contains(r#""type":"message""#) {
                        let (last, receipts) = match field(text, r#""channel":""#) {
                            Some(c) if c.starts_with("f:a") => (&mut *last_a, &tally.small),
                            Some(c) if c.starts_with("f:b") => (&mut *last_b, &tally.big),
                            _ => continue,
                        };
                        let seq = field(text, r#""seq":"#).and_then(leading_number);
                        if let (Some(seq), Some(before)) = (seq, *last) {
                            if seq <= before {
                                tally.repeats.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            tally.gaps.fetch_add(seq - before - 1, Ordering::Relaxed);
                        }
                        *last = seq.or(*last);
                        receipts.receipt();
                    } else if text.contains(r#""type":"ping""#) {
                        stream.write_all(&client_frame(TEXT, br#"{"type":"pong"}"#))?;
                    }
                }
                PING => stream.write_all(&client_frame(PONG, body))?,
                _ => {}
            }
        }
        pending.drain(..taken);
        Ok(())
    }
}

/// What follows `key` in `frame`.
fn field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    frame.find(key).map(|at| &frame[at + key.len()..])
}

fn leading_number(text: &str) -> Option<u64> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

fn summary(subscribers: usize, publishes: usize, mut latencies: Vec<f64>) -> Value {
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> Value {
        if latencies.is_empty() {
            return Value::Null;
        }
        // As bench/realtime.mjs takes it: the value at p% of the way from the least to the most.
        let at = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
        let ms = latencies[at.min(latencies.len() - 1)];
        json!((ms * 1000.0).round() / 1000.0)
    };
    json!({
        "subscribers": subscribers, "publishes": publishes,
        "p50_ms": pct(50.0), "p99_ms": pct(99.0), "max_ms": pct(100.0),
    })
}
