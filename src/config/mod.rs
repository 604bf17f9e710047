//! Configuration: the raw YAML shape, and its validation into a [`Config`].
//!
//! Parsing happens in two steps, as in ripgrep's LowArgs -> HiArgs: serde reads
//! the YAML (or the command-line flags) into `Raw*` structs that mirror what the
//! user wrote, then [`Config::from_raw`] checks every field and reports *every*
//! problem at once, each with its path (`certificates[1].dnsNames[0]`). Nothing
//! here reads key files or touches the network or the output directory; see
//! [`crate::agent::preflight`] for the checks that do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::keys::KeyAlgorithm;
use crate::reload::{ReloadSpec, ReloadTarget, SignalName};
use crate::schedule::RenewPolicy;

mod error;
mod expand;
mod raw;
mod spec;
mod values;
mod yaml;

use error::Errors;
use expand::expand_pod_vars;
pub use expand::POD_VARIABLES;
pub use error::{ConfigErrors, FieldError};
pub use raw::{
    RawAppRoleAuth, RawCertManager, RawCertificate, RawConfig, RawFiles, RawIssuer, RawIssuerRef,
    RawKubernetesCsr, RawLocalCa, RawPkcs12, RawPki, RawPrivateKey, RawReload, RawRoleAuth,
    RawSecret, RawServer, RawTokenAuth, RawVault, RawVaultAuth,
};
pub use spec::{
    default_state_dir, CertManagerSpec, CertificateSpec, FileSpec, IssuerRef, IssuerSpec,
    KeyRotation, KubernetesCsrSpec, Pkcs12Spec, SecretFormat, SecretSpec, DEFAULT_CA_FILE,
    DEFAULT_CERTIFICATE_FILE, DEFAULT_CLUSTER_TIMEOUT, DEFAULT_DURATION, DEFAULT_KEY_MODE,
    DEFAULT_KUBERNETES_TOKEN_FILE, DEFAULT_MODE, DEFAULT_PRIVATE_KEY_FILE,
    DEFAULT_REFRESH_INTERVAL, DEFAULT_RENEW_BEFORE_PERCENTAGE, DEFAULT_VAULT_TIMEOUT,
    DEVELOPMENT_ISSUER, MAX_NAMES, MIN_DURATION, SERVICE_ACCOUNT_CA_FILE,
};

pub use values::{is_valid_dns_name, parse_duration, MAX_DURATION};
use values::{credential_name, is_valid_name, parse_mode, required_path, required_string};
use yaml::parse_yaml;

pub use crate::names::Names;
pub use crate::vault::{PkiMode, PkiSpec, VaultAuth, VaultSpec};

/// X.520 upper bound for a commonName (RFC 5280, ub-common-name).
const MAX_COMMON_NAME: usize = 64;

/// A validated configuration: everything pillion will do.
#[derive(Debug, Clone)]
pub struct Config {
    pub output_dir: PathBuf,
    pub state_dir: PathBuf,
    pub issuers: BTreeMap<String, IssuerSpec>,
    pub certificates: Vec<CertificateSpec>,
    pub secrets: Vec<SecretSpec>,
    pub reload: Option<ReloadSpec>,
    /// Where the admin endpoint listens; `None` turns it off.
    pub listen: Option<SocketAddr>,
}

/// Where a configuration came from, which decides how field paths are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    Flags,
}

impl Config {
    /// Parses YAML text. `source_name` names the file in error messages.
    ///
    /// # Errors
    /// Every malformed or invalid field, each with its path.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Config, ConfigErrors> {
        let fail = |errors: Vec<FieldError>| ConfigErrors {
            source_name: source_name.to_owned(),
            errors,
        };
        let (raw, mut errors) = parse_yaml(text).map_err(fail)?;
        // The shape's problems and validation's together, so that one typo
        // hides nothing; a field reported as malformed is not reported again
        // as missing.
        match Config::from_raw(raw, Origin::File) {
            Ok(config) if errors.is_empty() => Ok(config),
            Ok(_) => Err(fail(errors)),
            Err(more) => {
                let mut extra: Vec<FieldError> = more
                    .into_iter()
                    .filter(|m| !errors.iter().any(|e| e.path == m.path))
                    .collect();
                errors.append(&mut extra);
                Err(fail(errors))
            }
        }
    }

    /// Validates a raw configuration, collecting every problem.
    pub fn from_raw(raw: RawConfig, origin: Origin) -> Result<Config, Vec<FieldError>> {
        let mut errs = Errors::default();
        let output_dir = match raw.output_dir.as_deref() {
            Some("") | None => {
                errs.add(
                    "outputDir",
                    "is required: the directory shared with the app",
                );
                PathBuf::new()
            }
            Some(dir) => PathBuf::from(dir),
        };
        let state_dir = raw
            .state_dir
            .map(PathBuf::from)
            .unwrap_or_else(default_state_dir);

        let mut issuers = BTreeMap::new();
        let issuer_names: Vec<String> = raw
            .issuers
            .as_ref()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (name, issuer) in raw.issuers.unwrap_or_default() {
            let path = format!("issuers.{name}");
            if !is_valid_name(&name) {
                errs.add(&path, format!("{name:?} is not a valid issuer name (use lowercase letters, digits and '-')"));
            }
            let kinds = [
                issuer.local_ca.is_some(),
                issuer.vault.is_some(),
                issuer.kubernetes_csr.is_some(),
                issuer.cert_manager.is_some(),
            ];
            match kinds.iter().filter(|k| **k).count() {
                0 => errs.add(&path, "names no issuer kind (expected one of localCa, vault, kubernetesCsr, certManager)"),
                1 => {}
                _ => errs.add(&path, "names several issuer kinds: use exactly one of localCa, vault, kubernetesCsr, certManager"),
            }
            if let Some(ca) = issuer.local_ca {
                let cert_file =
                    required_path(&mut errs, &format!("{path}.localCa.certFile"), ca.cert_file);
                let key_file =
                    required_path(&mut errs, &format!("{path}.localCa.keyFile"), ca.key_file);
                issuers.insert(
                    name.clone(),
                    IssuerSpec::LocalCa {
                        cert_file,
                        key_file,
                    },
                );
            }
            if let Some(v) = issuer.vault {
                if let Some(spec) = validate_vault(&mut errs, &format!("{path}.vault"), v) {
                    issuers.insert(name.clone(), IssuerSpec::Vault(Box::new(spec)));
                }
            }
            if let Some(k) = issuer.kubernetes_csr {
                let p = format!("{path}.kubernetesCsr");
                let signer_name =
                    required_string(&mut errs, &format!("{p}.signerName"), k.signer_name);
                if !signer_name.is_empty() && !is_signer_name(&signer_name) {
                    errs.add(format!("{p}.signerName"), format!("{signer_name:?} is not a signer name (domain/path, e.g. example.com/app-signer)"));
                }
                let timeout = cluster_timeout(&mut errs, &p, k.timeout);
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
                    name: required_string(&mut errs, &format!("{p}.issuerRef.name"), r.name),
                    kind: r.kind.unwrap_or_else(|| "Issuer".to_owned()),
                    group: r.group.unwrap_or_else(|| "cert-manager.io".to_owned()),
                };
                let timeout = cluster_timeout(&mut errs, &p, c.timeout);
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
        for name in issuer_names.into_iter().chain(raw.unparsed_issuers) {
            if let std::collections::btree_map::Entry::Vacant(slot) = issuers.entry(name) {
                if errs.0.is_empty() {
                    errs.add(format!("issuers.{}", slot.key()), "is invalid");
                }
                slot.insert(IssuerSpec::Development);
            }
        }
        let implicit_issuer = match issuers.len() {
            0 => {
                issuers.insert(DEVELOPMENT_ISSUER.to_owned(), IssuerSpec::Development);
                Some(DEVELOPMENT_ISSUER.to_owned())
            }
            1 => issuers.keys().next().cloned(),
            _ => None,
        };

        let raw_certs = raw.certificates.unwrap_or_default();
        if raw_certs.is_empty() && raw.secrets.as_ref().is_none_or(Vec::is_empty) {
            errs.add(
                "certificates",
                "is empty: configure at least one certificate or secret",
            );
        }
        let mut certificates = Vec::new();
        let mut seen_names = BTreeSet::new();
        for (i, rc) in raw_certs.into_iter().enumerate() {
            let path = format!("certificates[{i}]");
            if let Some(cert) = validate_certificate(
                &mut errs,
                &path,
                rc,
                &issuers,
                implicit_issuer.as_deref(),
                origin,
            ) {
                if !seen_names.insert(cert.name.clone()) {
                    errs.add(
                        format!("{path}.name"),
                        format!(
                            "{:?} is used by another certificate: names must be unique",
                            cert.name
                        ),
                    );
                }
                certificates.push((i, cert));
            }
        }
        for (i, cert) in &certificates {
            if let Some(IssuerSpec::Vault(v)) = issuers.get(&cert.issuer) {
                if v.pki.is_none() {
                    errs.add(
                        format!("certificates[{i}].issuer"),
                        format!("issuer {:?} has no pki section: add vault.pki {{mount, role}} to issue certificates", cert.issuer),
                    );
                }
            }
        }
        let mut secrets = Vec::new();
        for (i, rs) in raw.secrets.unwrap_or_default().into_iter().enumerate() {
            let path = format!("secrets[{i}]");
            if let Some(secret) = validate_secret(&mut errs, &path, rs, &issuers, origin) {
                if !seen_names.insert(secret.name.clone()) {
                    errs.add(
                        format!("{path}.name"),
                        format!(
                            "{:?} is used by another certificate or secret: names must be unique",
                            secret.name
                        ),
                    );
                }
                secrets.push((i, secret));
            }
        }
        let mut dirs: Vec<DirUse> = certificates
            .iter()
            .map(|(i, c)| DirUse {
                field: format!("certificates[{i}].dir"),
                name: c.name.clone(),
                dir: normal(&c.dir),
                files: c.files.names().map(str::to_owned).collect(),
            })
            .collect();
        dirs.extend(secrets.iter().map(|(i, s)| DirUse {
            field: format!("secrets[{i}].dir"),
            name: s.name.clone(),
            dir: normal(&s.dir),
            files: s.format.file().into_iter().map(str::to_owned).collect(),
        }));
        check_dirs_disjoint(&mut errs, &dirs);
        let secrets: Vec<SecretSpec> = secrets.into_iter().map(|(_, s)| s).collect();
        let certificates: Vec<CertificateSpec> = certificates.into_iter().map(|(_, c)| c).collect();

        let reload = raw.reload.and_then(|r| validate_reload(&mut errs, r));
        let listen = raw.server.and_then(|s| s.listen).and_then(|l| match l.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.add("server.listen", format!("{l:?} is not an address and port (e.g. 127.0.0.1:9102 or 0.0.0.0:9102)"));
                None
            }
        });

        if errs.0.is_empty() {
            Ok(Config {
                output_dir,
                state_dir,
                issuers,
                certificates,
                secrets,
                reload,
                listen,
            })
        } else {
            if origin == Origin::Flags {
                for e in &mut errs.0 {
                    e.path = flag_for_path(&e.path);
                }
            }
            Err(errs.0)
        }
    }

    /// The default single-certificate layout in `dir`, for `pillion status --out`.
    pub fn for_directory(dir: &Path) -> Config {
        Config {
            output_dir: dir.to_owned(),
            state_dir: default_state_dir(),
            issuers: BTreeMap::new(),
            certificates: vec![CertificateSpec {
                name: "tls".into(),
                issuer: DEVELOPMENT_ISSUER.into(),
                names: Names::default(),
                key_algorithm: KeyAlgorithm::EcdsaP256,
                key_rotation: KeyRotation::Always,
                duration: DEFAULT_DURATION,
                renew: RenewPolicy::Percentage(DEFAULT_RENEW_BEFORE_PERCENTAGE),
                dir: PathBuf::from("."),
                files: FileSpec {
                    certificate: DEFAULT_CERTIFICATE_FILE.into(),
                    private_key: DEFAULT_PRIVATE_KEY_FILE.into(),
                    ca: DEFAULT_CA_FILE.into(),
                    bundle: None,
                    mode: DEFAULT_MODE,
                    key_mode: DEFAULT_KEY_MODE,
                    uid: None,
                    gid: None,
                    pkcs12: None,
                },
            }],
            secrets: Vec::new(),
            reload: None,
            listen: None,
        }
    }

    /// The issuer a certificate uses. Validation guarantees it exists.
    pub fn issuer_of(&self, cert: &CertificateSpec) -> &IssuerSpec {
        &self.issuers[&cert.issuer]
    }
}

fn validate_certificate(
    errs: &mut Errors,
    path: &str,
    rc: RawCertificate,
    issuers: &BTreeMap<String, IssuerSpec>,
    implicit_issuer: Option<&str>,
    origin: Origin,
) -> Option<CertificateSpec> {
    let before = errs.0.len();
    let name = credential_name(errs, path, rc.name)?;
    let issuer = match (rc.issuer, implicit_issuer) {
        (Some(i), _) if issuers.contains_key(&i) => i,
        (Some(i), _) => {
            let known: Vec<_> = issuers.keys().map(String::as_str).collect();
            errs.add(
                format!("{path}.issuer"),
                format!(
                    "{i:?} is not a configured issuer (configured: {})",
                    known.join(", ")
                ),
            );
            i
        }
        (None, Some(i)) => i.to_owned(),
        (None, None) => {
            errs.add(
                format!("{path}.issuer"),
                "is required when more than one issuer is configured",
            );
            String::new()
        }
    };

    let names_given = rc.common_name.is_some()
        || !rc.dns_names.is_empty()
        || !rc.ip_addresses.is_empty()
        || !rc.uris.is_empty();
    let mut names = Names::default();
    let mut expand_all = |field: &str, values: Vec<String>| -> Vec<String> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| expand_pod_vars(errs, &format!("{path}.{field}[{i}]"), &v))
            .collect()
    };
    let dns_names = expand_all("dnsNames", rc.dns_names);
    let ip_addresses = expand_all("ipAddresses", rc.ip_addresses);
    let uris = expand_all("uris", rc.uris);
    let common_name = rc
        .common_name
        .map(|cn| expand_pod_vars(errs, &format!("{path}.commonName"), &cn));
    if let Some(cn) = common_name {
        if cn.is_empty() || cn.len() > MAX_COMMON_NAME || cn.chars().any(char::is_control) {
            errs.add(
                format!("{path}.commonName"),
                format!("{cn:?} must be 1 to {MAX_COMMON_NAME} printable characters"),
            );
        }
        names.common_name = Some(cn);
    }
    for (i, dns) in dns_names.into_iter().enumerate() {
        if dns.parse::<IpAddr>().is_ok() {
            errs.add(
                format!("{path}.dnsNames[{i}]"),
                format!("{dns:?} is an IP address: list it under ipAddresses"),
            );
        } else if !is_valid_dns_name(&dns) {
            errs.add(
                format!("{path}.dnsNames[{i}]"),
                format!("{dns:?} is not a valid DNS name"),
            );
        }
        names.dns_names.push(dns);
    }
    for (i, ip) in ip_addresses.into_iter().enumerate() {
        match ip.parse::<IpAddr>() {
            Ok(ip) => names.ip_addresses.push(ip),
            Err(_) => errs.add(
                format!("{path}.ipAddresses[{i}]"),
                format!("{ip:?} is not an IPv4 or IPv6 address"),
            ),
        }
    }
    for (i, uri) in uris.into_iter().enumerate() {
        match url::Url::parse(&uri) {
            Ok(u) if uri.is_ascii() && (u.has_host() || !u.path().is_empty()) => {}
            _ => errs.add(
                format!("{path}.uris[{i}]"),
                format!(
                    "{uri:?} is not an absolute URI (e.g. spiffe://cluster.local/ns/app/sa/app)"
                ),
            ),
        }
        names.uris.push(uri);
    }
    if !names_given {
        errs.add(
            path,
            "names nothing to certify: set commonName, dnsNames, ipAddresses or uris",
        );
    }
    let count = names.dns_names.len() + names.ip_addresses.len() + names.uris.len();
    if count > MAX_NAMES {
        errs.add(
            path,
            format!("lists {count} names (dnsNames, ipAddresses and uris together); at most {MAX_NAMES} fit in one certificate"),
        );
    }
    for (kind, list) in [("dnsNames", &names.dns_names), ("uris", &names.uris)] {
        let mut seen = BTreeSet::new();
        for n in list.iter() {
            if !seen.insert(n.to_ascii_lowercase()) {
                errs.add(format!("{path}.{kind}"), format!("lists {n:?} twice"));
            }
        }
    }

    let (algorithm, rotation) = rc
        .private_key
        .map(|k| (k.algorithm, k.rotation_policy))
        .unwrap_or_default();
    let key_algorithm = match algorithm.map(|a| a.parse::<KeyAlgorithm>()) {
        None => KeyAlgorithm::EcdsaP256,
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            errs.add(format!("{path}.privateKey.algorithm"), e);
            KeyAlgorithm::EcdsaP256
        }
    };
    let key_rotation = match rotation.as_deref() {
        None | Some("Always") => KeyRotation::Always,
        Some("Never") => KeyRotation::Never,
        Some(other) => {
            errs.add(
                format!("{path}.privateKey.rotationPolicy"),
                format!("{other:?} is not a rotation policy (expected Always or Never)"),
            );
            KeyRotation::Always
        }
    };

    let duration = match rc.duration {
        None => DEFAULT_DURATION,
        Some(d) => match parse_duration(&d) {
            Ok(d) if d >= MIN_DURATION => d,
            Ok(_) => {
                errs.add(
                    format!("{path}.duration"),
                    format!(
                        "{d:?} is too short (at least {})",
                        humantime::format_duration(MIN_DURATION)
                    ),
                );
                DEFAULT_DURATION
            }
            Err(e) => {
                errs.add(format!("{path}.duration"), e);
                DEFAULT_DURATION
            }
        },
    };
    let renew = match (rc.renew_before, rc.renew_before_percentage) {
        (Some(_), Some(_)) => {
            errs.add(
                format!("{path}.renewBefore"),
                "cannot be combined with renewBeforePercentage: set one",
            );
            None
        }
        (Some(b), None) => match parse_duration(&b) {
            Ok(b) if b.is_zero() => {
                errs.add(format!("{path}.renewBefore"), "must be more than zero");
                None
            }
            Ok(b) if b >= duration => {
                errs.add(
                    format!("{path}.renewBefore"),
                    format!(
                        "{} must be shorter than duration {}",
                        humantime::format_duration(b),
                        humantime::format_duration(duration)
                    ),
                );
                None
            }
            Ok(b) => Some(RenewPolicy::Before(b)),
            Err(e) => {
                errs.add(format!("{path}.renewBefore"), e);
                None
            }
        },
        (None, Some(p)) if (1..=99).contains(&p) => Some(RenewPolicy::Percentage(p as u8)),
        (None, Some(p)) => {
            errs.add(
                format!("{path}.renewBeforePercentage"),
                format!(
                    "{p} is out of range (1 to 99: the share of the lifetime left when renewing)"
                ),
            );
            None
        }
        (None, None) => Some(RenewPolicy::Percentage(DEFAULT_RENEW_BEFORE_PERCENTAGE)),
    }
    .unwrap_or(RenewPolicy::Percentage(DEFAULT_RENEW_BEFORE_PERCENTAGE));

    let dir = match (rc.dir, origin) {
        (Some(d), _) => {
            if let Err(e) = crate::output::check_relative_path(&d, true) {
                errs.add(format!("{path}.dir"), format!("{d:?} {e}"));
            }
            PathBuf::from(d)
        }
        (None, Origin::Flags) => PathBuf::from("."),
        (None, Origin::File) => PathBuf::from(&name),
    };

    let files = validate_files(errs, &format!("{path}.files"), rc.files.unwrap_or_default());

    (errs.0.len() == before).then_some(CertificateSpec {
        name,
        issuer,
        names,
        key_algorithm,
        key_rotation,
        duration,
        renew,
        dir,
        files,
    })
}

fn validate_vault(errs: &mut Errors, path: &str, rv: RawVault) -> Option<VaultSpec> {
    let before = errs.0.len();
    let address = match rv.address.as_deref().map(url::Url::parse) {
        None => {
            errs.add(
                format!("{path}.address"),
                "is required (e.g. https://vault.vault.svc:8200)",
            );
            None
        }
        Some(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
        Some(_) => {
            errs.add(
                format!("{path}.address"),
                format!(
                    "{:?} is not an http:// or https:// URL",
                    rv.address.unwrap_or_default()
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
    })
}

fn validate_secret(
    errs: &mut Errors,
    path: &str,
    rs: RawSecret,
    issuers: &BTreeMap<String, IssuerSpec>,
    origin: Origin,
) -> Option<SecretSpec> {
    let before = errs.0.len();
    let name = credential_name(errs, path, rs.name)?;
    let vaults: Vec<&String> = issuers
        .iter()
        .filter(|(_, i)| matches!(i, IssuerSpec::Vault(_)))
        .map(|(n, _)| n)
        .collect();
    let issuer = match rs.issuer {
        Some(i) if vaults.contains(&&i) => i,
        Some(i) => {
            errs.add(
                format!("{path}.issuer"),
                format!("{i:?} is not a configured vault issuer"),
            );
            i
        }
        None if vaults.len() == 1 => vaults[0].clone(),
        None => {
            errs.add(
                format!("{path}.issuer"),
                "is required: name the vault issuer to read the secret from",
            );
            String::new()
        }
    };
    let secret_path = match rs.path {
        Some(p) if !p.trim_matches('/').is_empty() && !p.split('/').any(|c| c == "..") => {
            p.trim_matches('/').to_owned()
        }
        Some(p) => {
            errs.add(
                format!("{path}.path"),
                format!("{p:?} is not a KV path (e.g. secret/app/db)"),
            );
            p
        }
        None => {
            errs.add(format!("{path}.path"), "is required (e.g. secret/app/db)");
            String::new()
        }
    };
    if let Some(v) = rs.kv_version {
        if v != 1 && v != 2 {
            errs.add(
                format!("{path}.kvVersion"),
                format!("{v} is not a KV version (1 or 2)"),
            );
        }
    }
    let refresh = match rs.refresh_interval.as_deref().map(parse_duration) {
        None => DEFAULT_REFRESH_INTERVAL,
        Some(Ok(d)) if d >= Duration::from_secs(1) => d,
        Some(Ok(_)) => {
            errs.add(format!("{path}.refreshInterval"), "must be at least 1s");
            DEFAULT_REFRESH_INTERVAL
        }
        Some(Err(e)) => {
            errs.add(format!("{path}.refreshInterval"), e);
            DEFAULT_REFRESH_INTERVAL
        }
    };
    let file = |default: String, errs: &mut Errors| {
        let f = rs.file.clone().unwrap_or(default);
        if let Err(e) = crate::output::check_relative_path(&f, false) {
            errs.add(format!("{path}.file"), format!("{f:?} {e}"));
        }
        f
    };
    let format = match rs.format.as_deref() {
        None | Some("json") => SecretFormat::Json {
            file: file(format!("{name}.json"), errs),
        },
        Some("env") => SecretFormat::Env {
            file: file(format!("{name}.env"), errs),
        },
        Some("files") => {
            if rs.file.is_some() {
                errs.add(
                    format!("{path}.file"),
                    "does not apply to format files (each key becomes a file in dir)",
                );
            }
            SecretFormat::Files
        }
        Some("raw") => match rs.key.clone() {
            Some(key) => {
                let f = file(key.clone(), errs);
                SecretFormat::Raw { key, file: f }
            }
            None => {
                errs.add(
                    format!("{path}.key"),
                    "is required with format raw: name the key whose value to write",
                );
                SecretFormat::Files
            }
        },
        Some(other) => {
            errs.add(
                format!("{path}.format"),
                format!("{other:?} is not a format (expected json, env, files or raw)"),
            );
            SecretFormat::Files
        }
    };
    if rs.key.is_some() && !matches!(format, SecretFormat::Raw { .. }) {
        errs.add(format!("{path}.key"), "applies only to format raw");
    }
    let dir = match (rs.dir, origin) {
        (Some(d), _) => {
            if let Err(e) = crate::output::check_relative_path(&d, true) {
                errs.add(format!("{path}.dir"), format!("{d:?} {e}"));
            }
            PathBuf::from(d)
        }
        (None, _) => PathBuf::from(&name),
    };
    let mode = match rs.mode.map(|m| parse_mode(&m)) {
        None => DEFAULT_KEY_MODE,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errs.add(format!("{path}.mode"), e);
            DEFAULT_KEY_MODE
        }
    };
    (errs.0.len() == before).then_some(SecretSpec {
        name,
        issuer,
        path: secret_path,
        kv_version: rs.kv_version,
        refresh,
        format,
        dir,
        mode,
        uid: rs.uid,
        gid: rs.gid,
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

/// A Kubernetes signer name: a domain, a slash, a path (`example.com/signer`).
fn is_signer_name(n: &str) -> bool {
    n.split_once('/').is_some_and(|(domain, rest)| {
        is_valid_dns_name(domain) && !rest.is_empty() && !rest.contains(char::is_whitespace)
    })
}

fn validate_files(errs: &mut Errors, path: &str, rf: RawFiles) -> FileSpec {
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

fn validate_reload(errs: &mut Errors, rr: RawReload) -> Option<ReloadSpec> {
    let before = errs.0.len();
    let signal = match rr.signal.as_deref().map(str::parse::<SignalName>) {
        None => SignalName::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            errs.add("reload.signal", e);
            SignalName::default()
        }
    };
    let mut targets = Vec::new();
    if let Some(p) = rr.process {
        if p.is_empty() || p.contains('/') {
            errs.add(
                "reload.process",
                format!("{p:?} is not a process name (the name in /proc/PID/comm, e.g. nginx)"),
            );
        } else if p.len() > 15 {
            errs.add("reload.process", format!("{p:?} is longer than 15 bytes, and the kernel keeps only 15 in /proc/PID/comm: use {:?} or processRegex", &p[..15]));
        }
        targets.push(ReloadTarget::Process(p));
    }
    if let Some(re) = rr.process_regex {
        match regex_lite::Regex::new(&re) {
            Ok(r) => targets.push(ReloadTarget::ProcessRegex(r)),
            Err(e) => {
                errs.add(
                    "reload.processRegex",
                    format!("{re:?} is not a valid regular expression: {e}"),
                );
                targets.push(ReloadTarget::Process(String::new()));
            }
        }
    }
    if let Some(p) = rr.pid_file {
        if p.is_empty() {
            errs.add("reload.pidFile", "is empty");
        }
        targets.push(ReloadTarget::PidFile(PathBuf::from(p)));
    }
    if let Some(c) = rr.command {
        if c.first().is_none_or(|c| c.is_empty()) {
            errs.add("reload.command", "is empty: give the program and its arguments as a list, e.g. [\"/usr/sbin/nginx\", \"-s\", \"reload\"]");
        }
        targets.push(ReloadTarget::Command(c));
    }
    if let Some(u) = rr.url {
        match url::Url::parse(&u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                targets.push(ReloadTarget::Url(parsed))
            }
            _ => {
                errs.add(
                    "reload.url",
                    format!("{u:?} is not an http:// or https:// URL"),
                );
            }
        }
    }
    match targets.len() {
        0 if errs.0.len() == before => errs.add("reload", "names no target: set one of process, processRegex, pidFile, command, url"),
        0 | 1 => {}
        _ => errs.add("reload", "names more than one target: set exactly one of process, processRegex, pidFile, command, url"),
    }
    let target = targets.pop()?;
    (errs.0.len() == before).then_some(ReloadSpec {
        signal,
        target,
        include_pid1: rr.include_pid1.unwrap_or(false),
    })
}

/// A directory a credential publishes into, and the files it puts there.
struct DirUse {
    field: String,
    name: String,
    dir: PathBuf,
    files: Vec<String>,
}

/// Two credentials must not publish into the same directory, and a credential
/// published inside another one's directory must not collide with its files.
fn check_dirs_disjoint(errs: &mut Errors, uses: &[DirUse]) {
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

fn normal(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Maps a configuration path to the flag a flag-mode user actually typed.
fn flag_for_path(path: &str) -> String {
    let field = path
        .strip_prefix("certificates[0].")
        .or_else(|| path.strip_prefix("issuers.flags."))
        .unwrap_or(path);
    let field = field.split('[').next().unwrap_or(field);
    let flag = match field {
        "outputDir" => "--out",
        "name" => "--name",
        "commonName" => "--common-name",
        "dnsNames" => "--dns-name",
        "ipAddresses" => "--ip-address",
        "uris" => "--uri",
        "privateKey.algorithm" => "--key-algorithm",
        "duration" => "--duration",
        "renewBefore" => "--renew-before",
        "renewBeforePercentage" => "--renew-before-percentage",
        "files.bundle" | "files" => "--bundle",
        "localCa.certFile" => "--ca-cert",
        "localCa.keyFile" => "--ca-key",
        "reload.signal" => "--reload-signal",
        "reload.process" => "--reload-process",
        "reload.processRegex" => "--reload-process-regex",
        "reload.pidFile" => "--reload-pid-file",
        "reload.command" => "--reload-command",
        "reload.url" => "--reload-url",
        "reload" => "--reload-*",
        "server.listen" => "--listen",
        "certificates[0]" | "certificates" => "the certificate flags",
        _ => return path.to_owned(),
    };
    flag.to_owned()
}

impl fmt::Display for Config {
    /// The plan `pillion check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "output directory: {}", self.output_dir.display())?;
        writeln!(f, "state directory:  {}", self.state_dir.display())?;
        writeln!(f, "issuers:")?;
        for (name, issuer) in &self.issuers {
            match issuer {
                IssuerSpec::LocalCa {
                    cert_file,
                    key_file,
                } => writeln!(
                    f,
                    "  {name}: local CA, certificate {}, key {}",
                    cert_file.display(),
                    key_file.display()
                )?,
                IssuerSpec::Vault(v) => {
                    write!(
                        f,
                        "  {name}: Vault/OpenBao at {}, auth {}",
                        v.address,
                        v.auth.name()
                    )?;
                    if let Some(ns) = &v.namespace {
                        write!(f, ", namespace {ns}")?;
                    }
                    if let Some(p) = &v.pki {
                        let mode = match p.mode {
                            PkiMode::Sign => "sign: the key stays in the pod",
                            PkiMode::Issue => "issue: Vault makes the key",
                        };
                        write!(
                            f,
                            ", PKI {}/{}/{} ({mode})",
                            p.mount,
                            if p.mode == PkiMode::Sign {
                                "sign"
                            } else {
                                "issue"
                            },
                            p.role
                        )?;
                    }
                    if let Some(ca) = &v.ca_file {
                        write!(f, ", trusting {}", ca.display())?;
                    }
                    if v.tls_skip_verify_insecure {
                        write!(f, ", TLS VERIFICATION OFF")?;
                    }
                    writeln!(f)?;
                }
                IssuerSpec::KubernetesCsr(k) => writeln!(
                    f,
                    "  {name}: Kubernetes CertificateSigningRequest API, signer {}, waiting up to {}",
                    k.signer_name,
                    humantime::format_duration(k.timeout)
                )?,
                IssuerSpec::CertManager(c) => writeln!(
                    f,
                    "  {name}: cert-manager CertificateRequest to {} {} ({}), namespace {}, waiting up to {}",
                    c.issuer_ref.kind,
                    c.issuer_ref.name,
                    c.issuer_ref.group,
                    c.namespace.as_deref().unwrap_or("of the pod"),
                    humantime::format_duration(c.timeout)
                )?,
                IssuerSpec::Development => writeln!(
                    f,
                    "  {name}: DEVELOPMENT CA kept in {} (not for production)",
                    self.state_dir.join("dev-ca").display()
                )?,
            }
        }
        writeln!(f, "certificates:")?;
        for c in &self.certificates {
            writeln!(f, "  {} (issuer {}):", c.name, c.issuer)?;
            if let Some(cn) = &c.names.common_name {
                writeln!(f, "    common name: {cn}")?;
            }
            let list = |v: Vec<String>| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(", ")
                }
            };
            writeln!(f, "    DNS names:   {}", list(c.names.dns_names.clone()))?;
            writeln!(
                f,
                "    IPs:         {}",
                list(
                    c.names
                        .ip_addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect()
                )
            )?;
            writeln!(f, "    URIs:        {}", list(c.names.uris.clone()))?;
            writeln!(
                f,
                "    key:         {} ({})",
                c.key_algorithm,
                match c.key_rotation {
                    KeyRotation::Always => "new key with every certificate",
                    KeyRotation::Never => "key kept across renewals",
                }
            )?;
            writeln!(
                f,
                "    lifetime:    {}, {}",
                humantime::format_duration(c.duration),
                c.renew
            )?;
            let dir = c.target_dir(&self.output_dir);
            let fs = &c.files;
            write!(
                f,
                "    files:       {dir}/{{{} {:04o}, {} {:04o}, {} {:04o}",
                fs.certificate,
                fs.mode,
                fs.private_key,
                fs.key_mode,
                fs.ca,
                fs.mode,
                dir = dir.display()
            )?;
            if let Some(b) = &fs.bundle {
                write!(f, ", {b} {:04o}", fs.key_mode)?;
            }
            write!(f, "}}")?;
            if fs.uid.is_some() || fs.gid.is_some() {
                let id = |v: Option<u32>| v.map_or("-".to_owned(), |v| v.to_string());
                write!(f, " owner {}:{}", id(fs.uid), id(fs.gid))?;
            }
            writeln!(f)?;
        }
        if !self.secrets.is_empty() {
            writeln!(f, "secrets:")?;
        }
        for sec in &self.secrets {
            let format = match &sec.format {
                SecretFormat::Json { file } => format!("JSON in {file}"),
                SecretFormat::Env { file } => format!("env lines in {file}"),
                SecretFormat::Files => "one file per key".to_owned(),
                SecretFormat::Raw { key, file } => format!("the value of {key:?} in {file}"),
            };
            writeln!(
                f,
                "  {} (issuer {}): KV {}{}, every {}, {format} ({:04o}) in {}",
                sec.name,
                sec.issuer,
                sec.path,
                sec.kv_version.map_or(String::new(), |v| format!(" v{v}")),
                humantime::format_duration(sec.refresh),
                sec.mode,
                sec.target_dir(&self.output_dir).display()
            )?;
        }
        match &self.reload {
            Some(r) => writeln!(f, "reload: {r}")?,
            None => writeln!(f, "reload: none (the app must watch the files itself)")?,
        }
        match &self.listen {
            Some(a) => writeln!(f, "admin endpoint: http://{a}/ (healthz, readyz, rotate)"),
            None => writeln!(f, "admin endpoint: off"),
        }
    }
}

/// Helpers for the tests of every part of the configuration.
#[cfg(test)]
mod testing {
    use super::{Config, FieldError};

    /// The problems `Config::from_yaml` finds in `yaml`, which must have some.
    pub(super) fn errors(yaml: &str) -> Vec<FieldError> {
        Config::from_yaml(yaml, "test.yaml").unwrap_err().errors
    }

    /// The paths of the problems in `yaml`, in the order they are reported.
    pub(super) fn paths(yaml: &str) -> Vec<String> {
        errors(yaml).into_iter().map(|e| e.path).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{errors, paths};
    use super::*;

    #[test]
    fn minimal_config_gets_defaults_and_the_development_ca() {
        let c = Config::from_yaml(
            "outputDir: /out\ncertificates:\n- name: web\n  dnsNames: [localhost]\n",
            "t",
        )
        .unwrap();
        let cert = &c.certificates[0];
        assert_eq!(cert.issuer, DEVELOPMENT_ISSUER);
        assert_eq!(c.issuers[DEVELOPMENT_ISSUER], IssuerSpec::Development);
        assert_eq!(cert.duration, DEFAULT_DURATION);
        assert_eq!(cert.renew, RenewPolicy::Percentage(33));
        assert_eq!(cert.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(cert.dir, PathBuf::from("web"));
        assert_eq!((cert.files.mode, cert.files.key_mode), (0o644, 0o600));
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let p = paths(
            "outputDir: /out\ncertificates:\n- name: a\n  dnsNames: [ok.example, 'bad_name!']\n  duration: 24x\n- name: b\n  ipAddresses: [300.1.1.1]\n",
        );
        assert_eq!(
            p,
            [
                "certificates[0].dnsNames[1]",
                "certificates[0].duration",
                "certificates[1].ipAddresses[0]"
            ]
        );
    }

    #[test]
    fn a_file_cannot_also_be_the_directory_of_another() {
        let p = paths("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a]\n  files: {certificate: sub, privateKey: sub/tls.key}\n");
        assert_eq!(p, ["certificates[0].files"]);
    }

    #[test]
    fn a_broken_issuer_is_reported_once_not_again_by_its_certificates() {
        let p = paths("outputDir: /o\nissuers:\n  v:\n    vault: {address: 42}\n  w:\n    vault: {address: 'not a url', auth: {token: {file: /t}}, pki: {mount: pki, role: r}}\ncertificates:\n- name: a\n  issuer: v\n  dnsNames: [a]\n- name: b\n  issuer: w\n  dnsNames: [b]\n");
        assert!(p.iter().all(|p| p.starts_with("issuers.")), "{p:?}");
    }

    #[test]
    fn renewal_settings_are_checked() {
        let base = "outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a]\n  duration: 1h\n";
        assert_eq!(
            paths(&format!("{base}  renewBefore: 2h\n")),
            ["certificates[0].renewBefore"]
        );
        assert_eq!(
            paths(&format!(
                "{base}  renewBefore: 1m\n  renewBeforePercentage: 10\n"
            )),
            ["certificates[0].renewBefore"]
        );
        assert_eq!(
            paths(&format!("{base}  renewBeforePercentage: 100\n")),
            ["certificates[0].renewBeforePercentage"]
        );
        assert_eq!(
            paths(&format!("{base}  renewBeforePercentage: 0\n")),
            ["certificates[0].renewBeforePercentage"]
        );
    }

    #[test]
    fn names_are_bounded_and_an_ip_is_not_a_dns_name() {
        let many: Vec<String> = (0..=MAX_NAMES).map(|i| format!("n{i}.example")).collect();
        let p = paths(&format!(
            "outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [{}]\n",
            many.join(", ")
        ));
        assert_eq!(p, ["certificates[0]"]);
        let p = paths("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [10.0.0.1]\n");
        assert_eq!(p, ["certificates[0].dnsNames[0]"]);
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

    #[test]
    fn issuers_must_exist_and_be_chosen_when_several() {
        let base = "outputDir: /o\nissuers:\n  one: {localCa: {certFile: a, keyFile: b}}\n  two: {localCa: {certFile: a, keyFile: b}}\n";
        assert_eq!(
            paths(&format!(
                "{base}certificates:\n- {{name: a, dnsNames: [a]}}\n"
            )),
            ["certificates[0].issuer"]
        );
        let e = errors(&format!(
            "{base}certificates:\n- {{name: a, dnsNames: [a], issuer: three}}\n"
        ));
        assert!(e[0].message.contains("one, two"), "{e:?}");
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let raw = RawConfig {
            output_dir: Some("/o".into()),
            certificates: Some(vec![RawCertificate {
                name: Some("tls".into()),
                dns_names: vec!["bad name".into()],
                ..Default::default()
            }]),
            ..Default::default()
        };
        let e = Config::from_raw(raw, Origin::Flags).unwrap_err();
        assert_eq!(e[0].path, "--dns-name");
    }

    #[test]
    fn reload_needs_exactly_one_target() {
        let base = "outputDir: /o\ncertificates:\n- {name: a, dnsNames: [a]}\n";
        assert_eq!(
            paths(&format!("{base}reload: {{process: nginx, pidFile: /x}}\n")),
            ["reload"]
        );
        assert_eq!(
            paths(&format!(
                "{base}reload: {{signal: SIGFOO, process: nginx}}\n"
            )),
            ["reload.signal"]
        );
        assert_eq!(
            paths(&format!("{base}reload: {{processRegex: '(('}}\n")),
            ["reload.processRegex"]
        );
    }
}
