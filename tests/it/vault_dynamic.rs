//! Dynamic secrets from OpenBao's database engine against a real PostgreSQL: the credentials
//! rendered into a connection string log in with psql; their lease is renewed (OpenBao's audit log
//! shows it); near the lease's maximum TTL new credentials replace them, the app gets one SIGHUP
//! per change, and the old database user stops working when its lease ends; with
//! `revokeOnShutdown` the user is gone after SIGTERM.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::openbao::*;
use common::postgres::{database_engine, Postgres};
use common::*;

/// Bound for the daemon to get to a state; the leases last seconds.
const DEADLINE: Duration = Duration::from_secs(60);

/// The `pg` secret at `database/creds/app`, its `db.env` and a `dsn` template.
fn pg_secret(pg: &Postgres, extra: &str) -> String {
    format!(
        "secrets:\n  - name: pg\n    issuer: bao\n    path: database/creds/app\n    format: env\n{extra}    templates:\n      - file: dsn\n        template: \"{{{{ secrets.pg.username }}}} {{{{ secrets.pg.password }}}} postgresql://{{{{ secrets.pg.username }}}}@127.0.0.1:{}/postgres\"\n",
        pg.port
    )
}

/// The body of `GET /metrics` on the admin endpoint at `port`.
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The user and password in a rendered `dsn` file.
fn credentials(text: &str) -> Option<(String, String)> {
    let mut parts = text.split(' ');
    Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
}

fn read_credentials(path: &Path) -> Option<(String, String)> {
    credentials(&std::fs::read_to_string(path).ok()?)
}

#[test]
fn leased_credentials_log_in_are_renewed_then_replaced_with_one_sighup_each() {
    let bao = OpenBao::shared();
    let pg = database_engine(bao);
    let case = Case::new();
    let issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), "dyn-rotate")));
    let port = free_port();
    case.write_config(
        &issuer,
        &format!(
            "{}reload:\n  process: dynrot-app\nserver:\n  listen: 127.0.0.1:{port}\n",
            pg_secret(pg, "")
        ),
    );
    let dsn = case.out.join("pg/dsn");
    let app = HupCounter::start(case.path(), "dynrot-app", &[&dsn]);
    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            case.describe(),
            app.describe(),
            daemon.describe(),
            bao.describe(),
            pg.describe()
        )
    };
    wait_for_ctx("the first credentials", DEADLINE, context, || dsn.exists());
    let (first_user, first_password) = read_credentials(&dsn).expect("user and password");
    pg.login(&first_user, &first_password)
        .unwrap_or_else(|e| panic!("the rendered credentials should log in: {e}\n{}", context()));
    let env = std::fs::read_to_string(case.out.join("pg/pg.env")).unwrap();
    assert!(env.contains(&format!("username=\"{first_user}\"")), "{env}");
    // /metrics shows when the lease ends: within its 4 s TTL (and 12 s maximum) from now.
    let metrics = metrics_text(port);
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pillion_secret_lease_expiry_timestamp_seconds{name=\"pg\"} "))
        .unwrap_or_else(|| panic!("no lease expiry in /metrics:\n{metrics}"))
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now - 1.0 && expiry < now + 13.0,
        "lease expiry {expiry} vs now {now}\n{metrics}"
    );
    // So does `pillion status`, from the notes the running agent keeps.
    let ran = run_bounded(
        &mut case.pillion(&["status", "-o", "json"]),
        COMMAND_DEADLINE,
    );
    assert!(ran.status.success(), "{}", ran.describe());
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let pg_status = &doc["credentials"][0];
    let left = pg_status["leaseTimeLeftSeconds"].as_i64();
    assert!(
        pg_status["leaseExpires"].is_string() && left.is_some_and(|l| (0..=13).contains(&l)),
        "{}",
        ran.stdout
    );
    let ran = run_bounded(&mut case.pillion(&["status"]), COMMAND_DEADLINE);
    assert!(
        ran.stdout.contains("secret database/creds/app (lease)")
            && ran.stdout.contains("before the lease ends"),
        "{}",
        ran.describe()
    );

    // The lease is renewed (OpenBao's audit log shows pillion's renewals) ...
    wait_for_ctx(
        "a lease renewal in OpenBao's audit log",
        DEADLINE,
        context,
        || {
            !bao.approle_responses("dyn-rotate", "sys/leases/renew")
                .is_empty()
        },
    );
    // ... until its maximum TTL nears: then new credentials replace it.
    wait_for_ctx("new credentials", DEADLINE, context, || {
        read_credentials(&dsn).is_some_and(|(u, _)| u != first_user)
    });
    let (second_user, second_password) = read_credentials(&dsn).unwrap();
    pg.login(&second_user, &second_password)
        .unwrap_or_else(|e| panic!("the new credentials should log in: {e}\n{}", context()));
    // The old user works until its lease ends (12 s after it was made), then no more.
    wait_for_ctx("the first user's lease to end", DEADLINE, context, || {
        pg.login(&first_user, &first_password).is_err()
    });
    let before_stop = context();
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");

    // One SIGHUP per change: each one saw credentials the previous one had not.
    let seen: Vec<String> = app
        .seen()
        .iter()
        .map(|s| {
            credentials(&String::from_utf8_lossy(&s.files[0]))
                .unwrap()
                .0
        })
        .collect();
    assert!(seen.len() >= 2, "{seen:?}\n{}", before_stop);
    assert_eq!(seen[0], first_user, "{}", before_stop);
    assert_eq!(seen[1], second_user, "{}", before_stop);
    for pair in seen.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "a SIGHUP without a change: {seen:?}\n{}",
            before_stop
        );
    }
}

#[test]
fn revoke_on_shutdown_drops_the_database_user_at_sigterm() {
    let bao = OpenBao::shared();
    let pg = database_engine(bao);
    let case = Case::new();
    let issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), "dyn-revoke")));
    case.write_config(&issuer, &pg_secret(pg, "    revokeOnShutdown: true\n"));
    let dsn = case.out.join("pg/dsn");
    let daemon = case.run();
    let context = || {
        format!(
            "{}\n{}\n{}",
            case.describe(),
            daemon.describe(),
            pg.describe()
        )
    };
    wait_for_ctx("the credentials", DEADLINE, context, || dsn.exists());
    let (user, password) = read_credentials(&dsn).unwrap();
    assert!(pg.role_exists(&user), "{}", context());
    let logs_before_stop = daemon.logs();
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
    assert!(
        !pg.role_exists(&user),
        "the user should be gone once the lease is revoked\n{}",
        pg.describe()
    );
    assert!(pg.login(&user, &password).is_err());
    let lease_id_shown = logs_before_stop.contains("database/creds/app/");
    assert!(!lease_id_shown, "a lease ID must never be logged");
}

#[test]
fn after_an_outage_longer_than_the_lease_new_credentials_replace_the_expired_ones() {
    let bao = OpenBao::shared();
    let pg = database_engine(bao);
    let proxy = PausableProxy::start(bao.port);
    let case = Case::new();
    let mut issuer = bao.issuer(Auth::AppRole(bao.approle(case.path(), "dyn-outage")));
    issuer.address = proxy.addr();
    issuer.timeout = Some("2s".into());
    case.write_config(&issuer, &pg_secret(pg, ""));
    let dsn = case.out.join("pg/dsn");
    let daemon = case.run();
    let context = || {
        format!(
            "proxy accepted {}\n{}\n{}\n{}",
            proxy.accepted(),
            case.describe(),
            daemon.describe(),
            pg.describe()
        )
    };
    wait_for_ctx("the first credentials", DEADLINE, context, || dsn.exists());
    let (user, password) = read_credentials(&dsn).unwrap();

    // OpenBao is unreachable for longer than the lease's 4 s TTL: renewals fail, the lease ends
    // at OpenBao, the user is dropped; the files stay as they are.
    proxy.pause();
    wait_for_ctx("a failed renewal in the logs", DEADLINE, context, || {
        daemon
            .logs()
            .contains("secret refresh failed; the files on disk are unchanged")
    });
    wait_for_ctx("the lease to end at OpenBao", DEADLINE, context, || {
        !pg.role_exists(&user)
    });
    assert_eq!(
        read_credentials(&dsn),
        Some((user.clone(), password.clone())),
        "the files stay during the outage\n{}",
        context()
    );

    // Back: the expired lease cannot be renewed, new credentials are read and work.
    proxy.resume();
    wait_for_ctx(
        "new credentials after the outage",
        DEADLINE,
        context,
        || read_credentials(&dsn).is_some_and(|(u, _)| u != user),
    );
    let (new_user, new_password) = read_credentials(&dsn).unwrap();
    pg.login(&new_user, &new_password)
        .unwrap_or_else(|e| panic!("the new credentials should log in: {e}\n{}", context()));
    assert!(daemon.stop().success(), "pillion should exit 0 on SIGTERM");
}
