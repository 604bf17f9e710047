//! The one place where signals sent to pillion are handled. Each becomes an
//! [`agent::Command`](crate::agent::Command) on a channel.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

use crate::agent::Command;

/// Signal handlers, installed before any work starts so that an early SIGUSR1
/// (whose default action is to terminate) is never fatal.
pub struct Signals {
    term: Signal,
    int: Signal,
    usr1: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers. Must be called inside the Tokio runtime.
    ///
    /// # Errors
    /// When the runtime cannot register a handler.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            usr1: signal(SignalKind::user_defined1())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Forwards signals as commands until the receiver is gone.
    pub async fn forward(mut self, tx: UnboundedSender<Command>) {
        loop {
            let command = tokio::select! {
                _ = self.term.recv() => { info!("SIGTERM received: stopping"); Command::Shutdown }
                _ = self.int.recv() => { info!("SIGINT received: stopping"); Command::Shutdown }
                _ = self.usr1.recv() => { info!("SIGUSR1 received: renewing everything now"); Command::RenewAll }
                _ = self.hup.recv() => { info!("SIGHUP received: re-reading the configuration"); Command::ReloadConfig }
            };
            if tx.send(command).is_err() {
                return;
            }
        }
    }
}
