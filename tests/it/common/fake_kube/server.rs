//! Starting and stopping the fake: [`FakeKube::start`] makes the serving certificate and the
//! kubeconfig and runs the server on its own thread; the accessors a test needs to point a
//! client at it (URL, kubeconfig, CAs, token); and the accept loop that honours
//! [`FakeKube::pause`] by closing its listener and resetting every connection.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::ca::make_ca;
use super::helpers::{b64, random_token, uid};
use super::routing::handle;
use super::signer::task_runner;
use super::state::{Control, Shared, State, FIRST_RESOURCE_VERSION};
use super::tokens::{service_account_groups, User};
use super::CLIENT_USER;

/// A running fake API server. Stopped on drop.
pub struct FakeKube {
    pub(super) shared: Arc<Shared>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    ca_pem_path: PathBuf,
    signing_ca_pem_path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a fake API server on a free loopback port and writes its kubeconfig.
    pub fn start() -> FakeKube {
        let dir = tempfile::tempdir().expect("create the fake API server's temp dir");

        let serving_ca = make_ca("fake-kube serving CA");
        let server_key = rcgen::KeyPair::generate().expect("generate a P-256 key");
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("valid SANs");
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params
            .signed_by(&server_key, &serving_ca.issuer())
            .expect("sign the serving certificate");

        let signing = make_ca("fake-kube signing CA");

        let ca_pem_path = dir.path().join("apiserver-ca.pem");
        std::fs::write(&ca_pem_path, &serving_ca.cert_pem).expect("write the serving CA");
        let signing_ca_pem_path = dir.path().join("signing-ca.pem");
        std::fs::write(&signing_ca_pem_path, &signing.cert_pem).expect("write the signing CA");

        let token = random_token(40);

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            )
            .expect("the serving key matches its certificate");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        // Bound here so the port is known before the thread starts; the runtime is built on
        // the thread, so a test may start the fake from inside its own runtime.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("local_addr");

        let sa_key_pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &ring::rand::SystemRandom::new(),
        )
        .expect("generate the service-account issuer key");

        let (rv_tx, _) = watch::channel(FIRST_RESOURCE_VERSION);
        let (control, _) = watch::channel(Control::default());
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            rv_tx,
            control,
            listening: AtomicBool::new(true),
            connections: AtomicUsize::new(0),
            open_watches: AtomicUsize::new(0),
            token: token.clone(),
            signing,
            addr,
            sa_key_pkcs8: sa_key_pkcs8.as_ref().to_vec(),
            client_user: User {
                username: CLIENT_USER.to_string(),
                uid: uid(),
                groups: service_account_groups("default"),
            },
        });

        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\n\
                 kind: Config\n\
                 clusters:\n\
                 - name: fake\n  \
                   cluster:\n    \
                     server: https://{addr}\n    \
                     certificate-authority-data: {ca}\n\
                 users:\n\
                 - name: pillion\n  \
                   user:\n    \
                     token: {token}\n\
                 contexts:\n\
                 - name: fake\n  \
                   context:\n    \
                     cluster: fake\n    \
                     user: pillion\n    \
                     namespace: default\n\
                 current-context: fake\n",
                ca = b64(serving_ca.cert_pem.as_bytes()),
            ),
        )
        .expect("write the kubeconfig");

        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the fake API server's runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("hand the listener to tokio");
                    serve(thread_shared, listener, acceptor).await
                });
                // Dropping the runtime cancels every connection, watch and signer task.
                drop(rt);
            })
            .expect("spawn the fake API server's thread");

        FakeKube {
            shared,
            dir,
            kubeconfig,
            ca_pem_path,
            signing_ca_pem_path,
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.shared.addr)
    }

    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// The kubeconfig: one cluster (this server, its CA inline), one user (bearer token), one
    /// context with namespace `default`, selected as current-context.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA of the API server's serving certificate (what OpenBao's `kubernetes_ca_cert` wants).
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem_path
    }

    /// The CA the signer signs with, for `openssl verify -CAfile`.
    pub fn signing_ca_pem_path(&self) -> &Path {
        &self.signing_ca_pem_path
    }

    pub fn signing_ca_pem(&self) -> &str {
        &self.shared.signing.cert_pem
    }

    /// A temp dir that lives as long as the fake, for a test's scratch files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The kubeconfig's bearer token (a reviewer token for OpenBao's `token_reviewer_jwt`).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Who the kubeconfig's token authenticates as ([`CLIENT_USER`]).
    pub fn username(&self) -> &str {
        &self.shared.client_user.username
    }

    /// A `kube::Client` built from the written kubeconfig, the way a program would build one.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .expect("the fake's kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("the fake's kubeconfig makes a client config");
        kube::Client::try_from(config).expect("build a kube client")
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.control.send_modify(|c| c.shutdown = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    tokio::spawn(task_runner(shared.clone()));
    let mut ctl = shared.control.subscribe();
    let mut listener = Some(listener);
    loop {
        let c = *ctl.borrow_and_update();
        if c.shutdown {
            return;
        }
        if c.paused {
            listener = None;
            shared.listening.store(false, Ordering::SeqCst);
            if ctl.changed().await.is_err() {
                return;
            }
            continue;
        }
        if listener.is_none() {
            // tokio sets SO_REUSEADDR, so the port is free again despite TIME_WAIT.
            match tokio::net::TcpListener::bind(shared.addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let l = listener.as_ref().expect("bound above");
        shared.listening.store(true, Ordering::SeqCst);
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((tcp, _)) = accepted {
                    spawn_connection(shared.clone(), acceptor.clone(), tcp, c.epoch);
                }
            }
            changed = ctl.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

fn spawn_connection(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    epoch: u64,
) {
    shared.connections.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let mut ctl = shared.control.subscribe();
        let killed = async move {
            let _ = ctl.wait_for(|c| c.shutdown || c.epoch != epoch).await;
        };
        let conn_shared = shared.clone();
        let conn = async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let shared = conn_shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        };
        tokio::select! {
            _ = conn => {}
            _ = killed => {}
        }
        shared.connections.fetch_sub(1, Ordering::SeqCst);
    });
}
