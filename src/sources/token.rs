//! pillion's own Vault token, as a credential (`vault.tokenSink`): logged in
//! with the issuer's auth method, and looked at again every few seconds, so a
//! new login (the old token expired or was revoked) reaches the file soon.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use super::{Source, SourceError};
use crate::credential::{Checked, Credential, HeadStart};
use crate::issuers::IssuerError;
use crate::vault::VaultClient;

/// How often the token in memory is compared with the one published: no
/// request goes to Vault for it.
pub const TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The token of one Vault issuer's client.
#[derive(Debug)]
pub struct TokenSource {
    issuer: String,
    client: Arc<VaultClient>,
}

impl TokenSource {
    /// The token of `client`, the client of the issuer named `issuer`.
    pub fn new(issuer: &str, client: Arc<VaultClient>) -> TokenSource {
        TokenSource {
            issuer: issuer.to_owned(),
            client,
        }
    }
}

impl Source for TokenSource {
    fn obtain<'a>(
        &'a mut self,
        _head: &'a mut dyn HeadStart,
    ) -> BoxFuture<'a, Result<Credential, SourceError>> {
        Box::pin(async move {
            let token = self
                .client
                .current_token()
                .await
                .map_err(IssuerError::VaultSetup)?;
            Ok(Credential::Token(token))
        })
    }

    fn next_attempt(&self, _checked: &Checked, now: SystemTime) -> SystemTime {
        now + TOKEN_CHECK_INTERVAL
    }

    fn same_as(&self, other: &dyn Source) -> bool {
        other
            .as_any()
            .downcast_ref::<TokenSource>()
            .is_some_and(|o| o.issuer == self.issuer)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
