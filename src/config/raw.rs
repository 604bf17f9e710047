//! The configuration as the user wrote it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    pub output_dir: Option<String>,
    pub state_dir: Option<String>,
    pub issuers: Option<BTreeMap<String, RawIssuer>>,
    pub certificates: Option<Vec<RawCertificate>>,
    pub secrets: Option<Vec<RawSecret>>,
    pub reload: Option<RawReload>,
    pub server: Option<RawServer>,
    /// Issuers whose shape was already reported as invalid: they still
    /// exist for the certificates that name them, so that one mistake is
    /// not reported again as "not a configured issuer".
    #[serde(skip)]
    pub unparsed_issuers: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawServer {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIssuer {
    pub local_ca: Option<RawLocalCa>,
    pub vault: Option<RawVault>,
    pub kubernetes_csr: Option<RawKubernetesCsr>,
    pub cert_manager: Option<RawCertManager>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubernetesCsr {
    pub signer_name: Option<String>,
    pub usages: Option<Vec<String>>,
    pub ca_file: Option<String>,
    pub timeout: Option<String>,
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCertManager {
    pub issuer_ref: Option<RawIssuerRef>,
    pub namespace: Option<String>,
    pub usages: Option<Vec<String>>,
    pub ca_file: Option<String>,
    pub timeout: Option<String>,
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIssuerRef {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVault {
    pub address: Option<String>,
    pub ca_file: Option<String>,
    pub tls_skip_verify_insecure: Option<bool>,
    pub namespace: Option<String>,
    pub timeout: Option<String>,
    pub auth: Option<RawVaultAuth>,
    pub pki: Option<RawPki>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVaultAuth {
    pub token: Option<RawTokenAuth>,
    pub app_role: Option<RawAppRoleAuth>,
    pub kubernetes: Option<RawRoleAuth>,
    pub jwt: Option<RawRoleAuth>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTokenAuth {
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAppRoleAuth {
    pub role_id_file: Option<String>,
    pub secret_id_file: Option<String>,
    pub mount: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRoleAuth {
    pub role: Option<String>,
    pub mount: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPki {
    pub mount: Option<String>,
    pub role: Option<String>,
    pub issuer_ref: Option<String>,
    pub mode: Option<String>,
    pub ca_bundle_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSecret {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub path: Option<String>,
    pub kv_version: Option<u8>,
    pub refresh_interval: Option<String>,
    pub format: Option<String>,
    pub key: Option<String>,
    pub file: Option<String>,
    pub dir: Option<String>,
    pub mode: Option<Value>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLocalCa {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCertificate {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub common_name: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    #[serde(default)]
    pub uris: Vec<String>,
    pub private_key: Option<RawPrivateKey>,
    pub duration: Option<String>,
    pub renew_before: Option<String>,
    pub renew_before_percentage: Option<i64>,
    pub dir: Option<String>,
    pub files: Option<RawFiles>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPrivateKey {
    pub algorithm: Option<String>,
    pub rotation_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFiles {
    pub certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca: Option<String>,
    pub bundle: Option<String>,
    pub mode: Option<Value>,
    pub key_mode: Option<Value>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub pkcs12: Option<RawPkcs12>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPkcs12 {
    pub keystore: Option<String>,
    pub truststore: Option<String>,
    pub password_file: Option<String>,
    pub alias: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawReload {
    pub signal: Option<String>,
    pub process: Option<String>,
    pub process_regex: Option<String>,
    pub pid_file: Option<String>,
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    pub include_pid1: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names serde accepts for `T`, read from its unknown-field
    /// error, so that the list cannot drift from the types.
    fn fields_of<T: for<'de> Deserialize<'de>>() -> Vec<String> {
        let err = serde_yaml_ng::from_str::<T>("__probe__: 1")
            .err()
            .expect("every raw type denies unknown fields");
        let text = err.to_string();
        let expected = text.split("expected").nth(1).unwrap_or_default();
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_readme_documents_every_configuration_key() {
        let readme = include_str!("../../README.md");
        let all = [
            fields_of::<RawConfig>(),
            fields_of::<RawIssuer>(),
            fields_of::<RawLocalCa>(),
            fields_of::<RawVault>(),
            fields_of::<RawVaultAuth>(),
            fields_of::<RawTokenAuth>(),
            fields_of::<RawAppRoleAuth>(),
            fields_of::<RawRoleAuth>(),
            fields_of::<RawPki>(),
            fields_of::<RawKubernetesCsr>(),
            fields_of::<RawCertManager>(),
            fields_of::<RawIssuerRef>(),
            fields_of::<RawCertificate>(),
            fields_of::<RawPrivateKey>(),
            fields_of::<RawFiles>(),
            fields_of::<RawPkcs12>(),
            fields_of::<RawSecret>(),
            fields_of::<RawReload>(),
            fields_of::<RawServer>(),
        ];
        let mut missing = Vec::new();
        for field in all.iter().flatten() {
            let documented =
                readme.contains(&format!("{field}:")) || readme.contains(&format!("{{{field}:"));
            if !documented {
                missing.push(field.clone());
            }
        }
        assert!(
            all.iter().all(|f| !f.is_empty()),
            "could not read the field lists: {all:?}"
        );
        assert_eq!(
            all[0],
            [
                "outputDir",
                "stateDir",
                "issuers",
                "certificates",
                "secrets",
                "reload",
                "server"
            ]
        );
        assert!(
            missing.is_empty(),
            "README.md does not document these configuration keys: {missing:?}"
        );
    }
}
