//! A real nginx serving a certificate from a real OpenBao: a TLS client that trusts only
//! OpenBao's root is served pillion's certificate, and after a renewal (SIGUSR1) it is served the
//! new one, because pillion sent nginx's master a SIGHUP.

use crate::common;

use std::time::Duration;

use common::openbao::*;
use common::*;
use rustix::process::Signal;

const DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn nginx_serves_the_openbao_certificate_and_the_renewed_one_after_a_renewal() {
    // pillion finds nginx by name: no other test's nginx may run meanwhile.
    let _only_nginx = nginx_by_name();
    let bao = OpenBao::shared();
    let case = Case::new();
    let login = bao.approle(case.path(), "nginx");
    case.write_config(
        &bao.issuer(Auth::AppRole(login)),
        &format!(
            "certificates:\n{}reload:\n  process: nginx\n",
            cert_yaml("web", "1h")
        ),
    );
    let web = case.out.join("web");
    let (crt, key) = (web.join("tls.crt"), web.join("tls.key"));

    // The files exist before nginx starts, as with an init container.
    let ran = case.init("30s");
    ran.assert_success();
    let first = serial(&crt);

    let nginx = Nginx::start(&crt, &key);
    let served = nginx.served_serial(&bao.root_ca).unwrap_or_else(|e| {
        panic!(
            "a client trusting OpenBao's root cannot talk to nginx: {e}\n{}",
            nginx.describe()
        )
    });
    assert_eq!(
        served,
        first,
        "nginx should serve the certificate init published\n{}",
        nginx.describe()
    );

    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}\n{}",
            case.describe(),
            nginx.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    daemon.wait_for(
        "pillion run to reuse the certificate init published",
        DEADLINE,
        || {
            daemon
                .logs()
                .contains("reusing the valid certificate on disk")
        },
    );
    daemon.signal(Signal::USR1);

    let last = std::cell::RefCell::new(String::new());
    wait_for_ctx(
        "nginx to serve the renewed certificate",
        DEADLINE,
        || format!("last: {}\n{}", last.borrow(), context()),
        || {
            let Some(on_disk) = serial_fast(&crt) else {
                return false;
            };
            if on_disk == first {
                return false;
            }
            match nginx.served_serial(&bao.root_ca) {
                Ok(s) => {
                    *last.borrow_mut() = format!("on disk {on_disk}, served {s}");
                    s == on_disk
                }
                Err(e) => {
                    *last.borrow_mut() = e;
                    false
                }
            }
        },
    );
    // nginx says who reloaded it.
    let from_pillion = format!("(SIGHUP) received from {},", daemon.pid());
    assert!(
        nginx.error_log_text().contains(&from_pillion),
        "nginx logged no SIGHUP from pillion\n{}",
        context()
    );
    // OpenBao issued both certificates nginx served.
    assert_eq!(
        bao.approle_responses("nginx", "pki/sign/app").len(),
        2,
        "OpenBao should have signed two certificates for role nginx\n{}",
        context()
    );
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}
