//! The web console's files, embedded in the binary: `index.html`, and a script and a stylesheet
//! named by the hash of their content. Each is kept as it is and gzipped (by `build.rs`), so a
//! server answers with the bytes as they are, compressed or not, and never compresses on a
//! request. Serving them (paths, headers, the console's own address) is `cloudlet-server`'s.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its file name: `console.3f2a91c0b4de.js`, or `index.html`.
    pub name: &'static str,
    pub content_type: &'static str,
    /// A strong entity tag of its content (a quoted hash prefix), for `If-None-Match`.
    pub etag: &'static str,
    pub raw: &'static [u8],
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The hashed file called `name` (what follows `/console/assets/`).
pub fn asset(name: &str) -> Option<&'static Asset> {
    FILES.iter().find(|asset| asset.name == name)
}

/// The console's page.
pub fn index() -> &'static Asset {
    &INDEX
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_page_loads_each_hashed_file_and_every_gzip_holds_its_file() {
        let page = std::str::from_utf8(index().raw).expect("utf-8");
        assert!(!page.contains('%'), "a placeholder was left: {page}");
        assert_eq!(FILES.len(), 2);
        for file in FILES.iter().chain([index()]) {
            let mut unpacked = Vec::new();
            flate2::read::GzDecoder::new(file.gzip)
                .read_to_end(&mut unpacked)
                .expect("gzip");
            assert_eq!(unpacked, file.raw, "{}", file.name);
            assert!(
                file.gzip.len() < file.raw.len(),
                "{} does not shrink",
                file.name
            );
        }
        for file in FILES {
            assert!(page.contains(&format!("/console/assets/{}", file.name)));
            assert_eq!(asset(file.name).map(|a| a.name), Some(file.name));
        }
        assert!(asset("console.js").is_none());
        assert!(asset("../index.html").is_none());
    }
}
