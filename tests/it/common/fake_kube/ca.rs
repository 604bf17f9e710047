//! The fake's two certificate authorities: the serving CA behind the API server's TLS
//! certificate, and the signing CA that signs PKCS#10 requests as kube-controller-manager's
//! signer does (subject and SANs from the request, key usages from the API's words).

use std::net::IpAddr;
use std::time::Duration;

use super::helpers::{fill_random, unix_now};

pub(super) struct Ca {
    pub(super) cert_pem: String,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Ca {
    pub(super) fn issuer(&self) -> rcgen::Issuer<'_, &rcgen::KeyPair> {
        rcgen::Issuer::from_params(&self.params, &self.key)
    }

    /// Signs the PKCS#10 request `csr_der` as kube-controller-manager's signer does: subject
    /// and SANs from the request, key usages from `usages` (the API's words), CA:FALSE,
    /// validity `lifetime` from now.
    pub(super) fn sign(
        &self,
        csr_der: &[u8],
        usages: &[String],
        lifetime: Duration,
    ) -> Result<String, String> {
        use x509_parser::prelude::FromDer as _;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
                .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
        let info = &csr.certification_request_info;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
            .map_err(|e| format!("unsupported public key: {e}"))?;

        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for attr in info.subject.iter_attributes() {
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .map(|i| i.collect())
                .unwrap_or_default();
            let value = attr
                .as_str()
                .map_err(|e| format!("unsupported subject attribute: {e}"))?;
            let ty = match oid.as_slice() {
                [2, 5, 4, 3] => rcgen::DnType::CommonName,
                [2, 5, 4, 6] => rcgen::DnType::CountryName,
                [2, 5, 4, 7] => rcgen::DnType::LocalityName,
                [2, 5, 4, 8] => rcgen::DnType::StateOrProvinceName,
                [2, 5, 4, 10] => rcgen::DnType::OrganizationName,
                [2, 5, 4, 11] => rcgen::DnType::OrganizationalUnitName,
                _ => rcgen::DnType::CustomDnType(oid),
            };
            params.distinguished_name.push(ty, value);
        }
        if let Some(exts) = csr.requested_extensions() {
            for ext in exts {
                if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = ext {
                    for name in &san.general_names {
                        use x509_parser::extensions::GeneralName;
                        let ia5 = |s: &str| {
                            rcgen::string::Ia5String::try_from(s.to_string())
                                .map_err(|e| format!("bad SAN {s:?}: {e}"))
                        };
                        let san = match name {
                            GeneralName::DNSName(s) => rcgen::SanType::DnsName(ia5(s)?),
                            GeneralName::RFC822Name(s) => rcgen::SanType::Rfc822Name(ia5(s)?),
                            GeneralName::URI(s) => rcgen::SanType::URI(ia5(s)?),
                            GeneralName::IPAddress(b) => match b.len() {
                                4 => rcgen::SanType::IpAddress(IpAddr::from(
                                    <[u8; 4]>::try_from(*b).expect("length checked"),
                                )),
                                16 => rcgen::SanType::IpAddress(IpAddr::from(
                                    <[u8; 16]>::try_from(*b).expect("length checked"),
                                )),
                                _ => return Err("bad IP SAN".into()),
                            },
                            _ => continue,
                        };
                        params.subject_alt_names.push(san);
                    }
                }
            }
        }
        for usage in usages {
            use rcgen::{ExtendedKeyUsagePurpose as E, KeyUsagePurpose as K};
            match usage.as_str() {
                "signing" | "digital signature" => params.key_usages.push(K::DigitalSignature),
                "content commitment" => params.key_usages.push(K::ContentCommitment),
                "key encipherment" => params.key_usages.push(K::KeyEncipherment),
                "key agreement" => params.key_usages.push(K::KeyAgreement),
                "data encipherment" => params.key_usages.push(K::DataEncipherment),
                "cert sign" => params.key_usages.push(K::KeyCertSign),
                "crl sign" => params.key_usages.push(K::CrlSign),
                "encipher only" => params.key_usages.push(K::EncipherOnly),
                "decipher only" => params.key_usages.push(K::DecipherOnly),
                "any" => params.insert_extended_key_usage(E::Any),
                "server auth" => params.insert_extended_key_usage(E::ServerAuth),
                "client auth" => params.insert_extended_key_usage(E::ClientAuth),
                "code signing" => params.insert_extended_key_usage(E::CodeSigning),
                "email protection" | "s/mime" => {
                    params.insert_extended_key_usage(E::EmailProtection)
                }
                "timestamping" => params.insert_extended_key_usage(E::TimeStamping),
                "ocsp signing" => params.insert_extended_key_usage(E::OcspSigning),
                "ipsec end system" => {
                    params.insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 5]))
                }
                "ipsec tunnel" => {
                    params.insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 6]))
                }
                "ipsec user" => {
                    params.insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 7]))
                }
                "microsoft sgc" => params
                    .insert_extended_key_usage(E::Other(vec![1, 3, 6, 1, 4, 1, 311, 10, 3, 3])),
                "netscape sgc" => {
                    params.insert_extended_key_usage(E::Other(vec![2, 16, 840, 1, 113730, 4, 1]))
                }
                _ => {}
            }
        }
        params.key_usages.dedup();
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        fill_random(&mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::from_unix_timestamp(unix_now() as i64)
            .expect("now is a valid timestamp");
        params.not_before = now;
        params.not_after = now + lifetime;
        let cert = params
            .signed_by(&public_key, &self.issuer())
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(cert.pem())
    }
}

pub(super) fn make_ca(cn: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("generate a P-256 key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::from_unix_timestamp(unix_now() as i64)
        .expect("now is a valid timestamp");
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + Duration::from_secs(10 * 365 * 24 * 3600);
    let cert = params.self_signed(&key).expect("self-sign a CA");
    Ca {
        cert_pem: cert.pem(),
        params,
        key,
    }
}
