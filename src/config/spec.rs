//! The validated configuration's parts, and the defaults filled in for what
//! the user left out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::keys::KeyAlgorithm;
use crate::names::Names;
use crate::schedule::RenewPolicy;
use crate::vault::VaultSpec;

/// Lifetime asked for when a certificate names none: one day, short enough that
/// a leaked key is not useful for long, long enough to ride out a CA outage.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Renew when a third of the issued lifetime is left (at 2/3 of it), as
/// smallstep autocert and cert-manager do.
pub const DEFAULT_RENEW_BEFORE_PERCENTAGE: u8 = 33;
/// Certificates shorter than this cannot be renewed in time by any schedule.
pub const MIN_DURATION: Duration = Duration::from_secs(2);
/// The certificate chain's file name. File names follow cert-manager's
/// Secret keys, which most apps already expect.
pub const DEFAULT_CERTIFICATE_FILE: &str = "tls.crt";
/// The private key's file name (cert-manager's `tls.key`).
pub const DEFAULT_PRIVATE_KEY_FILE: &str = "tls.key";
/// The trust anchors' file name (cert-manager's `ca.crt`).
pub const DEFAULT_CA_FILE: &str = "ca.crt";
/// Files without a private key (certificate, CA, truststore) are world-readable:
/// they hold nothing secret, and the app may run as another user.
pub const DEFAULT_MODE: u32 = 0o644;
/// Files holding a private key (the key and the bundle) are owner-only.
pub const DEFAULT_KEY_MODE: u32 = 0o600;
/// The issuer name used when the configuration names none.
pub const DEVELOPMENT_ISSUER: &str = "development";
/// The most subject alternative names one certificate may list. Public CAs
/// stop at 100 (Let's Encrypt, AWS); thousands make CSRs that CAs refuse
/// and verification that takes the CPU for seconds.
pub const MAX_NAMES: usize = 100;

/// How often a secret is read again when the configuration does not say.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Where Kubernetes mounts the pod's service-account token.
pub const DEFAULT_KUBERNETES_TOKEN_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Per-request timeout to Vault when the configuration names none.
pub const DEFAULT_VAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the pod's service-account CA is mounted; the trust anchor of the
/// built-in kube-controller-manager signers.
pub const SERVICE_ACCOUNT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// How long a cluster CA may take to approve and sign before the attempt is
/// abandoned (and retried with backoff).
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(300);

/// A validated issuer: where certificates (and, for Vault, secrets) come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerSpec {
    /// A CA whose certificate and key are read from PEM files.
    LocalCa {
        /// The signing CA's certificate, then its chain (`localCa.certFile`).
        cert_file: PathBuf,
        /// The signing CA's private key (`localCa.keyFile`).
        key_file: PathBuf,
    },
    /// A CA pillion creates and keeps under its state directory. Development only.
    Development,
    /// A Vault or OpenBao server: PKI certificates and KV secrets.
    Vault(Box<VaultSpec>),
    /// The Kubernetes CertificateSigningRequest API.
    KubernetesCsr(KubernetesCsrSpec),
    /// cert-manager's CertificateRequest.
    CertManager(CertManagerSpec),
    /// Certificates another component writes into a directory.
    Files(FilesIssuerSpec),
}

/// Where a `files` issuer reads: a key and its chain written by another
/// component, and the anchors they must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesIssuerSpec {
    /// The directory (the kubelet's `..data` layout is followed when there).
    pub dir: PathBuf,
    /// How the key and the chain are laid out in it.
    pub layout: FilesLayout,
    /// The trust anchors.
    pub anchors: FilesAnchors,
    /// How often the directory is looked at.
    pub poll_interval: Duration,
}

/// The files of a key and its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesLayout {
    /// One PEM file, the key then the chain (the kubelet's podCertificate
    /// `credentialBundle`).
    Bundle(String),
    /// The chain and the key in two files.
    Pair {
        /// The chain, leaf first.
        certificate: String,
        /// The key.
        private_key: String,
    },
}

/// Where a `files` issuer's trust anchors are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilesAnchors {
    /// A file in the watched directory, read with the rest (`ca`).
    InDir(String),
    /// A file elsewhere (`caFile`).
    File(PathBuf),
}

/// An issuer that asks the Kubernetes CertificateSigningRequest API
/// (`certificates.k8s.io/v1`) for certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesCsrSpec {
    /// The signer to ask, `domain/path` (e.g. `kubernetes.io/kube-apiserver-client`).
    pub signer_name: String,
    /// Default: digital signature (+ key encipherment for RSA), server auth, client auth.
    pub usages: Option<Vec<String>>,
    /// Trust anchors for `ca.crt`; the CSR API returns none.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for approval and signing before giving the attempt up.
    pub timeout: Duration,
    /// A kubeconfig file; default: `$KUBECONFIG` / `~/.kube/config`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
}

/// An issuer that asks cert-manager (`cert-manager.io/v1` CertificateRequest)
/// for certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertManagerSpec {
    /// The cert-manager issuer that signs.
    pub issuer_ref: IssuerRef,
    /// Default: $POD_NAMESPACE, else the client's default namespace.
    pub namespace: Option<String>,
    /// Key usages to request; default: digital signature (plus key encipherment
    /// for RSA), server auth and client auth.
    pub usages: Option<Vec<String>>,
    /// Trust anchors for `ca.crt` when the issuer sets no `status.ca`.
    pub ca_file: Option<PathBuf>,
    /// How long to wait for approval and signing before giving the attempt up.
    pub timeout: Duration,
    /// A kubeconfig file; default: `$KUBECONFIG` / `~/.kube/config`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
}

/// A reference to a cert-manager issuer, as in a CertificateRequest's
/// `spec.issuerRef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRef {
    /// The issuer's name.
    pub name: String,
    /// `Issuer` (the default) or `ClusterIssuer`, or an external issuer's kind.
    pub kind: String,
    /// The issuer's API group; default `cert-manager.io`.
    pub group: String,
}

/// `vault.tokenSink`: the token of a Vault issuer, published as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSinkSpec {
    /// Its name in logs and status (`<issuer>-token`), unique among credentials.
    pub name: String,
    /// The Vault issuer whose token it is.
    pub issuer: String,
    /// Relative to the output directory.
    pub dir: PathBuf,
    /// The file name.
    pub file: String,
    /// The file's mode.
    pub mode: u32,
    /// The owner given to the file, if any.
    pub uid: Option<u32>,
    /// The group given to the file, if any.
    pub gid: Option<u32>,
}

impl TokenSinkSpec {
    /// The directory the token is published into.
    pub fn target_dir(&self, output_dir: &Path) -> PathBuf {
        output_dir.join(&self.dir)
    }
}

/// A file rendered from a template, published with its credential's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The file name, relative to the credential's directory.
    pub file: String,
    /// Where the template comes from.
    pub source: TemplateSource,
    /// The rendered file's mode.
    pub mode: u32,
    /// Where it was configured (`secrets[0].templates[1]`), for messages.
    pub field: String,
}

/// Where a template's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    /// Written in the configuration (`template`).
    Inline(String),
    /// Read from this file when rendered (`templateFile`), e.g. a ConfigMap
    /// mount.
    File(PathBuf),
}

impl TemplateSpec {
    /// The name a template error starts with: the template file, or the
    /// configuration field of an inline template.
    pub fn origin(&self) -> String {
        match &self.source {
            TemplateSource::Inline(_) => format!("{}.template", self.field),
            TemplateSource::File(p) => p.display().to_string(),
        }
    }
}

/// A KV secret to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The secret's name in logs and status, unique among all credentials.
    pub name: String,
    /// The Vault issuer it is read from.
    pub issuer: String,
    /// As the user writes it for `bao kv get`: mount and path, without `data/`.
    pub path: String,
    /// KV version 1 or 2; `None`: detected from the mount.
    pub kv_version: Option<u8>,
    /// How often the secret is read again.
    pub refresh: Duration,
    /// How the secret is written.
    pub format: SecretFormat,
    /// Relative to the output directory; `.` is the output directory itself.
    pub dir: PathBuf,
    /// The mode of the files written.
    pub mode: u32,
    /// The owner given to the files, if any.
    pub uid: Option<u32>,
    /// The group given to the files, if any.
    pub gid: Option<u32>,
    /// Files rendered from templates, published with the secret's.
    pub templates: Vec<TemplateSpec>,
    /// For a leased secret: revoke the lease when `run` stops cleanly.
    pub revoke_on_shutdown: bool,
}

/// How a KV secret is written into its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFormat {
    /// The data object as JSON.
    Json {
        /// The file name.
        file: String,
    },
    /// `KEY="value"` lines.
    Env {
        /// The file name.
        file: String,
    },
    /// One file per key.
    Files,
    /// One key's value.
    Raw {
        /// The key whose value is written.
        key: String,
        /// The file name.
        file: String,
    },
}

impl SecretSpec {
    /// The directory this secret is published into.
    pub fn target_dir(&self, output_dir: &Path) -> PathBuf {
        if self.dir == Path::new(".") {
            output_dir.to_path_buf()
        } else {
            output_dir.join(&self.dir)
        }
    }
}

/// When the private key is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRotation {
    /// A new key with every certificate (the default; as cert-manager's `Always`).
    Always,
    /// Keep the key on disk across renewals while it still matches the config.
    Never,
}

/// A validated certificate: what to ask for, from whom, when to renew it and
/// where its files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    /// The certificate's name in logs and status, unique among all credentials.
    pub name: String,
    /// The issuer it is obtained from; a key of [`Config::issuers`](super::Config::issuers).
    pub issuer: String,
    /// The subject: common name and alternative names, pod variables expanded.
    pub names: Names,
    /// The private key's algorithm.
    pub key_algorithm: KeyAlgorithm,
    /// When the private key is replaced.
    pub key_rotation: KeyRotation,
    /// The lifetime asked for.
    pub duration: Duration,
    /// When to renew.
    pub renew: RenewPolicy,
    /// Relative to the output directory; `.` is the output directory itself.
    pub dir: PathBuf,
    /// The files written into `dir`.
    pub files: FileSpec,
    /// Files rendered from templates, published with the certificate's.
    pub templates: Vec<TemplateSpec>,
    /// Its resource names in the Secret Discovery Service (when `sds` is on).
    pub sds: SdsNames,
}

/// A certificate's two resources in the Secret Discovery Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsNames {
    /// The `tls_certificate` (chain and key); default: the certificate's name.
    pub certificate: String,
    /// The `validation_context` (its trust anchors); default: `<name>-ca`.
    pub validation_context: String,
}

impl SdsNames {
    /// The default names of the certificate `name`.
    pub fn of(name: &str) -> SdsNames {
        SdsNames {
            certificate: name.to_owned(),
            validation_context: format!("{name}-ca"),
        }
    }
}

/// `workloadApi`: where pillion serves the SPIFFE Workload API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadApiSpec {
    /// The Unix socket (absolute: a relative one is resolved against outputDir).
    pub socket: PathBuf,
    /// The socket's mode.
    pub mode: u32,
    /// The socket's owner, if set.
    pub uid: Option<u32>,
    /// The socket's group, if set.
    pub gid: Option<u32>,
    /// The certificates served as X.509-SVIDs, by name, the default first.
    pub svids: Vec<String>,
}

/// `sds`: where pillion serves Envoy's Secret Discovery Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSpec {
    /// The Unix socket (absolute: a relative one is resolved against outputDir).
    pub socket: PathBuf,
    /// A loopback address to serve on as well.
    pub listen: Option<SocketAddr>,
    /// The socket's mode.
    pub mode: u32,
    /// The socket's owner, if set.
    pub uid: Option<u32>,
    /// The socket's group, if set.
    pub gid: Option<u32>,
}

/// The files a certificate is published as: names relative to its directory,
/// modes and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The certificate chain, leaf first.
    pub certificate: String,
    /// The private key.
    pub private_key: String,
    /// The trust anchors.
    pub ca: String,
    /// The key and chain in one file, if asked for.
    pub bundle: Option<String>,
    /// The mode of files without a private key.
    pub mode: u32,
    /// The mode of files holding the private key (the key, the bundle, the keystore).
    pub key_mode: u32,
    /// The owner given to the files, if any.
    pub uid: Option<u32>,
    /// The group given to the files, if any.
    pub gid: Option<u32>,
    /// PKCS#12 keystore and truststore, if asked for.
    pub pkcs12: Option<Pkcs12Spec>,
}

/// PKCS#12 files for Java apps: a keystore (key + chain) and/or a
/// truststore (the CA), encrypted with the password in `password_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs12Spec {
    /// The keystore's file name: the key and its chain.
    pub keystore: Option<String>,
    /// The truststore's file name: the trust anchors.
    pub truststore: Option<String>,
    /// The file holding the stores' password (read when writing, not when parsing).
    pub password_file: PathBuf,
    /// The keystore alias of the key entry.
    pub alias: String,
}

impl CertificateSpec {
    /// The directory this credential is published into.
    pub fn target_dir(&self, output_dir: &Path) -> PathBuf {
        if self.dir == Path::new(".") {
            output_dir.to_path_buf()
        } else {
            output_dir.join(&self.dir)
        }
    }
}

impl SecretFormat {
    /// The one file this format writes, if it writes exactly one.
    pub fn file(&self) -> Option<&str> {
        match self {
            SecretFormat::Json { file }
            | SecretFormat::Env { file }
            | SecretFormat::Raw { file, .. } => Some(file),
            SecretFormat::Files => None,
        }
    }
}

impl FileSpec {
    /// Every file name this credential publishes.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.with_modes().map(|(name, _)| name)
    }

    /// Each file with its mode: files holding the key get `key_mode`.
    pub fn with_modes(&self) -> impl Iterator<Item = (&str, u32)> {
        let p12 = self
            .pkcs12
            .as_ref()
            .map(|p| {
                [
                    p.keystore.as_ref().map(|k| (k, self.key_mode)),
                    p.truststore.as_ref().map(|t| (t, self.mode)),
                ]
            })
            .unwrap_or_default();
        [
            Some((&self.certificate, self.mode)),
            Some((&self.private_key, self.key_mode)),
            Some((&self.ca, self.mode)),
            self.bundle.as_ref().map(|b| (b, self.key_mode)),
        ]
        .into_iter()
        .chain(p12)
        .flatten()
        .map(|(name, mode)| (name.as_str(), mode))
    }
}

/// Where the development CA lives when no `stateDir` is given: outside any
/// volume shared with the app.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("pillion");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/state/pillion");
    }
    PathBuf::from("/var/lib/pillion")
}
