//! Checking what a CA returned before anything is written.
//!
//! A certificate is published only when its public key is ours, its names are
//! the ones requested, it is valid now, and it chains (RFC 5280 path
//! validation, by rustls-webpki) to the trust anchors that will be published as
//! `ca.crt`. Anything else is rejected with the reason, and the files already
//! on disk stay as they are.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::keys::KeyAlgorithm;
use crate::names::Names;

/// A certificate may start this far in the future (clock skew between the CA
/// and this node) and still be accepted.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What an issuer returned: the chain to publish in `tls.crt` (leaf first,
/// then intermediates) and the trust anchors for `ca.crt`. All DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificates for `tls.crt`: the leaf first, then its intermediates.
    pub chain: Vec<Vec<u8>>,
    /// The trust anchors for `ca.crt`; [`verify`] rejects an empty list.
    pub ca: Vec<Vec<u8>>,
}

/// The facts about a certificate that pillion logs, schedules on and shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number as colon-separated lowercase hex bytes (`0a:1b:…`).
    pub serial: String,
    /// The subject DN on one line (`CN=…, O=…`).
    pub subject: String,
    /// The issuer DN on one line, as for `subject`.
    pub issuer: String,
    /// The start of validity (notBefore); the Unix epoch if it is earlier.
    pub not_before: SystemTime,
    /// The end of validity (notAfter); the Unix epoch if it is earlier.
    pub not_after: SystemTime,
    /// The subject's common name and the DNS, IP and URI SANs; other SAN
    /// types are left out.
    pub names: Names,
    /// The key's algorithm; `None` for one pillion cannot generate (another
    /// curve, an RSA size other than 2048/3072/4096).
    pub key_algorithm: Option<KeyAlgorithm>,
    /// The subjectPublicKey bits.
    pub public_key: Vec<u8>,
}

/// Why what an issuer returned is not published; the files on disk stay.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The issuer returned an empty chain.
    #[error("the CA returned no certificate")]
    Empty,
    /// The issuer returned nothing to publish as `ca.crt`.
    #[error("the CA returned no trust anchor to publish as the CA file")]
    NoTrustAnchor,
    /// A returned certificate does not parse.
    #[error("certificate {index} of the chain is not valid DER X.509: {reason}")]
    Malformed {
        /// Its position: 0 is the leaf, then the rest of the chain, then the anchors.
        index: usize,
        /// The X.509 parser's complaint.
        reason: String,
    },
    /// An intermediate or trust anchor lacks `CA:TRUE` or `keyCertSign`
    /// (RFC 5280 4.2.1.9, 4.2.1.3).
    #[error("the issuing certificate {subject:?} is not a CA certificate: {reason}")]
    NotCa {
        /// The offending certificate's subject DN.
        subject: String,
        /// Which of the two it lacks.
        reason: &'static str,
    },
    /// The leaf certifies a public key other than the one pillion holds for it.
    #[error("the certificate's public key is not the key pillion generated for it")]
    KeyMismatch,
    /// A requested DNS name, IP address or URI is not among the leaf's SANs.
    #[error("the certificate lacks the requested {kind} {name:?}")]
    MissingName {
        /// `DNS name`, `IP address` or `URI`.
        kind: &'static str,
        /// The requested name that is missing.
        name: String,
    },
    /// The leaf carries a SAN that was not requested (a DNS name equal to the
    /// common name is allowed).
    #[error("the certificate carries the {kind} {name:?}, which was not requested")]
    ExtraName {
        /// `DNS name`, `IP address` or `URI`.
        kind: &'static str,
        /// The unrequested name.
        name: String,
    },
    /// A common name was requested and the leaf's differs.
    #[error("the certificate's common name is {got:?}, not the requested {want:?}")]
    CommonName {
        /// The requested common name.
        want: String,
        /// The leaf's common name; empty when it has none.
        got: String,
    },
    /// The leaf starts more than [`CLOCK_SKEW`] after now.
    #[error("the certificate is not valid before {} (now {})", fmt_time(*not_before), fmt_time(*now))]
    NotYetValid {
        /// The leaf's notBefore.
        not_before: SystemTime,
        /// The local time it was checked at.
        now: SystemTime,
    },
    /// The leaf's notAfter has passed.
    #[error("the certificate expired at {}", fmt_time(*not_after))]
    Expired {
        /// The leaf's notAfter.
        not_after: SystemTime,
    },
    /// RFC 5280 path validation (rustls-webpki) found no path from the leaf to
    /// a usable published anchor; the text is webpki's or the anchor's problem.
    #[error("the certificate does not chain to the CA certificate(s) to be published: {0}")]
    Chain(String),
}

/// Checks a CA file that certificates will be issued under, along its
/// issuing path: the signing CA first, then each certificate's issuer as long
/// as the next one in the file is it, up to the first self-signed one. What
/// follows (more roots, a root beside its cross-signed copy) is not on the
/// path and is not checked here. Each certificate on the path must be a CA
/// valid now (`check_ca_cert`) whose `pathlen` allows the CAs below it, and
/// carry a signature its issuer's key verifies. Returns the earliest expiry
/// on the path: no certificate issued under it can be valid longer.
///
/// rustls-webpki checks none of this for a trust anchor, and `openssl
/// verify` rejects what it misses (errors 9, 10, 25): checked when the
/// configuration is loaded, so that `check` reports it.
///
/// # Errors
/// The first problem, naming the certificate by its subject.
pub fn check_issuing_path(ders: &[Vec<u8>], now: SystemTime) -> Result<SystemTime, String> {
    let mut certs = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("certificate {i} is not valid X.509: {e}"))?;
        certs.push(cert);
    }
    let mut expires = None::<SystemTime>;
    for (below, cert) in certs.iter().enumerate() {
        let not_after = check_ca_cert(cert, below, now)?;
        expires = Some(expires.map_or(not_after, |e| e.min(not_after)));
        let Some(above) = certs.get(below + 1) else {
            break;
        };
        if cert.subject().as_raw() == cert.issuer().as_raw()
            || cert.issuer().as_raw() != above.subject().as_raw()
        {
            break;
        }
        cert.verify_signature(Some(above.public_key()))
            .map_err(|_| {
                format!(
                    "the signature on the CA certificate {:?} does not verify with the key of {:?}",
                    cert.subject().to_string(),
                    above.subject().to_string()
                )
            })?;
    }
    expires.ok_or_else(|| "holds no certificate".to_owned())
}

/// Checks one certificate that will be published as a trust anchor: a CA
/// valid now. Its `pathlen` is judged against each chain it anchors.
///
/// # Errors
/// What makes it unusable, naming it by its subject.
pub fn check_anchor(der: &[u8], now: SystemTime) -> Result<SystemTime, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not valid X.509: {e}"))?;
    check_ca_cert(&cert, 0, now)
}

/// One CA certificate with `below` CA certificates between it and any leaf:
/// `CA:TRUE`, `keyCertSign` when it has a keyUsage, valid now, and a
/// `pathlen` (if any) of at least `below`. Returns its notAfter.
fn check_ca_cert(
    cert: &X509Certificate<'_>,
    below: usize,
    now: SystemTime,
) -> Result<SystemTime, String> {
    check_is_ca(cert).map_err(|e| e.to_string())?;
    let subject = cert.subject().to_string();
    let facts = info(cert);
    if facts.not_before > now + CLOCK_SKEW {
        return Err(format!(
            "the CA certificate {subject:?} is not valid before {}",
            fmt_time(facts.not_before)
        ));
    }
    if facts.not_after <= now {
        return Err(format!(
            "the CA certificate {subject:?} expired at {}",
            fmt_time(facts.not_after)
        ));
    }
    if let Some(max) = cert
        .basic_constraints()
        .ok()
        .flatten()
        .and_then(|bc| bc.value.path_len_constraint)
    {
        if (max as usize) < below {
            return Err(format!(
                "the CA certificate {subject:?} has pathlen:{max}, which allows {max} CA certificate(s) below it, but there are {below}"
            ));
        }
    }
    Ok(facts.not_after)
}

/// A time for messages and status: RFC 3339 in UTC, to the second
/// (`2025-01-31T12:00:00Z`).
pub fn fmt_time(t: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(t)
}

/// Splits CA certificates into intermediates (to follow the leaf in
/// `tls.crt`) and trust anchors (for `ca.crt`): the self-signed ones, or the
/// last certificate when none is self-signed.
pub fn split_chain(chain: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let self_signed = |der: &Vec<u8>| {
        X509Certificate::from_der(der)
            .map(|(_, c)| c.subject().as_raw() == c.issuer().as_raw())
            .unwrap_or(false)
    };
    let (roots, intermediates): (Vec<_>, Vec<_>) = chain.iter().cloned().partition(self_signed);
    if roots.is_empty() {
        let last = chain.last().cloned().into_iter().collect();
        (intermediates, last)
    } else {
        (intermediates, roots)
    }
}

/// Reads the facts of one DER certificate.
pub fn inspect(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(info(&cert))
}

fn info(cert: &X509Certificate<'_>) -> CertInfo {
    let mut names = Names {
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        ..Names::default()
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => names.dns_names.push((*d).to_owned()),
                GeneralName::URI(u) => names.uris.push((*u).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(b) = <[u8; 4]>::try_from(*bytes) {
                        names.ip_addresses.push(IpAddr::from(b));
                    } else if let Ok(b) = <[u8; 16]>::try_from(*bytes) {
                        names.ip_addresses.push(IpAddr::from(b));
                    }
                }
                _ => {}
            }
        }
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    CertInfo {
        serial: cert.raw_serial_as_string(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        names,
        key_algorithm: KeyAlgorithm::of_spki(cert.public_key()),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    }
}

/// Checks an issued chain against our public key, the requested names, the
/// clock and the trust anchors. Returns the leaf's facts.
///
/// # Errors
/// The first check that fails, in the order above.
pub fn verify(
    issued: &Issued,
    public_key: &[u8],
    requested: &Names,
    now: SystemTime,
) -> Result<CertInfo, VerifyError> {
    let leaf_der = issued.chain.first().ok_or(VerifyError::Empty)?;
    if issued.ca.is_empty() {
        return Err(VerifyError::NoTrustAnchor);
    }
    for (index, der) in issued.chain.iter().chain(&issued.ca).enumerate() {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| VerifyError::Malformed {
            index,
            reason: e.to_string(),
        })?;
        // Path validation does not look at the trust anchor's own extensions
        // (RFC 5280 6.1): check here that every issuing certificate is a CA.
        if index > 0 {
            check_is_ca(&cert)?;
        }
    }
    let leaf = inspect(leaf_der).map_err(|reason| VerifyError::Malformed { index: 0, reason })?;
    if leaf.public_key != public_key {
        return Err(VerifyError::KeyMismatch);
    }
    check_names(requested, &leaf.names)?;
    if leaf.not_before > now + CLOCK_SKEW {
        return Err(VerifyError::NotYetValid {
            not_before: leaf.not_before,
            now,
        });
    }
    if leaf.not_after <= now {
        return Err(VerifyError::Expired {
            not_after: leaf.not_after,
        });
    }
    check_chain(issued, now)?;
    Ok(leaf)
}

/// What path validation leaves out: the trust anchor a path ends at must be
/// valid now, and its `pathlen` must allow the intermediates below it. Any
/// certificate of `ca` that is this anchor (same subject and key: a root
/// re-issued with its old key) may satisfy it.
fn anchor_fits(
    ca: &[Vec<u8>],
    anchor: &rustls_pki_types::TrustAnchor<'_>,
    intermediates: usize,
    now: SystemTime,
) -> Result<(), String> {
    let mut reason = None;
    for der in ca {
        let same = webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
            .is_ok_and(|c| {
                c.subject.as_ref() == anchor.subject.as_ref()
                    && c.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
            });
        if !same {
            continue;
        }
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            continue;
        };
        match check_ca_cert(&cert, intermediates, now) {
            Ok(_) => return Ok(()),
            Err(e) => reason = reason.or(Some(e)),
        }
    }
    Err(reason
        .unwrap_or_else(|| "the trust anchor of the path is not among the CA certificates".into()))
}

fn check_is_ca(cert: &X509Certificate<'_>) -> Result<(), VerifyError> {
    let subject = cert.subject().to_string();
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(VerifyError::NotCa {
            subject,
            reason: "basicConstraints CA:TRUE is missing",
        });
    }
    if cert
        .key_usage()
        .ok()
        .flatten()
        .is_some_and(|ku| !ku.value.key_cert_sign())
    {
        return Err(VerifyError::NotCa {
            subject,
            reason: "its keyUsage lacks keyCertSign",
        });
    }
    Ok(())
}

/// Every requested name must be present. The only extra name accepted is a
/// DNS name equal to the common name, which CAs such as Vault add themselves.
fn check_names(want: &Names, got: &Names) -> Result<(), VerifyError> {
    if let Some(cn) = &want.common_name {
        if got.common_name.as_deref() != Some(cn.as_str()) {
            return Err(VerifyError::CommonName {
                want: cn.clone(),
                got: got.common_name.clone().unwrap_or_default(),
            });
        }
    }
    let eq_dns = |a: &String, b: &String| a.eq_ignore_ascii_case(b);
    for d in &want.dns_names {
        if !got.dns_names.iter().any(|g| eq_dns(g, d)) {
            return Err(VerifyError::MissingName {
                kind: "DNS name",
                name: d.clone(),
            });
        }
    }
    for d in &got.dns_names {
        let is_cn = want.common_name.as_ref().is_some_and(|cn| eq_dns(cn, d));
        if !is_cn && !want.dns_names.iter().any(|w| eq_dns(w, d)) {
            return Err(VerifyError::ExtraName {
                kind: "DNS name",
                name: d.clone(),
            });
        }
    }
    for ip in &want.ip_addresses {
        if !got.ip_addresses.contains(ip) {
            return Err(VerifyError::MissingName {
                kind: "IP address",
                name: ip.to_string(),
            });
        }
    }
    if let Some(ip) = got
        .ip_addresses
        .iter()
        .find(|ip| !want.ip_addresses.contains(ip))
    {
        return Err(VerifyError::ExtraName {
            kind: "IP address",
            name: ip.to_string(),
        });
    }
    for u in &want.uris {
        if !got.uris.contains(u) {
            return Err(VerifyError::MissingName {
                kind: "URI",
                name: u.clone(),
            });
        }
    }
    if let Some(u) = got.uris.iter().find(|u| !want.uris.contains(u)) {
        return Err(VerifyError::ExtraName {
            kind: "URI",
            name: u.clone(),
        });
    }
    Ok(())
}

fn check_chain(issued: &Issued, now: SystemTime) -> Result<(), VerifyError> {
    let ca_ders: Vec<CertificateDer<'_>> = issued
        .ca
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let anchors = ca_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            VerifyError::Chain(format!(
                "a CA certificate cannot serve as a trust anchor ({e:?})"
            ))
        })?;
    let intermediates: Vec<CertificateDer<'_>> = issued.chain[1..]
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(issued.chain[0].as_slice());
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| VerifyError::Chain(format!("{e:?}")))?;
    // Validity at the edges is checked above with skew; here the path must be
    // valid at a moment inside the leaf's window.
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        + CLOCK_SKEW;
    let time = UnixTime::since_unix_epoch(
        secs.min(
            inspect(&issued.chain[0])
                .map(|i| {
                    i.not_after
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                })
                .unwrap_or(secs)
                .saturating_sub(Duration::from_secs(1)),
        ),
    );
    // A path webpki builds is accepted only if its anchor fits too; else
    // webpki tries another path (a root re-issued beside an expired one).
    let refused = std::cell::RefCell::new(None::<String>);
    let anchor_check = |path: &webpki::VerifiedPath<'_>| {
        anchor_fits(
            &issued.ca,
            path.anchor(),
            path.intermediate_certificates().count(),
            now,
        )
        .map_err(|reason| {
            refused.borrow_mut().get_or_insert(reason);
            webpki::Error::UnknownIssuer
        })
    };
    let try_usage = |usage: webpki::KeyUsage| {
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            usage,
            None,
            Some(&anchor_check),
        )
        .map(|_| ())
    };
    try_usage(webpki::KeyUsage::server_auth())
        .or_else(|_| try_usage(webpki::KeyUsage::client_auth()))
        .map_err(|e| VerifyError::Chain(refused.take().unwrap_or_else(|| explain_webpki(&e))))
}

fn explain_webpki(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => "no path from the certificate to the CA (UnknownIssuer)".into(),
        webpki::Error::CaUsedAsEndEntity => "the leaf is a CA certificate (CaUsedAsEndEntity)".into(),
        webpki::Error::EndEntityUsedAsCa => "the issuing certificate is not a CA: basicConstraints CA:TRUE is missing (EndEntityUsedAsCa)".into(),
        webpki::Error::InvalidSignatureForPublicKey => "a signature in the chain does not verify (InvalidSignatureForPublicKey)".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cn: Option<&str>, dns: &[&str]) -> Names {
        Names {
            common_name: cn.map(str::to_owned),
            dns_names: dns.iter().map(|s| s.to_string()).collect(),
            ..Names::default()
        }
    }

    /// root -> intermediate -> leaf for `localhost`, the root shaped by `root`.
    fn chain_under(root: impl FnOnce(&mut rcgen::CertificateParams)) -> (Issued, Vec<u8>) {
        let ca_params = |cn: &str| {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            p
        };
        let mut root_params = ca_params("root");
        root(&mut root_params);
        let root_key = rcgen::KeyPair::generate().unwrap();
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root_issuer = rcgen::Issuer::from_params(&root_params, &root_key);
        let int_params = ca_params("intermediate");
        let int_key = rcgen::KeyPair::generate().unwrap();
        let int_cert = int_params.signed_by(&int_key, &root_issuer).unwrap();
        let int_issuer = rcgen::Issuer::from_params(&int_params, &int_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &int_issuer)
            .unwrap();
        let issued = Issued {
            chain: vec![leaf.der().to_vec(), int_cert.der().to_vec()],
            ca: vec![root_cert.der().to_vec()],
        };
        (issued, leaf_key.public_key_raw().to_vec())
    }

    #[test]
    fn an_anchor_whose_pathlen_or_dates_forbid_the_chain_is_refused() {
        let want = names(None, &["localhost"]);
        let now = SystemTime::now();
        let (good, key) = chain_under(|_| {});
        verify(&good, &key, &want, now).unwrap();

        let (issued, key) = chain_under(|p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        });
        let e = verify(&issued, &key, &want, now).unwrap_err();
        assert!(e.to_string().contains("pathlen:0"), "{e}");

        let (issued, key) = chain_under(|p| {
            p.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        });
        let e = verify(&issued, &key, &want, now).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn a_root_reissued_with_its_key_beside_the_expired_one_is_accepted() {
        let want = names(None, &["localhost"]);
        let root_key = rcgen::KeyPair::generate().unwrap();
        let root = |expired: bool| {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(rcgen::DnType::CommonName, "root");
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            if expired {
                p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(400);
                p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
            }
            p
        };
        let (old, new) = (root(true), root(false));
        let old_der = old.self_signed(&root_key).unwrap().der().to_vec();
        let new_der = new.self_signed(&root_key).unwrap().der().to_vec();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &rcgen::Issuer::from_params(&new, &root_key))
            .unwrap();
        let key = leaf_key.public_key_raw().to_vec();
        let now = SystemTime::now();
        let both = Issued {
            chain: vec![leaf.der().to_vec()],
            ca: vec![old_der.clone(), new_der],
        };
        verify(&both, &key, &want, now).unwrap();
        let only_old = Issued {
            chain: vec![leaf.der().to_vec()],
            ca: vec![old_der],
        };
        let e = verify(&only_old, &key, &want, now).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn a_san_equal_to_the_common_name_is_accepted() {
        assert!(check_names(
            &names(Some("app.svc"), &["app"]),
            &names(Some("app.svc"), &["app", "app.svc"])
        )
        .is_ok());
    }

    #[test]
    fn missing_and_extra_names_are_rejected() {
        let want = names(None, &["a.example", "b.example"]);
        assert!(matches!(
            check_names(&want, &names(None, &["a.example"])),
            Err(VerifyError::MissingName { .. })
        ));
        let got = names(None, &["a.example", "b.example", "evil.example"]);
        assert!(matches!(
            check_names(&want, &got),
            Err(VerifyError::ExtraName { .. })
        ));
        assert!(check_names(&want, &names(None, &["B.EXAMPLE", "a.example"])).is_ok());
    }
}
