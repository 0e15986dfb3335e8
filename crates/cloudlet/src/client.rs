//! `cloudlet app …`: a client of the admin API. Human-readable output by default, the server's
//! JSON with `--json`. Errors show the server's code and request id.

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Args)]
pub struct Connection {
    /// The server's base URL.
    #[arg(
        long,
        env = "CLOUDLET_SERVER",
        default_value = "http://127.0.0.1:8700",
        global = true
    )]
    server: String,
    /// The admin token, or an app's secret key.
    #[arg(long, env = "CLOUDLET_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create an app and print its secret key (shown once).
    Create { name: String },
    /// List apps.
    List,
    /// Show one app.
    Show { name: String },
    /// Delete an app with all its data.
    Delete {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Replace an app's secret key; the old key stops working at once.
    RotateKey { name: String },
}

pub async fn run(connection: Connection, command: AppCommand) -> Result<(), String> {
    let api = Api::new(&connection)?;
    let json = connection.json;
    match command {
        AppCommand::Create { name } => {
            let app = api
                .call(
                    Method::POST,
                    "/v1/admin/apps",
                    Some(json!({ "name": name })),
                )
                .await?;
            if json {
                return print_json(&app);
            }
            println!("Created app {}", text(&app["name"]));
            println!(
                "Secret key (shown once, store it now):\n\n    {}\n",
                text(&app["secret_key"])
            );
        }
        AppCommand::List => {
            let mut apps = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("/v1/admin/apps?limit=500&cursor={c}"),
                    None => "/v1/admin/apps?limit=500".to_owned(),
                };
                let mut page = api.call(Method::GET, &path, None).await?;
                if let Some(items) = page["items"].as_array_mut() {
                    apps.append(items);
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            if json {
                return print_json(&Value::Array(apps));
            }
            if apps.is_empty() {
                println!("No apps yet. Create one with: cloudlet app create NAME");
                return Ok(());
            }
            let width = apps
                .iter()
                .map(|a| text(&a["name"]).len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!("{:width$}  {:24}  KEY", "NAME", "CREATED");
            for app in &apps {
                println!(
                    "{:width$}  {:24}  {}…",
                    text(&app["name"]),
                    text(&app["created_at"]),
                    text(&app["secret_key_hint"])
                );
            }
        }
        AppCommand::Show { name } => {
            let app = api.call(Method::GET, &app_path(&name)?, None).await?;
            if json {
                return print_json(&app);
            }
            println!("name:        {}", text(&app["name"]));
            println!("created:     {}", text(&app["created_at"]));
            println!(
                "secret key:  {}… (since {})",
                text(&app["secret_key_hint"]),
                text(&app["secret_key_created_at"])
            );
        }
        AppCommand::Delete { name, yes } => {
            let path = app_path(&name)?;
            if !yes {
                confirm_delete(&name)?;
            }
            api.call(Method::DELETE, &path, None).await?;
            if json {
                return print_json(&json!({ "name": name, "deleted": true }));
            }
            println!("Deleted app {name}");
        }
        AppCommand::RotateKey { name } => {
            let path = format!("{}/keys/rotate", app_path(&name)?);
            let key = api.call(Method::POST, &path, None).await?;
            if json {
                return print_json(&key);
            }
            println!(
                "New secret key for {} (shown once; the old key no longer works):\n\n    {}\n",
                text(&key["name"]),
                text(&key["secret_key"])
            );
        }
    }
    Ok(())
}

/// Refuses names that could change the URL; the server checks the rest.
pub(crate) fn app_path(name: &str) -> Result<String, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("{name:?} is not an app name (a-z, 0-9 and -)"));
    }
    Ok(format!("/v1/admin/apps/{name}"))
}

fn confirm_delete(name: &str) -> Result<(), String> {
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "refusing to delete {name} without --yes (stdin is not a terminal)"
        ));
    }
    eprint!("This deletes app {name} and all its data. Type its name to confirm: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    if answer.trim() != name {
        return Err("not confirmed; nothing was deleted".into());
    }
    Ok(())
}

/// A string of an answer as a terminal may show it: control characters (an escape sequence
/// in a function's log line or a dead letter's error, which end users' data can reach) are
/// written as escapes instead of reaching the terminal.
pub(crate) fn text(value: &Value) -> std::borrow::Cow<'_, str> {
    let raw = value.as_str().unwrap_or("-");
    if raw.chars().any(char::is_control) {
        raw.chars()
            .flat_map(|c| {
                let shown: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                shown
            })
            .collect::<String>()
            .into()
    } else {
        raw.into()
    }
}

pub(crate) fn print_json(value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{}", terminal_json(&text));
    Ok(())
}

/// JSON text with the control characters JSON leaves as they are (DEL, and the C1 controls a
/// terminal may take for an escape sequence) escaped: they only occur inside strings, where
/// `\u` escapes mean the same.
fn terminal_json(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() && c != '\n' {
            true => format!("\\u{:04x}", c as u32),
            false => c.to_string(),
        })
        .collect()
}

pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    pub(crate) fn new(connection: &Connection) -> Result<Self, String> {
        Self::to(&connection.server, connection.token.clone())
    }

    /// A client of the server at `base`, with `token`.
    pub(crate) fn to(base: &str, token: Option<String>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cloudlet-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends raw bytes (a site file) and reads the answer as [`Api::call`] does.
    pub(crate) async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(bytes);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        self.answer(request).await
    }

    /// A body as bytes (a file), or the server's error as [`Api::call`] says it.
    pub(crate) async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, String> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("request to {} failed: {e}", self.base))?;
        if response.status().is_success() {
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            return Ok(bytes.to_vec());
        }
        let status = response.status();
        let value: Value = response
            .json()
            .await
            .map_err(|_| format!("the server answered {status}"))?;
        let error = &value["error"];
        Err(format!(
            "{} ({})",
            text(&error["message"]),
            text(&error["code"])
        ))
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                format!(
                    "could not reach the server at {} (is `cloudlet serve` running?)",
                    self.base
                )
            } else {
                format!("request to {} failed: {e}", self.base)
            }
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("the server answered {status} with a body that is not JSON"))?;
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        let mut message = format!("{} ({})", text(&error["message"]), text(&error["code"]));
        if error["code"] == "missing_credentials" {
            message.push_str("; set CLOUDLET_TOKEN or pass --token");
        }
        if let Some(id) = error["request_id"].as_str() {
            message.push_str(&format!(" [request {id}]"));
        }
        Err(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_a_terminal_writes_control_characters_as_escapes() {
        let hostile = Value::from("boom\u{1b}]0;owned\u{7}\r\nnext");
        let shown = text(&hostile);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "boom\\u{1b}]0;owned\\u{7}\\r\\nnext");
        assert_eq!(text(&Value::from("plain, 中文")), "plain, 中文");
        assert_eq!(text(&Value::Null), "-");
    }

    #[test]
    fn json_for_a_terminal_escapes_what_json_leaves_as_is() {
        let value = serde_json::json!({ "error": "csi\u{9b}31m del\u{7f} esc\u{1b}" });
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let shown = terminal_json(&pretty);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), value);
    }
}
