//! `cloudlet queue …`: an app's queues through the admin API: depths, a look at messages, a
//! send, the dead letters, replaying and purging.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Api, Connection, app_path, print_json, text};

#[derive(Subcommand)]
pub enum QueueCommand {
    /// List an app's queues: ready, delayed, in flight and dead messages.
    Ls { app: String },
    /// Show the waiting messages of a queue (or those in flight, with --in-flight).
    Peek {
        app: String,
        queue: String,
        #[arg(long)]
        in_flight: bool,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Send one message: PAYLOAD is JSON.
    Send {
        app: String,
        queue: String,
        payload: String,
        /// Deliver no sooner than this many seconds from now.
        #[arg(long)]
        delay: Option<f64>,
        /// An idempotency key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Show a queue's dead letters with their last errors.
    Dlq {
        app: String,
        queue: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Move dead letters back to the queue (all, or the ids given).
    Replay {
        app: String,
        queue: String,
        ids: Vec<String>,
    },
    /// Delete a queue's messages: the waiting ones, the dead ones, or all.
    Purge {
        app: String,
        queue: String,
        #[arg(long, value_parser = ["waiting", "dead", "all"], default_value = "waiting")]
        only: String,
    },
}

/// `/v1/admin/apps/{app}/queues/{queue}`, refusing names that could change the URL.
fn queue_path(app: &str, queue: &str) -> Result<String, String> {
    let ok = !queue.is_empty()
        && queue
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(format!("{queue:?} is not a queue name (a-z, 0-9, _ and -)"));
    }
    Ok(format!("{}/queues/{queue}", app_path(app)?))
}

pub async fn run(connection: Connection, command: QueueCommand) -> Result<(), String> {
    let api = Api::new(&connection)?;
    let json = connection.json;
    match command {
        QueueCommand::Ls { app } => {
            let list = api
                .call(Method::GET, &format!("{}/queues", app_path(&app)?), None)
                .await?;
            if json {
                return print_json(&list);
            }
            println!(
                "{:<24} {:>8} {:>8} {:>9} {:>6}",
                "QUEUE", "READY", "DELAYED", "IN FLIGHT", "DEAD"
            );
            for q in list["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>8} {:>8} {:>9} {:>6}",
                    text(&q["name"]),
                    q["ready"],
                    q["delayed"],
                    q["in_flight"],
                    q["dead"]
                );
            }
        }
        QueueCommand::Peek {
            app,
            queue,
            in_flight,
            limit,
        } => {
            let state = if in_flight { "in_flight" } else { "waiting" };
            let path = format!(
                "{}/messages?state={state}&limit={limit}",
                queue_path(&app, &queue)?
            );
            print_messages(&api.call(Method::GET, &path, None).await?, json)?;
        }
        QueueCommand::Send {
            app,
            queue,
            payload,
            delay,
            key,
        } => {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| format!("the payload is not JSON: {e}"))?;
            let mut message = json!({ "payload": payload });
            if let Some(delay) = delay {
                message["delay_secs"] = json!(delay);
            }
            if let Some(key) = key {
                message["key"] = json!(key);
            }
            let path = format!("{}/messages", queue_path(&app, &queue)?);
            let sent = api
                .call(Method::POST, &path, Some(json!({ "messages": [message] })))
                .await?;
            if json {
                return print_json(&sent);
            }
            let receipt = &sent["sent"][0];
            if receipt["duplicate"] == true {
                println!("Not sent: the key was used by {}", text(&receipt["id"]));
            } else {
                println!("Sent {}", text(&receipt["id"]));
            }
        }
        QueueCommand::Dlq { app, queue, limit } => {
            let path = format!(
                "{}/messages?state=dead&limit={limit}",
                queue_path(&app, &queue)?
            );
            print_messages(&api.call(Method::GET, &path, None).await?, json)?;
        }
        QueueCommand::Replay { app, queue, ids } => {
            let body = if ids.is_empty() {
                json!({})
            } else {
                json!({ "ids": ids })
            };
            let path = format!("{}/replay", queue_path(&app, &queue)?);
            let answer = api.call(Method::POST, &path, Some(body)).await?;
            if json {
                return print_json(&answer);
            }
            println!("Replayed {} dead letters", answer["replayed"]);
        }
        QueueCommand::Purge { app, queue, only } => {
            let filter = match only.as_str() {
                "all" => String::new(),
                state => format!("?state={state}"),
            };
            let path = format!("{}/messages{filter}", queue_path(&app, &queue)?);
            let answer = api.call(Method::DELETE, &path, None).await?;
            if json {
                return print_json(&answer);
            }
            println!("Purged {} messages", answer["purged"]);
        }
    }
    Ok(())
}

fn print_messages(page: &Value, json: bool) -> Result<(), String> {
    if json {
        return print_json(page);
    }
    for m in page["items"].as_array().into_iter().flatten() {
        let error = match m["last_error"].is_string() {
            true => format!("  error: {}", text(&m["last_error"])),
            false => String::new(),
        };
        println!(
            "{}  attempt {}/{}  {}  {}{error}",
            text(&m["id"]),
            m["attempt"],
            m["max_attempts"],
            text(&m["visible_at"]),
            m["payload"]
        );
    }
    Ok(())
}
