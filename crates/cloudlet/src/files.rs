//! `cloudlet files …`: an app's buckets and files through the API, as the admin (the bucket's
//! rules do not apply): list a bucket, upload a file, download one, delete one.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;

use crate::client::{Api, Connection, print_json, text};

#[derive(Subcommand)]
pub enum FilesCommand {
    /// List an app's buckets, or with BUCKET its files, newest first.
    Ls {
        app: String,
        bucket: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Upload a file into a bucket (its type is sniffed from its bytes by the server).
    Put {
        app: String,
        bucket: String,
        path: PathBuf,
        /// The file's name [default: the path's file name]
        #[arg(long)]
        name: Option<String>,
    },
    /// Download a file: to OUT, or to standard output.
    Get {
        app: String,
        bucket: String,
        id: String,
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Delete a file.
    Rm {
        app: String,
        bucket: String,
        id: String,
    },
}

/// A name that is a plain path segment: a bucket's or a file id's (the server refuses the rest
/// anyway; this keeps them from changing the URL).
fn segment<'a>(what: &str, text: &'a str) -> Result<&'a str, String> {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(text)
    } else {
        Err(format!("{text:?} is not a {what} (a-z, 0-9, _ and -)"))
    }
}

fn app_segment(app: &str) -> Result<&str, String> {
    let ok = !app.is_empty() && app.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(app)
    } else {
        Err(format!("{app:?} is not an app name (a-z, 0-9 and -)"))
    }
}

pub async fn run(connection: Connection, command: FilesCommand) -> Result<(), String> {
    let api = Api::new(&connection)?;
    let json = connection.json;
    match command {
        FilesCommand::Ls {
            app, bucket: None, ..
        } => {
            let path = format!("/v1/admin/apps/{}/buckets", app_segment(&app)?);
            let list = api.call(Method::GET, &path, None).await?;
            if json {
                return print_json(&list);
            }
            println!("{:<24} {:>12}  {:<24} VIEW", "BUCKET", "MAX BYTES", "TYPES");
            for b in list["buckets"].as_array().into_iter().flatten() {
                let types: Vec<_> = b["types"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                println!(
                    "{:<24} {:>12}  {:<24} {}",
                    text(&b["name"]),
                    b["max_bytes"],
                    types.join(","),
                    b["rules"]["view"]
                );
            }
        }
        FilesCommand::Ls {
            app,
            bucket: Some(bucket),
            limit,
        } => {
            let path = format!(
                "/v1/apps/{}/buckets/{}/files?limit={limit}",
                app_segment(&app)?,
                segment("bucket name", &bucket)?
            );
            let page = api.call(Method::GET, &path, None).await?;
            if json {
                return print_json(&page);
            }
            for f in page["items"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:>10}  {:<24} {}  {}",
                    text(&f["id"]),
                    f["size"],
                    text(&f["type"]),
                    text(&f["created_at"]),
                    text(&f["name"])
                );
            }
        }
        FilesCommand::Put {
            app,
            bucket,
            path,
            name,
        } => {
            let bytes = std::fs::read(&path)
                .map_err(|e| format!("could not read {}: {e}", path.display()))?;
            let name = name
                .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let query: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("name", &name)
                .finish();
            let url = format!(
                "/v1/apps/{}/files/{}?{query}",
                app_segment(&app)?,
                segment("bucket name", &bucket)?
            );
            let file = api.send_bytes(Method::POST, &url, bytes).await?;
            if json {
                return print_json(&file);
            }
            println!(
                "Stored {} ({}, {} bytes)",
                text(&file["id"]),
                text(&file["type"]),
                file["size"]
            );
        }
        FilesCommand::Get {
            app,
            bucket,
            id,
            out,
        } => {
            let path = format!(
                "/v1/apps/{}/files/{}/{}",
                app_segment(&app)?,
                segment("bucket name", &bucket)?,
                segment("file id", &id)?
            );
            let bytes = api.get_bytes(&path).await?;
            match out {
                Some(out) => std::fs::write(&out, &bytes)
                    .map_err(|e| format!("could not write {}: {e}", out.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&bytes)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        FilesCommand::Rm { app, bucket, id } => {
            let path = format!(
                "/v1/apps/{}/files/{}/{}",
                app_segment(&app)?,
                segment("bucket name", &bucket)?,
                segment("file id", &id)?
            );
            api.call(Method::DELETE, &path, None).await?;
            if !json {
                println!("Deleted {id}");
            }
        }
    }
    Ok(())
}
