//! OpenBao goes away while `pillion run` works: a loopback proxy between the two closes its
//! port and cuts its connections. pillion keeps running, keeps the files it has, logs its
//! retries, and once OpenBao is reachable again its backoff brings a new verified certificate.

use crate::common;

use std::time::Duration;

use common::openbao::*;
use common::*;
use rustix::process::Signal;

/// Bound for a daemon to get to a state (backoff delays grow: 1s, ~2s, ~4s...).
const DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn files_stay_and_pillion_retries_while_openbao_is_unreachable_then_recovers() {
    let bao = OpenBao::shared();
    let proxy = PausableProxy::start(bao.port);
    let case = Case::new();
    let mut issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), "outage")));
    issuer.address = proxy.addr();
    issuer.timeout = Some("2s".into());
    bao.kv_put("secret/app/outage", &[("password", "kept")]);
    case.write_config(
        &issuer,
        &format!(
            "certificates:\n{}secrets:\n  - name: db\n    issuer: bao\n    path: secret/app/outage\n    \
             refreshInterval: 1s\n",
            cert_yaml("web", "1h")
        ),
    );
    let web = case.out.join("web");
    let db = case.out.join("db");
    let crt = web.join("tls.crt");

    let daemon = case.run();
    let context = || {
        format!(
            "proxy accepted {} connection(s)\n{}\n{}\n{}",
            proxy.accepted(),
            case.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    wait_for_ctx("the certificate and the secret", DEADLINE, context, || {
        serial_fast(&crt).is_some() && db.join("db.json").exists()
    });
    let first = serial(&crt);
    let web_generation = live_generation(&web);
    let db_generation = live_generation(&db);
    let secret = std::fs::read(db.join("db.json")).expect("read db.json");

    // OpenBao becomes unreachable; a renewal is asked for right away.
    proxy.pause();
    let signed_before = bao.approle_responses("outage", "pki/sign/app").len();
    daemon.signal(Signal::USR1);
    let failures = || {
        lines_containing(
            &daemon.logs(),
            &["renewal failed; the files on disk are unchanged", "web"],
        )
        .len()
    };
    wait_for_ctx(
        "two failed renewal attempts (a retry) in the logs",
        DEADLINE,
        context,
        || failures() >= 2,
    );
    wait_for_ctx(
        "a failed secret refresh in the logs",
        DEADLINE,
        context,
        || {
            daemon
                .logs()
                .contains("secret refresh failed; the files on disk are unchanged")
        },
    );

    assert!(!daemon.exited(), "pillion must keep running\n{}", context());
    assert_eq!(serial(&crt), first, "{}", context());
    assert_eq!(live_generation(&web), web_generation, "{}", context());
    assert_eq!(live_generation(&db), db_generation, "{}", context());
    assert_eq!(
        std::fs::read(db.join("db.json")).expect("read db.json"),
        secret,
        "{}",
        context()
    );
    openssl_verify(&bao.root_ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    key_pair_check(&crt, &web.join("tls.key")).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    assert_eq!(
        bao.approle_responses("outage", "pki/sign/app").len(),
        signed_before,
        "no sign request may have reached OpenBao while the proxy was paused\n{}",
        context()
    );

    // OpenBao is back: the next retry (no new signal) gets a new certificate.
    proxy.resume();
    wait_for_ctx(
        "a renewed certificate after the outage",
        DEADLINE,
        context,
        || serial_fast(&crt).is_some_and(|s| s != first),
    );
    openssl_verify(&bao.root_ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    openssl_verify(&web.join("ca.crt"), &crt).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    key_pair_check(&crt, &web.join("tls.key")).unwrap_or_else(|e| panic!("{e}\n{}", context()));
    assert!(
        bao.approle_responses("outage", "pki/sign/app").len() > signed_before,
        "OpenBao should have signed the renewed certificate\n{}",
        context()
    );
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}
