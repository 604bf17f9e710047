//! Validating `workloadApi`: where pillion serves the SPIFFE Workload API,
//! and which certificates are its X.509-SVIDs.

use std::path::Path;

use super::sds::validate_socket;
use super::{CertificateSpec, Errors, RawWorkloadApi, WorkloadApiSpec};

/// The socket's name in outputDir when `workloadApi.socket` is left out.
pub const DEFAULT_WORKLOAD_SOCKET: &str = "workload.sock";

/// Validates `workloadApi` against the validated `certificates` (with their
/// index in the file): each SVID names a certificate with exactly one URI,
/// a SPIFFE ID. Without `svids`, every certificate with a `spiffe://` URI
/// is one.
pub(super) fn validate_workload_api(
    errs: &mut Errors,
    raw: RawWorkloadApi,
    certificates: &[(usize, CertificateSpec)],
    output_dir: &Path,
) -> WorkloadApiSpec {
    let (socket, mode) = validate_socket(
        errs,
        "workloadApi",
        raw.socket.as_deref(),
        DEFAULT_WORKLOAD_SOCKET,
        raw.mode,
        output_dir,
    );
    let svids = match raw.svids {
        Some(names) => {
            for (i, name) in names.iter().enumerate() {
                let field = format!("workloadApi.svids[{i}]");
                match certificates.iter().find(|(_, c)| &c.name == name) {
                    None => errs.add(field, format!("{name:?} is not a configured certificate")),
                    Some((n, c)) => {
                        if let Err(e) = spiffe_id(c) {
                            errs.add(
                                field,
                                format!("certificate {name:?} (certificates[{n}]) {e}"),
                            );
                        }
                    }
                }
            }
            names
        }
        None => {
            let spiffe: Vec<&(usize, CertificateSpec)> = certificates
                .iter()
                .filter(|(_, c)| c.names.uris.iter().any(|u| u.starts_with("spiffe://")))
                .collect();
            if spiffe.is_empty() && !certificates.is_empty() {
                errs.add(
                    "workloadApi.svids",
                    "is not set and no certificate has a spiffe:// URI: give a certificate uris: [spiffe://<trust domain>/<path>], or list the SVIDs",
                );
            }
            for (n, c) in &spiffe {
                if let Err(e) = spiffe_id(c) {
                    errs.add(
                        format!("certificates[{n}].uris"),
                        format!("{e} (it is served by workloadApi as an X.509-SVID)"),
                    );
                }
            }
            spiffe.into_iter().map(|(_, c)| c.name.clone()).collect()
        }
    };
    WorkloadApiSpec {
        socket,
        mode,
        uid: raw.uid,
        gid: raw.gid,
        svids,
    }
}

/// The certificate's SPIFFE ID: its one URI, which must be a `spiffe://`
/// ID (a trust domain, then a path), as an X.509-SVID has it.
pub fn spiffe_id(c: &CertificateSpec) -> Result<&str, String> {
    let uris = &c.names.uris;
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "has {} URIs ({}): an X.509-SVID has exactly one, its spiffe:// ID",
            uris.len(),
            uris.join(", ")
        ));
    };
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return Err(format!(
            "has the URI {uri:?}: an X.509-SVID's URI is a spiffe:// ID"
        ));
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    let domain_ok = !domain.is_empty()
        && domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if !domain_ok {
        return Err(format!(
            "has the SPIFFE ID {uri:?}, whose trust domain is not lowercase letters, digits, '-', '.' or '_'"
        ));
    }
    if path.is_empty()
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "has the SPIFFE ID {uri:?}: an X.509-SVID's ID has a path (spiffe://{domain}/<workload>) without empty, '.' or '..' segments"
        ));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::paths;
    use crate::config::Config;

    #[test]
    fn svids_default_to_the_certificates_with_a_spiffe_id() {
        let c = Config::from_yaml(
            "outputDir: /o\nworkloadApi: {}\ncertificates:\n- name: web\n  dnsNames: [a]\n- name: id\n  uris: [spiffe://example.org/ns/shop/sa/web]\n",
            "c.yaml",
        )
        .unwrap();
        let w = c.workload_api.unwrap();
        assert_eq!(w.svids, ["id"]);
        assert_eq!(w.socket, std::path::Path::new("/o/workload.sock"));
    }

    #[test]
    fn an_svid_has_exactly_one_uri_a_spiffe_id() {
        let p = paths("outputDir: /o\nworkloadApi: {svids: [none, two, http, bare, web]}\ncertificates:\n- name: two\n  uris: [spiffe://a.org/x, spiffe://a.org/y]\n- name: http\n  uris: [https://a.org/x]\n- name: bare\n  uris: [spiffe://a.org]\n- name: web\n  dnsNames: [a]\n");
        assert_eq!(
            p,
            [
                "workloadApi.svids[0]",
                "workloadApi.svids[1]",
                "workloadApi.svids[2]",
                "workloadApi.svids[3]",
                "workloadApi.svids[4]",
            ]
        );
        let p =
            paths("outputDir: /o\nworkloadApi: {}\ncertificates:\n- name: web\n  dnsNames: [a]\n");
        assert_eq!(p, ["workloadApi.svids"]);
        let p = paths("outputDir: /o\nworkloadApi: {}\ncertificates:\n- name: two\n  uris: [spiffe://a.org/x, spiffe://a.org/y]\n");
        assert_eq!(p, ["certificates[0].uris"]);
    }
}
