//! Alipay RSA2 signatures checked against OpenSSL, the reference implementation: the same key
//! signs the same bytes to the same signature (PKCS#1 v1.5 is deterministic), and each side
//! verifies the other's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use cloudlet_platforms::alipay::{private_key, public_key, sign, signing_string, verify};

fn openssl(args: &[&str], dir: &Path) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn signatures_match_openssl_byte_for_byte_and_verify_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ],
        d,
    );
    openssl(&["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"], d);
    openssl(
        &[
            "rsa",
            "-in",
            "key.pem",
            "-traditional",
            "-out",
            "key-pkcs1.pem",
        ],
        d,
    );

    let content = signing_string([
        ("app_id", "2021000000000000"),
        ("method", "alipay.system.oauth.token"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", "2026-11-21 20:00:00"),
        ("version", "1.0"),
        ("grant_type", "authorization_code"),
        ("code", "授权码-中文也可以"),
    ]);
    std::fs::write(d.join("content.txt"), &content).unwrap();
    let theirs = openssl(&["dgst", "-sha256", "-sign", "key.pem", "content.txt"], d);

    let pem = std::fs::read_to_string(d.join("key.pem")).unwrap();
    let ours = sign(&private_key(&pem).unwrap(), &content);
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&ours)
            .unwrap(),
        theirs
    );

    // PKCS#1 PEM and bare base64 (as Alipay's console gives keys) read as the same key.
    let pkcs1 = std::fs::read_to_string(d.join("key-pkcs1.pem")).unwrap();
    assert_eq!(sign(&private_key(&pkcs1).unwrap(), &content), ours);
    let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert_eq!(sign(&private_key(&bare).unwrap(), &content), ours);

    // OpenSSL accepts ours; we accept OpenSSL's, and refuse anything else.
    std::fs::write(
        d.join("ours.sig"),
        base64::engine::general_purpose::STANDARD
            .decode(&ours)
            .unwrap(),
    )
    .unwrap();
    let verified = openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "ours.sig",
            "content.txt",
        ],
        d,
    );
    assert!(String::from_utf8_lossy(&verified).contains("Verified OK"));
    let public = public_key(&std::fs::read_to_string(d.join("pub.pem")).unwrap()).unwrap();
    let theirs_b64 = base64::engine::general_purpose::STANDARD.encode(&theirs);
    assert!(verify(&public, &content, &theirs_b64));
    assert!(!verify(&public, &format!("{content}&x=1"), &theirs_b64));
    assert!(!verify(&public, &content, "bm90IGEgc2lnbmF0dXJl"));
    assert!(private_key("not a key").is_err());
    assert!(public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
}
