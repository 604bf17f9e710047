//! The reload targets other than "signal a process pillion can see": a command (argv, no shell),
//! an HTTP POST to a real python `http.server`, and the two ways a signal goes wrong: the kernel
//! says EPERM (pillion runs as another user, through setpriv) and no process matches. Each peer
//! records what it saw; that record decides the tests.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fixture::Fixture;
use common::*;
use rustix::process::{Pid, Signal};

/// Long enough for anything to happen on a loaded 2-core CI machine; only reached on failure.
const DEADLINE: Duration = Duration::from_secs(60);

const RELOAD_FAILED: &str = "reloading the app failed; the new files are in place";

/// Writes the config: one 1h certificate published in outputDir itself, and `reload`.
fn write_config(s: &Fixture, reload: &str) {
    s.write_config(&format!(
        "stateDir: '{}'\ncertificates:\n  - name: app\n    dir: .\n    \
         dnsNames: [app.pillion.test]\n    duration: 1h\nreload:\n{reload}",
        s.state.display(),
    ));
}

/// The certificate, published in outputDir itself.
fn crt(s: &Fixture) -> PathBuf {
    s.out.join("tls.crt")
}

/// Flag-mode arguments for one 1h certificate (nothing renews by itself during a test:
/// every new serial is SIGUSR1's doing), plus `extra`.
fn flags(s: &Fixture, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--state-dir".to_owned(),
        s.state.display().to_string(),
        "--out".to_owned(),
        s.out.display().to_string(),
        "--dns-name".to_owned(),
        "app.pillion.test".to_owned(),
        "--duration".to_owned(),
        "1h".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Waits for the first certificate; returns its serial.
fn first_serial(daemon: &Daemon, crt: &Path) -> String {
    let mut serial = None;
    daemon.wait_for("the first certificate", DEADLINE, || {
        serial = serial_fast(crt);
        serial.is_some()
    });
    serial.unwrap()
}

/// Sends SIGUSR1 and waits for a certificate other than `before`; returns its serial.
fn rotate(daemon: &Daemon, crt: &Path, before: &str) -> String {
    daemon.signal(Signal::USR1);
    let mut serial = None;
    daemon.wait_for("SIGUSR1 to publish a new certificate", DEADLINE, || {
        serial = serial_fast(crt).filter(|s| s != before);
        serial.is_some()
    });
    serial.unwrap()
}

fn reload_failures(daemon: &Daemon) -> Vec<String> {
    lines_containing(&daemon.logs(), &["WARN", RELOAD_FAILED])
}

/// The serials the reload command appended to `log`, one line per run.
fn serial_lines(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(normalised_serial)
        .collect()
}

/// The reload command prints the serial of the live certificate at the moment it runs.
const PRINT_SERIAL: &str = r#"openssl x509 -noout -serial -in "$1" >> "$2""#;

#[test]
fn a_reload_command_runs_once_per_rotation_after_the_files_are_in_place() {
    let s = Fixture::new();
    // A space in the path: the argv reaches the program as written, no shell splits it.
    let log = s.path().join("reload log.txt");
    write_config(
        &s,
        &format!(
            "  command: ['/bin/sh', '-c', '{PRINT_SERIAL}', 'sh', '{}', '{}']\n",
            crt(&s).display(),
            log.display()
        ),
    );
    let daemon = Daemon::run([Path::new("--config"), &s.config]);
    let ctx = || {
        format!(
            "reload log: {:?}\n{}\n{}",
            fs::read_to_string(&log),
            listing(&s.out),
            daemon.describe()
        )
    };

    let mut serials = vec![first_serial(&daemon, &crt(&s))];
    daemon.wait_for(
        "the reload command to run for the first certificate",
        DEADLINE,
        || serial_lines(&log).len() == 1,
    );
    for round in 1..=2 {
        let next = rotate(&daemon, &crt(&s), serials.last().unwrap());
        serials.push(next);
        daemon.wait_for(
            &format!("the reload command to run after rotation {round}"),
            DEADLINE,
            || serial_lines(&log).len() == serials.len(),
        );
    }
    // One run per published certificate, in order, each seeing the certificate it was run for.
    assert_eq!(
        serial_lines(&log),
        serials,
        "the command should have run once per rotation, after each publish\n{}",
        ctx()
    );
    // pillion logs the reload once the command has exited, a moment after it wrote its line.
    daemon.wait_for("each run to be logged as a reload", DEADLINE, || {
        lines_containing(&daemon.logs(), &["reloaded the app"]).len() >= 3
    });
    assert_eq!(
        lines_containing(&daemon.logs(), &["reloaded the app"]).len(),
        3,
        "each run should be logged as one reload\n{}",
        ctx()
    );
    assert!(reload_failures(&daemon).is_empty(), "{}", ctx());
    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, got {status}"
    );
}

#[test]
fn the_reload_command_flag_is_split_on_whitespace() {
    let s = Fixture::new();
    let script = write(s.path(), "print-serial.sh", PRINT_SERIAL);
    let log = s.path().join("reload.log");
    let command = format!(
        "/bin/sh {} {} {}",
        script.display(),
        crt(&s).display(),
        log.display()
    );
    let daemon = Daemon::run(flags(&s, &["--reload-command", &command]));
    let ctx = || {
        format!(
            "reload log: {:?}\n{}",
            fs::read_to_string(&log),
            daemon.describe()
        )
    };
    let first = first_serial(&daemon, &crt(&s));
    daemon.wait_for("the reload command to run once", DEADLINE, || {
        serial_lines(&log).len() == 1
    });
    let second = rotate(&daemon, &crt(&s), &first);
    daemon.wait_for("the reload command to run after SIGUSR1", DEADLINE, || {
        serial_lines(&log).len() == 2
    });
    assert_eq!(serial_lines(&log), [first, second], "{}", ctx());
    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, got {status}"
    );
}

/// A real python `http.server` on a free loopback port. For every request it records the
/// method, path, body and the certificate file as it was at that moment into `req-<n>/`, then
/// `count`, then answers: 500 for paths under /fail, 200 otherwise. It exits when its parent
/// (this test) dies.
const HTTP_SERVER_PY: &str = r#"
import http.server, os, sys

state, watch = sys.argv[1], sys.argv[2]

def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)

count = 0

class Handler(http.server.BaseHTTPRequestHandler):
    def record(self):
        global count
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        count += 1
        d = os.path.join(state, "req-%d" % count)
        os.mkdir(d + ".tmp")
        try:
            with open(watch, "rb") as f:
                cert = f.read()
        except OSError as e:
            cert = ("unreadable: %s" % e).encode()
        for name, data in (("method", self.command.encode()), ("path", self.path.encode()),
                           ("body", body), ("cert", cert)):
            write_atomic(os.path.join(d + ".tmp", name), data)
        os.rename(d + ".tmp", d)
        write_atomic(os.path.join(state, "count"), b"%d\n" % count)
        failing = self.path.startswith("/fail")
        reply = b"reload exploded\n" if failing else b"ok\n"
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = do_GET = do_PUT = record

srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
srv.timeout = 0.1
write_atomic(os.path.join(state, "count"), b"0\n")
write_atomic(os.path.join(state, "port"), b"%d\n" % srv.server_address[1])
parent = os.getppid()
while os.getppid() == parent:
    srv.handle_request()
"#;

/// One request as the server saw it.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    /// Serial of the certificate on disk when the request arrived.
    serial: Option<String>,
}

/// The python HTTP server, killed on drop.
struct HttpServer {
    state: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl HttpServer {
    fn start(watch: &Path) -> HttpServer {
        let state = tempfile::tempdir().unwrap();
        let script = write(state.path(), "server.py", HTTP_SERVER_PY);
        let log = fs::File::create(state.path().join("server.log")).unwrap();
        let child = Command::new(real_python3())
            .arg(&script)
            .arg(state.path())
            .arg(watch)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start python3 http.server");
        let mut server = HttpServer {
            state,
            port: 0,
            child,
        };
        let port_file = server.state.path().join("port");
        wait_for_ctx(
            "the python HTTP server to write its port",
            Duration::from_secs(30),
            || server.describe(),
            || fs::read_to_string(&port_file).is_ok_and(|p| p.trim().parse::<u16>().is_ok()),
        );
        server.port = fs::read_to_string(&port_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn count(&self) -> usize {
        fs::read_to_string(self.state.path().join("count"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn requests(&self) -> Vec<Request> {
        let mut out = Vec::new();
        for n in 1.. {
            let dir = self.state.path().join(format!("req-{n}"));
            if !dir.is_dir() {
                break;
            }
            let read = |name: &str| fs::read(dir.join(name)).unwrap_or_default();
            out.push(Request {
                method: String::from_utf8_lossy(&read("method")).into_owned(),
                path: String::from_utf8_lossy(&read("path")).into_owned(),
                body: read("body"),
                serial: serial_of_pem(&read("cert")),
            });
        }
        out
    }

    fn describe(&self) -> String {
        format!(
            "HTTP server on port {}: count={}\nrequests: {:#?}\n--- server log ---\n{}",
            self.port,
            self.count(),
            self.requests(),
            fs::read_to_string(self.state.path().join("server.log")).unwrap_or_default()
        )
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_reload_url_gets_one_empty_post_per_rotation() {
    let s = Fixture::new();
    let server = HttpServer::start(&crt(&s));
    write_config(&s, &format!("  url: '{}'\n", server.url("/-/reload")));
    let daemon = Daemon::run([Path::new("--config"), &s.config]);
    let ctx = || format!("{}\n{}", server.describe(), daemon.describe());

    let mut serials = vec![first_serial(&daemon, &crt(&s))];
    daemon.wait_for("the first POST", DEADLINE, || server.count() == 1);
    for round in 1..=2 {
        let next = rotate(&daemon, &crt(&s), serials.last().unwrap());
        serials.push(next);
        daemon.wait_for(
            &format!("the POST after rotation {round}"),
            DEADLINE,
            || server.count() == serials.len(),
        );
    }
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        serials.len(),
        "one request per published certificate\n{}",
        ctx()
    );
    for (request, serial) in requests.iter().zip(&serials) {
        assert_eq!(request.method, "POST", "{}", ctx());
        assert_eq!(request.path, "/-/reload", "{}", ctx());
        assert!(
            request.body.is_empty(),
            "the POST body should be empty\n{}",
            ctx()
        );
        assert_eq!(
            request.serial.as_ref(),
            Some(serial),
            "each POST should come after its certificate was published\n{}",
            ctx()
        );
    }
    daemon.wait_for("each POST to be logged as a reload", DEADLINE, || {
        lines_containing(&daemon.logs(), &["reloaded the app"]).len() >= serials.len()
    });
    assert!(reload_failures(&daemon).is_empty(), "{}", ctx());
    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, got {status}"
    );
}

#[test]
fn a_reload_url_answering_500_is_logged_and_pillion_keeps_running() {
    let s = Fixture::new();
    let server = HttpServer::start(&crt(&s));
    let url = server.url("/fail");
    let daemon = Daemon::run(flags(&s, &["--reload-url", &url]));
    let ctx = || format!("{}\n{}", server.describe(), daemon.describe());

    let first = first_serial(&daemon, &crt(&s));
    daemon.wait_for("a WARN about the failed reload", DEADLINE, || {
        !reload_failures(&daemon).is_empty()
    });
    let warn = reload_failures(&daemon).remove(0);
    eprintln!("pillion warned: {warn}");
    assert!(
        warn.contains("500") && warn.contains(&url),
        "the warning should name the URL and the status it answered: {warn}\n{}",
        ctx()
    );
    assert_eq!(
        server.count(),
        1,
        "the server should have been asked once\n{}",
        ctx()
    );
    assert!(!daemon.exited(), "pillion exited\n{}", ctx());

    // It keeps going: the next rotation is published and POSTed again.
    let second = rotate(&daemon, &crt(&s), &first);
    daemon.wait_for("the second POST and its WARN", DEADLINE, || {
        server.count() == 2 && reload_failures(&daemon).len() == 2
    });
    let serials: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| (r.method, r.serial))
        .collect();
    assert_eq!(
        serials,
        [
            ("POST".to_owned(), Some(first)),
            ("POST".to_owned(), Some(second))
        ],
        "{}",
        ctx()
    );
    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, got {status}"
    );
}

/// The `Uid:` line of /proc/PID/status (real, effective, saved, fs).
fn uids_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_signal_the_kernel_refuses_names_both_uids_and_cap_kill() {
    const NOBODY: u32 = 65534;
    let s = Fixture::new();
    // nobody must reach the counter's PID file and write the output and state dirs.
    fs::set_permissions(s.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&s.out, &s.state] {
        fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let counter = HupCounter::start(s.path(), "rootapp", &[]);
    let counter_pid = counter.pid();

    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(pillion_bin())
        .arg("run")
        .args(flags(&s, &[]))
        .arg("--reload-pid-file")
        .arg(counter.pid_file());
    pillion_env(&mut cmd);
    let daemon = Daemon::spawn(cmd);
    let ctx = || format!("{}\n{}", counter.describe(), daemon.describe());

    let first = first_serial(&daemon, &crt(&s));
    assert_eq!(
        uids_of(daemon.pid()),
        "65534 65534 65534 65534",
        "pillion should run as nobody\n{}",
        ctx()
    );
    daemon.wait_for("a WARN about the refused signal", DEADLINE, || {
        !reload_failures(&daemon).is_empty()
    });
    let warn = reload_failures(&daemon).remove(0);
    eprintln!("pillion warned: {warn}");
    for needle in [
        format!("PID {counter_pid}"),
        "uid 0".to_owned(),
        format!("from uid {NOBODY}"),
        "CAP_KILL".to_owned(),
    ] {
        assert!(
            warn.contains(&needle),
            "the warning should contain {needle:?}: {warn}\n{}",
            ctx()
        );
    }
    assert!(!daemon.exited(), "pillion exited\n{}", ctx());

    // Still refused on the next rotation, and still running.
    let _second = rotate(&daemon, &crt(&s), &first);
    daemon.wait_for("a second WARN", DEADLINE, || {
        reload_failures(&daemon).len() == 2
    });
    assert_eq!(
        counter.count(),
        0,
        "the kernel should have refused every signal\n{}",
        ctx()
    );

    // The counter does count a SIGHUP that arrives: from root, i.e. this test.
    rustix::process::kill_process(Pid::from_raw(counter_pid as i32).unwrap(), Signal::HUP).unwrap();
    wait_for_ctx("the counter to count root's SIGHUP", DEADLINE, ctx, || {
        counter.count() == 1
    });
    assert_eq!(
        counter.seen()[0].sender,
        std::process::id(),
        "the one SIGHUP counted should be the test's\n{}",
        ctx()
    );
    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, got {status}"
    );
}

#[test]
fn no_matching_process_is_logged_with_the_share_process_namespace_hint_and_rotation_goes_on() {
    let s = Fixture::new();
    let daemon = Daemon::run(flags(&s, &["--reload-process", "nosuchproc123"]));
    let first = first_serial(&daemon, &crt(&s));
    daemon.wait_for("a WARN that no process matched", DEADLINE, || {
        !reload_failures(&daemon).is_empty()
    });
    let warn = reload_failures(&daemon).remove(0);
    eprintln!("pillion warned: {warn}");
    for needle in [
        r#"no process named "nosuchproc123" is running where pillion can see it"#,
        "shareProcessNamespace: true",
    ] {
        assert!(
            warn.contains(needle),
            "the warning should contain {needle:?}: {warn}\n{}",
            daemon.describe()
        );
    }
    assert!(!daemon.exited(), "pillion exited\n{}", daemon.describe());

    let second = rotate(&daemon, &crt(&s), &first);
    daemon.wait_for("the WARN for the second rotation", DEADLINE, || {
        reload_failures(&daemon).len() == 2
    });
    assert_atomic_layout(&s.out, &["tls.crt", "tls.key", "ca.crt"]);
    openssl_verify(&s.out.join("ca.crt"), &crt(&s))
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.describe()));
    assert_eq!(serial(&crt(&s)), second, "{}", daemon.describe());
    let status = daemon.stop();
    assert!(
        status.success(),
        "run should exit 0 on SIGTERM, got {status}"
    );
}
