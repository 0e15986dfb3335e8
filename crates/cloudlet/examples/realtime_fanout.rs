//! A load client for `bench/realtime.py`: one publish to thousands of WebSocket subscribers,
//! timed from the publish request to the last subscriber's receipt.
//!
//! The Node.js client of the bench (`bench/realtime.mjs`) takes in every frame on one thread of
//! JavaScript, which on a two-processor machine costs about as much as the server's sending: its
//! own time is most of what it measures. This client takes frames in on one thread of Rust, so
//! that what is measured is mostly the server. It speaks the protocol both servers of the bench
//! speak (Cloudlet and `bench/peers/realtime/server.mjs`): a bearer token in the upgrade request,
//! `ready`, `subscribe` and `subscribed`, `message` frames with a channel and a `seq`, and the
//! application-level `ping` it answers.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Failure = Box<dyn std::error::Error>;

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

    let url = format!("ws://127.0.0.1:{port}/v1/apps/{app}/realtime");
    let started = Instant::now();
    let sockets: Vec<Result<Socket, Failure>> = stream::iter(0..big)
        .map(|i| open(&url, &tokens[i % tokens.len()], i < small))
        .buffer_unordered(CONNECT_WIDTH)
        .collect()
        .await;
    let connect_secs = started.elapsed().as_secs_f64();
    let mut open_sockets = 0;
    for socket in sockets {
        tokio::spawn(read(socket?, Arc::clone(&tally)));
        open_sockets += 1;
    }

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

/// Connects with `token`, waits for `ready`, and subscribes to `f:b` (and `f:a`).
async fn open(url: &str, token: &str, small: bool) -> Result<Socket, Failure> {
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    // The default read buffer is 128 KiB, zeroed on every read: most of this client's time.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
    expect(&mut socket, "ready").await?;
    let mut channels = vec![("fb", "f:b")];
    if small {
        channels.push(("fa", "f:a"));
    }
    for (id, channel) in channels {
        let subscribe = json!({ "type": "subscribe", "id": id, "channel": channel });
        socket.send(Message::text(subscribe.to_string())).await?;
        expect(&mut socket, "subscribed").await?;
    }
    Ok(socket)
}

/// Reads until a message of type `kind` (answering pings); an error message fails.
async fn expect(socket: &mut Socket, kind: &str) -> Result<(), Failure> {
    while let Some(frame) = socket.next().await {
        let Message::Text(frame) = frame? else {
            continue;
        };
        let message: Value = serde_json::from_str(frame.as_str())?;
        match message["type"].as_str() {
            Some(t) if t == kind => return Ok(()),
            Some("error") => return Err(format!("refused: {message}").into()),
            Some("ping") => socket.send(Message::text(r#"{"type":"pong"}"#)).await?,
            _ => {}
        }
    }
    Err(format!("closed before {kind}").into())
}

/// Takes in a subscriber's frames until its socket closes.
async fn read(mut socket: Socket, tally: Arc<Tally>) {
    let (mut last_a, mut last_b) = (None, None);
    while let Some(Ok(frame)) = socket.next().await {
        let Message::Text(frame) = frame else {
            continue;
        };
        let frame = frame.as_str();
        if frame.contains(r#""type":"message""#) {
            let (last, receipts) = match field(frame, r#""channel":""#) {
                Some(c) if c.starts_with("f:a") => (&mut last_a, &tally.small),
                Some(c) if c.starts_with("f:b") => (&mut last_b, &tally.big),
                _ => continue,
            };
            let seq = field(frame, r#""seq":"#).and_then(leading_number);
            if let (Some(seq), Some(before)) = (seq, *last) {
                if seq <= before {
                    tally.repeats.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tally.gaps.fetch_add(seq - before - 1, Ordering::Relaxed);
            }
            *last = seq.or(*last);
            receipts.receipt();
        } else if frame.contains(r#""type":"ping""#)
            && socket
                .send(Message::text(r#"{"type":"pong"}"#))
                .await
                .is_err()
        {
            return;
        }
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
