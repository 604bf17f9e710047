//! Validating where a credential's files go: names, modes, and directories that do not collide.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde_yaml_ng::Value;

use super::{
    parse_mode, required_path, Errors, FileSpec, Pkcs12Spec, RawFiles, DEFAULT_CA_FILE,
    DEFAULT_CERTIFICATE_FILE, DEFAULT_KEY_MODE, DEFAULT_MODE, DEFAULT_PRIVATE_KEY_FILE,
};

pub(super) fn validate_files(errs: &mut Errors, path: &str, rf: RawFiles) -> FileSpec {
    let mut file = |field: &str, value: Option<String>, default: &str| {
        let v = value.unwrap_or_else(|| default.to_owned());
        if let Err(e) = crate::output::check_relative_path(&v, false) {
            errs.add(format!("{path}.{field}"), format!("{v:?} {e}"));
        }
        v
    };
    let certificate = file("certificate", rf.certificate, DEFAULT_CERTIFICATE_FILE);
    let private_key = file("privateKey", rf.private_key, DEFAULT_PRIVATE_KEY_FILE);
    let ca = file("ca", rf.ca, DEFAULT_CA_FILE);
    let bundle = rf.bundle.map(|b| file("bundle", Some(b), ""));
    let pkcs12 = rf.pkcs12.map(|p| {
        let keystore = p.keystore.map(|k| file("pkcs12.keystore", Some(k), ""));
        let truststore = p.truststore.map(|t| file("pkcs12.truststore", Some(t), ""));
        (keystore, truststore, p.password_file, p.alias)
    });
    let pkcs12 = pkcs12.map(|(keystore, truststore, password_file, alias)| {
        if keystore.is_none() && truststore.is_none() {
            errs.add(
                format!("{path}.pkcs12"),
                "names no file: set keystore, truststore or both",
            );
        }
        let password_file =
            required_path(errs, &format!("{path}.pkcs12.passwordFile"), password_file);
        Pkcs12Spec {
            keystore,
            truststore,
            password_file,
            alias: alias.unwrap_or_else(|| "tls".to_owned()),
        }
    });
    let mut seen = BTreeSet::new();
    let p12_names = pkcs12
        .as_ref()
        .map(|p| [p.keystore.as_ref(), p.truststore.as_ref()])
        .unwrap_or_default();
    for n in [
        Some(&certificate),
        Some(&private_key),
        Some(&ca),
        bundle.as_ref(),
    ]
    .into_iter()
    .chain(p12_names)
    .flatten()
    {
        if !seen.insert(n) {
            errs.add(
                path,
                format!("names {n:?} twice: every file needs its own name"),
            );
        }
    }
    // `sub` as a file and `sub/tls.key` inside it cannot both exist.
    for a in &seen {
        if let Some(b) = seen.iter().find(|b| b.starts_with(&format!("{a}/"))) {
            errs.add(
                path,
                format!("names {a:?} as a file and {b:?} inside it as a directory: one path cannot be both"),
            );
        }
    }
    let mut mode =
        |field: &str, value: Option<Value>, default: u32| match value.map(|v| parse_mode(&v)) {
            None => default,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                errs.add(format!("{path}.{field}"), e);
                default
            }
        };
    let mode_ = mode("mode", rf.mode, DEFAULT_MODE);
    let key_mode = mode("keyMode", rf.key_mode, DEFAULT_KEY_MODE);
    FileSpec {
        certificate,
        private_key,
        ca,
        bundle,
        mode: mode_,
        key_mode,
        uid: rf.uid,
        gid: rf.gid,
        pkcs12,
    }
}

/// A directory a credential publishes into, and the files it puts there.
pub(super) struct DirUse {
    pub(super) field: String,
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) files: Vec<String>,
}

/// Two credentials must not publish into the same directory, and a credential
/// published inside another one's directory must not collide with its files.
pub(super) fn check_dirs_disjoint(errs: &mut Errors, uses: &[DirUse]) {
    for (k, a) in uses.iter().enumerate() {
        for b in &uses[k + 1..] {
            if a.dir == b.dir {
                errs.add(
                    &b.field,
                    format!(
                        "{:?} is also the directory of {:?}: give each its own dir",
                        b.dir, a.name
                    ),
                );
                continue;
            }
            for (outer, inner) in [(a, b), (b, a)] {
                let Ok(rest) = inner.dir.strip_prefix(&outer.dir) else {
                    continue;
                };
                let Some(first) = rest.components().next() else {
                    continue;
                };
                let first = first.as_os_str().to_string_lossy();
                if outer
                    .files
                    .iter()
                    .any(|n| n.split('/').next() == Some(first.as_ref()))
                {
                    errs.add(
                        &inner.field,
                        format!("{:?} collides with a file of {:?}", inner.dir, outer.name),
                    );
                }
            }
        }
    }
}

pub(super) fn normal(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::testing::paths;

    #[test]
    fn a_file_cannot_also_be_the_directory_of_another() {
        let p = paths("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a]\n  files: {certificate: sub, privateKey: sub/tls.key}\n");
        assert_eq!(p, ["certificates[0].files"]);
    }

    #[test]
    fn payload_paths_must_stay_inside_the_directory() {
        assert!(crate::output::check_relative_path("tls.crt", false).is_ok());
        assert!(crate::output::check_relative_path("sub/tls.crt", false).is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "..data",
            "a//b",
            "./a",
            ".",
        ] {
            assert!(
                crate::output::check_relative_path(bad, false).is_err(),
                "{bad}"
            );
        }
        assert!(crate::output::check_relative_path(".", true).is_ok());
    }

    #[test]
    fn two_certificates_cannot_share_a_directory_or_a_name() {
        let p = paths("outputDir: /o\ncertificates:\n- {name: a, dnsNames: [a], dir: x}\n- {name: a, dnsNames: [b], dir: x}\n");
        assert_eq!(p, ["certificates[1].name", "certificates[1].dir"]);
    }
}
