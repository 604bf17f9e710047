//! The validated configuration's parts, and the defaults filled in for what
//! the user left out.

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
/// File names follow cert-manager's Secret keys, which most apps already expect.
pub const DEFAULT_CERTIFICATE_FILE: &str = "tls.crt";
pub const DEFAULT_PRIVATE_KEY_FILE: &str = "tls.key";
pub const DEFAULT_CA_FILE: &str = "ca.crt";
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerSpec {
    /// A CA whose certificate and key are read from PEM files.
    LocalCa {
        cert_file: PathBuf,
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
}

/// Where the pod's service-account CA is mounted; the trust anchor of the
/// built-in kube-controller-manager signers.
/// Where Kubernetes mounts the pod's service-account token.
pub const DEFAULT_KUBERNETES_TOKEN_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Per-request timeout to Vault when the configuration names none.
pub const DEFAULT_VAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const SERVICE_ACCOUNT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// How long a cluster CA may take to approve and sign before the attempt is
/// abandoned (and retried with backoff).
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesCsrSpec {
    pub signer_name: String,
    /// Default: digital signature (+ key encipherment for RSA), server auth, client auth.
    pub usages: Option<Vec<String>>,
    /// Trust anchors for `ca.crt`; the CSR API returns none.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertManagerSpec {
    pub issuer_ref: IssuerRef,
    /// Default: $POD_NAMESPACE, else the client's default namespace.
    pub namespace: Option<String>,
    pub usages: Option<Vec<String>>,
    /// Trust anchors for `ca.crt` when the issuer sets no `status.ca`.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRef {
    pub name: String,
    pub kind: String,
    pub group: String,
}

/// A KV secret to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub name: String,
    pub issuer: String,
    /// As the user writes it for `bao kv get`: mount and path, without `data/`.
    pub path: String,
    pub kv_version: Option<u8>,
    pub refresh: Duration,
    pub format: SecretFormat,
    pub dir: PathBuf,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFormat {
    /// The data object as JSON.
    Json { file: String },
    /// `KEY="value"` lines.
    Env { file: String },
    /// One file per key.
    Files,
    /// One key's value.
    Raw { key: String, file: String },
}

impl SecretSpec {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub name: String,
    pub issuer: String,
    pub names: Names,
    pub key_algorithm: KeyAlgorithm,
    pub key_rotation: KeyRotation,
    pub duration: Duration,
    pub renew: RenewPolicy,
    /// Relative to the output directory; `.` is the output directory itself.
    pub dir: PathBuf,
    pub files: FileSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub certificate: String,
    pub private_key: String,
    pub ca: String,
    pub bundle: Option<String>,
    pub mode: u32,
    pub key_mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pkcs12: Option<Pkcs12Spec>,
}

/// PKCS#12 files for Java apps: a keystore (key + chain) and/or a
/// truststore (the CA), encrypted with the password in `password_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs12Spec {
    pub keystore: Option<String>,
    pub truststore: Option<String>,
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
