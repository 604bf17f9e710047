//! A certificate offered to the push deliveries ([`crate::delivery`]): its
//! Envoy SDS resources, and its X.509-SVID for the SPIFFE Workload API. It writes no file; the loop hands it each
//! certificate once its files are published.

use std::sync::Arc;

use super::{Sink, SinkError};
use crate::config::SdsNames;
use crate::credential::{Credential, Inputs};
use crate::delivery::{Hub, Part};
use crate::output::FileEntry;

/// Offers one certificate to the hub under its SDS names, and as an
/// X.509-SVID when it is one.
#[derive(Debug)]
pub struct Push {
    hub: Hub,
    owner: u64,
    certificate: String,
    names: SdsNames,
    /// Its place among the SVIDs, when it is one.
    svid: Option<usize>,
}

impl Push {
    /// The push sink of the certificate `certificate`, with SDS resource
    /// names `names`, the SVID of rank `svid` if it is one.
    pub fn new(hub: &Hub, certificate: &str, names: &SdsNames, svid: Option<usize>) -> Push {
        Push {
            hub: hub.clone(),
            owner: Hub::owner(),
            certificate: certificate.to_owned(),
            names: names.clone(),
            svid,
        }
    }
}

impl Sink for Push {
    fn render(
        &self,
        _credential: &Credential,
        _inputs: &Inputs,
    ) -> Result<Vec<FileEntry>, SinkError> {
        Ok(Vec::new())
    }

    fn deliver(&self, credential: &Arc<Credential>) {
        let names = [
            (self.names.certificate.as_str(), Part::Certificate),
            (self.names.validation_context.as_str(), Part::TrustAnchors),
        ];
        let svid = self.svid.map(|rank| (self.certificate.as_str(), rank));
        self.hub.offer(self.owner, &names, svid, credential);
    }

    fn delivers(&self) -> bool {
        true
    }
}

/// A certificate removed from the configuration (or whose names changed) is
/// no longer served: when its sink goes, so does what it offered, unless a
/// newer sink offered the same names since.
impl Drop for Push {
    fn drop(&mut self) {
        self.hub.withdraw(self.owner);
    }
}
