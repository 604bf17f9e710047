//! `vault.tokenSink` against a real OpenBao: the token pillion logs in with is published as a
//! file the app can call OpenBao with, and a new login (the old token revoked) replaces it.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::openbao::*;
use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// The issuer `bao` with a token sink of mode 0640.
fn with_token_sink(issuer: &VaultIssuer) -> String {
    format!("{}      tokenSink: {{mode: \"0640\"}}\n", issuer.yaml())
}

/// Whether OpenBao accepts `token` (`bao token lookup` as that token).
fn token_works(bao: &OpenBao, token: &str) -> bool {
    let ran = run_bounded(
        bao.cmd_as(token).args(["token", "lookup", "-format=json"]),
        COMMAND_DEADLINE,
    );
    ran.status.success()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_token_is_published_for_the_app_and_replaced_after_a_new_login() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let role = "token-sink";
    let issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), role)));
    bao.kv_put("secret/app/token-sink", &[("k", "v")]);
    // A token sink alone is a configuration: init publishes the token.
    common::fixture::Fixture::write_config(&case, &with_token_sink(&issuer));
    let ran = case.init("30s");
    ran.assert_success();
    let file = case.out.join("bao-token/token");
    let first = read(&file);
    assert!(
        !first.is_empty() && !first.ends_with('\n'),
        "{}",
        ran.describe()
    );
    assert_eq!(mode_of(&file), 0o640);
    assert!(token_works(bao, &first), "the published token should work");
    assert!(
        !ran.stderr.contains(&first),
        "the token must never be logged"
    );

    // Running with a secret that is read every second: once the token is revoked, the next read
    // is refused, pillion logs in again, and the file follows.
    common::fixture::Fixture::write_config(
        &case,
        &format!(
            "{}secrets:\n  - name: s\n    issuer: bao\n    path: secret/app/token-sink\n    refreshInterval: 1s\n",
            with_token_sink(&issuer)
        ),
    );
    let daemon = case.run();
    let context = || format!("{}\n{}", case.describe(), daemon.describe());
    wait_for_ctx("the secret", DEADLINE, context, || {
        case.out.join("s/s.json").exists()
    });
    let running = read(&file);
    for accessor in bao.token_accessors_with_meta("role_name", role) {
        bao.revoke_accessor(&accessor);
    }
    assert!(!token_works(bao, &running));
    wait_for_ctx("a new token in the file", DEADLINE, context, || {
        let now = read(&file);
        !now.is_empty() && now != running && now != first
    });
    let replaced = read(&file);
    assert!(
        token_works(bao, &replaced),
        "the new token should work\n{}",
        context()
    );
    assert!(
        !daemon.logs().contains(&replaced) && !daemon.logs().contains(&running),
        "the token must never be logged"
    );
    assert!(daemon.stop().success());
}
