//! `cloudlet fn …` and `cloudlet logs …`: deploying and calling functions and reading their
//! log, through the admin API.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Api, Connection, app_path, print_json, text};

#[derive(Subcommand)]
pub enum FnCommand {
    /// Deploy a new version: PATH is one file, or a folder of .js/.mjs files (ES modules).
    Deploy {
        app: String,
        name: String,
        path: PathBuf,
        /// The file whose default export is the function (in a folder).
        #[arg(long, default_value = "index.js")]
        entry: String,
        /// Callable without an access token.
        #[arg(long)]
        public: bool,
        /// Wall time of an invocation, in milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Memory of an invocation, in MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
    },
    /// List an app's functions.
    List { app: String },
    /// Show a function, its versions and its sources.
    Show { app: String, name: String },
    /// Make an earlier version the active one.
    Rollback {
        app: String,
        name: String,
        version: i64,
    },
    /// Call a function (as the admin: `ctx.auth.admin` is true) and print its result.
    Invoke {
        app: String,
        name: String,
        /// The event, as JSON.
        #[arg(long, default_value = "{}")]
        data: String,
    },
    /// Delete a function and all its versions.
    Delete { app: String, name: String },
}

pub async fn run(connection: Connection, command: FnCommand) -> Result<(), String> {
    let api = Api::new(&connection)?;
    let json = connection.json;
    match command {
        FnCommand::Deploy {
            app,
            name,
            path,
            entry,
            public,
            timeout_ms,
            memory_mb,
        } => {
            let mut body = json!({ "public": public });
            if path.is_dir() {
                body["files"] = json!(crate::project::read_sources(&path)?);
                body["entry"] = json!(entry);
            } else {
                let source = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                body["source"] = json!(source);
            }
            if let Some(ms) = timeout_ms {
                body["timeout_ms"] = json!(ms);
            }
            if let Some(mb) = memory_mb {
                body["memory_mb"] = json!(mb);
            }
            let deployed = api
                .call(Method::PUT, &function_path(&app, &name)?, Some(body))
                .await?;
            if json {
                return print_json(&deployed);
            }
            println!("Deployed {name} version {}", deployed["version"]);
        }
        FnCommand::List { app } => {
            let path = format!("{}/functions", app_path(&app)?);
            let listed = api.call(Method::GET, &path, None).await?;
            if json {
                return print_json(&listed);
            }
            let items = listed["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("No functions yet. Deploy one with: cloudlet fn deploy {app} NAME FILE");
                return Ok(());
            }
            println!("{:24}  {:>7}  {:6}  UPDATED", "NAME", "VERSION", "PUBLIC");
            for f in &items {
                println!(
                    "{:24}  {:>7}  {:6}  {}",
                    text(&f["name"]),
                    f["version"],
                    f["public"],
                    text(&f["updated_at"])
                );
            }
        }
        FnCommand::Show { app, name } => {
            let shown = api
                .call(Method::GET, &function_path(&app, &name)?, None)
                .await?;
            if json {
                return print_json(&shown);
            }
            println!("name:     {}", text(&shown["name"]));
            println!("version:  {} (active)", shown["version"]);
            println!("public:   {}", shown["public"]);
            println!(
                "limits:   {} ms, {} MiB",
                shown["timeout_ms"], shown["memory_mb"]
            );
            let versions = shown["versions"].as_array().cloned().unwrap_or_default();
            for v in &versions {
                let active = if v["active"] == true {
                    "  (active)"
                } else {
                    ""
                };
                println!("  v{}  {}{active}", v["version"], text(&v["created_at"]));
            }
        }
        FnCommand::Rollback { app, name, version } => {
            let path = format!("{}/rollback", function_path(&app, &name)?);
            let info = api
                .call(Method::POST, &path, Some(json!({ "version": version })))
                .await?;
            if json {
                return print_json(&info);
            }
            println!("{name} now runs version {}", info["version"]);
        }
        FnCommand::Invoke { app, name, data } => {
            let event: Value =
                serde_json::from_str(&data).map_err(|e| format!("--data is not JSON: {e}"))?;
            app_path(&app)?;
            function_path(&app, &name)?;
            let result = api
                .call(
                    Method::POST,
                    &format!("/v1/apps/{app}/functions/{name}"),
                    Some(event),
                )
                .await?;
            print_json(&result)?;
        }
        FnCommand::Delete { app, name } => {
            api.call(Method::DELETE, &function_path(&app, &name)?, None)
                .await?;
            if json {
                return print_json(&json!({ "name": name, "deleted": true }));
            }
            println!("Deleted function {name}");
        }
    }
    Ok(())
}

/// `cloudlet logs APP`: the newest entries, oldest first; `--follow` keeps printing new ones.
pub async fn logs(
    connection: Connection,
    app: String,
    function: Option<String>,
    outcome: Option<String>,
    limit: usize,
    follow: bool,
) -> Result<(), String> {
    let api = Api::new(&connection)?;
    let mut filter = String::new();
    if let Some(function) = &function {
        filter.push_str(&format!("&function={}", encode(function)));
    }
    if let Some(outcome) = &outcome {
        filter.push_str(&format!("&outcome={}", encode(outcome)));
    }
    let base = format!("{}/logs", app_path(&app)?);
    let page = api
        .call(Method::GET, &format!("{base}?limit={limit}{filter}"), None)
        .await?;
    let mut entries = page["items"].as_array().cloned().unwrap_or_default();
    entries.reverse();
    let mut last = 0;
    for entry in &entries {
        last = last.max(entry["id"].as_i64().unwrap_or(0));
        print_entry(entry, connection.json)?;
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let path = format!("{base}?limit=500&after={last}{filter}");
        let page = api.call(Method::GET, &path, None).await?;
        for entry in page["items"].as_array().into_iter().flatten() {
            last = last.max(entry["id"].as_i64().unwrap_or(0));
            print_entry(entry, connection.json)?;
        }
    }
}

fn print_entry(entry: &Value, json: bool) -> Result<(), String> {
    if json {
        let line = serde_json::to_string(entry).map_err(|e| e.to_string())?;
        println!("{line}");
        return Ok(());
    }
    println!(
        "{} {} v{} {} {} {:.2} ms{} [{}]",
        text(&entry["at"]),
        text(&entry["function"]),
        entry["version"],
        text(&entry["trigger"]),
        text(&entry["outcome"]),
        entry["micros"].as_f64().unwrap_or(0.0) / 1000.0,
        if entry["cold"] == true { " cold" } else { "" },
        text(&entry["request_id"])
    );
    for line in entry["logs"].as_array().into_iter().flatten() {
        println!("    {:5} {}", text(&line["level"]), text(&line["message"]));
    }
    if entry["error"]["message"].is_string() {
        println!("    error {}", text(&entry["error"]["message"]));
        for line in entry["error"]["stack"].as_str().unwrap_or("").lines() {
            println!("          {}", text(&Value::from(line)));
        }
    }
    Ok(())
}

fn function_path(app: &str, name: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(format!(
            "{name:?} is not a function name (a-z, 0-9, _ and -)"
        ));
    }
    Ok(format!("{}/functions/{name}", app_path(app)?))
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
