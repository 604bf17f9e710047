//! Validating `sds` (where pillion serves Envoy's Secret Discovery Service)
//! and each certificate's `sds` resource names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{parse_mode, CertificateSpec, Errors, RawCertificateSds, RawSds, SdsNames, SdsSpec};

/// The socket's mode when none is given: only pillion's user may connect,
/// since the socket hands out private keys. Envoy running as another user
/// needs `mode` (and `gid`) set for it.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// The socket's name in outputDir when `sds.socket` is left out.
pub const DEFAULT_SDS_SOCKET: &str = "sds.sock";

/// The longest socket path: a sockaddr_un holds 108 bytes, the last a NUL,
/// and the socket is first bound 10 bytes deeper (`.pXXXXXX/s` beside it).
const MAX_SOCKET_PATH: usize = 96;

/// A socket's path and mode, of the section `section` (`sds`,
/// `workloadApi`): a relative path is resolved against `output_dir`.
pub(super) fn validate_socket(
    errs: &mut Errors,
    section: &str,
    socket: Option<&str>,
    default_name: &str,
    mode: Option<serde_yaml_ng::Value>,
    output_dir: &Path,
) -> (PathBuf, u32) {
    let socket = match socket {
        Some("") => {
            errs.add(
                format!("{section}.socket"),
                "is empty: a path for the Unix socket",
            );
            PathBuf::new()
        }
        Some(p) => output_dir.join(p),
        None => output_dir.join(default_name),
    };
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        errs.add(
            format!("{section}.socket"),
            format!(
                "{} is {} bytes long: a Unix socket path can have at most {MAX_SOCKET_PATH} here",
                socket.display(),
                socket.as_os_str().len()
            ),
        );
    }
    let mode = match mode.map(|m| parse_mode(&m)) {
        None => DEFAULT_SOCKET_MODE,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errs.add(format!("{section}.mode"), e);
            DEFAULT_SOCKET_MODE
        }
    };
    (socket, mode)
}

/// Validates `sds`; `output_dir` resolves a relative socket path.
pub(super) fn validate_sds(errs: &mut Errors, raw: RawSds, output_dir: &Path) -> SdsSpec {
    let (socket, mode) = validate_socket(
        errs,
        "sds",
        raw.socket.as_deref(),
        DEFAULT_SDS_SOCKET,
        raw.mode,
        output_dir,
    );
    let listen = raw.listen.and_then(|l| match l.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => Some(a),
        Ok(_) => {
            errs.add(
                "sds.listen",
                format!("{l:?} is not a loopback address: SDS hands out private keys with no authentication, so only 127.0.0.1 or [::1] are allowed"),
            );
            None
        }
        Err(_) => {
            errs.add(
                "sds.listen",
                format!("{l:?} is not an address and port (e.g. 127.0.0.1:15012)"),
            );
            None
        }
    });
    SdsSpec {
        socket,
        listen,
        mode,
        uid: raw.uid,
        gid: raw.gid,
    }
}

/// The SDS resource names of the certificate `name` at `path`.
pub(super) fn validate_sds_names(
    errs: &mut Errors,
    path: &str,
    name: &str,
    raw: Option<RawCertificateSds>,
) -> SdsNames {
    let mut names = SdsNames::of(name);
    let raw = raw.unwrap_or_default();
    for (field, given, slot) in [
        ("certificate", raw.certificate, &mut names.certificate),
        (
            "validationContext",
            raw.validation_context,
            &mut names.validation_context,
        ),
    ] {
        match given {
            Some(n) if n.is_empty() => errs.add(format!("{path}.sds.{field}"), "is empty"),
            Some(n) => *slot = n,
            None => {}
        }
    }
    if names.certificate == names.validation_context {
        errs.add(
            format!("{path}.sds.validationContext"),
            format!(
                "{:?} is also the certificate's name: the two resources need two names",
                names.validation_context
            ),
        );
    }
    names
}

/// Every SDS resource name is served by one certificate only.
pub(super) fn check_sds_names_unique(errs: &mut Errors, certificates: &[(usize, CertificateSpec)]) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, c) in certificates {
        for (field, n) in [
            ("certificate", &c.sds.certificate),
            ("validationContext", &c.sds.validation_context),
        ] {
            // The same name twice in one certificate was reported already.
            if let Some(other) = seen.insert(n, &c.name).filter(|o| *o != c.name) {
                errs.add(
                    format!("certificates[{i}].sds.{field}"),
                    format!("{n:?} is already an SDS resource of certificate {other:?}: every resource needs its own name"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::paths;
    use crate::config::Config;

    #[test]
    fn sds_defaults_to_a_socket_in_the_output_directory_and_the_certificate_names() {
        let c = Config::from_yaml(
            "outputDir: /o\nsds: {}\ncertificates:\n- name: web\n  dnsNames: [a]\n- name: api\n  dnsNames: [b]\n  sds: {certificate: default, validationContext: ROOTCA}\n",
            "c.yaml",
        )
        .unwrap();
        let sds = c.sds.unwrap();
        assert_eq!(sds.socket, std::path::Path::new("/o/sds.sock"));
        assert_eq!((sds.mode, sds.listen), (0o600, None));
        assert_eq!(
            (
                c.certificates[0].sds.certificate.as_str(),
                c.certificates[0].sds.validation_context.as_str()
            ),
            ("web", "web-ca")
        );
        assert_eq!(
            (
                c.certificates[1].sds.certificate.as_str(),
                c.certificates[1].sds.validation_context.as_str()
            ),
            ("default", "ROOTCA")
        );
    }

    #[test]
    fn sds_names_must_be_unique_and_listen_loopback() {
        let p = paths("outputDir: /o\nsds: {socket: '', listen: '0.0.0.0:15012', mode: '0999'}\ncertificates:\n- name: web\n  dnsNames: [a]\n- name: api\n  dnsNames: [b]\n  sds: {certificate: web-ca}\n- name: c\n  dnsNames: [c]\n  sds: {validationContext: c}\n");
        assert_eq!(
            p,
            [
                "sds.socket",
                "sds.mode",
                "sds.listen",
                "certificates[2].sds.validationContext",
                "certificates[1].sds.certificate",
            ]
        );
    }
}
