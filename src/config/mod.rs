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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::keys::KeyAlgorithm;
use crate::reload::ReloadSpec;
use crate::schedule::RenewPolicy;

mod certificates;
mod error;
mod expand;
mod files;
mod issuers;
mod raw;
mod reload;
mod secrets;
mod spec;
mod values;
mod yaml;

use certificates::validate_certificate;
use files::{check_dirs_disjoint, normal, validate_files, DirUse};
use issuers::validate_issuers;
use reload::validate_reload;
use secrets::validate_secret;

use error::Errors;
pub use error::{ConfigErrors, FieldError};
use expand::expand_pod_vars;
pub use expand::POD_VARIABLES;
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

use values::{credential_name, is_valid_name, parse_mode, required_path, required_string};
pub use values::{is_valid_dns_name, parse_duration, MAX_DURATION};
use yaml::parse_yaml;

pub use crate::names::Names;
pub use crate::vault::{PkiMode, PkiSpec, VaultAuth, VaultSpec};

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

        let mut issuers = validate_issuers(&mut errs, raw.issuers, raw.unparsed_issuers);
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
    use super::testing::paths;
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
}
