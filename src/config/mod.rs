//! Configuration: the raw YAML shape, and its validation into a [`Config`].
//!
//! Parsing happens in two steps, as in ripgrep's LowArgs -> HiArgs: serde reads
//! the YAML (or the command-line flags) into `Raw*` structs that mirror what the
//! user wrote, then [`Config::from_raw`] checks every field and reports *every*
//! problem at once, each with its path (`certificates[1].dnsNames[0]`). Nothing
//! here reads key files or touches the network or the output directory; see
//! [`crate::preflight::preflight`] for the checks that do.
//!
//! The layers, bottom to top, each file with its tests:
//!
//! - `raw`: the serde shapes, as written ([`RawConfig`] and the `Raw*` parts);
//!   the command-line flags are mapped onto the same shapes by [`crate::cli`].
//! - `yaml`: reading the document into those shapes, part by part, so that one
//!   typo hides nothing; refuses documents built to make the parser slow.
//! - `spec`: the validated types ([`CertificateSpec`], [`IssuerSpec`], ...) and
//!   the defaults filled in for what the user left out.
//! - `error`: [`FieldError`], [`ConfigErrors`] and the collector the
//!   validators share.
//! - `values` and `expand`: small parsers (durations, modes, names) and
//!   `${POD_*}` expansion.
//! - `certificates`, `issuers`, `secrets`, `files`, `reload`: validation, one
//!   area each, called in order by [`Config::from_raw`].
//! - `plan`: what `pillion check` prints ([`Config`]'s `Display`), and the
//!   flag a field came from in flag mode.

use std::collections::{BTreeMap, BTreeSet};
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
mod plan;
mod raw;
mod reload;
mod sds;
mod secrets;
mod spec;
mod templates;
mod tokens;
mod values;
mod workload;
mod yaml;

use certificates::validate_certificate;
use files::{check_dirs_disjoint, normal, validate_files, DirUse};
use issuers::validate_issuers;
use plan::flag_for_path;
use reload::validate_reload;
use sds::{check_sds_names_unique, validate_sds};
pub use sds::{DEFAULT_SDS_SOCKET, DEFAULT_SOCKET_MODE};
use secrets::validate_secret;
use templates::check_inline_templates;
use tokens::validate_token_sink;
use workload::validate_workload_api;
pub use workload::{spiffe_id, DEFAULT_WORKLOAD_SOCKET};

use error::Errors;
pub use error::{ConfigErrors, FieldError};
use expand::expand_pod_vars;
pub use expand::POD_VARIABLES;
pub use raw::{
    RawAppRoleAuth, RawCertManager, RawCertificate, RawCertificateSds, RawConfig, RawFiles,
    RawFilesIssuer, RawIssuer, RawIssuerRef, RawKubernetesCsr, RawLocalCa, RawPkcs12, RawPki,
    RawPrivateKey, RawReload, RawRoleAuth, RawSds, RawSecret, RawServer, RawTemplate, RawTokenAuth,
    RawTokenSink, RawVault, RawVaultAuth, RawWorkloadApi,
};
pub use spec::{
    default_state_dir, CertManagerSpec, CertificateSpec, FileSpec, FilesAnchors, FilesIssuerSpec,
    FilesLayout, IssuerRef, IssuerSpec, KeyRotation, KubernetesCsrSpec, Pkcs12Spec, SdsNames,
    SdsSpec, SecretFormat, SecretSpec, TemplateSource, TemplateSpec, TokenSinkSpec,
    WorkloadApiSpec, DEFAULT_CA_FILE, DEFAULT_CERTIFICATE_FILE, DEFAULT_CLUSTER_TIMEOUT,
    DEFAULT_DURATION, DEFAULT_KEY_MODE, DEFAULT_KUBERNETES_TOKEN_FILE, DEFAULT_MODE,
    DEFAULT_PRIVATE_KEY_FILE, DEFAULT_REFRESH_INTERVAL, DEFAULT_RENEW_BEFORE_PERCENTAGE,
    DEFAULT_VAULT_TIMEOUT, DEVELOPMENT_ISSUER, MAX_NAMES, MIN_DURATION, SERVICE_ACCOUNT_CA_FILE,
};

use values::{credential_name, is_valid_name, parse_mode, required_path, required_string};
pub use values::{is_valid_dns_name, parse_duration, MAX_DURATION};
use yaml::parse_yaml;

pub use crate::names::Names;
pub use crate::vault::{PkiMode, PkiSpec, VaultAuth, VaultSpec};

/// A validated configuration: everything pillion will do.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory shared with the app, where credentials are published.
    pub output_dir: PathBuf,
    /// pillion's own state (the development CA); never shared with the app.
    pub state_dir: PathBuf,
    /// The issuers by name; holds [`DEVELOPMENT_ISSUER`] when none was configured.
    pub issuers: BTreeMap<String, IssuerSpec>,
    /// The certificates to keep fresh, in configuration order.
    pub certificates: Vec<CertificateSpec>,
    /// The Vault KV secrets to publish, in configuration order.
    pub secrets: Vec<SecretSpec>,
    /// The Vault tokens to publish (`vault.tokenSink`), by issuer name.
    pub token_sinks: Vec<TokenSinkSpec>,
    /// How to tell the app its files changed; `None`: the app watches them.
    pub reload: Option<ReloadSpec>,
    /// Where the admin endpoint listens; `None` turns it off.
    pub listen: Option<SocketAddr>,
    /// Where Envoy's Secret Discovery Service is served; `None` turns it off.
    pub sds: Option<SdsSpec>,
    /// Where the SPIFFE Workload API is served; `None` turns it off.
    pub workload_api: Option<WorkloadApiSpec>,
}

/// Where a configuration came from, which decides how field paths are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A YAML file: paths are YAML paths (`certificates[0].dnsNames[1]`).
    File,
    /// Command-line flags: paths are the flags (`--dns-name`).
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

    /// Validates a raw configuration, collecting every problem. `origin`
    /// decides how paths are shown and where a certificate's directory
    /// defaults to (its name for a file, the output directory for flags).
    ///
    /// # Errors
    /// Every invalid or missing field, each with its path (or flag).
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

        let mut raw_issuers = raw.issuers;
        let raw_sinks: Vec<(String, RawTokenSink)> = raw_issuers
            .iter_mut()
            .flatten()
            .filter_map(|(name, i)| Some((name.clone(), i.vault.as_mut()?.token_sink.take()?)))
            .collect();
        let mut issuers = validate_issuers(&mut errs, raw_issuers, raw.unparsed_issuers);
        let token_sinks: Vec<TokenSinkSpec> = raw_sinks
            .into_iter()
            .map(|(issuer, raw)| validate_token_sink(&mut errs, &issuer, raw))
            .collect();
        let implicit_issuer = match issuers.len() {
            0 => {
                issuers.insert(DEVELOPMENT_ISSUER.to_owned(), IssuerSpec::Development);
                Some(DEVELOPMENT_ISSUER.to_owned())
            }
            1 => issuers.keys().next().cloned(),
            _ => None,
        };

        let sds = raw.sds.map(|s| validate_sds(&mut errs, s, &output_dir));
        let raw_certs = raw.certificates.unwrap_or_default();
        if raw_certs.is_empty()
            && raw.secrets.as_ref().is_none_or(Vec::is_empty)
            && token_sinks.is_empty()
        {
            errs.add(
                "certificates",
                "is empty: configure at least one certificate or secret",
            );
        }
        let mut certificates = Vec::new();
        let mut seen_names: BTreeSet<String> = token_sinks.iter().map(|t| t.name.clone()).collect();
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
        if sds.is_some() {
            check_sds_names_unique(&mut errs, &certificates);
        }
        let workload_api = raw
            .workload_api
            .map(|w| validate_workload_api(&mut errs, w, &certificates, &output_dir));
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
                files: c
                    .files
                    .names()
                    .chain(c.templates.iter().map(|t| t.file.as_str()))
                    .map(str::to_owned)
                    .collect(),
            })
            .collect();
        dirs.extend(secrets.iter().map(|(i, s)| {
            DirUse {
                field: format!("secrets[{i}].dir"),
                name: s.name.clone(),
                dir: normal(&s.dir),
                files: s
                    .format
                    .file()
                    .into_iter()
                    .chain(s.templates.iter().map(|t| t.file.as_str()))
                    .map(str::to_owned)
                    .collect(),
            }
        }));
        dirs.extend(token_sinks.iter().map(|t| DirUse {
            field: format!("issuers.{}.vault.tokenSink.dir", t.issuer),
            name: t.name.clone(),
            dir: normal(&t.dir),
            files: vec![t.file.clone()],
        }));
        check_dirs_disjoint(&mut errs, &dirs);
        let secrets: Vec<SecretSpec> = secrets.into_iter().map(|(_, s)| s).collect();
        let certificates: Vec<CertificateSpec> = certificates.into_iter().map(|(_, c)| c).collect();
        check_inline_templates(&mut errs, &certificates, &secrets);

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
                token_sinks,
                reload,
                listen,
                sds,
                workload_api,
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
                templates: Vec::new(),
                sds: SdsNames::of("tls"),
            }],
            secrets: Vec::new(),
            token_sinks: Vec::new(),
            reload: None,
            listen: None,
            sds: None,
            workload_api: None,
        }
    }

    /// The issuer a certificate uses. Validation guarantees it exists.
    pub fn issuer_of(&self, cert: &CertificateSpec) -> &IssuerSpec {
        &self.issuers[&cert.issuer]
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
}
