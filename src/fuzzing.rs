//! Entry points for the fuzz targets under `fuzz/` (`cargo +nightly fuzz run
//! <target>`), one per kind of untrusted input pillion parses, and the replay
//! of their committed corpora on the stable toolchain (the test below, part
//! of the normal test run). Each takes raw bytes and must not panic, hang or
//! allocate without bound, whatever they hold; errors are the expected
//! outcome for most inputs.
//!
//! Not an API: hidden from the docs, stable only for the fuzz targets.

use std::time::{Duration, SystemTime};

use crate::config::{CertificateSpec, Config};
use crate::verify::{self, Issued};

/// A fuzz target: raw bytes in, no panic out.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the names of their directories under `fuzz/corpus/`.
pub const TARGETS: [(&str, Target); 5] = [
    ("config", config),
    ("ca_response", ca_response),
    ("vault_response", vault_response),
    ("kube_status", kube_status),
    ("credential_files", credential_files),
];

/// A configuration file: parsing and validation (no files are read).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::from_yaml(text, "fuzz") {
            // The printed plan walks every validated value.
            let _ = config.to_string();
        }
    }
}

/// What a CA returns: PEM certificates (leaf, then intermediates), then
/// after a NUL byte the trust anchors. Parsed, split, checked as CA
/// material, and verified against the leaf's own key and names, so that the
/// chain and anchor checks run.
pub fn ca_response(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let chain = crate::pem::certificates(parts.next().unwrap_or_default()).unwrap_or_default();
    let anchors = crate::pem::certificates(parts.next().unwrap_or_default()).unwrap_or_default();
    let now = SystemTime::now();
    let (_, roots) = verify::split_chain(&chain);
    let _ = verify::check_issuing_path(&chain, now);
    for root in &roots {
        let _ = verify::check_anchor(root, now);
    }
    let Some(leaf) = chain.first() else { return };
    let Ok(info) = verify::inspect(leaf) else {
        return;
    };
    let issued = Issued {
        chain: chain.clone(),
        ca: if anchors.is_empty() { roots } else { anchors },
    };
    let _ = verify::verify(&issued, &info.public_key, &info.names, now);
    let _ = verify::verify(
        &issued,
        &info.public_key,
        &info.names,
        info.not_after + Duration::from_secs(1),
    );
}

/// A Vault answer: its JSON read as a login, a sign/issue answer, a KV
/// read and an error body.
pub fn vault_response(data: &[u8]) {
    let _ = crate::vault::error_text(data);
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = crate::vault::auth_fields(&value, "auth/fuzz/login");
    let _ = crate::issuers::parse_certificates(&value["data"], "pki/sign/fuzz");
    let _ = crate::secrets::kv_data(value.clone(), 1);
    let _ = crate::secrets::kv_data(value, 2);
}

/// A Kubernetes CertificateSigningRequest or a cert-manager
/// CertificateRequest status, as the API server sends them (JSON).
pub fn kube_status(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = crate::issuers::certificate_request_progress(
        &value["status"],
        "CertificateRequest fuzz",
        None,
    );
    if let Ok(csr) = serde_json::from_value::<
        k8s_openapi::api::certificates::v1::CertificateSigningRequest,
    >(value)
    {
        let _ = crate::issuers::csr_progress(
            &csr,
            "fuzz",
            "CertificateSigningRequest fuzz",
            "example.com/fuzz",
            None,
        );
    }
}

/// The files of a credential found on disk at start: certificate, key and
/// CA file, separated by NUL bytes, checked as pillion checks what it may
/// reuse.
pub fn credential_files(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let (cert, key, ca) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let mut spec: CertificateSpec = Config::for_directory(std::path::Path::new("/fuzz"))
        .certificates
        .remove(0);
    if let Some(info) = crate::pem::certificates(cert)
        .ok()
        .and_then(|c| c.first().and_then(|l| verify::inspect(l).ok()))
    {
        spec.names = info.names;
    }
    let _ = crate::sources::on_disk_fits(&spec, false, None, cert, key, ca, SystemTime::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus file, through its target: what a fuzzer once
    /// found stays fixed, in seconds, on the stable toolchain.
    #[test]
    fn every_fuzz_corpus_file_replays_without_a_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("the seed corpus {} is missing: {e}", dir.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "{} holds no seed", dir.display());
            for file in files {
                let data = std::fs::read(&file).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", file.display());
            }
        }
    }
}
