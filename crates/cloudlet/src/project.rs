//! Project folders: `cloudlet init DIR --template todo` writes one; `cloudlet deploy DIR`
//! compares it with the server, prints the plan and applies it.
//!
//! A project is `cloudlet.toml` (the app, its collections, queues, buckets, functions' settings,
//! schedules and logins), `functions/NAME/` (or `functions/NAME.js`) for each function, and
//! `site/` for the static site served at `/sites/{app}/`. The server decides what would change
//! (`dry_run` requests), so a second deploy of the same folder changes nothing and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::client::{Api, Connection, app_path};

/// The todo template, built into the binary.
const TODO: &[(&str, &str)] = &[
    (
        "cloudlet.toml",
        include_str!("../../../examples/todo/cloudlet.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/todo/.gitignore"),
    ),
    (
        "functions/stats/index.js",
        include_str!("../../../examples/todo/functions/stats/index.js"),
    ),
    (
        "functions/cleanup/index.js",
        include_str!("../../../examples/todo/functions/cleanup/index.js"),
    ),
    (
        "site/index.html",
        include_str!("../../../examples/todo/site/index.html"),
    ),
    (
        "site/app.js",
        include_str!("../../../examples/todo/site/app.js"),
    ),
    (
        "site/style.css",
        include_str!("../../../examples/todo/site/style.css"),
    ),
    (
        "miniprogram/app.js",
        include_str!("../../../examples/todo/miniprogram/app.js"),
    ),
    (
        "miniprogram/app.json",
        include_str!("../../../examples/todo/miniprogram/app.json"),
    ),
    (
        "miniprogram/config.js",
        include_str!("../../../examples/todo/miniprogram/config.js"),
    ),
    (
        "miniprogram/project.config.json",
        include_str!("../../../examples/todo/miniprogram/project.config.json"),
    ),
    (
        "miniprogram/sitemap.json",
        include_str!("../../../examples/todo/miniprogram/sitemap.json"),
    ),
    (
        "miniprogram/pages/index/index.js",
        include_str!("../../../examples/todo/miniprogram/pages/index/index.js"),
    ),
    (
        "miniprogram/pages/index/index.json",
        include_str!("../../../examples/todo/miniprogram/pages/index/index.json"),
    ),
    (
        "miniprogram/pages/index/index.wxml",
        include_str!("../../../examples/todo/miniprogram/pages/index/index.wxml"),
    ),
    (
        "miniprogram/pages/index/index.wxss",
        include_str!("../../../examples/todo/miniprogram/pages/index/index.wxss"),
    ),
];

/// The shop template, built into the binary.
const SHOP: &[(&str, &str)] = &[
    (
        "cloudlet.toml",
        include_str!("../../../examples/shop/cloudlet.toml"),
    ),
    (
        ".gitignore",
        include_str!("../../../examples/shop/.gitignore"),
    ),
    (
        "functions/price/index.js",
        include_str!("../../../examples/shop/functions/price/index.js"),
    ),
    (
        "functions/record/index.js",
        include_str!("../../../examples/shop/functions/record/index.js"),
    ),
    (
        "functions/seed/index.js",
        include_str!("../../../examples/shop/functions/seed/index.js"),
    ),
    (
        "miniprogram/app.js",
        include_str!("../../../examples/shop/miniprogram/app.js"),
    ),
    (
        "miniprogram/app.json",
        include_str!("../../../examples/shop/miniprogram/app.json"),
    ),
    (
        "miniprogram/config.js",
        include_str!("../../../examples/shop/miniprogram/config.js"),
    ),
    (
        "miniprogram/pages/index/index.js",
        include_str!("../../../examples/shop/miniprogram/pages/index/index.js"),
    ),
    (
        "miniprogram/pages/index/index.json",
        include_str!("../../../examples/shop/miniprogram/pages/index/index.json"),
    ),
    (
        "miniprogram/pages/index/index.wxml",
        include_str!("../../../examples/shop/miniprogram/pages/index/index.wxml"),
    ),
    (
        "miniprogram/pages/index/index.wxss",
        include_str!("../../../examples/shop/miniprogram/pages/index/index.wxss"),
    ),
    (
        "miniprogram/project.config.json",
        include_str!("../../../examples/shop/miniprogram/project.config.json"),
    ),
    (
        "miniprogram/sitemap.json",
        include_str!("../../../examples/shop/miniprogram/sitemap.json"),
    ),
];

/// The SDK's source (an ES module), written into a new project's mini program as CommonJS.
const SDK: &str = include_str!("../../../sdk/js/src/index.js");

/// `cloudlet init DIR --template todo|shop [--app NAME]`.
pub fn init(dir: &Path, template: &str, app: Option<&str>) -> Result<(), String> {
    let files = match template {
        "todo" => TODO,
        "shop" => SHOP,
        other => return Err(format!("no template {other:?}; the templates: todo, shop")),
    };
    if dir.join("cloudlet.toml").exists() {
        return Err(format!(
            "{} already holds a project (cloudlet.toml)",
            dir.display()
        ));
    }
    let app = match app {
        Some(app) => app.to_owned(),
        None => dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| app_path(n).is_ok())
            .unwrap_or_else(|| template.to_owned()),
    };
    app_path(&app)?;
    for (path, content) in files {
        let content = match *path {
            "cloudlet.toml" => content.replacen(
                &format!("app = \"{template}\""),
                &format!("app = \"{app}\""),
                1,
            ),
            "miniprogram/config.js" => content.replacen(
                &format!("app: \"{template}\""),
                &format!("app: \"{app}\""),
                1,
            ),
            _ => (*content).to_owned(),
        };
        write(&dir.join(path), &content)?;
    }
    write(
        &dir.join("miniprogram/lib/cloudlet-sdk.js"),
        &commonjs(SDK)?,
    )?;
    println!(
        "Created the {template} project for app {app:?} in {}:",
        dir.display()
    );
    if template == "shop" {
        println!("  cloudlet.toml      products, sales, the pay triggers, logins");
        println!("  functions/         price (prices orders), record (paid sales), seed");
        println!("  miniprogram/       the WeChat mini program (open it in the developer tools)");
        println!("Then set the merchant's keys: docs/payments.md, \"Merchant setup\".");
    } else {
        println!("  cloudlet.toml      collections, functions, schedules, logins");
        println!("  functions/         stats (called by the clients), cleanup (daily)");
        println!("  site/              the web client, served at /sites/{app}/");
        println!("  miniprogram/       the WeChat mini program (open it in the developer tools)");
    }
    println!("Next: cloudlet deploy {}", dir.display());
    Ok(())
}

fn write(path: &Path, content: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, content).map_err(|e| format!("{}: {e}", path.display()))
}

/// The SDK as CommonJS: its one `export { … };` line becomes `exports.x = x;` lines (as
/// `sdk/js/scripts/build.mjs` does).
fn commonjs(source: &str) -> Result<String, String> {
    let line = source
        .lines()
        .rev()
        .find(|l| l.starts_with("export { "))
        .ok_or("the SDK source has no export line")?;
    let names = line
        .trim_start_matches("export { ")
        .trim_end_matches(" };")
        .split(',')
        .map(str::trim);
    let exports: String = names.map(|n| format!("exports.{n} = {n};\n")).collect();
    Ok(format!(
        "\"use strict\";\n{}{exports}",
        source.replacen(line, "", 1)
    ))
}

/// A project folder, read.
struct Project {
    app: String,
    collections: BTreeMap<String, Value>,
    queues: BTreeMap<String, Value>,
    buckets: BTreeMap<String, Value>,
    /// The app's realtime settings (channels and their rules), if the project declares them.
    realtime: Option<Value>,
    functions: BTreeMap<String, Value>,
    providers: BTreeMap<String, Value>,
    site: BTreeMap<String, Vec<u8>>,
}

fn load(dir: &Path) -> Result<Project, String> {
    let file = dir.join("cloudlet.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let config: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let config = serde_json::to_value(config).map_err(|e| e.to_string())?;
    let known = [
        "app",
        "collections",
        "queues",
        "buckets",
        "realtime",
        "functions",
        "providers",
    ];
    if let Some(unknown) = config
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| !known.contains(&k.as_str()))
    {
        return Err(format!("{}: unknown key {unknown:?}", file.display()));
    }
    let app = config["app"]
        .as_str()
        .ok_or_else(|| format!("{}: `app = \"name\"` is missing", file.display()))?
        .to_owned();
    app_path(&app)?;
    let table = |key: &str| -> BTreeMap<String, Value> {
        config[key]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    // Every name goes into a URL path: one that could change the path (`..`, `/`, `%2e`) is
    // refused before anything is sent. The server checks the rest of its rules.
    for key in ["collections", "queues", "buckets", "functions", "providers"] {
        for name in table(key).keys() {
            url_segment(key, name)?;
        }
    }
    let mut functions = BTreeMap::new();
    let folder = dir.join("functions");
    not_a_link(&folder)?;
    for (name, settings) in table("functions") {
        let mut body: Map<String, Value> = settings.as_object().cloned().unwrap_or_default();
        let single = folder.join(format!("{name}.js"));
        not_a_link(&folder.join(&name))?;
        not_a_link(&single)?;
        if folder.join(&name).is_dir() {
            body.insert("files".into(), json!(read_sources(&folder.join(&name))?));
            body.entry("entry").or_insert(json!("index.js"));
        } else if single.is_file() {
            let source = std::fs::read_to_string(&single)
                .map_err(|e| format!("{}: {e}", single.display()))?;
            body.insert("source".into(), json!(source));
        } else {
            return Err(format!(
                "function {name}: neither functions/{name}/ nor functions/{name}.js"
            ));
        }
        functions.insert(name, Value::Object(body));
    }
    let mut providers = BTreeMap::new();
    for (name, settings) in table("providers") {
        providers.insert(name.clone(), with_env_secrets(&name, settings)?);
    }
    let site_dir = dir.join("site");
    not_a_link(&site_dir)?;
    let site = if site_dir.is_dir() {
        read_tree(&site_dir, &|_| true)?
    } else {
        BTreeMap::new()
    };
    for path in site.keys() {
        for segment in path.split('/') {
            url_segment("site", segment)?;
        }
    }
    Ok(Project {
        app,
        collections: table("collections"),
        queues: table("queues"),
        buckets: table("buckets"),
        realtime: config.get("realtime").cloned(),
        functions,
        providers,
        site,
    })
}

/// Whether a bucket as the server shows it is what `written` declares, with what it leaves out
/// at its default (as a PUT of `written` would make it): a setting or rule taken out of the
/// project goes back to its default, it is not left as it was.
fn same_bucket(written: &Value, current: &Value) -> bool {
    let mut expected = json!({
        "types": ["*/*"],
        "max_bytes": 10 * 1024 * 1024,
        "thumbs": [],
        "rules": {
            "list": "owner = @auth.id",
            "view": "owner = @auth.id",
            "create": "@auth.id != null",
            "delete": "owner = @auth.id",
        },
    });
    for (key, value) in written.as_object().into_iter().flatten() {
        if key == "rules" {
            for (action, rule) in value.as_object().into_iter().flatten() {
                expected["rules"][action] = rule.clone();
            }
        } else {
            expected[key] = value.clone();
        }
    }
    ["types", "max_bytes", "thumbs", "rules"]
        .iter()
        .all(|key| current[*key] == expected[*key])
}

/// Whether the realtime settings as the server shows them are what `written` declares, with
/// what it leaves out at its default (as a PUT of `written` would make them).
fn same_realtime(written: &Value, current: &Value) -> bool {
    let history = json!({ "count": 100, "age_secs": 120 });
    let mut expected = json!({
        "anonymous": false,
        "direct": null,
        "direct_history": history,
        "channels": {},
    });
    for (key, value) in written.as_object().into_iter().flatten() {
        if key == "channels" {
            for (kind, declared) in value.as_object().into_iter().flatten() {
                let mut channel = json!({
                    "rules": { "join": null, "publish": null, "presence": null },
                    "history": history,
                });
                for (part, settings) in declared.as_object().into_iter().flatten() {
                    for (name, setting) in settings.as_object().into_iter().flatten() {
                        channel[part][name] = setting.clone();
                    }
                }
                expected["channels"][kind] = channel;
            }
        } else if key == "direct_history" {
            for (name, setting) in value.as_object().into_iter().flatten() {
                expected[key][name] = setting.clone();
            }
        } else {
            expected[key] = value.clone();
        }
    }
    &expected == current
}

/// Refuses a name or a path segment that could change the URL it goes into: only ASCII
/// letters, digits, `_`, `-` and (not alone, not `..`) `.`.
fn url_segment(kind: &str, name: &str) -> Result<(), String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"_-.".contains(&b);
    if name.is_empty()
        || name.len() > 200
        || name == "."
        || name == ".."
        || !name.bytes().all(allowed)
    {
        return Err(format!(
            "{kind}: {name:?} is not a name Cloudlet takes (letters, digits, _, - and .)"
        ));
    }
    Ok(())
}

/// The own address of the platform of login `provider` (`wechat`, `wechat-shop`, …).
fn platform_of(provider: &str) -> Option<&'static str> {
    match provider.split('-').next() {
        Some("wechat") => Some(cloudlet_platforms::wechat::API_BASE),
        Some("qq") => Some(cloudlet_platforms::qq::API_BASE),
        Some("douyin") => Some(cloudlet_platforms::douyin::API_BASE),
        Some("alipay") => Some(cloudlet_platforms::alipay::GATEWAY),
        _ => None,
    }
}

/// Whether an address is on this machine (the emulator, a server run here).
fn on_this_machine(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// Refuses a symbolic link: followed, it could publish any file of this machine (a link to
/// `~/.ssh` as `site`, to `/proc/self/environ` with the deployer's token) as a site file. A
/// path that does not exist is not one.
fn not_a_link(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(format!(
            "{}: a symbolic link; copy what it points to into the project instead",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// `secret = { env = "WECHAT_SECRET" }` → the variable's value, so that secrets stay out of
/// the project folder; never one of Cloudlet's own variables: a project folder from elsewhere
/// must not send `CLOUDLET_TOKEN` to a platform.
fn with_env_secrets(provider: &str, settings: Value) -> Result<Value, String> {
    let mut settings = settings.as_object().cloned().unwrap_or_default();
    for (key, value) in settings.iter_mut() {
        if let Some(var) = value.get("env").and_then(Value::as_str) {
            if var.to_ascii_uppercase().starts_with("CLOUDLET_") {
                return Err(format!(
                    "providers.{provider}.{key}: {var} is Cloudlet's own variable, not a provider's secret"
                ));
            }
            let secret = std::env::var(var).map_err(|_| {
                format!("providers.{provider}.{key}: set the environment variable {var}")
            })?;
            *value = json!(secret);
        }
    }
    Ok(Value::Object(settings))
}

/// The .js and .mjs files under `dir` (a function's folder), by relative path.
pub(crate) fn read_sources(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    read_tree(dir, &|name| name.ends_with(".js") || name.ends_with(".mjs"))?
        .into_iter()
        .map(|(path, bytes)| {
            String::from_utf8(bytes)
                .map(|text| (path.clone(), text))
                .map_err(|_| format!("{path}: not UTF-8"))
        })
        .collect()
}

/// The files under `root` that `keep` accepts, by `/`-separated relative path (hidden files and
/// `node_modules` left out).
fn read_tree(
    root: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    let mut folders: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries =
            std::fs::read_dir(&folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_owned();
            if name.starts_with('.') || name == "node_modules" {
                continue;
            }
            not_a_link(&path)?;
            if path.is_dir() {
                folders.push(path);
            } else if keep(&name) {
                let relative: Vec<String> = path
                    .strip_prefix(root)
                    .map_err(|e| e.to_string())?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                files.insert(relative.join("/"), bytes);
            }
        }
    }
    Ok(files)
}

/// One step of a deploy.
struct Step {
    what: String,
    method: Method,
    path: String,
    body: Body,
    destructive: bool,
}

enum Body {
    Json(Value),
    Bytes(Vec<u8>),
    None,
}

/// `cloudlet deploy DIR`.
pub async fn deploy(
    connection: Connection,
    dir: &Path,
    force: bool,
    dry_run: bool,
) -> Result<(), String> {
    let api = Api::new(&connection)?;
    deploy_to(&api, dir, force, dry_run, false).await
}

/// Deploys the project in `dir` with `api`; `development` also turns the `dev` login on.
pub async fn deploy_to(
    api: &Api,
    dir: &Path,
    force: bool,
    dry_run: bool,
    development: bool,
) -> Result<(), String> {
    let mut project = load(dir)?;
    if development {
        project
            .providers
            .insert("dev".into(), json!({ "enabled": true }));
    }
    let app = &project.app;
    let base = app_path(app)?;
    let exists = match api.call(Method::GET, &base, None).await {
        Ok(_) => true,
        Err(e) if e.contains("(app_not_found)") => false,
        Err(e) => return Err(e),
    };
    let mut steps = Vec::new();
    if !exists {
        steps.push(Step {
            what: format!("create app {app}"),
            method: Method::POST,
            path: "/v1/admin/apps".into(),
            body: Body::Json(json!({ "name": app })),
            destructive: false,
        });
    }
    for (name, settings) in &project.providers {
        let path = format!("{base}/auth/providers/{name}");
        let current = if exists {
            api.call(Method::GET, &path, None).await?
        } else {
            Value::Null
        };
        // Secrets are never shown back: compare the rest, and send secrets only with a change.
        let differs = settings.as_object().into_iter().flatten().any(|(k, v)| {
            let secret = current.get(k).and_then(Value::as_str) == Some("********");
            !secret && current.get(k) != Some(v)
        });
        if differs {
            // A login's calls sent to a new address off this machine carry the app's secret
            // there: said in the plan, and applied only with --force.
            let trimmed = |url: &str| url.trim_end_matches('/').to_owned();
            let elsewhere = settings["base_url"].as_str().filter(|url| {
                current["base_url"].as_str().map(trimmed) != Some(trimmed(url))
                    && platform_of(name) != Some(trimmed(url).as_str())
                    // The emulator beside a server on this machine; a server elsewhere would
                    // call its own machine's services.
                    && !(on_this_machine(api.base()) && on_this_machine(url))
            });
            steps.push(Step {
                what: match elsewhere {
                    Some(url) => {
                        format!("configure login {name}, its calls (and secret) going to {url}")
                    }
                    None => format!("configure login {name}"),
                },
                method: Method::PUT,
                path,
                body: Body::Json(settings.clone()),
                destructive: elsewhere.is_some(),
            });
        }
    }
    // Queues before functions, so that a consumer finds its queue.
    let declared: BTreeMap<String, Value> = if exists && !project.queues.is_empty() {
        let listed = api
            .call(Method::GET, &format!("{base}/queues"), None)
            .await?;
        listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| Some((q["name"].as_str()?.to_owned(), q["settings"].clone())))
            .collect()
    } else {
        BTreeMap::new()
    };
    for (name, settings) in &project.queues {
        let path = format!("{base}/queues/{name}");
        let what = match declared.get(name) {
            None => format!("declare queue {name}"),
            // Settings left out keep their defaults: only those written down must match.
            Some(current)
                if settings
                    .as_object()
                    .into_iter()
                    .flatten()
                    .all(|(key, value)| &current[key] == value) =>
            {
                continue;
            }
            Some(_) => format!("change queue {name}"),
        };
        steps.push(Step {
            what,
            method: Method::PUT,
            path,
            body: Body::Json(settings.clone()),
            destructive: false,
        });
    }
    // Buckets: settings written down must match; rules one by one.
    let declared: BTreeMap<String, Value> = if exists && !project.buckets.is_empty() {
        let listed = api
            .call(Method::GET, &format!("{base}/buckets"), None)
            .await?;
        listed["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| Some((b["name"].as_str()?.to_owned(), b.clone())))
            .collect()
    } else {
        BTreeMap::new()
    };
    for (name, settings) in &project.buckets {
        let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !plain {
            return Err(format!(
                "bucket {name:?}: a name is a-z, 0-9 and _, starting with a letter"
            ));
        }
        let what = match declared.get(name) {
            None => format!("declare bucket {name}"),
            Some(current) if same_bucket(settings, current) => continue,
            Some(_) => format!("change bucket {name}"),
        };
        steps.push(Step {
            what,
            method: Method::PUT,
            path: format!("{base}/buckets/{name}"),
            body: Body::Json(settings.clone()),
            destructive: false,
        });
    }
    if let Some(written) = &project.realtime {
        let current = if exists {
            Some(
                api.call(Method::GET, &format!("{base}/realtime"), None)
                    .await?,
            )
        } else {
            None
        };
        if !current.is_some_and(|current| same_realtime(written, &current)) {
            steps.push(Step {
                what: "set the realtime settings".into(),
                method: Method::PUT,
                path: format!("{base}/realtime"),
                body: Body::Json(written.clone()),
                destructive: false,
            });
        }
    }
    for (name, definition) in &project.collections {
        let path = format!("{base}/collections/{name}");
        let plan = if exists {
            dry_run_plan(api, &path, definition).await?
        } else {
            "create".to_owned()
        };
        let mut body = definition.clone();
        if plan == "destroy" && force {
            body["force"] = json!(true);
        }
        match plan.as_str() {
            "unchanged" => {}
            "create" | "alter" | "destroy" => steps.push(Step {
                what: match plan.as_str() {
                    "create" => format!("create collection {name}"),
                    "alter" => format!("alter collection {name}"),
                    _ => {
                        format!("alter collection {name}, LOSING DATA (a field dropped or retyped)")
                    }
                },
                method: Method::PUT,
                path,
                body: Body::Json(body),
                destructive: plan == "destroy",
            }),
            other => return Err(format!("collection {name}: unexpected plan {other:?}")),
        }
    }
    for (name, body) in &project.functions {
        let path = format!("{base}/functions/{name}");
        let plan = if exists {
            dry_run_plan(api, &path, body).await?
        } else {
            "create".to_owned()
        };
        if plan != "unchanged" {
            let schedules = body["schedules"].as_array().map_or(0, Vec::len);
            let mut what = format!(
                "{} function {name}",
                if plan == "create" { "upload" } else { "update" }
            );
            if schedules > 0 {
                what.push_str(&format!(
                    " (with {schedules} schedule{})",
                    if schedules == 1 { "" } else { "s" }
                ));
            }
            steps.push(Step {
                what,
                method: Method::PUT,
                path,
                body: Body::Json(body.clone()),
                destructive: false,
            });
        }
    }
    let deployed: BTreeMap<String, String> = if exists {
        let listed = api.call(Method::GET, &format!("{base}/site"), None).await?;
        listed["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some((
                    f["path"].as_str()?.to_owned(),
                    f["sha256"].as_str()?.to_owned(),
                ))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    for (path, bytes) in &project.site {
        let hash = hex(&Sha256::digest(bytes));
        if deployed.get(path) != Some(&hash) {
            steps.push(Step {
                what: format!("upload site/{path}"),
                method: Method::PUT,
                path: format!("{base}/site/{path}"),
                body: Body::Bytes(bytes.clone()),
                destructive: false,
            });
        }
    }
    for path in deployed.keys().filter(|p| !project.site.contains_key(*p)) {
        steps.push(Step {
            what: format!("remove site/{path}"),
            method: Method::DELETE,
            path: format!("{base}/site/{path}"),
            body: Body::None,
            destructive: false,
        });
    }

    if steps.is_empty() {
        println!("Nothing to change: app {app} is up to date.");
        return Ok(());
    }
    println!("Plan for app {app}:");
    for step in &steps {
        println!(
            "  {} {}",
            if step.destructive { "!" } else { "+" },
            step.what
        );
    }
    if dry_run {
        return Ok(());
    }
    if steps.iter().any(|s| s.destructive) && !force {
        return Err(
            "the plan loses data or sends a login's secret to a new address (marked !); \
             run again with --force to apply it"
                .into(),
        );
    }
    let total = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        println!("[{}/{total}] {}", i + 1, step.what);
        let answer = match step.body {
            Body::Json(body) => api.call(step.method, &step.path, Some(body)).await,
            Body::Bytes(bytes) => api.send_bytes(step.method, &step.path, bytes).await,
            Body::None => api.call(step.method, &step.path, None).await,
        }
        .map_err(|e| format!("{}: {e}", step.what))?;
        if let (true, Some(key)) = (step.path == "/v1/admin/apps", answer["secret_key"].as_str()) {
            println!("      the app's secret key (shown once, store it now): {key}");
        }
    }
    println!(
        "Deployed app {app}: {total} change{}.",
        if total == 1 { "" } else { "s" }
    );
    println!("Its site: {}/sites/{app}/", api.base());
    Ok(())
}

/// What changes in a project folder: each watched file's path, size and modification time.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut found = Vec::new();
    let mut folders = vec![dir.join("functions"), dir.join("site")];
    if let Ok(meta) = std::fs::metadata(dir.join("cloudlet.toml")) {
        found.push((dir.join("cloudlet.toml"), meta.len(), meta.modified().ok()));
    }
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                folders.push(path);
            } else {
                found.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    found.sort();
    found
}

/// Asks the server what a `PUT` of `body` to `path` would do.
async fn dry_run_plan(api: &Api, path: &str, body: &Value) -> Result<String, String> {
    let mut body = body.clone();
    body["dry_run"] = json!(true);
    let answer = api.call(Method::PUT, path, Some(body)).await?;
    answer["plan"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{path}: the server did not answer a plan"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
