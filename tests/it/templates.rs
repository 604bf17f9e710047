//! Templates: files rendered from a real OpenBao KV secret and a real certificate, published with
//! their credential and followed by one SIGHUP; re-rendered when the secret changes and left alone
//! when nothing did; a template error names the template and line and leaves the old file in
//! place while the credential's other files are published; `pillion check` reports syntax errors
//! and unknown names with exit 2.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::fixture::Fixture;
use common::openbao::*;
use common::*;

const INIT_TIMEOUT: &str = "30s";

/// Bound for a daemon to get to a state; refresh intervals are 1s.
const DEADLINE: Duration = Duration::from_secs(60);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// How many reads of `api_path` OpenBao answered for AppRole role `role`.
fn reads(bao: &OpenBao, role: &str, api_path: &str) -> usize {
    bao.approle_responses(role, api_path).len()
}

/// A secret `db` at `path`, refreshed every second, with an `application.properties` template
/// that reads it and the certificate `web`.
fn db_with_template(path: &str) -> String {
    format!(
        "certificates:\n{}secrets:\n  - name: db\n    issuer: bao\n    path: {path}\n    refreshInterval: 1s\n    templates:\n      - file: application.properties\n        mode: \"0640\"\n        template: |\n          db.user={{{{ secrets.db.user }}}}\n          db.password={{{{ secrets.db.password | shell_quote }}}}\n          tls.serial={{{{ certs.web.serial }}}}\n          tls.names={{{{ certs.web.dnsNames | join(\",\") }}}}\n          pod={{{{ pod.name }}}}\n          version={{{{ meta.db.version }}}}\n",
        cert_yaml("web", "1h")
    )
}

#[test]
fn a_kv_update_renders_the_template_again_with_one_sighup_and_quiet_rounds_write_nothing() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), "tmpl-update")));
    bao.kv_put(
        "secret/app/tmpl-update",
        &[("user", "app"), ("password", "it's first")],
    );
    case.write_config(
        &issuer,
        &format!(
            "{}reload:\n  process: tmplupd-app\n",
            db_with_template("secret/app/tmpl-update")
        ),
    );
    let props = case.out.join("db/application.properties");
    let crt = case.out.join("web/tls.crt");

    let mut init = case.pillion(&["init", "--timeout", INIT_TIMEOUT]);
    init.env("POD_NAME", "shop-7f9c");
    let ran = run_bounded(&mut init, COMMAND_DEADLINE);
    ran.assert_success();
    let serial_hex = serial(&crt).to_lowercase();
    let expected = |password: &str, version: u32| {
        let text = read(&props);
        let serial_line = text
            .lines()
            .find_map(|l| l.strip_prefix("tls.serial="))
            .unwrap_or_default()
            .replace(':', "");
        assert_eq!(
            serial_line.trim_start_matches('0'),
            serial_hex.trim_start_matches('0'),
            "the serial in the template should be the certificate's\n{text}"
        );
        format!(
            "db.user=app\ndb.password={password}\ntls.serial={}\ntls.names=localhost\npod=shop-7f9c\nversion={version}\n",
            text.lines()
                .find_map(|l| l.strip_prefix("tls.serial="))
                .unwrap_or_default()
        )
    };
    assert_eq!(
        read(&props),
        expected("'it'\\''s first'", 1),
        "{}",
        ctx(&case, &ran, bao)
    );
    assert_eq!(mode_of(&props), 0o640);

    let app = HupCounter::start(case.path(), "tmplupd-app", &[&props]);
    let mut cmd = case.pillion(&["run"]);
    cmd.env("POD_NAME", "shop-7f9c");
    let daemon = Daemon::spawn(cmd);
    let context = || {
        format!(
            "{}\n{}\n{}\n{}",
            case.describe(),
            app.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    let api_path = "secret/data/app/tmpl-update";
    // Quiet rounds: the secret is read again, nothing is written, no signal.
    let before = reads(bao, "tmpl-update", api_path);
    wait_for_ctx(
        "two reads of the unchanged secret",
        DEADLINE,
        context,
        || reads(bao, "tmpl-update", api_path) >= before + 2,
    );
    let generation = live_generation(&case.out.join("db"));
    let quiet = reads(bao, "tmpl-update", api_path);
    wait_for_ctx("two more quiet reads", DEADLINE, context, || {
        reads(bao, "tmpl-update", api_path) >= quiet + 2
    });
    assert_eq!(
        live_generation(&case.out.join("db")),
        generation,
        "unchanged inputs must not write the template again\n{}",
        context()
    );
    assert_eq!(
        app.count(),
        0,
        "no signal for unchanged inputs\n{}",
        context()
    );

    bao.kv_put(
        "secret/app/tmpl-update",
        &[("user", "app"), ("password", "second")],
    );
    wait_for_ctx(
        "the update to reach the template",
        DEADLINE,
        context,
        || std::fs::read_to_string(&props).is_ok_and(|s| s.contains("db.password='second'")),
    );
    let after = reads(bao, "tmpl-update", api_path);
    wait_for_ctx("two more reads after the update", DEADLINE, context, || {
        reads(bao, "tmpl-update", api_path) >= after + 2
    });
    assert_eq!(read(&props), expected("'second'", 2), "{}", context());
    assert_eq!(
        app.count(),
        1,
        "exactly one SIGHUP, for the update\n{}",
        context()
    );
    let seen = String::from_utf8_lossy(&app.seen()[0].files[0]).into_owned();
    assert!(
        seen.contains("db.password='second'"),
        "when signalled, the app should read the new template; it read:\n{seen}\n{}",
        context()
    );
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn an_undefined_key_names_the_template_and_line_keeps_its_old_file_and_publishes_the_rest() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), "tmpl-error")));
    bao.kv_put(
        "secret/app/tmpl-error",
        &[("user", "app"), ("password", "good")],
    );
    case.write_config(&issuer, &db_with_template("secret/app/tmpl-error"));
    let props = case.out.join("db/application.properties");
    let mut cmd = case.pillion(&["run"]);
    cmd.env("POD_NAME", "p");
    let daemon = Daemon::spawn(cmd);
    let context = || format!("{}\n{}", case.describe(), daemon.describe());
    wait_for_ctx("the template to be published", DEADLINE, context, || {
        props.exists()
    });
    let good = read(&props);

    // The secret loses the key the template needs.
    bao.kv_put("secret/app/tmpl-error", &[("user", "app"), ("pass", "x")]);
    wait_for_ctx("the template error in the log", DEADLINE, context, || {
        daemon
            .logs()
            .contains("secrets[0].templates[0].template:2: `secrets.db.password` is undefined")
    });
    // The secret's own file is published; the template's last good file stays beside it.
    wait_for_ctx("the new secret in db.json", DEADLINE, context, || {
        std::fs::read_to_string(case.out.join("db/db.json")).is_ok_and(|t| t.contains("\"pass\""))
    });
    assert_eq!(read(&props), good, "the old file stays\n{}", context());
    // The certificate, which does not depend on the template, is still there and fine.
    assert!(case.out.join("web/tls.crt").exists(), "{}", context());
    // `pillion status` says which template fails, and why.
    let failing = "db: a template FAILS; its last good file is served: secrets[0].templates[0].template:2: `secrets.db.password` is undefined";
    wait_for_ctx(
        "the failing template in pillion status",
        DEADLINE,
        context,
        || {
            run_bounded(
                case.pillion(&["status"]).env("POD_NAME", "p"),
                COMMAND_DEADLINE,
            )
            .stdout
            .contains(failing)
        },
    );
    // The secret is read every second and the template fails each time: it is logged once.
    std::thread::sleep(Duration::from_secs(3));
    let logged = daemon.logs().matches("rendering a template failed").count();
    assert_eq!(logged, 1, "logged once\n{}", context());

    // Fixed: published again, by itself.
    bao.kv_put(
        "secret/app/tmpl-error",
        &[("user", "app"), ("password", "fixed")],
    );
    wait_for_ctx("the fixed secret to be rendered", DEADLINE, context, || {
        std::fs::read_to_string(&props).is_ok_and(|s| s.contains("'fixed'"))
    });
    wait_for_ctx(
        "pillion status to forget the failure",
        DEADLINE,
        context,
        || {
            !run_bounded(
                case.pillion(&["status"]).env("POD_NAME", "p"),
                COMMAND_DEADLINE,
            )
            .stdout
            .contains("FAILS")
        },
    );
    assert!(
        daemon.logs().contains("every template renders again"),
        "{}",
        context()
    );
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn a_certificate_template_holds_the_chain_and_its_key_for_openssl() {
    let fx = Fixture::new();
    fx.write_config(
        "certificates:\n  - name: web\n    dnsNames: [localhost]\n    templates:\n      - file: haproxy.pem\n        template: \"{{ certs.web.chain }}{{ certs.web.key }}\"\n      - file: names.txt\n        mode: \"0644\"\n        template: \"{{ certs.web.dnsNames | tojson }} until {{ certs.web.notAfter }}\\n\"\n",
    );
    let ran = fx.init(INIT_TIMEOUT);
    ran.assert_success();
    let web = fx.out.join("web");
    let pem = read(&web.join("haproxy.pem"));
    assert_eq!(
        pem,
        read(&web.join("tls.crt")) + &read(&web.join("tls.key"))
    );
    // openssl reads the certificate and the key out of the one file, and they match.
    key_pair_check(&web.join("haproxy.pem"), &web.join("haproxy.pem"))
        .unwrap_or_else(|e| panic!("{e}\n{}", fx.describe()));
    assert_eq!(mode_of(&web.join("haproxy.pem")), 0o600);
    let names = read(&web.join("names.txt"));
    assert!(
        names.starts_with("[\"localhost\"] until 20"),
        "{names}\n{}",
        fx.describe()
    );
    assert_eq!(mode_of(&web.join("names.txt")), 0o644);
    assert_atomic_layout(
        &web,
        &["tls.crt", "tls.key", "ca.crt", "haproxy.pem", "names.txt"],
    );

    // Restarted, pillion keeps the certificate on disk and renders from it: same content.
    let again = fx.init(INIT_TIMEOUT);
    again.assert_success();
    assert_eq!(read(&web.join("haproxy.pem")), pem, "{}", again.describe());
}

#[test]
fn check_reports_template_syntax_errors_and_unknown_names_with_exit_2() {
    let fx = Fixture::new();
    let file = write(
        fx.path(),
        "app.env.j2",
        "A={{ certs.web.cert }}\n{% for x in certs.web.dnsNames %}\n",
    );
    fx.write_config(&format!(
        "certificates:\n  - name: web\n    dnsNames: [localhost]\n    templates:\n      - file: a.txt\n        template: \"{{{{ secrets.db.password }}}}{{{{ certs.web.crt }}}}\"\n      - file: b.txt\n        templateFile: {}\n      - file: c.txt\n        template: \"{{{{ env.PILLION_TEST_UNSET_VAR }}}}\"\n",
        file.display()
    ));
    let ran = run_bounded(&mut fx.pillion(&["check"]), COMMAND_DEADLINE);
    assert_eq!(ran.code(), Some(2), "{}", ran.describe());
    for expected in [
        "certificates[0].templates[0].template: `secrets.db.password`: no secret is named \"db\"",
        "certificates[0].templates[0].template: `certs.web.crt`: a certificate has no \"crt\"",
        "certificates[0].templates[2].template: `env.PILLION_TEST_UNSET_VAR`: PILLION_TEST_UNSET_VAR is not set",
    ] {
        assert!(ran.stderr.contains(expected), "{expected}\n{}", ran.describe());
    }

    // `pillion check` of `config` exits 2 and says `expected`; the run, for more checks.
    let refused = |config: &str, expected: &str| {
        fx.write_config(config);
        let ran = run_bounded(&mut fx.pillion(&["check"]), COMMAND_DEADLINE);
        assert_eq!(ran.code(), Some(2), "{}", ran.describe());
        assert!(
            ran.stderr.contains(expected),
            "{expected}\n{}",
            ran.describe()
        );
        ran
    };
    let file_config = format!(
        "certificates:\n  - name: web\n    dnsNames: [localhost]\n    templates:\n      - file: b.txt\n        templateFile: {}\n",
        file.display()
    );

    // With the inline ones fixed, preflight reads the template file: its syntax error, with
    // the file and line.
    let ran = refused(
        &file_config,
        &format!(
            "certificates[0].templates[0].templateFile: {}:",
            file.display()
        ),
    );
    assert!(ran.stderr.contains("syntax error"), "{}", ran.describe());

    // Rendered against placeholder data: a filter that does not exist, in a
    // template file and inline, is reported with its file and line; what
    // real data would render is not.
    std::fs::write(
        &file,
        "ok\n{% for k, v in certs.web | items %}{{ v }}{% endfor %}\nA={{ certs.web.cert | b64encode | to_base64 }}\n",
    )
    .unwrap();
    refused(
        "certificates:\n  - name: web\n    dnsNames: [localhost]\n    templates:\n      - file: c.txt\n        template: \"{{ certs.web.serial | lower }}\\n{{ certs.web.serial | trim(1, 2) }}\"\n",
        "certificates[0].templates[0].template: line 2: too many arguments",
    );
    refused(
        &file_config,
        &format!(
            "certificates[0].templates[0].templateFile: {}:3: unknown filter",
            file.display()
        ),
    );

    // A missing template file is named.
    refused(
        "certificates:\n  - name: web\n    dnsNames: [localhost]\n    templates:\n      - file: b.txt\n        templateFile: /nonexistent/t.j2\n",
        "certificates[0].templates[0].templateFile: /nonexistent/t.j2:",
    );
}
