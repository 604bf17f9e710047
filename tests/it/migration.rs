//! docs/vault-agent-migration.md, run: every pillion template of the page is rendered by one
//! `pillion init` against a real OpenBao (KV v2, PKI, and the database engine over PostgreSQL),
//! and what it renders is compared with the page's "renders" blocks, or checked by an
//! independent reader (psql, openssl, Python's json) where the output varies.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::openbao::*;
use common::postgres::database_engine;
use common::*;

const PAGE: &str = include_str!("../../docs/vault-agent-migration.md");

/// The fenced block after each `<!-- <marker> NAME -->` comment, by NAME.
fn blocks(marker: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let tag = format!("<!-- {marker} ");
    let mut rest = PAGE;
    while let Some(at) = rest.find(&tag) {
        rest = &rest[at + tag.len()..];
        let name = rest[..rest.find(" -->").unwrap()].to_owned();
        let open = rest.find("```").unwrap();
        let body_start = open + rest[open..].find('\n').unwrap() + 1;
        let body_end = body_start + rest[body_start..].find("```").unwrap();
        out.insert(name, rest[body_start..body_end].to_owned());
        rest = &rest[body_end..];
    }
    out
}

/// `text` as a YAML block scalar indented by `indent` spaces.
fn block_scalar(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn every_template_of_the_migration_page_renders_what_the_page_says() {
    let examples = blocks("example");
    let renders = blocks("renders");
    assert_eq!(
        examples.len(),
        10,
        "the page shows ten examples: {examples:?}"
    );

    let bao = OpenBao::shared();
    let pg = database_engine(bao);
    let case = Case::new();
    let issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), "migrate")));
    bao.kv_put(
        "secret/app/migrate",
        &[
            ("username", "app"),
            ("password", "p'w$x"),
            ("api-key", "k-123"),
        ],
    );
    let mut templates = String::new();
    for (file, text) in &examples {
        templates += &format!(
            "      - file: {file}\n        template: |\n{}",
            block_scalar(text, 10)
        );
    }
    case.write_config(
        &issuer,
        &format!(
            "certificates:\n{}secrets:\n  - name: db\n    issuer: bao\n    path: database/creds/app\n  - name: app\n    issuer: bao\n    path: secret/app/migrate\n    templates:\n{templates}",
            cert_yaml("web", "1h")
        ),
    );
    let mut init = case.pillion(&["init", "--timeout", "60s"]);
    init.env("POD_NAME", "web-0")
        .env("POD_NAMESPACE", "shop")
        .env("DB_HOST", "127.0.0.1");
    let ran = run_bounded(&mut init, COMMAND_DEADLINE);
    ran.assert_success();
    let out = case.out.join("app");
    let context = || format!("{}\n{}", ctx(&case, &ran, bao), pg.describe());

    // The literal ones.
    for (file, expected) in &renders {
        assert_eq!(
            read(&out.join(file)).trim_end_matches('\n'),
            expected.trim_end_matches('\n'),
            "{file} is not what the page says it renders\n{}",
            context()
        );
    }

    // 3: the connection string logs in.
    let url = read(&out.join("database.url"));
    let creds = url
        .trim()
        .strip_prefix("postgresql://")
        .and_then(|r| r.split_once('@'))
        .and_then(|(c, _)| c.split_once(':'))
        .unwrap_or_else(|| panic!("not a connection string: {url}"));
    pg.login(creds.0, creds.1)
        .unwrap_or_else(|e| panic!("the rendered credentials should log in: {e}\n{}", context()));
    assert!(url.contains("@127.0.0.1:5432/postgres"), "{url}");

    // 4 and 5: the chain and the key belong together, and the chain is tls.crt.
    let web = case.out.join("web");
    // (The template's own last newline follows the PEM's.)
    assert_eq!(
        read(&out.join("server.crt")).trim_end(),
        read(&web.join("tls.crt")).trim_end()
    );
    key_pair_check(&out.join("server.crt"), &out.join("server.key"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));
    // 6: the CA bundle is ca.crt, and it verifies the chain.
    assert_eq!(
        read(&out.join("ca.pem")).trim_end(),
        read(&web.join("ca.crt")).trim_end()
    );
    openssl_verify(&out.join("ca.pem"), &out.join("server.crt"))
        .unwrap_or_else(|e| panic!("{e}\n{}", context()));

    // 7: Python reads the JSON, with the same database user as example 3.
    let json = run_bounded(
        Command::new("python3")
            .args([
                "-c",
                "import json,sys; d=json.load(open(sys.argv[1])); print(d['apiKey'], d['db']['user'])",
            ])
            .arg(out.join("config.json")),
        COMMAND_DEADLINE,
    );
    json.assert_success();
    assert_eq!(json.stdout.trim(), format!("k-123 {}", creds.0));
}
