//! What a configuration looks like to the user: the plan `pillion check`
//! prints, and the flag a field came from in flag mode.

use std::fmt;

use super::{
    Config, FilesAnchors, FilesLayout, IssuerSpec, KeyRotation, PkiMode, SecretFormat,
    TemplateSource, TemplateSpec,
};

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
                    if !v.from_environment.is_empty() {
                        let filled: Vec<String> = v
                            .from_environment
                            .iter()
                            .map(|(field, var)| format!("{field} from ${var}"))
                            .collect();
                        write!(f, " ({})", filled.join(", "))?;
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
                IssuerSpec::Files(s) => {
                    let files = match &s.layout {
                        FilesLayout::Bundle(b) => format!("{b} (key, then chain)"),
                        FilesLayout::Pair {
                            certificate,
                            private_key,
                        } => format!("{certificate} and {private_key}"),
                    };
                    let anchors = match &s.anchors {
                        FilesAnchors::InDir(ca) => format!("{ca} in the same directory"),
                        FilesAnchors::File(p) => p.display().to_string(),
                    };
                    writeln!(
                        f,
                        "  {name}: files another component writes: {files} in {}, checked every {}, verified against {anchors}",
                        s.dir.display(),
                        humantime::format_duration(s.poll_interval)
                    )?
                }
            }
        }
        if !self.certificates.is_empty() {
            writeln!(f, "certificates:")?;
        }
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
            write_templates(f, &c.templates)?;
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
            // Whether the path is KV or a leased engine is known only
            // from Vault, at the first read.
            let source = match sec.kv_version {
                Some(v) => format!(
                    "KV v{v} {}, every {}",
                    sec.path,
                    humantime::format_duration(sec.refresh)
                ),
                None => format!(
                    "{} (KV: every {}; a dynamic secret: as its lease needs{})",
                    sec.path,
                    humantime::format_duration(sec.refresh),
                    if sec.revoke_on_shutdown {
                        ", revoked at shutdown"
                    } else {
                        ""
                    }
                ),
            };
            writeln!(
                f,
                "  {} (issuer {}): {source}, {format} ({:04o}) in {}",
                sec.name,
                sec.issuer,
                sec.mode,
                sec.target_dir(&self.output_dir).display()
            )?;
            write_templates(f, &sec.templates)?;
        }
        for t in &self.token_sinks {
            writeln!(
                f,
                "token of {}: {}/{} ({:04o}), replaced at every new login",
                t.issuer,
                t.target_dir(&self.output_dir).display(),
                t.file,
                t.mode
            )?;
        }
        match &self.reload {
            Some(r) => writeln!(f, "reload: {r}")?,
            None => writeln!(f, "reload: none (the app must watch the files itself)")?,
        }
        if let Some(sds) = &self.sds {
            let owner = owner_text(sds.uid, sds.gid);
            writeln!(
                f,
                "envoy sds: {} ({:04o}{owner}){}",
                sds.socket.display(),
                sds.mode,
                sds.listen.map_or(String::new(), |a| format!(" and {a}"))
            )?;
            for c in &self.certificates {
                writeln!(
                    f,
                    "    {}: tls_certificate {:?}, validation_context {:?}",
                    c.name, c.sds.certificate, c.sds.validation_context
                )?;
            }
        }
        if let Some(w) = &self.workload_api {
            writeln!(
                f,
                "spiffe workload api: {} ({:04o}{}), SVIDs: {}",
                w.socket.display(),
                w.mode,
                owner_text(w.uid, w.gid),
                w.svids.join(", ")
            )?;
        }
        match &self.listen {
            Some(a) => writeln!(f, "admin endpoint: http://{a}/ (healthz, readyz, rotate)"),
            None => writeln!(f, "admin endpoint: off"),
        }
    }
}

/// `, owner UID:GID` of a socket, `-` for what is left as it is.
fn owner_text(uid: Option<u32>, gid: Option<u32>) -> String {
    match (uid, gid) {
        (None, None) => String::new(),
        (u, g) => format!(
            ", owner {}:{}",
            u.map_or("-".into(), |u| u.to_string()),
            g.map_or("-".into(), |g| g.to_string())
        ),
    }
}

/// One line per template of a credential: the file it renders, from what.
fn write_templates(f: &mut fmt::Formatter<'_>, templates: &[TemplateSpec]) -> fmt::Result {
    for t in templates {
        let from = match &t.source {
            TemplateSource::Inline(_) => "the inline template".to_owned(),
            TemplateSource::File(p) => p.display().to_string(),
        };
        writeln!(f, "    template:    {} {:04o} from {from}", t.file, t.mode)?;
    }
    Ok(())
}

/// Maps a configuration path to the flag a flag-mode user actually typed.
pub(super) fn flag_for_path(path: &str) -> String {
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

#[cfg(test)]
mod tests {
    use crate::config::{Config, Origin, RawCertificate, RawConfig};

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
