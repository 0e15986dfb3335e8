//! Prepares the console's files for embedding: the script and the stylesheet are named by the
//! hash of their content (so they can be cached forever), `index.html` is pointed at those
//! names, and every file is gzipped once here rather than on each request. Plain Rust: building
//! the console needs no JavaScript toolchain.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// The files of `assets/` that `index.html` loads, with their placeholders there.
const HASHED: &[(&str, &str, &str)] = &[
    (
        "console.js",
        "%CONSOLE_JS%",
        "text/javascript; charset=utf-8",
    ),
    ("console.css", "%CONSOLE_CSS%", "text/css; charset=utf-8"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=assets");
    let out = std::env::var("OUT_DIR")?;
    let out = Path::new(&out);
    let mut index = std::fs::read_to_string("assets/index.html")?;
    let mut table = String::from("&[\n");
    for (file, placeholder, content_type) in HASHED {
        println!("cargo:rerun-if-changed=assets/{file}");
        let bytes = std::fs::read(Path::new("assets").join(file))?;
        let hash = Sha256::digest(&bytes);
        let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        let (stem, ext) = file
            .rsplit_once('.')
            .ok_or("an asset without an extension")?;
        let name = format!("{stem}.{short}.{ext}");
        if !index.contains(placeholder) {
            return Err(format!("assets/index.html does not load {placeholder}").into());
        }
        index = index.replace(placeholder, &format!("/console/assets/{name}"));
        write_pair(out, &name, &bytes)?;
        writeln!(table, "    {},", entry(&name, content_type, &short))?;
    }
    table.push(']');
    write_pair(out, "index.html", index.as_bytes())?;
    let hash = Sha256::digest(index.as_bytes());
    let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    let code = format!(
        "/// The hashed files, by name.\npub static FILES: &[Asset] = {table};\n\
         /// The page that loads them.\npub static INDEX: Asset = {};\n",
        entry("index.html", "text/html; charset=utf-8", &short)
    );
    std::fs::write(out.join("assets.rs"), code)?;
    Ok(())
}

/// Writes `name` and `name.gz` to the build's output directory.
fn write_pair(out: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(out.join(name), bytes)?;
    let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
    gzip.write_all(bytes)?;
    std::fs::write(out.join(format!("{name}.gz")), gzip.finish()?)
}

fn entry(name: &str, content_type: &str, hash: &str) -> String {
    let etag = format!("\"{hash}\"");
    format!(
        "Asset {{ name: {name:?}, content_type: {content_type:?}, etag: {etag:?}, \
         raw: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}\")), \
         gzip: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.gz\")) }}"
    )
}
