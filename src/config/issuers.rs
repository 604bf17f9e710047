//! Validating `issuers`: local CA, Vault, the Kubernetes CSR API,
//! cert-manager, and files another component writes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    is_valid_dns_name, is_valid_name, parse_duration, required_path, required_string,
    CertManagerSpec, Errors, FilesAnchors, FilesIssuerSpec, FilesLayout, IssuerRef, IssuerSpec,
    KubernetesCsrSpec, PkiMode, PkiSpec, RawFilesIssuer, RawIssuer, RawVault, VaultAuth, VaultSpec,
    DEFAULT_CLUSTER_TIMEOUT, DEFAULT_KUBERNETES_TOKEN_FILE, DEFAULT_VAULT_TIMEOUT,
    SERVICE_ACCOUNT_CA_FILE,
};

/// Validates the `issuers` mapping. `unparsed` names the issuers whose
/// shape was already reported as invalid.
pub(super) fn validate_issuers(
    errs: &mut Errors,
    raw: Option<BTreeMap<String, RawIssuer>>,
    unparsed: Vec<String>,
) -> BTreeMap<String, IssuerSpec> {
    let mut issuers = BTreeMap::new();
    let issuer_names: Vec<String> = raw
        .as_ref()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for (name, issuer) in raw.unwrap_or_default() {
        let path = format!("issuers.{name}");
        if !is_valid_name(&name) {
            errs.add(
                &path,
                format!(
                    "{name:?} is not a valid issuer name (use lowercase letters, digits and '-')"
                ),
            );
        }
        let kinds = [
            issuer.local_ca.is_some(),
            issuer.vault.is_some(),
            issuer.kubernetes_csr.is_some(),
            issuer.cert_manager.is_some(),
            issuer.files.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => errs.add(&path, "names no issuer kind (expected one of localCa, vault, kubernetesCsr, certManager, files)"),
            1 => {}
            _ => errs.add(&path, "names several issuer kinds: use exactly one of localCa, vault, kubernetesCsr, certManager, files"),
        }
        if let Some(f) = issuer.files {
            if let Some(spec) = validate_files_issuer(errs, &format!("{path}.files"), f) {
                issuers.insert(name.clone(), IssuerSpec::Files(spec));
            }
        }
        if let Some(ca) = issuer.local_ca {
            let cert_file = required_path(errs, &format!("{path}.localCa.certFile"), ca.cert_file);
            let key_file = required_path(errs, &format!("{path}.localCa.keyFile"), ca.key_file);
            issuers.insert(
                name.clone(),
                IssuerSpec::LocalCa {
                    cert_file,
                    key_file,
                },
            );
        }
        if let Some(v) = issuer.vault {
            if let Some(spec) = validate_vault(errs, &format!("{path}.vault"), v) {
                issuers.insert(name.clone(), IssuerSpec::Vault(Box::new(spec)));
            }
        }
        if let Some(k) = issuer.kubernetes_csr {
            let p = format!("{path}.kubernetesCsr");
            let signer_name = required_string(errs, &format!("{p}.signerName"), k.signer_name);
            if !signer_name.is_empty() && !is_signer_name(&signer_name) {
                errs.add(format!("{p}.signerName"), format!("{signer_name:?} is not a signer name (domain/path, e.g. example.com/app-signer)"));
            }
            let timeout = cluster_timeout(errs, &p, k.timeout);
            issuers.insert(
                name.clone(),
                IssuerSpec::KubernetesCsr(KubernetesCsrSpec {
                    signer_name,
                    usages: k.usages,
                    ca_file: Some(PathBuf::from(
                        k.ca_file
                            .unwrap_or_else(|| SERVICE_ACCOUNT_CA_FILE.to_owned()),
                    )),
                    timeout,
                    kubeconfig: k.kubeconfig.map(PathBuf::from),
                }),
            );
        }
        if let Some(c) = issuer.cert_manager {
            let p = format!("{path}.certManager");
            let r = c.issuer_ref.unwrap_or_default();
            let issuer_ref = IssuerRef {
                name: required_string(errs, &format!("{p}.issuerRef.name"), r.name),
                kind: r.kind.unwrap_or_else(|| "Issuer".to_owned()),
                group: r.group.unwrap_or_else(|| "cert-manager.io".to_owned()),
            };
            let timeout = cluster_timeout(errs, &p, c.timeout);
            issuers.insert(
                name.clone(),
                IssuerSpec::CertManager(CertManagerSpec {
                    issuer_ref,
                    namespace: c.namespace.filter(|n| !n.is_empty()),
                    usages: c.usages,
                    ca_file: c.ca_file.map(PathBuf::from),
                    timeout,
                    kubeconfig: c.kubeconfig.map(PathBuf::from),
                }),
            );
        }
    }
    // Issuers reported as invalid (their shape, or above) stay known by
    // name, so that certificates naming them get no second error. The
    // placeholder is never used: the configuration has errors.
    for name in issuer_names.into_iter().chain(unparsed) {
        if let std::collections::btree_map::Entry::Vacant(slot) = issuers.entry(name) {
            if errs.0.is_empty() {
                errs.add(format!("issuers.{}", slot.key()), "is invalid");
            }
            slot.insert(IssuerSpec::Development);
        }
    }
    issuers
}

/// Vault's and OpenBao's environment variables, read as the `vault` and
/// `bao` CLIs and Vault Agent read them: each fills its field of every Vault
/// issuer that leaves the field out. The configuration wins when both are
/// set; OpenBao's name wins over Vault's. `VAULT_SKIP_VERIFY` is not read on
/// purpose: turning TLS verification off takes `tlsSkipVerifyInsecure`.
pub const VAULT_ENVIRONMENT: [(&str, [&str; 2]); 3] = [
    ("address", ["BAO_ADDR", "VAULT_ADDR"]),
    ("caFile", ["BAO_CACERT", "VAULT_CACERT"]),
    ("namespace", ["BAO_NAMESPACE", "VAULT_NAMESPACE"]),
];

/// Fills what `rv` leaves out from [`VAULT_ENVIRONMENT`] through `lookup`;
/// returns what was filled, as (field, variable). An empty variable counts
/// as unset; an empty field in the configuration counts as set.
fn fill_from_environment(
    rv: &mut RawVault,
    lookup: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, &'static str)> {
    let mut filled = Vec::new();
    for (field, vars) in VAULT_ENVIRONMENT {
        let slot = match field {
            "address" => &mut rv.address,
            "caFile" => &mut rv.ca_file,
            _ => &mut rv.namespace,
        };
        if slot.is_some() {
            continue;
        }
        if let Some((var, value)) = vars
            .iter()
            .find_map(|v| lookup(v).filter(|x| !x.is_empty()).map(|x| (*v, x)))
        {
            *slot = Some(value);
            filled.push((field, var));
        }
    }
    filled
}

fn validate_vault(errs: &mut Errors, path: &str, mut rv: RawVault) -> Option<VaultSpec> {
    let before = errs.0.len();
    let from_environment = fill_from_environment(&mut rv, |v| std::env::var(v).ok());
    let origin = |field: &str| {
        from_environment
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, var)| format!(" (from ${var})"))
            .unwrap_or_default()
    };
    let address = match rv.address.as_deref().map(url::Url::parse) {
        None => {
            errs.add(
                format!("{path}.address"),
                "is required (e.g. https://vault.vault.svc:8200), or set BAO_ADDR or VAULT_ADDR",
            );
            None
        }
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
        Some(_) => {
            errs.add(
                format!("{path}.address"),
                format!(
                    "{:?}{} is not an http:// or https:// URL",
                    rv.address.clone().unwrap_or_default(),
                    origin("address")
                ),
            );
            None
        }
    };
    let timeout = match rv.timeout.as_deref().map(parse_duration) {
        None => DEFAULT_VAULT_TIMEOUT,
        Some(Ok(t)) if !t.is_zero() => t,
        Some(Ok(_)) => {
            errs.add(format!("{path}.timeout"), "must be more than zero");
            DEFAULT_VAULT_TIMEOUT
        }
        Some(Err(e)) => {
            errs.add(format!("{path}.timeout"), e);
            DEFAULT_VAULT_TIMEOUT
        }
    };
    let auth = rv.auth.unwrap_or_default();
    let apath = format!("{path}.auth");
    let mount = |m: Option<String>, default: &str, errs: &mut Errors, field: &str| {
        let m = m.unwrap_or_else(|| default.to_owned());
        let m = m.trim_matches('/').to_owned();
        if m.is_empty() || m.contains("..") {
            errs.add(
                format!("{apath}.{field}.mount"),
                format!("{m:?} is not a mount path"),
            );
        }
        m
    };
    let mut methods = Vec::new();
    if let Some(t) = auth.token {
        let file = required_path(errs, &format!("{apath}.token.file"), t.file);
        methods.push(VaultAuth::Token { file });
    }
    if let Some(a) = auth.app_role {
        let role_id_file =
            required_path(errs, &format!("{apath}.appRole.roleIdFile"), a.role_id_file);
        let secret_id_file = required_path(
            errs,
            &format!("{apath}.appRole.secretIdFile"),
            a.secret_id_file,
        );
        let mount = mount(a.mount, "approle", errs, "appRole");
        methods.push(VaultAuth::AppRole {
            role_id_file,
            secret_id_file,
            mount,
        });
    }
    if let Some(k) = auth.kubernetes {
        let role = required_string(errs, &format!("{apath}.kubernetes.role"), k.role);
        let mount = mount(k.mount, "kubernetes", errs, "kubernetes");
        let token_file = PathBuf::from(
            k.token_file
                .unwrap_or_else(|| DEFAULT_KUBERNETES_TOKEN_FILE.to_owned()),
        );
        methods.push(VaultAuth::Kubernetes {
            role,
            mount,
            token_file,
        });
    }
    if let Some(j) = auth.jwt {
        let role = required_string(errs, &format!("{apath}.jwt.role"), j.role);
        let mount = mount(j.mount, "jwt", errs, "jwt");
        let token_file = required_path(errs, &format!("{apath}.jwt.tokenFile"), j.token_file);
        methods.push(VaultAuth::Jwt {
            role,
            mount,
            token_file,
        });
    }
    if methods.len() != 1 {
        errs.add(
            &apath,
            if methods.is_empty() {
                "names no auth method: set one of token, appRole, kubernetes, jwt"
            } else {
                "names more than one auth method: set exactly one of token, appRole, kubernetes, jwt"
            },
        );
    }
    let pki = rv.pki.map(|p| {
        let mode = match p.mode.as_deref() {
            None | Some("sign") => PkiMode::Sign,
            Some("issue") => PkiMode::Issue,
            Some(other) => {
                errs.add(
                    format!("{path}.pki.mode"),
                    format!("{other:?} is not a mode (expected sign or issue)"),
                );
                PkiMode::Sign
            }
        };
        let mount = p
            .mount
            .unwrap_or_else(|| "pki".to_owned())
            .trim_matches('/')
            .to_owned();
        if mount.is_empty() || mount.contains("..") {
            errs.add(
                format!("{path}.pki.mount"),
                format!("{mount:?} is not a mount path"),
            );
        }
        let role = required_string(errs, &format!("{path}.pki.role"), p.role);
        if role.contains('/') {
            errs.add(
                format!("{path}.pki.role"),
                format!("{role:?} is not a role name"),
            );
        }
        PkiSpec {
            mount,
            role,
            issuer_ref: p.issuer_ref,
            mode,
            ca_bundle_file: p.ca_bundle_file.map(PathBuf::from),
        }
    });
    let auth = methods.pop()?;
    (errs.0.len() == before).then_some(VaultSpec {
        address: address?,
        ca_file: rv.ca_file.map(PathBuf::from),
        tls_skip_verify_insecure: rv.tls_skip_verify_insecure.unwrap_or(false),
        namespace: rv.namespace.filter(|n| !n.is_empty()),
        timeout,
        auth,
        pki,
        from_environment,
    })
}

fn cluster_timeout(errs: &mut Errors, path: &str, raw: Option<String>) -> Duration {
    match raw.as_deref().map(parse_duration) {
        None => DEFAULT_CLUSTER_TIMEOUT,
        Some(Ok(t)) if !t.is_zero() => t,
        Some(Ok(_)) => {
            errs.add(format!("{path}.timeout"), "must be more than zero");
            DEFAULT_CLUSTER_TIMEOUT
        }
        Some(Err(e)) => {
            errs.add(format!("{path}.timeout"), e);
            DEFAULT_CLUSTER_TIMEOUT
        }
    }
}

/// How often a `files` issuer's directory is looked at by default: a
/// kubelet volume changes a minute or more after its source, so a second
/// is soon enough, and a read of unchanged files costs well under a
/// millisecond.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Validates `issuers.NAME.files` at `path`.
fn validate_files_issuer(
    errs: &mut Errors,
    path: &str,
    raw: RawFilesIssuer,
) -> Option<FilesIssuerSpec> {
    let before = errs.0.len();
    let dir = required_path(errs, &format!("{path}.dir"), raw.dir);
    let file_name = |errs: &mut Errors, field: &str, name: String| {
        if let Err(e) = crate::output::check_relative_path(&name, false) {
            errs.add(format!("{path}.{field}"), format!("{name:?} {e}"));
        }
        name
    };
    let layout = match (raw.credential_bundle, raw.certificate, raw.private_key) {
        (Some(b), None, None) => FilesLayout::Bundle(file_name(errs, "credentialBundle", b)),
        (Some(_), _, _) => {
            errs.add(
                format!("{path}.credentialBundle"),
                "cannot be combined with certificate or privateKey: the bundle holds both",
            );
            return None;
        }
        (None, c, k) => FilesLayout::Pair {
            certificate: file_name(errs, "certificate", c.unwrap_or_else(|| "tls.crt".into())),
            private_key: file_name(errs, "privateKey", k.unwrap_or_else(|| "tls.key".into())),
        },
    };
    let anchors = match (raw.ca, raw.ca_file) {
        (Some(ca), None) => FilesAnchors::InDir(file_name(errs, "ca", ca)),
        (None, Some(f)) if !f.is_empty() => FilesAnchors::File(PathBuf::from(f)),
        (None, Some(_)) => {
            errs.add(format!("{path}.caFile"), "is empty");
            return None;
        }
        (None, None) => {
            errs.add(
                path,
                "names no trust anchors: set ca (a file in dir, e.g. ca.crt) or caFile (a file elsewhere); the certificates read are verified against them",
            );
            return None;
        }
        (Some(_), Some(_)) => {
            errs.add(path, "sets both ca and caFile: set one");
            return None;
        }
    };
    let poll_interval = match raw.poll_interval.as_deref().map(parse_duration) {
        None => DEFAULT_POLL_INTERVAL,
        Some(Ok(t)) if t >= Duration::from_millis(100) => t,
        Some(Ok(_)) => {
            errs.add(format!("{path}.pollInterval"), "must be at least 100ms");
            DEFAULT_POLL_INTERVAL
        }
        Some(Err(e)) => {
            errs.add(format!("{path}.pollInterval"), e);
            DEFAULT_POLL_INTERVAL
        }
    };
    (errs.0.len() == before).then_some(FilesIssuerSpec {
        dir,
        layout,
        anchors,
        poll_interval,
    })
}

/// A Kubernetes signer name: a domain, a slash, a path (`example.com/signer`).
fn is_signer_name(n: &str) -> bool {
    n.split_once('/').is_some_and(|(domain, rest)| {
        is_valid_dns_name(domain) && !rest.is_empty() && !rest.contains(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::paths;

    #[test]
    fn a_broken_issuer_is_reported_once_not_again_by_its_certificates() {
        let p = paths("outputDir: /o\nissuers:\n  v:\n    vault: {address: 42}\n  w:\n    vault: {address: 'not a url', auth: {token: {file: /t}}, pki: {mount: pki, role: r}}\ncertificates:\n- name: a\n  issuer: v\n  dnsNames: [a]\n- name: b\n  issuer: w\n  dnsNames: [b]\n");
        assert!(p.iter().all(|p| p.starts_with("issuers.")), "{p:?}");
    }

    #[test]
    fn the_environment_fills_what_the_configuration_leaves_out() {
        use super::{fill_from_environment, RawVault};
        let env = |name: &str| match name {
            "VAULT_ADDR" => Some("https://vault:8200".to_owned()),
            "BAO_ADDR" => Some("https://bao:8200".to_owned()),
            "VAULT_CACERT" => Some("/ca.pem".to_owned()),
            "BAO_NAMESPACE" => Some(String::new()),
            "VAULT_NAMESPACE" => Some("team".to_owned()),
            _ => None,
        };
        let mut rv = RawVault::default();
        let filled = fill_from_environment(&mut rv, env);
        assert_eq!(
            filled,
            [
                ("address", "BAO_ADDR"),
                ("caFile", "VAULT_CACERT"),
                ("namespace", "VAULT_NAMESPACE")
            ]
        );
        assert_eq!(rv.address.as_deref(), Some("https://bao:8200"));
        assert_eq!(rv.namespace.as_deref(), Some("team"));

        // The configuration wins, even an empty namespace (no namespace).
        let mut rv = RawVault {
            address: Some("https://mine:8200".to_owned()),
            namespace: Some(String::new()),
            ..RawVault::default()
        };
        assert_eq!(
            fill_from_environment(&mut rv, env),
            [("caFile", "VAULT_CACERT")]
        );
        assert_eq!(rv.address.as_deref(), Some("https://mine:8200"));
        assert_eq!(rv.namespace.as_deref(), Some(""));
        assert!(fill_from_environment(&mut RawVault::default(), |_| None).is_empty());
    }
}
