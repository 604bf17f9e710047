//! A secret read from Vault's KV engine (v1 or v2), again every
//! `refreshInterval`.

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use tracing::debug;

use super::{Source, SourceError};
use crate::config::SecretSpec;
use crate::credential::{Checked, Credential, HeadStart, Secret};
use crate::issuers::Issuer;
use crate::secrets::{self, KvMount};
use crate::vault::VaultClient;

/// One configured secret and the Vault client that reads it.
#[derive(Debug)]
pub struct KvSource {
    spec: SecretSpec,
    client: Arc<VaultClient>,
    /// The mount and engine version, found at the first read.
    kv: Option<KvMount>,
}

impl KvSource {
    /// The source of `spec`, read through `issuer`.
    ///
    /// # Panics
    /// When `issuer` is not Vault: validation lets secrets name only Vault issuers.
    pub fn new(spec: &SecretSpec, issuer: &Issuer) -> KvSource {
        KvSource {
            spec: spec.clone(),
            client: issuer
                .vault()
                .expect("validation lets secrets name only vault issuers")
                .clone(),
            kv: None,
        }
    }

    async fn read(&mut self) -> Result<Credential, SourceError> {
        let mount = match &self.kv {
            Some(m) => m.clone(),
            None => {
                let m = secrets::detect(&self.client, &self.spec).await?;
                debug!(secret = %self.spec.name, mount = %m.mount, version = m.version, "found the KV engine");
                self.kv.insert(m).clone()
            }
        };
        let data = secrets::read(&self.client, &self.spec, &mount).await?;
        Ok(Credential::Secret(Secret {
            path: self.spec.path.clone(),
            data,
        }))
    }
}

impl Source for KvSource {
    fn obtain<'a>(
        &'a mut self,
        _head: &'a mut dyn HeadStart,
    ) -> BoxFuture<'a, Result<Credential, SourceError>> {
        Box::pin(self.read())
    }

    fn next_attempt(&self, _checked: &Checked, now: SystemTime) -> SystemTime {
        now + self.spec.refresh
    }

    fn same_as(&self, other: &dyn Source) -> bool {
        other
            .as_any()
            .downcast_ref::<KvSource>()
            .is_some_and(|o| o.spec == self.spec)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
