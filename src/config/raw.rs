//! The configuration as the user wrote it: serde shapes that mirror the YAML
//! keys (camelCase) and deny unknown ones. Every field is optional here, so
//! that a missing one is reported by validation with its path, not by serde.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The whole configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConfig {
    /// `outputDir`: the directory shared with the app.
    pub output_dir: Option<String>,
    /// `stateDir`: pillion's own state (the development CA).
    pub state_dir: Option<String>,
    /// `issuers`: the issuers by name.
    pub issuers: Option<BTreeMap<String, RawIssuer>>,
    /// `certificates`: the certificates to keep fresh.
    pub certificates: Option<Vec<RawCertificate>>,
    /// `secrets`: the Vault KV secrets to publish.
    pub secrets: Option<Vec<RawSecret>>,
    /// `reload`: how to tell the app.
    pub reload: Option<RawReload>,
    /// `server`: the admin endpoint.
    pub server: Option<RawServer>,
    /// `sds`: Envoy's Secret Discovery Service.
    pub sds: Option<RawSds>,
    /// `workloadApi`: the SPIFFE Workload API.
    pub workload_api: Option<RawWorkloadApi>,
    /// Issuers whose shape was already reported as invalid: they still
    /// exist for the certificates that name them, so that one mistake is
    /// not reported again as "not a configured issuer".
    #[serde(skip)]
    pub unparsed_issuers: Vec<String>,
}

/// `server`: the admin endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawServer {
    /// `server.listen`: the address and port to serve on.
    pub listen: Option<String>,
}

/// `sds`: the Envoy Secret Discovery Service pillion serves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSds {
    /// `sds.socket`: the Unix socket, absolute or relative to outputDir.
    pub socket: Option<String>,
    /// `sds.listen`: a loopback address and port to serve on as well.
    pub listen: Option<String>,
    /// `sds.mode`: the socket's mode (octal string).
    pub mode: Option<Value>,
    /// `sds.uid`: the socket's owner.
    pub uid: Option<u32>,
    /// `sds.gid`: the socket's group.
    pub gid: Option<u32>,
}

/// `workloadApi`: the SPIFFE Workload API pillion serves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawWorkloadApi {
    /// `workloadApi.socket`: the Unix socket, absolute or relative to outputDir.
    pub socket: Option<String>,
    /// `workloadApi.mode`: the socket's mode (octal string).
    pub mode: Option<Value>,
    /// `workloadApi.uid`: the socket's owner.
    pub uid: Option<u32>,
    /// `workloadApi.gid`: the socket's group.
    pub gid: Option<u32>,
    /// `workloadApi.svids`: the certificates served as X.509-SVIDs, by name.
    pub svids: Option<Vec<String>>,
}

/// `certificates[N].sds`: the certificate's SDS resource names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCertificateSds {
    /// `sds.certificate`: the name of its `tls_certificate` resource.
    pub certificate: Option<String>,
    /// `sds.validationContext`: the name of its trust anchors' resource.
    pub validation_context: Option<String>,
}

/// One entry of `issuers`: exactly one kind of issuer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIssuer {
    /// `issuers.NAME.localCa`: a local CA.
    pub local_ca: Option<RawLocalCa>,
    /// `issuers.NAME.vault`: a Vault or OpenBao server.
    pub vault: Option<RawVault>,
    /// `issuers.NAME.kubernetesCsr`: the Kubernetes CSR API.
    pub kubernetes_csr: Option<RawKubernetesCsr>,
    /// `issuers.NAME.certManager`: cert-manager.
    pub cert_manager: Option<RawCertManager>,
    /// `issuers.NAME.files`: certificates another component writes.
    pub files: Option<RawFilesIssuer>,
}

/// `issuers.NAME.files`: a directory where another component writes a key
/// and its certificate (the kubelet's podCertificate volume, cert-manager's
/// csi-driver, a Secret volume).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFilesIssuer {
    /// `files.dir`: the directory to watch (kubelet atomic-writer layout or plain files).
    pub dir: Option<String>,
    /// `files.credentialBundle`: one PEM file with the key, then the chain (podCertificate).
    pub credential_bundle: Option<String>,
    /// `files.certificate`: the chain's file (default tls.crt).
    pub certificate: Option<String>,
    /// `files.privateKey`: the key's file (default tls.key).
    pub private_key: Option<String>,
    /// `files.ca`: the trust anchors' file in the directory (e.g. ca.crt).
    pub ca: Option<String>,
    /// `files.caFile`: the trust anchors' file elsewhere.
    pub ca_file: Option<String>,
    /// `files.pollInterval`: how often the directory is looked at (a duration).
    pub poll_interval: Option<String>,
}

/// `issuers.NAME.kubernetesCsr`: the Kubernetes CertificateSigningRequest API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubernetesCsr {
    /// `kubernetesCsr.signerName`: the signer to ask (`domain/path`).
    pub signer_name: Option<String>,
    /// `kubernetesCsr.usages`: key usages to request.
    pub usages: Option<Vec<String>>,
    /// `kubernetesCsr.caFile`: trust anchors (PEM).
    pub ca_file: Option<String>,
    /// `kubernetesCsr.timeout`: how long to wait (a duration).
    pub timeout: Option<String>,
    /// `kubernetesCsr.kubeconfig`: a kubeconfig file instead of the default client configuration.
    pub kubeconfig: Option<String>,
}

/// `issuers.NAME.certManager`: cert-manager's CertificateRequest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCertManager {
    /// `certManager.issuerRef`: the issuer that signs.
    pub issuer_ref: Option<RawIssuerRef>,
    /// `certManager.namespace`: the namespace of the CertificateRequest (default: the pod's).
    pub namespace: Option<String>,
    /// `certManager.usages`: key usages to request.
    pub usages: Option<Vec<String>>,
    /// `certManager.caFile`: trust anchors (PEM).
    pub ca_file: Option<String>,
    /// `certManager.timeout`: how long to wait (a duration).
    pub timeout: Option<String>,
    /// `certManager.kubeconfig`: a kubeconfig file instead of the default client configuration.
    pub kubeconfig: Option<String>,
}

/// `certManager.issuerRef`: the cert-manager issuer that signs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIssuerRef {
    /// `issuerRef.name`: the issuer's name.
    pub name: Option<String>,
    /// `issuerRef.kind`: the issuer kind (default `Issuer`).
    pub kind: Option<String>,
    /// `issuerRef.group`: the API group (default `cert-manager.io`).
    pub group: Option<String>,
}

/// `issuers.NAME.vault`: a Vault or OpenBao server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVault {
    /// `vault.address`: the server's URL.
    pub address: Option<String>,
    /// `vault.caFile`: the CA that signed Vault's TLS certificate.
    pub ca_file: Option<String>,
    /// `vault.tlsSkipVerifyInsecure`: turns TLS verification off; never in production.
    pub tls_skip_verify_insecure: Option<bool>,
    /// `vault.namespace`: the Vault Enterprise / OpenBao namespace.
    pub namespace: Option<String>,
    /// `vault.timeout`: per-request timeout (a duration).
    pub timeout: Option<String>,
    /// `vault.auth`: how to log in.
    pub auth: Option<RawVaultAuth>,
    /// `vault.pki`: the PKI engine, for certificates.
    pub pki: Option<RawPki>,
    /// `vault.tokenSink`: write pillion's Vault token to a file for the app.
    pub token_sink: Option<RawTokenSink>,
}

/// `vault.tokenSink`: pillion's current Vault token as a file (Vault Agent's
/// file sink), for apps that call Vault themselves.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTokenSink {
    /// `tokenSink.dir`: the directory, relative to outputDir (default `<issuer>-token`).
    pub dir: Option<String>,
    /// `tokenSink.file`: the file name (default `token`).
    pub file: Option<String>,
    /// `tokenSink.mode`: the file mode (octal; default 0600).
    pub mode: Option<Value>,
    /// `tokenSink.uid`: the owner given to the file.
    pub uid: Option<u32>,
    /// `tokenSink.gid`: the group given to the file.
    pub gid: Option<u32>,
}

/// `vault.auth`: how pillion logs in to Vault; exactly one method.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawVaultAuth {
    /// `auth.token`: token login.
    pub token: Option<RawTokenAuth>,
    /// `auth.appRole`: AppRole login.
    pub app_role: Option<RawAppRoleAuth>,
    /// `auth.kubernetes`: Kubernetes service-account login.
    pub kubernetes: Option<RawRoleAuth>,
    /// `auth.jwt`: JWT login.
    pub jwt: Option<RawRoleAuth>,
}

/// `vault.auth.token`: a token read from a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTokenAuth {
    /// `token.file`: the file holding the token.
    pub file: Option<String>,
}

/// `vault.auth.appRole`: AppRole login.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAppRoleAuth {
    /// `appRole.roleIdFile`: the file holding the role ID.
    pub role_id_file: Option<String>,
    /// `appRole.secretIdFile`: the file holding the secret ID.
    pub secret_id_file: Option<String>,
    /// `appRole.mount`: the mount path of the auth method or engine.
    pub mount: Option<String>,
}

/// `vault.auth.kubernetes` or `vault.auth.jwt`: login with a service-account token or JWT.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRoleAuth {
    /// `role`: the role to use.
    pub role: Option<String>,
    /// `mount`: the mount path of the auth method or engine.
    pub mount: Option<String>,
    /// `tokenFile`: the file holding the token to log in with.
    pub token_file: Option<String>,
}

/// `vault.pki`: the PKI secrets engine that issues certificates.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPki {
    /// `pki.mount`: the PKI mount path.
    pub mount: Option<String>,
    /// `pki.role`: the role to use.
    pub role: Option<String>,
    /// `pki.issuerRef`: the PKI issuer to use, sent as `issuer_ref`.
    pub issuer_ref: Option<String>,
    /// `pki.mode`: sign (the key stays in the pod) or issue (Vault makes the key).
    pub mode: Option<String>,
    /// `pki.caBundleFile`: publish this as `ca.crt` instead of the roots Vault returns.
    pub ca_bundle_file: Option<String>,
}

/// One entry of `secrets`: a Vault KV secret to publish.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSecret {
    /// `secrets[N].name`: the name in logs and status.
    pub name: Option<String>,
    /// `secrets[N].issuer`: the Vault issuer to read from.
    pub issuer: Option<String>,
    /// `secrets[N].path`: the KV path (mount and path, without `data/`).
    pub path: Option<String>,
    /// `secrets[N].kvVersion`: KV version 1 or 2 (default: detected).
    pub kv_version: Option<u8>,
    /// `secrets[N].refreshInterval`: how often to read the secret again.
    pub refresh_interval: Option<String>,
    /// `secrets[N].format`: json, env, files or raw.
    pub format: Option<String>,
    /// `secrets[N].key`: with format raw, the key whose value is written.
    pub key: Option<String>,
    /// `secrets[N].file`: the file name (formats json, env and raw).
    pub file: Option<String>,
    /// `secrets[N].dir`: the directory, relative to outputDir.
    pub dir: Option<String>,
    /// `secrets[N].mode`: the file mode (octal).
    pub mode: Option<Value>,
    /// `secrets[N].uid`: the owner given to the files.
    pub uid: Option<u32>,
    /// `secrets[N].gid`: the group given to the files.
    pub gid: Option<u32>,
    /// `secrets[N].revokeOnShutdown`: revoke a leased secret's lease when `run` stops.
    pub revoke_on_shutdown: Option<bool>,
    /// `secrets[N].templates`: files rendered from templates, in the same directory.
    pub templates: Option<Vec<RawTemplate>>,
}

/// One entry of `certificates[N].templates` or `secrets[N].templates`: a file
/// rendered from a template and published with the credential's files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTemplate {
    /// `templates[M].file`: the file name, relative to the credential's directory.
    pub file: Option<String>,
    /// `templates[M].template`: the template itself, inline.
    pub template: Option<String>,
    /// `templates[M].templateFile`: a file holding the template (a ConfigMap mount).
    pub template_file: Option<String>,
    /// `templates[M].mode`: the file mode (octal); default 0600.
    pub mode: Option<Value>,
}

/// `issuers.NAME.localCa`: a CA read from PEM files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLocalCa {
    /// `localCa.certFile`: the CA's certificate, then its chain.
    pub cert_file: Option<String>,
    /// `localCa.keyFile`: the CA's private key.
    pub key_file: Option<String>,
}

/// One entry of `certificates`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCertificate {
    /// `certificates[N].name`: the name in logs and status.
    pub name: Option<String>,
    /// `certificates[N].issuer`: the issuer to use, by name.
    pub issuer: Option<String>,
    /// `certificates[N].commonName`: the subject common name.
    pub common_name: Option<String>,
    /// `certificates[N].dnsNames`: DNS names to certify.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// `certificates[N].ipAddresses`: IP addresses to certify.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// `certificates[N].uris`: URI names to certify (e.g. SPIFFE IDs).
    #[serde(default)]
    pub uris: Vec<String>,
    /// `certificates[N].privateKey`: the key algorithm and rotation.
    pub private_key: Option<RawPrivateKey>,
    /// `certificates[N].duration`: the lifetime to ask for.
    pub duration: Option<String>,
    /// `certificates[N].renewBefore`: renew this long before expiry.
    pub renew_before: Option<String>,
    /// `certificates[N].renewBeforePercentage`: renew when this share of the lifetime is left.
    pub renew_before_percentage: Option<i64>,
    /// `certificates[N].dir`: the directory, relative to outputDir.
    pub dir: Option<String>,
    /// `certificates[N].files`: file names, modes and owner.
    pub files: Option<RawFiles>,
    /// `certificates[N].templates`: files rendered from templates, in the same directory.
    pub templates: Option<Vec<RawTemplate>>,
    /// `certificates[N].sds`: its resource names in the Secret Discovery Service.
    pub sds: Option<RawCertificateSds>,
}

/// `certificates[N].privateKey`: the key algorithm and its rotation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPrivateKey {
    /// `privateKey.algorithm`: ECDSA-P256 (default), ECDSA-P384, Ed25519 or RSA-2048/3072/4096.
    pub algorithm: Option<String>,
    /// `privateKey.rotationPolicy`: Always or Never.
    pub rotation_policy: Option<String>,
}

/// `certificates[N].files`: the certificate's file names, modes and owner.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawFiles {
    /// `files.certificate`: the certificate chain file.
    pub certificate: Option<String>,
    /// `files.privateKey`: the key algorithm and rotation.
    pub private_key: Option<String>,
    /// `files.ca`: the trust anchors file.
    pub ca: Option<String>,
    /// `files.bundle`: key and chain in one file.
    pub bundle: Option<String>,
    /// `files.mode`: the mode of files without a key (octal).
    pub mode: Option<Value>,
    /// `files.keyMode`: the mode of files holding the key (octal).
    pub key_mode: Option<Value>,
    /// `files.uid`: the owner given to the files.
    pub uid: Option<u32>,
    /// `files.gid`: the group given to the files.
    pub gid: Option<u32>,
    /// `files.pkcs12`: PKCS#12 stores.
    pub pkcs12: Option<RawPkcs12>,
}

/// `files.pkcs12`: PKCS#12 keystore and truststore for Java apps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPkcs12 {
    /// `pkcs12.keystore`: the keystore file (key and chain).
    pub keystore: Option<String>,
    /// `pkcs12.truststore`: the truststore file (trust anchors).
    pub truststore: Option<String>,
    /// `pkcs12.passwordFile`: the file holding the stores' password.
    pub password_file: Option<String>,
    /// `pkcs12.alias`: the keystore entry's alias.
    pub alias: Option<String>,
}

/// `reload`: how the app is told its files changed; exactly one target.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawReload {
    /// `reload.signal`: the signal to send.
    pub signal: Option<String>,
    /// `reload.process`: signal processes with this name.
    pub process: Option<String>,
    /// `reload.processRegex`: signal processes whose command line matches.
    pub process_regex: Option<String>,
    /// `reload.pidFile`: signal the process whose PID is in this file.
    pub pid_file: Option<String>,
    /// `reload.command`: run this command (program and arguments).
    pub command: Option<Vec<String>>,
    /// `reload.url`: POST to this URL.
    pub url: Option<String>,
    /// `reload.includePid1`: let process scans match PID 1.
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
            fields_of::<RawTemplate>(),
            fields_of::<RawTokenSink>(),
            fields_of::<RawReload>(),
            fields_of::<RawServer>(),
            fields_of::<RawSds>(),
            fields_of::<RawCertificateSds>(),
            fields_of::<RawWorkloadApi>(),
            fields_of::<RawFilesIssuer>(),
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
                "server",
                "sds",
                "workloadApi"
            ]
        );
        assert!(
            missing.is_empty(),
            "README.md does not document these configuration keys: {missing:?}"
        );
    }
}
