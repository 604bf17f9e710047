//! Validating `certificates[*]`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use super::sds::validate_sds_names;
use super::templates::validate_templates;
use super::{
    credential_name, expand_pod_vars, is_valid_dns_name, parse_duration, validate_files,
    CertificateSpec, Errors, IssuerSpec, KeyRotation, Names, Origin, RawCertificate,
    DEFAULT_DURATION, DEFAULT_RENEW_BEFORE_PERCENTAGE, MAX_NAMES, MIN_DURATION,
};
use crate::keys::KeyAlgorithm;
use crate::schedule::RenewPolicy;

/// X.520 upper bound for a commonName (RFC 5280, ub-common-name).
const MAX_COMMON_NAME: usize = 64;

pub(super) fn validate_certificate(
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
    // A certificate read from files carries what its writer asked for:
    // names configured for it are ones it must carry.
    let reads_files = matches!(issuers.get(&issuer), Some(IssuerSpec::Files(_)));
    if !names_given && !reads_files {
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
    let taken: Vec<&str> = files.names().collect();
    let templates = validate_templates(errs, path, rc.templates, &taken);
    let sds = validate_sds_names(errs, path, &name, rc.sds);

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
        templates,
        sds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{errors, paths};

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
}
