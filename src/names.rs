//! The names a certificate is for: shared vocabulary of the configuration
//! (what is asked), the CSR (what is requested) and verification (what came
//! back), so that none of them imports another for it.

use std::net::IpAddr;

/// The names a certificate is requested for, or carries: the subject's
/// common name and the subject alternative names (RFC 5280 4.2.1.6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// DNS name SANs.
    pub dns_names: Vec<String>,
    /// IP address SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// URI SANs (SPIFFE IDs among them).
    pub uris: Vec<String>,
}
