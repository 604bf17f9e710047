//! Secrets from a real OpenBao KV store: an update written with `bao kv put` reaches the files
//! and the app gets one SIGHUP; an unchanged secret changes nothing; KV v1 and v2 (detected when
//! `kvVersion` is absent); the json/env/files/raw formats, read back by independent readers
//! (python's json, a POSIX shell); a deleted secret keeps the last good files.
//!
//! OpenBao's audit log counts pillion's reads, so "a few refresh intervals went by" is something
//! the server saw, not a sleep.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::openbao::*;
use common::*;

const INIT_TIMEOUT: &str = "30s";

/// Bound for a daemon to get to a state; refresh intervals are 1s.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `secrets:` entry named `name` for the issuer `bao`, refreshed every second, with `extra`
/// lines (`format: env`...) appended.
fn secret_yaml(name: &str, path: &str, extra: &[&str]) -> String {
    let mut y =
        format!("  - name: {name}\n    issuer: bao\n    path: {path}\n    refreshInterval: 1s\n");
    for line in extra {
        y.push_str("    ");
        y.push_str(line);
        y.push('\n');
    }
    y
}

/// The issuer `bao`, logging in with a fresh AppRole role `role`.
fn kv_issuer(bao: &OpenBao, case: &Case, role: &str) -> VaultIssuer {
    bao.issuer(Auth::AppRole(bao.approle(case.path(), role)))
}

/// A config body with one certificate (`web`) besides `rest` (`secrets:`, `reload:`): most
/// sidecars serve both, and it keeps these tests about secrets independent of whether a
/// secrets-only config is accepted (which has its own test).
fn with_cert(rest: &str) -> String {
    format!("certificates:\n{}{rest}", cert_yaml("web", "1h"))
}

/// How many reads of `api_path` OpenBao answered for AppRole role `role`.
fn reads(bao: &OpenBao, role: &str, api_path: &str) -> usize {
    bao.approle_responses(role, api_path).len()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The JSON file as python's `json` module reads it, re-serialised compactly with sorted keys.
fn python_json(path: &Path) -> String {
    let ran = run_bounded(
        Command::new("python3").args([
            "-c",
            "import json, sys; \
             print(json.dumps(json.load(open(sys.argv[1])), sort_keys=True, separators=(',', ':')))",
        ]).arg(path),
        COMMAND_DEADLINE,
    );
    ran.assert_success();
    ran.stdout.trim_end_matches('\n').to_owned()
}

/// The values a POSIX shell sees for `vars` after sourcing the env file (`set -a; . file`).
fn shell_sees(path: &Path, vars: &[&str]) -> Vec<String> {
    let script = format!(
        "set -a; . \"$1\"; for v in {}; do eval \"printf '%s\\0' \\\"\\${{$v}}\\\"\"; done",
        vars.join(" ")
    );
    let ran = run_bounded(
        Command::new("sh").arg("-c").arg(script).arg("sh").arg(path),
        COMMAND_DEADLINE,
    );
    ran.assert_success();
    let mut values: Vec<String> = ran.stdout.split('\0').map(str::to_owned).collect();
    values.pop(); // after the last NUL
    values
}

#[test]
fn a_kv2_update_reaches_the_file_and_signals_the_app_exactly_once() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-update");
    bao.kv_put("secret/app/kv-update", &[("password", "first")]);
    let file = case.out.join("db/db.json");
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}reload:\n  process: kvupd-app\n",
            secret_yaml("db", "secret/app/kv-update", &[])
        )),
    );

    // The files exist before the app starts, as with an init container.
    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    assert!(read(&file).contains("first"), "{}", ctx(&case, &ran, bao));
    let app = HupCounter::start(case.path(), "kvupd-app", &[&file]);

    let api_path = "secret/data/app/kv-update";
    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}\n{}",
            case.describe(),
            app.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    // Two rounds of run see the secret unchanged.
    let before = reads(bao, "kv-update", api_path);
    wait_for_ctx(
        "two reads of the unchanged secret",
        DEADLINE,
        context,
        || reads(bao, "kv-update", api_path) >= before + 2,
    );

    bao.kv_put("secret/app/kv-update", &[("password", "second")]);
    wait_for_ctx("the update to reach db.json", DEADLINE, context, || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.contains("second"))
    });
    // Let pillion read the (now unchanged again) secret twice more: no further signal may come.
    let after = reads(bao, "kv-update", api_path);
    wait_for_ctx("two more reads after the update", DEADLINE, context, || {
        reads(bao, "kv-update", api_path) >= after + 2
    });

    assert_eq!(
        app.count(),
        1,
        "the app should get exactly one SIGHUP, for the update\n{}",
        context()
    );
    let seen = &app.seen()[0];
    assert_eq!(
        seen.sender,
        daemon.pid(),
        "the SIGHUP should come from pillion\n{}",
        context()
    );
    let at_signal = String::from_utf8_lossy(&seen.files[0]).into_owned();
    assert_eq!(
        python_json(&seen.dir.join("0")),
        r#"{"password":"second"}"#,
        "when signalled, the app should read the new secret; it read:\n{at_signal}\n{}",
        context()
    );
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn an_unchanged_secret_makes_no_new_generation_and_no_signal() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-same");
    bao.kv_put("secret/app/kv-same", &[("password", "steady")]);
    let dir = case.out.join("db");
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}reload:\n  process: kvsame-app\n",
            secret_yaml("db", "secret/app/kv-same", &[])
        )),
    );
    let app = HupCounter::start(case.path(), "kvsame-app", &[&dir.join("db.json")]);

    let api_path = "secret/data/app/kv-same";
    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}\n{}",
            case.describe(),
            app.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    wait_for_ctx("the secret to be published", DEADLINE, context, || {
        dir.join("db.json").exists()
    });
    // The next read belongs to the second round: the first (publish + reload) is over.
    let published = reads(bao, "kv-same", api_path);
    wait_for_ctx("the next read of the secret", DEADLINE, context, || {
        reads(bao, "kv-same", api_path) > published
    });
    let signals = app.count();
    let generation = live_generation(&dir);
    let hidden = hidden_entries(&dir);
    let content = read(&dir.join("db.json"));
    assert!(
        signals <= 1,
        "at most one SIGHUP for the first publication\n{}",
        context()
    );

    let now = reads(bao, "kv-same", api_path);
    wait_for_ctx("three more reads of the secret", DEADLINE, context, || {
        reads(bao, "kv-same", api_path) >= now + 3
    });
    assert_eq!(
        app.count(),
        signals,
        "an unchanged secret must not signal the app\n{}",
        context()
    );
    assert_eq!(
        live_generation(&dir),
        generation,
        "an unchanged secret must not publish a new generation\n{}",
        context()
    );
    assert_eq!(hidden_entries(&dir), hidden, "{}", context());
    assert_eq!(read(&dir.join("db.json")), content, "{}", context());
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn kv1_secrets_are_read_with_and_without_kv_version() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-v1");
    bao.kv_put(
        "kv/app/kv-v1",
        &[("user", "app"), ("password", "v1-secret")],
    );
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}{}",
            secret_yaml("detected", "kv/app/kv-v1", &[]),
            secret_yaml("declared", "kv/app/kv-v1", &["kvVersion: 1"]),
        )),
    );

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    for name in ["detected", "declared"] {
        let file = case.out.join(format!("{name}/{name}.json"));
        assert_eq!(
            python_json(&file),
            r#"{"password":"v1-secret","user":"app"}"#,
            "{name}: {}",
            ctx(&case, &ran, bao)
        );
        assert_eq!(mode_of(&file), 0o600, "{}", ctx(&case, &ran, bao));
    }
    // The version was detected with the shipped policy alone: OpenBao answered the mount
    // lookup for pillion's token without an error.
    let lookups = bao.approle_responses("kv-v1", "sys/internal/ui/mounts/kv/app/kv-v1");
    assert!(
        lookups.iter().any(|l| OpenBao::audit_error(l).is_none()),
        "OpenBao should have answered sys/internal/ui/mounts/kv/app/kv-v1 for role kv-v1:\n{}\n{}",
        lookups.join("\n"),
        ctx(&case, &ran, bao)
    );
    // KV v1 has no data/ segment: OpenBao saw reads of the path as given.
    assert!(
        reads(bao, "kv-v1", "kv/app/kv-v1") >= 2,
        "OpenBao should have answered two reads of kv/app/kv-v1\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn json_format_writes_the_data_object_with_sorted_keys() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-json");
    bao.kv_put_json(
        "secret/app/kv-json",
        r#"{"user":"app","password":"p\"w$`\\d","port":5432,"tls":true,"opts":{"b":1,"a":[2,3]}}"#,
    );
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}",
            secret_yaml("db", "secret/app/kv-json", &["format: json"])
        )),
    );

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let file = case.out.join("db/db.json");
    let expected =
        r#"{"opts":{"a":[2,3],"b":1},"password":"p\"w$`\\d","port":5432,"tls":true,"user":"app"}"#;
    // What a JSON reader gets...
    assert_eq!(python_json(&file), expected, "{}", ctx(&case, &ran, bao));
    // ...and the bytes themselves: keys in sorted order, whatever the indentation.
    assert_eq!(
        json_compact(&read(&file)),
        expected,
        "{}",
        ctx(&case, &ran, bao)
    );
    assert_atomic_layout(&case.out.join("db"), &["db.json"]);
}

#[test]
fn env_format_writes_sorted_quoted_lines_a_shell_reads_back() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-env");
    bao.kv_put_json(
        "secret/app/kv-env",
        r#"{"USER":"app","PASSWORD":"p\"w$HOME`id`\\d","MULTI":"one\ntwo","EMPTY":""}"#,
    );
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}",
            secret_yaml("db", "secret/app/kv-env", &["format: env"])
        )),
    );

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let file = case.out.join("db/db.env");
    let expected =
        "EMPTY=\"\"\nMULTI=\"one\\ntwo\"\nPASSWORD=\"p\\\"w\\$HOME\\`id\\`\\\\d\"\nUSER=\"app\"\n";
    assert_eq!(read(&file), expected, "{}", ctx(&case, &ran, bao));
    // A shell sourcing the file gets the values back, nothing expanded or executed (a newline
    // stays the two characters `\n`, as the contract says).
    assert_eq!(
        shell_sees(&file, &["EMPTY", "MULTI", "PASSWORD", "USER"]),
        ["", "one\\ntwo", "p\"w$HOME`id`\\d", "app"],
        "{}",
        ctx(&case, &ran, bao)
    );
    assert_eq!(mode_of(&file), 0o600, "{}", ctx(&case, &ran, bao));
}

#[test]
fn files_format_writes_one_file_per_key() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-files");
    bao.kv_put_json(
        "secret/app/kv-files",
        r#"{"username":"app","password":"line1\nline2","port":5432}"#,
    );
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}",
            secret_yaml("creds", "secret/app/kv-files", &["format: files"])
        )),
    );

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    let dir = case.out.join("creds");
    assert_atomic_layout(&dir, &["username", "password", "port"]);
    assert_eq!(
        read(&dir.join("username")),
        "app",
        "{}",
        ctx(&case, &ran, bao)
    );
    assert_eq!(
        read(&dir.join("password")),
        "line1\nline2",
        "{}",
        ctx(&case, &ran, bao)
    );
    assert_eq!(read(&dir.join("port")), "5432", "{}", ctx(&case, &ran, bao));
    for name in ["username", "password", "port"] {
        assert_eq!(mode_of(&dir.join(name)), 0o600, "{}", ctx(&case, &ran, bao));
    }
}

#[test]
fn raw_format_writes_one_value_as_is() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-raw");
    bao.kv_put_json(
        "secret/app/kv-raw",
        r#"{"cert":"-----BEGIN X-----\nabc\n-----END X-----\n","opts":{"a":1},"other":"x"}"#,
    );
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}{}",
            secret_yaml("pem", "secret/app/kv-raw", &["format: raw", "key: cert"]),
            secret_yaml(
                "opts",
                "secret/app/kv-raw",
                &["format: raw", "key: opts", "file: opts.json"]
            ),
        )),
    );

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    assert_eq!(
        read(&case.out.join("pem/cert")),
        "-----BEGIN X-----\nabc\n-----END X-----\n",
        "a string value is written as is\n{}",
        ctx(&case, &ran, bao)
    );
    assert_eq!(
        python_json(&case.out.join("opts/opts.json")),
        r#"{"a":1}"#,
        "a non-string value is written as JSON\n{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        !case.out.join("pem/other").exists(),
        "raw writes only the chosen key\n{}",
        ctx(&case, &ran, bao)
    );
}

#[test]
fn a_deleted_secret_keeps_the_last_files_and_logs_the_refresh_failure() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-gone");
    bao.kv_put("secret/app/kv-gone", &[("password", "last-good")]);
    let dir = case.out.join("db");
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}",
            secret_yaml("db", "secret/app/kv-gone", &["format: env"])
        )),
    );

    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}",
            case.describe(),
            daemon.describe(),
            bao.describe()
        )
    };
    wait_for_ctx("the secret to be published", DEADLINE, context, || {
        dir.join("db.env").exists()
    });
    let content = read(&dir.join("db.env"));
    let generation = live_generation(&dir);

    bao.bao_ok(["kv", "delete", "secret/app/kv-gone"]);
    let api_path = "secret/data/app/kv-gone";
    let deleted_at = reads(bao, "kv-gone", api_path);
    daemon.wait_for("pillion to log the failed refresh", DEADLINE, || {
        daemon
            .logs()
            .contains("secret refresh failed; the files on disk are unchanged")
    });
    // OpenBao was asked again (and keeps being asked: the loop goes on)...
    wait_for_ctx("two reads after the deletion", DEADLINE, context, || {
        reads(bao, "kv-gone", api_path) >= deleted_at + 2
    });
    assert!(!daemon.exited(), "pillion must keep running\n{}", context());
    // ...and the last good files stay.
    assert_eq!(read(&dir.join("db.env")), content, "{}", context());
    assert_eq!(live_generation(&dir), generation, "{}", context());
    assert_eq!(content, "password=\"last-good\"\n", "{}", context());
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}

#[test]
fn a_secrets_only_config_needs_no_certificate() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let mut issuer = kv_issuer(bao, &case, "kv-only");
    // No pki block either: this issuer only serves secrets.
    issuer.pki_mount = None;
    bao.kv_put("secret/app/kv-only", &[("password", "alone")]);
    case.write_config(
        &issuer,
        &format!("secrets:\n{}", secret_yaml("db", "secret/app/kv-only", &[])),
    );

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    assert_eq!(
        python_json(&case.out.join("db/db.json")),
        r#"{"password":"alone"}"#,
        "{}",
        ctx(&case, &ran, bao)
    );
    assert!(
        reads(bao, "kv-only", "secret/data/app/kv-only") >= 1,
        "OpenBao should have answered a read of secret/data/app/kv-only\n{}",
        ctx(&case, &ran, bao)
    );
}

/// A secret whose visible name went missing (a kill between the swap and the rename, or a
/// delete) while its content stays the same: the next read writes nothing new, so it must make
/// the name visible again itself.
#[test]
fn an_unchanged_secret_whose_file_went_missing_is_made_visible_again() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let issuer = kv_issuer(bao, &case, "kv-repair");
    bao.kv_put("secret/app/kv-repair", &[("user", "app")]);
    case.write_config(
        &issuer,
        &with_cert(&format!(
            "secrets:\n{}",
            secret_yaml("db", "secret/app/kv-repair", &["format: json"])
        )),
    );
    case.init(INIT_TIMEOUT).assert_success();
    let dir = case.out.join("db");
    std::fs::remove_file(dir.join("db.json")).unwrap();

    let ran = case.init(INIT_TIMEOUT);
    ran.assert_success();
    assert_atomic_layout(&dir, &["db.json"]);
    assert_eq!(
        python_json(&dir.join("db.json")),
        r#"{"user":"app"}"#,
        "{}",
        ctx(&case, &ran, bao)
    );
}
