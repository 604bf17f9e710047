//! Credentials written by others, as a source: a Secret-volume-style directory in the kubelet's
//! atomic-writer layout (`..data`, tls.crt, tls.key, ca.crt) and a podCertificate credential
//! bundle (key then chain in one plain PEM file), both made by openssl as a kubelet or csi-driver
//! would. pillion verifies each generation, publishes it, serves it to a real Envoy over SDS and
//! signals the app once per change; a generation whose key does not match its certificate is
//! refused with the reason, and nothing of it is delivered.

use crate::common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::envoy::*;
use common::fixture::Fixture;
use common::*;

const DEADLINE: Duration = Duration::from_secs(30);

/// A key and a certificate for `dns`, signed by `ca` with openssl: (cert PEM, key PEM).
fn openssl_leaf(ca: &OpensslCa, dir: &Path, dns: &str) -> (String, String) {
    let tag = format!("{}", fastrand::u64(..));
    let key = dir.join(format!("{tag}.key"));
    let csr = dir.join(format!("{tag}.csr"));
    let crt = dir.join(format!("{tag}.crt"));
    let ext = write(
        dir,
        &format!("{tag}.ext"),
        &format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:{dns}\n"),
    );
    let run = |args: &[&str]| {
        let ran = run_bounded(
            std::process::Command::new("openssl").args(args),
            COMMAND_DEADLINE,
        );
        ran.assert_success();
    };
    let p = |p: &Path| p.display().to_string();
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &p(&key),
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        &p(&key),
        "-subj",
        &format!("/CN={dns}"),
        "-out",
        &p(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca.cert),
        "-CAkey",
        &p(&ca.key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&crt),
    ]);
    (
        fs::read_to_string(&crt).unwrap(),
        fs::read_to_string(&key).unwrap(),
    )
}

/// Writes `files` as a new generation of `dir` the way the kubelet's atomic writer does: a
/// hidden `..<timestamp>` directory, a `..data` link swapped to it by rename, visible links.
fn kubelet_write(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    let generation = format!("..{}_{}", chrono_like(), fastrand::u32(..));
    let gen_dir = dir.join(&generation);
    fs::create_dir(&gen_dir).unwrap();
    for (name, text) in files {
        fs::write(gen_dir.join(name), text).unwrap();
    }
    let old = fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(&generation, &tmp).unwrap();
    fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(PathBuf::from("..data").join(name), link).unwrap();
        }
    }
    if let Some(old) = old {
        let _ = fs::remove_dir_all(dir.join(old));
    }
}

fn chrono_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}_{:09}", t.as_secs(), t.subsec_nanos())
}

#[test]
fn files_written_by_others_are_verified_served_over_sds_and_signal_the_app() {
    let ca = openssl_ca(KeyKind::EcP256Pkcs8);
    let fx = Fixture::new();
    let scratch = tempfile::tempdir().unwrap();
    let secret_dir = fx.path().join("secret-volume");
    let podcert_dir = fx.path().join("podcert");
    let ca_pem = fs::read_to_string(&ca.cert).unwrap();
    let (web_crt, web_key) = openssl_leaf(&ca, scratch.path(), "localhost");
    kubelet_write(
        &secret_dir,
        &[
            ("tls.crt", &web_crt),
            ("tls.key", &web_key),
            ("ca.crt", &ca_pem),
        ],
    );
    fs::create_dir_all(&podcert_dir).unwrap();
    let (client_crt, client_key) = openssl_leaf(&ca, scratch.path(), "client.test");
    let bundle = podcert_dir.join("credentialbundle.pem");
    fs::write(&bundle, format!("{client_key}{client_crt}")).unwrap();

    let socket = fx.path().join("sds.sock");
    let published = fx.out.join("web/tls.crt");
    let app = HupCounter::start(fx.path(), "files-app", &[&published]);
    fx.write_config(&format!(
        "issuers:\n  secret:\n    files: {{dir: \"{}\", ca: ca.crt, pollInterval: 200ms}}\n  podcert:\n    files: {{dir: \"{}\", credentialBundle: credentialbundle.pem, caFile: \"{}\", pollInterval: 200ms}}\nsds:\n  socket: \"{}\"\ncertificates:\n  - name: web\n    issuer: secret\n    dnsNames: [localhost]\n  - name: client\n    issuer: podcert\nreload:\n  process: files-app\n",
        secret_dir.display(),
        podcert_dir.display(),
        ca.cert.display(),
        socket.display()
    ));
    let check = run_bounded(&mut fx.pillion(&["check"]), COMMAND_DEADLINE);
    assert!(check.status.success(), "{}", check.describe());
    assert!(
        check
            .stdout
            .contains("files another component writes: tls.crt and tls.key in"),
        "{}",
        check.stdout
    );
    let daemon = fx.run();
    wait_for_ctx(
        "the files to be published",
        DEADLINE,
        || format!("{}\n{}", fx.describe(), daemon.describe()),
        || {
            fs::read_to_string(&published).is_ok_and(|t| t == web_crt)
                && fs::read_to_string(fx.out.join("client/tls.crt")).is_ok_and(|t| t == client_crt)
        },
    );
    let envoy = Envoy::start(&socket);
    let client = fx.out.join("client");
    let ctx = || {
        format!(
            "{}\n{}\n{}\n{}",
            fx.describe(),
            daemon.describe(),
            envoy.describe(),
            app.describe()
        )
    };
    let served = wait_served(&envoy, &client, &ca.cert, DEADLINE)
        .unwrap_or_else(|e| panic!("Envoy never served the certificate: {e}\n{}", ctx()));
    assert_eq!(Some(served), leaf_sha256(&published), "{}", ctx());
    wait_for_ctx("the first SIGHUP", DEADLINE, ctx, || app.count() >= 1);
    let hups = app.count();

    // A new generation, written as the kubelet writes: delivered to the files, Envoy and the app.
    let (second_crt, second_key) = openssl_leaf(&ca, scratch.path(), "localhost");
    kubelet_write(
        &secret_dir,
        &[
            ("tls.crt", &second_crt),
            ("tls.key", &second_key),
            ("ca.crt", &ca_pem),
        ],
    );
    wait_for_ctx("the new generation in Envoy", DEADLINE, ctx, || {
        fs::read_to_string(&published).is_ok_and(|t| t == second_crt)
            && handshake_once(envoy.tls_port, envoy.plain_port, &client, &ca.cert).ok()
                == leaf_sha256(&published)
    });
    wait_for_ctx("one more SIGHUP", DEADLINE, ctx, || app.count() == hups + 1);

    // A generation whose key does not belong to its certificate is refused, with the reason;
    // nothing of it reaches the files or Envoy.
    let (_, stray_key) = openssl_leaf(&ca, scratch.path(), "localhost");
    let (third_crt, _) = openssl_leaf(&ca, scratch.path(), "localhost");
    kubelet_write(
        &secret_dir,
        &[
            ("tls.crt", &third_crt),
            ("tls.key", &stray_key),
            ("ca.crt", &ca_pem),
        ],
    );
    daemon.wait_for("the mismatched generation to be refused", DEADLINE, || {
        daemon
            .logs()
            .contains("renewal failed; the files on disk are unchanged cert=web")
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        fs::read_to_string(&published).unwrap(),
        second_crt,
        "{}",
        ctx()
    );
    assert_eq!(
        handshake_once(envoy.tls_port, envoy.plain_port, &client, &ca.cert).ok(),
        leaf_sha256(&published),
        "Envoy keeps the good certificate\n{}",
        ctx()
    );
    assert_eq!(
        app.count(),
        hups + 1,
        "no signal for a refused set\n{}",
        ctx()
    );

    // Fixed: delivered by itself.
    let (fourth_crt, fourth_key) = openssl_leaf(&ca, scratch.path(), "localhost");
    kubelet_write(
        &secret_dir,
        &[
            ("tls.crt", &fourth_crt),
            ("tls.key", &fourth_key),
            ("ca.crt", &ca_pem),
        ],
    );
    wait_for_ctx("the fixed generation", DEADLINE, ctx, || {
        fs::read_to_string(&published).is_ok_and(|t| t == fourth_crt)
    });

    // The podCertificate bundle, rewritten in place: the new key and chain are delivered.
    let (client2_crt, client2_key) = openssl_leaf(&ca, scratch.path(), "client.test");
    fs::write(&bundle, format!("{client2_key}{client2_crt}")).unwrap();
    wait_for_ctx("the new credential bundle", DEADLINE, ctx, || {
        fs::read_to_string(fx.out.join("client/tls.crt")).is_ok_and(|t| t == client2_crt)
    });
    assert!(daemon.stop().success());
}

#[test]
fn a_files_issuer_without_anchors_or_with_both_layouts_is_exit_2() {
    let fx = Fixture::new();
    fx.write_config("issuers:\n  f:\n    files: {dir: /x, credentialBundle: b.pem, certificate: tls.crt}\n  g:\n    files: {dir: /x}\ncertificates:\n  - name: web\n    issuer: f\n");
    let ran = run_bounded(&mut fx.pillion(&["check"]), COMMAND_DEADLINE);
    assert_eq!(ran.code(), Some(2), "{}", ran.describe());
    for expected in [
        "issuers.f.files.credentialBundle: cannot be combined with certificate or privateKey",
        "issuers.g.files: names no trust anchors",
    ] {
        assert!(
            ran.stderr.contains(expected),
            "{expected}\n{}",
            ran.describe()
        );
    }
}
