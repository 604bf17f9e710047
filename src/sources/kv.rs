//! A secret read from Vault: from its KV engine (v1 or v2), again every
//! `refreshInterval`; or from any other engine (dynamic database or cloud
//! credentials), whose lease is renewed at about two thirds of its TTL and
//! replaced by a new read before it runs out.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::{Source, SourceError};
use crate::config::SecretSpec;
use crate::credential::{Checked, Credential, HeadStart, Secret};
use crate::issuers::Issuer;
use crate::secrets::{self, Engine};
use crate::telemetry::chain;
use crate::vault::VaultClient;

/// One configured secret and the Vault client that reads it.
#[derive(Debug)]
pub struct KvSource {
    spec: SecretSpec,
    client: Arc<VaultClient>,
    /// The engine of its path, found at the first read.
    engine: Option<Engine>,
    /// The current lease, for a secret of a leased engine.
    lease: Option<Lease>,
}

/// A lease pillion holds, and what it brought. Its ID is never logged.
#[derive(Debug)]
struct Lease {
    id: Zeroizing<String>,
    /// The TTL it was read with: what each renewal asks for.
    ttl: Duration,
    /// What the last read or renewal granted, from `granted_at`.
    granted: Duration,
    granted_at: SystemTime,
    renewable: bool,
    /// The next attempt reads new credentials instead of renewing: the
    /// last renewal was capped by the lease's maximum TTL.
    read_again: bool,
    data: Map<String, Value>,
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
            engine: None,
            lease: None,
        }
    }

    fn secret(&self, data: Map<String, Value>, mut meta: Map<String, Value>) -> Credential {
        let expires = self
            .lease
            .as_ref()
            .filter(|l| !l.granted.is_zero())
            .map(|l| l.granted_at + l.granted);
        if let Some(e) = expires {
            meta.insert(
                "leaseExpires".to_owned(),
                Value::String(crate::verify::fmt_time(e).to_string()),
            );
        }
        Credential::Secret(Secret {
            path: self.spec.path.clone(),
            data,
            expires,
            meta,
        })
    }

    async fn read(&mut self) -> Result<Credential, SourceError> {
        let engine = match &self.engine {
            Some(e) => e.clone(),
            None => {
                let e = secrets::detect(&self.client, &self.spec).await?;
                debug!(secret = %self.spec.name, engine = ?e, "found the secrets engine");
                self.engine.insert(e).clone()
            }
        };
        match engine {
            Engine::Kv(mount) => {
                let read = secrets::read(&self.client, &self.spec, &mount).await?;
                Ok(self.secret(read.data, read.meta))
            }
            Engine::Leased { .. } => self.read_leased().await,
        }
    }

    /// Renews the lease held, or reads new credentials when there is none,
    /// it cannot be renewed, its renewal was refused, or the last renewal
    /// was capped (the lease ends soon whatever pillion asks).
    async fn read_leased(&mut self) -> Result<Credential, SourceError> {
        let name = &self.spec.name;
        if let Some(lease) = self.lease.as_mut().filter(|l| l.renewable && !l.read_again) {
            match secrets::renew(&self.client, &lease.id, lease.ttl).await {
                Ok(granted) => {
                    lease.granted = granted;
                    lease.granted_at = SystemTime::now();
                    // Capped by the maximum TTL (a tenth of slack: Vault may
                    // round what it grants).
                    if granted < lease.ttl.mul_f64(0.9) {
                        lease.read_again = true;
                        info!(secret = %name, ends_in = %humantime::format_duration(granted), "the lease reaches its maximum TTL: reading new credentials before it ends");
                    } else {
                        debug!(secret = %name, granted = %humantime::format_duration(granted), "renewed the lease");
                    }
                    let data = lease.data.clone();
                    return Ok(self.secret(data, Map::new()));
                }
                Err(e) => {
                    warn!(secret = %name, error = %chain(&e), "renewing the lease failed; reading new credentials");
                }
            }
        }
        let leased = secrets::read_leased(&self.client, &self.spec).await?;
        debug!(secret = %name, lease = %humantime::format_duration(leased.duration), renewable = leased.renewable, "read new credentials");
        self.lease = Some(Lease {
            id: leased.lease_id,
            ttl: leased.duration,
            granted: leased.duration,
            granted_at: SystemTime::now(),
            renewable: leased.renewable,
            read_again: !leased.renewable,
            data: leased.data.clone(),
        });
        Ok(self.secret(leased.data, Map::new()))
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
        match &self.lease {
            // About two thirds into what was granted, spread by up to a
            // tenth so that replicas do not renew in step.
            Some(l) if !l.granted.is_zero() => {
                now + l.granted.mul_f64(2.0 / 3.0 * (1.0 - fastrand::f64() * 0.1))
            }
            _ => now + self.spec.refresh,
        }
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.spec.revoke_on_shutdown {
                return;
            }
            let Some(lease) = self.lease.take().filter(|l| !l.id.is_empty()) else {
                return;
            };
            match secrets::revoke(&self.client, &lease.id).await {
                Ok(()) => info!(secret = %self.spec.name, "revoked the lease (revokeOnShutdown)"),
                Err(e) => {
                    warn!(secret = %self.spec.name, error = %chain(&e), "revoking the lease failed")
                }
            }
        })
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
