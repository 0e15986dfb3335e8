//! `cloudlet dev DIR`: a local server and platform emulator for one project, with the
//! development login on, deploying the folder at start and again on every change.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloudlet_server::config::Config;
use cloudlet_server::{StartOptions, start};

use crate::client::Api;
use crate::project;

/// `cloudlet dev DIR --listen ADDR --emulator ADDR`.
pub async fn run(dir: PathBuf, listen: SocketAddr, emulator: SocketAddr) -> Result<(), String> {
    if !dir.join("cloudlet.toml").is_file() {
        return Err(format!(
            "{} has no cloudlet.toml; create a project with: cloudlet init {} --template todo",
            dir.display(),
            dir.display()
        ));
    }
    let listener = tokio::net::TcpListener::bind(emulator)
        .await
        .map_err(|e| format!("the emulator could not listen on {emulator}: {e}"))?;
    let emulator_addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(cloudlet_emulator::serve(
        listener,
        cloudlet_emulator::EmulatorOptions::default(),
        std::future::pending(),
    ));

    let config = Config {
        listen,
        data_dir: dir.join(".cloudlet/data"),
        ..Config::default()
    };
    let token = dev_token();
    let running = start(
        config,
        StartOptions {
            admin_token: Some(token.clone()),
            ..StartOptions::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let base = format!("http://{}", running.local_addr());
    println!("Cloudlet (development) is listening on {base}");
    if let Some(console) = running.console_addr() {
        println!("The console is at http://{console}/console/");
    }
    println!("  data:      {}", dir.join(".cloudlet/data").display());
    println!("  emulator:  http://{emulator_addr} (WeChat base_url http://{emulator_addr}/wechat)");
    println!("  admin:     export CLOUDLET_SERVER={base} CLOUDLET_TOKEN={token}");
    println!("  dev login: {{\"provider\":\"dev\",\"user\":\"alice\"}}");

    let api = Api::to(&base, Some(token))?;
    let shutdown = running.shutdown_handle();
    let watcher = tokio::spawn(async move { watch(&api, &dir).await });
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("could not wait for Ctrl-C: {e}"))?;
    watcher.abort();
    shutdown.trigger();
    running.wait().await;
    Ok(())
}

/// Deploys now and after every change to the folder (checked twice a second).
async fn watch(api: &Api, dir: &Path) {
    let mut seen = None;
    loop {
        let now = project::fingerprint(dir);
        if seen.as_ref() != Some(&now) {
            seen = Some(now);
            if let Err(e) = project::deploy_to(api, dir, false, false, true).await {
                eprintln!("deploy failed: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A token for this run only: 128 bits from the standard library's randomly keyed hasher.
fn dev_token() -> String {
    let mut parts = String::from("dev-");
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        parts.push_str(&format!("{:016x}", hasher.finish()));
    }
    parts
}
