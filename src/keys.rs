//! Private keys and certificate signing requests.
//!
//! This module owns every private key pillion touches: the per-renewal key of a
//! credential and the key of a local CA. Keys are held as PKCS#8 DER in
//! [`Zeroizing`] buffers, so they are wiped from memory when dropped, and their
//! `Debug` output never shows key material.

use std::fmt;
use std::str::FromStr;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType,
    SignatureAlgorithm,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use crate::names::Names;
use crate::pem;

/// The key algorithms a credential can ask for, named as in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 (secp256r1), signing with SHA-256: `ECDSA-P256`,
    /// the default for `privateKey.algorithm` and the development CA's key.
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1), signing with SHA-384: `ECDSA-P384`.
    EcdsaP384,
    /// Ed25519 (RFC 8410), written as PKCS#8 v1 so OpenSSL 3.0 reads it:
    /// `Ed25519`. Most web browsers do not accept it in TLS.
    Ed25519,
    /// RSA with a 2048-bit modulus, signing with PKCS#1 v1.5 SHA-256: `RSA-2048`.
    Rsa2048,
    /// RSA with a 3072-bit modulus, signing with PKCS#1 v1.5 SHA-256: `RSA-3072`.
    Rsa3072,
    /// RSA with a 4096-bit modulus, signing with PKCS#1 v1.5 SHA-256: `RSA-4096`;
    /// generating one can take seconds.
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every algorithm, in the order a parse error lists them.
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ];

    /// The name used in the configuration and logs (`ECDSA-P256`, `RSA-2048`,
    /// …); [`FromStr`] accepts it in any case.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA-P256",
            KeyAlgorithm::EcdsaP384 => "ECDSA-P384",
            KeyAlgorithm::Ed25519 => "Ed25519",
            KeyAlgorithm::Rsa2048 => "RSA-2048",
            KeyAlgorithm::Rsa3072 => "RSA-3072",
            KeyAlgorithm::Rsa4096 => "RSA-4096",
        }
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &rcgen::PKCS_RSA_SHA256
            }
        }
    }

    /// True for the RSA sizes, whose generation is slow enough for a
    /// blocking thread and whose certificates also get `keyEncipherment`.
    pub fn is_rsa(self) -> bool {
        self.rsa_bits().is_some()
    }

    fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The algorithm of a DER SubjectPublicKeyInfo, if it is one pillion issues.
    pub fn of_spki(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyAlgorithm> {
        use x509_parser::oid_registry::{
            OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
        };
        let alg = &spki.algorithm;
        if alg.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = alg.parameters.as_ref()?.as_oid().ok()?;
            return if curve == OID_EC_P256 {
                Some(KeyAlgorithm::EcdsaP256)
            } else if curve == OID_NIST_EC_P384 {
                Some(KeyAlgorithm::EcdsaP384)
            } else {
                None
            };
        }
        if alg.algorithm == OID_SIG_ED25519 {
            return Some(KeyAlgorithm::Ed25519);
        }
        match spki.parsed().ok()? {
            PublicKey::RSA(rsa) => match rsa.key_size() {
                2048 => Some(KeyAlgorithm::Rsa2048),
                3072 => Some(KeyAlgorithm::Rsa3072),
                4096 => Some(KeyAlgorithm::Rsa4096),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let all: Vec<_> = KeyAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "{s:?} is not a key algorithm (expected one of {})",
                    all.join(", ")
                )
            })
    }
}

/// Why a key could not be generated, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Generating a key of this algorithm failed (the OS random source or the
    /// key generator).
    #[error("failed to generate a {0} key")]
    Generate(KeyAlgorithm),
    /// The text holds no PEM block with a private-key label pillion reads.
    #[error("the data is not a PEM-encoded private key (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")]
    NotPem,
    /// The key does not parse, or is not one of the [`KeyAlgorithm`]s.
    #[error("the private key is malformed or of an unsupported type (supported: ECDSA P-256/P-384, Ed25519, RSA 2048-4096)")]
    Unsupported,
    /// rcgen could not build the CSR, e.g. a DNS name or URI it cannot encode.
    #[error("failed to build the certificate signing request: {0}")]
    Csr(rcgen::Error),
}

/// A private key as PKCS#8 DER, wiped from memory on drop.
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    algorithm: KeyAlgorithm,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("pkcs8", &"<redacted>")
            .finish()
    }
}

impl PrivateKey {
    /// Generates a fresh key from the operating system's CSPRNG.
    ///
    /// RSA generation is CPU-bound for up to a second or two; callers on an
    /// async runtime run this on a blocking thread.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, KeyError> {
        let pkcs8 = match algorithm.rsa_bits() {
            Some(bits) => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                    .map_err(|_| KeyError::Generate(algorithm))?;
                let doc = key
                    .to_pkcs8_der()
                    .map_err(|_| KeyError::Generate(algorithm))?;
                Zeroizing::new(doc.as_bytes().to_vec())
            }
            None => {
                let pair = KeyPair::generate_for(algorithm.signature_algorithm())
                    .map_err(|_| KeyError::Generate(algorithm))?;
                let der = Zeroizing::new(pair.serialize_der());
                if algorithm == KeyAlgorithm::Ed25519 {
                    // ring writes PKCS#8 v2 (RFC 5958, with the public key),
                    // which OpenSSL 3.0 and so Debian 12's nginx and Python
                    // cannot read; v1 is what every reader accepts.
                    der::ed25519_v2_to_v1(&der).ok_or(KeyError::Generate(algorithm))?
                } else {
                    der
                }
            }
        };
        Ok(PrivateKey { pkcs8, algorithm })
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`)
    /// or PKCS#1 (`RSA PRIVATE KEY`), as openssl writes them.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, contents) = pem::private_key(text).ok_or(KeyError::NotPem)?;
        let pkcs8 = match label.as_str() {
            "PRIVATE KEY" => contents,
            "EC PRIVATE KEY" => der::sec1_to_pkcs8(&contents).ok_or(KeyError::Unsupported)?,
            "RSA PRIVATE KEY" => der::pkcs1_to_pkcs8(&contents),
            _ => return Err(KeyError::NotPem),
        };
        Self::from_pkcs8(pkcs8)
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, KeyError> {
        let pair = KeyPair::try_from(pkcs8.as_slice()).map_err(|_| KeyError::Unsupported)?;
        let spki_der = pair.subject_public_key_info();
        let (_, spki) =
            SubjectPublicKeyInfo::from_der(&spki_der).map_err(|_| KeyError::Unsupported)?;
        let algorithm = KeyAlgorithm::of_spki(&spki).ok_or(KeyError::Unsupported)?;
        Ok(PrivateKey { pkcs8, algorithm })
    }

    /// The key's algorithm, as generated or as detected when it was read.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The PKCS#8 DER of the key, for writers that encode it themselves.
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The key as a PKCS#8 PEM document (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pem(&self) -> Zeroizing<String> {
        pem::encode_private_key(&self.pkcs8)
    }

    /// An rcgen signing key. Short-lived: rcgen keeps its own copy of the DER.
    pub fn key_pair(&self) -> KeyPair {
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, self.algorithm.signature_algorithm())
            .expect("the key was parsed or generated as this algorithm")
    }

    /// The public key bits, as in the subjectPublicKey BIT STRING of a
    /// certificate (the EC point, the RSAPublicKey DER, the Ed25519 key).
    pub fn public_key_raw(&self) -> Vec<u8> {
        self.key_pair().public_key_raw().to_vec()
    }

    /// Builds a PKCS#10 CSR (RFC 2986) that carries exactly the requested names.
    pub fn csr(&self, names: &Names) -> Result<Vec<u8>, KeyError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = &names.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        params.distinguished_name = dn;
        params.subject_alt_names = names.san_types().map_err(KeyError::Csr)?;
        let csr = params
            .serialize_request(&self.key_pair())
            .map_err(KeyError::Csr)?;
        Ok(csr.der().to_vec())
    }
}

impl Names {
    pub(crate) fn san_types(&self) -> Result<Vec<SanType>, rcgen::Error> {
        let mut sans = Vec::new();
        for dns in &self.dns_names {
            sans.push(SanType::DnsName(dns.as_str().try_into()?));
        }
        for ip in &self.ip_addresses {
            sans.push(SanType::IpAddress(*ip));
        }
        for uri in &self.uris {
            sans.push(SanType::URI(uri.as_str().try_into()?));
        }
        Ok(sans)
    }
}

/// Just enough DER to re-wrap the legacy key formats openssl writes into
/// PKCS#8 (RFC 5208), which is what ring accepts.
mod der {
    use zeroize::Zeroizing;

    const SEQUENCE: u8 = 0x30;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;
    const INTEGER: u8 = 0x02;
    const CONTEXT_0: u8 = 0xa0;
    /// INTEGER 0: the PKCS#8 version.
    const VERSION_0: [u8; 3] = [0x02, 0x01, 0x00];
    /// OID 1.2.840.10045.2.1 (id-ecPublicKey).
    const EC_PUBLIC_KEY: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// OID 1.2.840.113549.1.1.1 (rsaEncryption) followed by NULL parameters.
    const RSA_ENCRYPTION: [u8; 13] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];

    /// One TLV split off the front of some input: (tag, whole TLV, value, rest).
    type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

    fn read(input: &[u8]) -> Option<Tlv<'_>> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let header = input.len() - rest.len();
        Some((tag, &input[..header + len], &rest[..len], &rest[len..]))
    }

    fn write(tag: u8, content: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
    }

    fn pkcs8(algorithm: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut body = Zeroizing::new(Vec::with_capacity(private_key.len() + 64));
        body.extend_from_slice(&VERSION_0);
        write(SEQUENCE, algorithm, &mut body);
        write(OCTET_STRING, private_key, &mut body);
        let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 8));
        write(SEQUENCE, &body, &mut out);
        out
    }

    /// SEC1 `ECPrivateKey` (RFC 5915) to PKCS#8; the curve comes from its
    /// `[0] parameters`, which openssl always writes.
    pub fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (tag, _, mut body, _) = read(sec1)?;
        if tag != SEQUENCE {
            return None;
        }
        let mut curve = None;
        while !body.is_empty() {
            let (tag, _, value, rest) = read(body)?;
            if tag == CONTEXT_0 {
                let (oid_tag, oid, _, _) = read(value)?;
                if oid_tag == OID {
                    curve = Some(oid);
                }
            }
            body = rest;
        }
        let mut algorithm = EC_PUBLIC_KEY.to_vec();
        algorithm.extend_from_slice(curve?);
        Some(pkcs8(&algorithm, sec1))
    }

    /// Ed25519 PKCS#8 v2 (`OneAsymmetricKey` with the public key) to v1: the
    /// same algorithm and private key, without the optional public key.
    pub fn ed25519_v2_to_v1(v2: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        /// OID 1.3.101.112 (id-Ed25519), no parameters (RFC 8410).
        const ED25519: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
        let (tag, _, body, _) = read(v2)?;
        let (_, _, _, rest) = read(body).filter(|t| t.0 == INTEGER)?; // version
        let (_, _, algorithm, rest) = read(rest).filter(|t| t.0 == SEQUENCE)?;
        let (_, _, private_key, _) = read(rest).filter(|t| t.0 == OCTET_STRING)?;
        (tag == SEQUENCE && algorithm == ED25519).then(|| pkcs8(&ED25519, private_key))
    }

    /// PKCS#1 `RSAPrivateKey` (RFC 8017) to PKCS#8.
    pub fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Zeroizing<Vec<u8>> {
        pkcs8(&RSA_ENCRYPTION, pkcs1)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn long_lengths_round_trip() {
            let content = vec![7u8; 300];
            let mut out = Vec::new();
            write(OCTET_STRING, &content, &mut out);
            assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
            let (tag, whole, value, rest) = read(&out).unwrap();
            assert_eq!(
                (tag, whole.len(), value, rest.len()),
                (4, 304, &content[..], 0)
            );
        }

        #[test]
        fn truncated_input_is_rejected() {
            assert!(read(&[0x30, 0x05, 0x01]).is_none());
            assert!(sec1_to_pkcs8(&[0x02, 0x01, 0x00]).is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_key_material() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"), "{shown}");
        let pem = key.to_pem();
        let body: String = pem.lines().nth(1).unwrap().chars().take(20).collect();
        assert!(!shown.contains(&body));
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa2048,
        ] {
            let key = PrivateKey::generate(alg).unwrap();
            let pem = key.to_pem();
            assert!(
                !pem.contains('\r'),
                "PEM lines end in LF, as openssl writes them"
            );
            let back = PrivateKey::from_pem(&pem).unwrap();
            assert_eq!(back.algorithm(), alg);
            assert_eq!(back.public_key_raw(), key.public_key_raw());
        }
    }

    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_which_openssl_3_0_reads() {
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        // SEQUENCE { INTEGER 0, SEQUENCE { id-Ed25519 }, OCTET STRING { OCTET STRING seed } }
        assert_eq!(key.pkcs8.len(), 48);
        assert_eq!(
            &key.pkcs8[..16],
            &[
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20
            ]
        );
        let csr = key.csr(&Names {
            dns_names: vec!["a".into()],
            ..Names::default()
        });
        assert!(csr.is_ok(), "the v1 key still signs");
    }

    #[test]
    fn algorithm_names_parse_case_insensitively() {
        assert_eq!("ecdsa-p384".parse(), Ok(KeyAlgorithm::EcdsaP384));
        assert!("DSA"
            .parse::<KeyAlgorithm>()
            .unwrap_err()
            .contains("RSA-4096"));
    }
}
