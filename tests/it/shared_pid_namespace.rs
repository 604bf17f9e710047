//! A shared process namespace (`shareProcessNamespace: true`), made real with
//! `unshare --pid --fork --mount-proc`: pillion finds the application by its name in the
//! namespace's own /proc and signals it after each rotation.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const DEADLINE: Duration = Duration::from_secs(90);

const POD_SCRIPT: &str = r#"#!/bin/sh
# PID 1 of the namespace, like a pod's pause container: start the application, then pillion.
set -eu
echo $$ > "$POD/shell.pid"
"$COUNTER_EXE" "$COUNTER_SCRIPT" "$COUNTER_STATE" "$OUT/tls.crt" "$OUT/tls.key" &
i=0
while [ ! -s "$COUNTER_STATE/pid" ]; do
    i=$((i + 1))
    if [ "$i" -gt 3000 ]; then echo "the counter did not start" >&2; exit 1; fi
    sleep 0.01
done
echo "--- processes in the namespace ---"
for d in /proc/[0-9]*; do echo "${d#/proc/} $(cat "$d/comm" 2>/dev/null)"; done
"$PILLION" run --out "$OUT" --state-dir "$STATE_DIR" --dns-name app.pillion.test \
    --duration 6s --reload-process hupcounter &
echo $! > "$POD/pillion.pid"
wait
"#;

#[test]
fn pillion_signals_the_application_by_name_in_a_shared_pid_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path();
    let out = pod.join("out");
    let crt = out.join("tls.crt");
    let counter = prepare_hup_counter(pod, "hupcounter", &[&crt, &out.join("tls.key")]);
    let script = write(pod, "pod.sh", POD_SCRIPT);

    let mut cmd = Command::new("unshare");
    pillion_env(&mut cmd);
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg("sh")
        .arg(&script)
        .env("POD", pod)
        .env("OUT", &out)
        .env("STATE_DIR", pod.join("state"))
        .env("PILLION", pillion_bin())
        .env("COUNTER_EXE", &counter.argv[0])
        .env("COUNTER_SCRIPT", &counter.script)
        .env("COUNTER_STATE", &counter.state);
    // Dropping the Daemon kills unshare, and --kill-child takes the whole namespace down.
    let namespace = Daemon::spawn(cmd);
    let ctx = || {
        format!(
            "{}\n{}\n{}",
            listing(pod),
            counter.describe(),
            namespace.describe()
        )
    };

    let mut serials: Vec<String> = Vec::new();
    wait_for_ctx("two rotations", DEADLINE, ctx, || {
        if let Some(s) = serial_fast(&crt) {
            if serials.last() != Some(&s) {
                serials.push(s);
            }
        }
        serials.len() >= 3
    });
    let last = serials.last().unwrap().clone();
    wait_for_ctx(
        "the application to be signalled for the latest certificate",
        DEADLINE,
        ctx,
        || {
            counter
                .seen()
                .iter()
                .any(|s| s.serial(0).as_deref() == Some(last.as_str()))
        },
    );

    let ctx = || format!("serials published: {serials:?}\n{}", ctx());
    let read_pid = |name: &str| -> u32 {
        fs::read_to_string(pod.join(name))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    assert_eq!(
        read_pid("shell.pid"),
        1,
        "the script should be PID 1 of a new pid namespace\n{}",
        ctx()
    );
    let pillion_ns_pid = read_pid("pillion.pid");
    let seen = counter.seen();
    for rotated in &serials[1..] {
        let reloads: Vec<&HupSeen> = seen
            .iter()
            .filter(|s| s.serial(0).as_deref() == Some(rotated.as_str()))
            .collect();
        assert_eq!(
            reloads.len(),
            1,
            "certificate {rotated} should cause exactly one SIGHUP\n{}",
            ctx()
        );
        assert_eq!(
            reloads[0].sender,
            pillion_ns_pid,
            "the SIGHUP should come from pillion (pid {pillion_ns_pid} in the namespace)\n{}",
            ctx()
        );
        assert!(
            key_matches(&reloads[0].dir.join("0"), &reloads[0].dir.join("1")),
            "mismatched key read\n{}",
            ctx()
        );
    }
    openssl_verify(&out.join("ca.crt"), &crt).unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    assert!(Path::new(&counter.script).exists());
}
