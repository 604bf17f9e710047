//! Vault namespaces (`namespace:` on a vault issuer, sent as `X-Vault-Namespace`), against a real
//! OpenBao, which has namespaces since 2.3. A namespace gets its own policy, AppRole, PKI root and
//! KV store; pillion configured with the namespace logs in there, signs there and reads there.
//! Without the namespace the same paths lead to the root namespace, where that AppRole does not
//! exist: pillion fails with OpenBao's message and writes nothing.

use crate::common;

use std::process::Command;

use common::openbao::*;
use common::*;

const INIT_TIMEOUT: &str = "30s";

/// `bao <args>` as root inside namespace `ns`, panicking unless it succeeds; returns stdout.
fn bao_in(bao: &OpenBao, ns: &str, args: &[&str]) -> String {
    let mut cmd: Command = bao.cmd();
    cmd.env("BAO_NAMESPACE", ns).args(args);
    let ran = run_bounded(&mut cmd, COMMAND_DEADLINE);
    assert!(
        ran.status.success(),
        "bao (namespace {ns}) failed\n{}\n{}",
        ran.describe(),
        bao.describe()
    );
    ran.stdout
}

/// Namespace `ns` with the shipped `pillion` policy, a PKI root and role `app` at `pki/`, a KV v2
/// store at `secret/` holding `app/config`, and an AppRole role `pillion`. Returns the namespace's
/// root CA (PEM) and the AppRole files written into `case`.
fn namespace_with_everything(bao: &OpenBao, ns: &str, case: &Case) -> (String, AppRole) {
    bao.bao_ok(["namespace", "create", ns]);
    let policy = policy_file();
    bao_in(
        bao,
        ns,
        &["policy", "write", "pillion", policy.to_str().unwrap()],
    );
    bao_in(bao, ns, &["secrets", "enable", "pki"]);
    bao_in(bao, ns, &["secrets", "tune", "-max-lease-ttl=8760h", "pki"]);
    let root = bao_in(
        bao,
        ns,
        &[
            "write",
            "-field=certificate",
            "pki/root/generate/internal",
            &format!("common_name=root of namespace {ns}"),
            "ttl=8760h",
        ],
    );
    bao_in(
        bao,
        ns,
        &[
            "write",
            "pki/roles/app",
            "allowed_domains=localhost",
            "allow_localhost=true",
            "allow_ip_sans=true",
            "max_ttl=72h",
            "key_type=ec",
            "key_bits=256",
        ],
    );
    bao_in(
        bao,
        ns,
        &["secrets", "enable", "-path=secret", "-version=2", "kv"],
    );
    bao_in(
        bao,
        ns,
        &[
            "kv",
            "put",
            "secret/app/config",
            &format!("owner={ns}"),
            "color=blue",
        ],
    );
    bao_in(bao, ns, &["auth", "enable", "approle"]);
    bao_in(
        bao,
        ns,
        &[
            "write",
            "auth/approle/role/pillion",
            "token_policies=pillion",
            "token_no_default_policy=true",
            "secret_id_ttl=0",
            "token_ttl=1h",
        ],
    );
    let role_id = bao_in(
        bao,
        ns,
        &[
            "read",
            "-field=role_id",
            "auth/approle/role/pillion/role-id",
        ],
    );
    let secret_id = bao_in(
        bao,
        ns,
        &[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/pillion/secret-id",
        ],
    );
    let login = AppRole {
        role_id_file: write(case.path(), &format!("{ns}.role-id"), role_id.trim()),
        secret_id_file: write(case.path(), &format!("{ns}.secret-id"), secret_id.trim()),
    };
    (format!("{}\n", root.trim_end()), login)
}

/// A config with one certificate and one secret (json) from the issuer `bao`, in namespace `ns`
/// when given.
fn write_config(bao: &OpenBao, case: &Case, login: AppRole, ns: Option<&str>) {
    let issuer = bao.issuer(Auth::AppRole(login));
    let body = format!(
        "certificates:\n{}secrets:\n  - name: app-config\n    issuer: bao\n    path: secret/app/config\n    format: json\n",
        cert_yaml("web", "1h")
    );
    case.write_config(&issuer, &body);
    if let Some(ns) = ns {
        let yaml = std::fs::read_to_string(&case.config).unwrap();
        let address = format!("      address: \"{}\"\n", issuer.address);
        assert!(yaml.contains(&address), "{yaml}");
        let yaml = yaml.replacen(
            &address,
            &format!("{address}      namespace: \"{ns}\"\n"),
            1,
        );
        std::fs::write(&case.config, yaml).unwrap();
    }
}

#[test]
fn certificates_and_secrets_come_from_the_configured_namespace() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let (root, login) = namespace_with_everything(bao, "team-a", &case);
    write_config(bao, &case, login, Some("team-a"));

    let ran = case.init(INIT_TIMEOUT);
    let ctx = || ctx(&case, &ran, bao);
    assert!(ran.status.success(), "{}", ctx());

    // Signed by the namespace's own root, which is also what ca.crt holds.
    let web = case.out.join("web");
    let ns_root = write(case.path(), "team-a-root.pem", &root);
    openssl_verify(&ns_root, &web.join("tls.crt")).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    assert_eq!(
        cert_ders(&web.join("ca.crt")),
        cert_ders(&ns_root),
        "ca.crt should be the namespace's root\n{}",
        ctx()
    );
    assert!(
        openssl_verify(&bao.root_ca, &web.join("tls.crt")).is_err(),
        "the root namespace's CA must not have signed it\n{}",
        ctx()
    );

    // The secret as the namespace's KV store holds it.
    let json = std::fs::read_to_string(case.out.join("app-config").join("app-config.json"))
        .unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["owner"], "team-a", "{json}\n{}", ctx());
    assert_eq!(value["color"], "blue", "{json}\n{}", ctx());
}

#[test]
fn without_the_namespace_the_login_fails_with_openbaos_message_and_nothing_is_written() {
    let bao = OpenBao::shared();
    let case = Case::new();
    let (_, login) = namespace_with_everything(bao, "team-b", &case);
    write_config(bao, &case, login, None);

    let ran = case.init("4s");
    let ctx = || ctx(&case, &ran, bao);
    assert_eq!(ran.status.code(), Some(1), "{}", ctx());
    assert!(
        ran.stderr.contains("auth/approle/login")
            && ran.stderr.contains("invalid role or secret ID"),
        "the error should name the login path and carry OpenBao's message\n{}",
        ctx()
    );
    assert!(
        files_under(&case.out).is_empty(),
        "nothing may be written\n{}",
        ctx()
    );
}
