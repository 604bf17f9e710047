//! PEM text in and out: the one place that knows the armour.
//!
//! Everything pillion reads from a CA, a Kubernetes object or the disk arrives
//! as PEM and is handled as DER inside; everything it publishes is PEM again.
//! Writing goes through [`encode`], which uses LF line ends as openssl,
//! cert-manager and the kubelet do (the `pem` crate's default is CRLF, which
//! shows in every diff and `cat -A` of the published files).

use zeroize::Zeroizing;

/// The error of a text that is not PEM.
pub use ::pem::PemError;

/// One PEM block with the given label (`CERTIFICATE`, `PRIVATE KEY`, ...),
/// LF line ends.
pub fn encode(label: &str, der: &[u8]) -> String {
    let block = ::pem::Pem::new(label, der.to_vec());
    let text = encode_block(&block);
    // `Pem` owns a copy that is not wiped on drop; wipe it in case it was a key.
    let mut contents = block.into_contents();
    zeroize::Zeroize::zeroize(&mut contents);
    text
}

fn encode_block(block: &::pem::Pem) -> String {
    ::pem::encode_config(
        block,
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

/// Splits PEM text into the DER of each `CERTIFICATE` block, in order; other
/// blocks (a key in a bundle file) are skipped.
pub fn certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, PemError> {
    Ok(::pem::parse_many(text)?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(::pem::Pem::into_contents)
        .collect())
}

/// PEM text for a list of DER certificates, in order.
pub fn encode_certificates(ders: &[Vec<u8>]) -> String {
    ders.iter().map(|d| encode("CERTIFICATE", d)).collect()
}

/// A PKCS#10 CSR as PEM (`CERTIFICATE REQUEST`), the form Vault and the
/// Kubernetes APIs take.
pub fn encode_csr(der: &[u8]) -> String {
    encode("CERTIFICATE REQUEST", der)
}

/// A PKCS#8 private key as PEM (`PRIVATE KEY`), held in a wiped buffer.
pub fn encode_private_key(pkcs8: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(encode("PRIVATE KEY", pkcs8))
}

/// The first block whose label ends in `PRIVATE KEY` (PKCS#8, SEC1 `EC PRIVATE
/// KEY`, PKCS#1 `RSA PRIVATE KEY`): its label and its DER in a wiped buffer.
/// `None` when the text is not PEM or holds no private key.
pub fn private_key(text: &str) -> Option<(String, Zeroizing<Vec<u8>>)> {
    let blocks = ::pem::parse_many(text).ok()?;
    let mut found = None;
    for block in blocks {
        let label = block.tag().to_owned();
        let mut contents = block.into_contents();
        if found.is_none() && label.ends_with("PRIVATE KEY") {
            found = Some((label, Zeroizing::new(std::mem::take(&mut contents))));
        }
        zeroize::Zeroize::zeroize(&mut contents);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_pem_has_lf_line_ends_and_round_trips() {
        let der = vec![0x30; 100];
        let text = encode_certificates(&[der.clone(), vec![0x31; 3]]);
        assert!(!text.contains('\r'), "{text:?}");
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(certificates(text.as_bytes()).unwrap(), [der, vec![0x31; 3]]);
    }

    #[test]
    fn certificates_skip_other_blocks_and_private_key_finds_the_key() {
        let text = format!(
            "{}{}",
            encode("EC PRIVATE KEY", &[1, 2, 3]),
            encode("CERTIFICATE", &[4, 5])
        );
        assert_eq!(certificates(text.as_bytes()).unwrap(), [vec![4, 5]]);
        let (label, der) = private_key(&text).unwrap();
        assert_eq!(
            (label.as_str(), der.as_slice()),
            ("EC PRIVATE KEY", &[1, 2, 3][..])
        );
        assert!(private_key(&encode("CERTIFICATE", &[4])).is_none());
        assert!(private_key("not pem").is_none());
    }
}
