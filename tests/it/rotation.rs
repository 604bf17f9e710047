//! `pillion run`: short-lived certificates are renewed and republished, and the application is
//! signalled once per round, after the files are in place. The application is a real process (a
//! python SIGHUP counter) that, on each SIGHUP, reads the files the way a reloading server would;
//! what it read and who signalled it decide the tests.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::fixture::Fixture;
use common::*;
use rustix::process::Signal;

/// Long enough for anything to happen on a loaded 2-core CI machine; only reached on failure.
const DEADLINE: Duration = Duration::from_secs(90);

/// Writes the config: `stateDir` (the fixture's, given in the config rather than as a flag), the
/// `certificates` entries and the `reload` section.
fn write_config(s: &Fixture, certificates: &str, reload: &str) {
    s.write_config(&format!(
        "stateDir: \"{}\"\ncertificates:\n{certificates}reload:\n{reload}",
        s.state.display(),
    ));
}

/// The config and output dir, what the application saw, and the daemon's logs.
fn context(s: &Fixture, daemon: &Daemon, counter: &HupCounter) -> String {
    format!(
        "{}\n{}\n{}",
        s.describe(),
        counter.describe(),
        daemon.describe()
    )
}

/// A `processRegex` that matches only this test's counter (its script path is in its cmdline).
fn regex_for(counter: &HupCounter) -> String {
    format!(
        "  processRegex: '{}'\n",
        regex_escape(&counter.script.display().to_string())
    )
}

/// Snapshots (SIGHUPs) grouped by the serial of watched file 0 they saw.
fn by_serial(counter: &HupCounter) -> BTreeMap<String, Vec<HupSeen>> {
    let mut map: BTreeMap<String, Vec<HupSeen>> = BTreeMap::new();
    for seen in counter.seen() {
        let serial = seen.serial(0).unwrap_or_else(|| "<no certificate>".into());
        map.entry(serial).or_default().push(seen);
    }
    map
}

fn has_snapshot_of(counter: &HupCounter, serial: &str) -> bool {
    counter
        .seen()
        .iter()
        .any(|s| s.serial(0).as_deref() == Some(serial))
}

/// The application read a certificate and key that belong together.
fn assert_snapshot_consistent(seen: &HupSeen, ctx: &dyn Fn() -> String) {
    let crt = seen.dir.join("0");
    let key = seen.dir.join("1");
    assert!(
        key_matches(&crt, &key),
        "on SIGHUP #{} the application read a key that does not match the certificate\n{}",
        seen.n,
        ctx()
    );
}

#[test]
fn run_renews_a_six_second_certificate_and_sends_one_sighup_per_rotation() {
    let s = Fixture::new();
    let crt = s.out.join("app/tls.crt");
    let key = s.out.join("app/tls.key");
    let counter = HupCounter::start(s.path(), "rotapp", &[&crt, &key]);
    write_config(
        &s,
        "  - name: app\n    dnsNames: [app.pillion.test]\n    duration: 6s\n",
        &regex_for(&counter),
    );
    let daemon = Daemon::run([Path::new("--config"), &s.config]);
    let ctx = || context(&s, &daemon, &counter);

    // Every distinct serial published, in order, until it has changed 3 times.
    let mut serials: Vec<String> = Vec::new();
    daemon.wait_for("the certificate to be rotated 3 times", DEADLINE, || {
        if let Some(current) = serial_fast(&crt) {
            if serials.last() != Some(&current) {
                serials.push(current);
            }
        }
        serials.len() >= 4
    });
    let last = serials.last().unwrap().clone();
    wait_for_ctx(
        "the application to be signalled for the latest certificate",
        DEADLINE,
        ctx,
        || has_snapshot_of(&counter, &last),
    );
    // Read now, before the slower checks below give the next rotation time to happen.
    let count = counter.count();

    let ctx = || format!("serials published, in order: {serials:?}\n{}", ctx());
    let seen = by_serial(&counter);
    // Each rotation was followed by exactly one reload, and that reload saw the new files.
    for rotated in &serials[1..] {
        let n = seen.get(rotated).map_or(0, Vec::len);
        assert_eq!(
            n,
            1,
            "certificate {rotated} should have caused exactly one SIGHUP, caused {n}\n{}",
            ctx()
        );
    }
    // The first certificate may have been signalled once at startup, never more.
    let first = seen.get(&serials[0]).map_or(0, Vec::len);
    assert!(
        first <= 1,
        "the first certificate caused {first} SIGHUPs\n{}",
        ctx()
    );
    // No reload before the files existed, no reload twice for one certificate.
    for (serial, sightings) in &seen {
        assert!(
            serial != "<no certificate>",
            "the application was signalled before tls.crt existed\n{}",
            ctx()
        );
        assert_eq!(
            sightings.len(),
            1,
            "certificate {serial} was signalled {} times\n{}",
            sightings.len(),
            ctx()
        );
    }
    for sighting in counter.seen() {
        assert_eq!(
            sighting.sender,
            daemon.pid(),
            "SIGHUP #{} was not sent by pillion\n{}",
            sighting.n,
            ctx()
        );
        assert_snapshot_consistent(&sighting, &ctx);
    }
    // The count file agrees: one per rotation, plus at most the startup reload, plus at most
    // the rotation in flight since the loop above stopped looking.
    let rotations = (serials.len() - 1) as u64;
    assert!(
        (rotations..=rotations + 2).contains(&count),
        "{rotations} rotations observed but the application counted {count} SIGHUPs\n{}",
        ctx()
    );
    let ca = s.out.join("app/ca.crt");
    openssl_verify(&ca, &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));

    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, exited with {status}"
    );
}

#[test]
fn sigusr1_renews_immediately_and_reloads_once() {
    let s = Fixture::new();
    let crt = s.out.join("tls.crt");
    let key = s.out.join("tls.key");
    let counter = HupCounter::start(s.path(), "usr1app", &[&crt, &key]);
    // A one-hour certificate: nothing renews on its own during the test, so any new serial is
    // SIGUSR1's doing. The certificate is published in outputDir itself (dir: ".").
    write_config(
        &s,
        "  - name: app\n    dir: .\n    dnsNames: [app.pillion.test]\n    duration: 1h\n",
        &format!("  pidFile: \"{}\"\n", counter.pid_file().display()),
    );
    let daemon = Daemon::run([Path::new("--config"), &s.config]);
    let ctx = || context(&s, &daemon, &counter);

    let mut current = None;
    daemon.wait_for("the first certificate", DEADLINE, || {
        current = serial_fast(&crt);
        current.is_some()
    });
    let mut serials = vec![current.unwrap()];
    for round in 1..=2 {
        daemon.signal(Signal::USR1);
        let before = serials.last().unwrap().clone();
        let mut next = None;
        wait_for_ctx(
            &format!("SIGUSR1 #{round} to publish a new certificate"),
            DEADLINE,
            ctx,
            || {
                next = serial_fast(&crt).filter(|s| *s != before);
                next.is_some()
            },
        );
        let next = next.unwrap();
        wait_for_ctx(
            &format!("the reload after SIGUSR1 #{round}"),
            DEADLINE,
            ctx,
            || has_snapshot_of(&counter, &next),
        );
        serials.push(next);
    }

    let ctx = || format!("serials: {serials:?}\n{}", ctx());
    let seen = by_serial(&counter);
    for renewed in &serials[1..] {
        let n = seen.get(renewed).map_or(0, Vec::len);
        assert_eq!(
            n,
            1,
            "SIGUSR1 renewal {renewed} should cause exactly one SIGHUP, caused {n}\n{}",
            ctx()
        );
    }
    for sighting in counter.seen() {
        assert_eq!(
            sighting.sender,
            daemon.pid(),
            "SIGHUP #{} was not sent by pillion\n{}",
            sighting.n,
            ctx()
        );
        assert_snapshot_consistent(&sighting, &ctx);
    }
    assert!(
        seen.get(&serials[0]).map_or(0, Vec::len) <= 1,
        "the first certificate was signalled more than once\n{}",
        ctx()
    );
    openssl_verify(&s.out.join("ca.crt"), &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));

    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, exited with {status}"
    );
}

#[test]
fn a_round_renewing_two_certificates_sends_exactly_one_reload_after_both_are_published() {
    let s = Fixture::new();
    let web = s.out.join("web/tls.crt");
    let api = s.out.join("api/tls.crt");
    let counter = HupCounter::start(s.path(), "twoapp", &[&web, &api]);
    write_config(&s,
        "  - name: web\n    dnsNames: [web.pillion.test]\n    duration: 1h\n  - name: api\n    dnsNames: [api.pillion.test]\n    duration: 1h\n",
        &regex_for(&counter),
    );
    let daemon = Daemon::run([Path::new("--config"), &s.config]);
    let ctx = || context(&s, &daemon, &counter);

    let mut pair = (String::new(), String::new());
    daemon.wait_for("both certificates", DEADLINE, || {
        match (serial_fast(&web), serial_fast(&api)) {
            (Some(w), Some(a)) => {
                pair = (w, a);
                true
            }
            _ => false,
        }
    });
    let mut rounds = vec![pair.clone()];
    // Two SIGUSR1 rounds; the second also makes sure no late extra reload of the first is missed.
    for round in 1..=2 {
        daemon.signal(Signal::USR1);
        let (w0, a0) = rounds.last().unwrap().clone();
        let mut next = (String::new(), String::new());
        wait_for_ctx(
            &format!("round {round} to renew both certificates"),
            DEADLINE,
            ctx,
            || match (serial_fast(&web), serial_fast(&api)) {
                (Some(w), Some(a)) if w != w0 && a != a0 => {
                    next = (w, a);
                    true
                }
                _ => false,
            },
        );
        let w = next.0.clone();
        wait_for_ctx(
            &format!("the reload after round {round}"),
            DEADLINE,
            ctx,
            || has_snapshot_of(&counter, &w),
        );
        rounds.push(next);
    }

    let ctx = || format!("(web, api) serials per round: {rounds:?}\n{}", ctx());
    let seen = counter.seen();
    for (w, a) in &rounds[1..] {
        let reloads: Vec<&HupSeen> = seen
            .iter()
            .filter(|s| s.serial(0).as_deref() == Some(w.as_str()))
            .collect();
        assert_eq!(
            reloads.len(),
            1,
            "one round, one reload: got {}\n{}",
            reloads.len(),
            ctx()
        );
        assert_eq!(
            reloads[0].serial(1).as_deref(),
            Some(a.as_str()),
            "the reload came before the second certificate of the round was published\n{}",
            ctx()
        );
        assert_eq!(
            reloads[0].sender,
            daemon.pid(),
            "the reload was not sent by pillion\n{}",
            ctx()
        );
    }
    let extra: Vec<&HupSeen> = seen
        .iter()
        .filter(|s| s.serial(0).as_deref() != Some(rounds[0].0.as_str()))
        .filter(|s| {
            !rounds[1..]
                .iter()
                .any(|(w, _)| s.serial(0).as_deref() == Some(w.as_str()))
        })
        .collect();
    assert!(
        extra.is_empty(),
        "reloads that belong to no round: {extra:?}\n{}",
        ctx()
    );

    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, exited with {status}"
    );
}
