//! Helpers shared by the integration tests: the pillion binary, one test's temp dirs and config
//! ([`fixture::Fixture`]), openssl-made CAs, a daemon
//! wrapper that keeps its logs, a SIGHUP-counting stand-in application, a real nginx, and the
//! independent checks (openssl CLI, /proc) that decide whether a test passes.
//!
//! Every helper that starts a process owns it and kills it on drop, so a failing assertion
//! never leaves a daemon, a counter or an nginx behind.

pub mod control_plane;
pub mod envoy;
pub mod fixture;
pub mod kube_case;
pub mod openbao;
pub mod postgres;
pub mod test_signers;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// How often every wait in the tests polls.
pub const POLL: Duration = Duration::from_millis(20);

/// Upper bound for one pillion command (init/check/status) or one openssl call. Generous: it
/// only matters when something hangs, and CI machines are shared and slow.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);

/// The pillion binary with a clean environment: no PILLION_* variable leaks in from the
/// developer's shell, logs at debug so a failure message shows what happened.
pub fn pillion() -> Command {
    let mut cmd = Command::new(pillion_bin());
    pillion_env(&mut cmd);
    cmd
}

/// Path of the pillion binary under test.
pub fn pillion_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pillion"))
}

/// Gives `cmd` the environment pillion runs with in the tests (for commands that start pillion
/// indirectly, e.g. through a shell script): no inherited PILLION_*, VAULT_*, BAO_* (pillion
/// reads VAULT_ADDR and friends) or RUST_LOG, debug logs.
pub fn pillion_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if ["PILLION_", "VAULT_", "BAO_"]
            .iter()
            .any(|p| key_text.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.env("PILLION_LOG_LEVEL", "debug");
}

/// What a finished command printed, for assertions and failure messages.
pub struct Ran {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything a failure message needs to show about this command.
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.cmdline, self.status, self.stdout, self.stderr
        )
    }

    /// Panics with the command's output unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "command failed\n{}", self.describe());
        self
    }
}

/// Renders a command line for failure messages.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

fn shell_quote(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Runs `cmd` to completion with stdin closed, killing it and panicking if it is still running
/// after `timeout`. Output goes through temp files so a chatty child can never block on a pipe.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Ran {
    let line = cmdline(cmd);
    let mut out = tempfile::tempfile().expect("create temp file for stdout");
    let mut err = tempfile::tempfile().expect("create temp file for stderr");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let read = |f: &mut fs::File| {
                let mut s = String::new();
                let _ = std::io::Seek::rewind(f);
                let _ = f.read_to_string(&mut s);
                s
            };
            panic!(
                "`{line}` did not finish within {timeout:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
                read(&mut out),
                read(&mut err)
            );
        }
        thread::sleep(POLL);
    };
    let read = |f: &mut fs::File| {
        let mut buf = Vec::new();
        std::io::Seek::rewind(f).expect("rewind output file");
        f.read_to_end(&mut buf).expect("read output file");
        String::from_utf8_lossy(&buf).into_owned()
    };
    Ran {
        cmdline: line,
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

/// Runs pillion with `args` (bounded by [`COMMAND_DEADLINE`]).
pub fn run_pillion<I, S>(args: I) -> Ran
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_bounded(pillion().args(args), COMMAND_DEADLINE)
}

/// Polls `f` every 20ms until it returns true; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    wait_for_ctx(what, timeout, String::new, f)
}

/// Like [`wait_for`], but on timeout the panic message also carries `context()` (daemon logs,
/// a directory listing...), computed only then.
pub fn wait_for_ctx(
    what: &str,
    timeout: Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        thread::sleep(POLL);
    }
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dir");
    }
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Permission bits of the file `path` resolves to (symlinks followed).
pub fn mode_of(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A recursive `ls -la`-like listing of `dir` (symlinks shown with their targets), for failure
/// messages. Never panics.
pub fn listing(dir: &Path) -> String {
    fn walk(dir: &Path, depth: usize, out: &mut String) {
        let mut entries: Vec<_> = match fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(Result::ok).collect(),
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{}<cannot read {}: {e}>",
                    "  ".repeat(depth),
                    dir.display()
                );
                return;
            }
        };
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let indent = "  ".repeat(depth);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = fs::read_link(&path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|e| format!("<{e}>"));
                    let _ = writeln!(
                        out,
                        "{indent}l{:04o} {name} -> {target}",
                        meta.permissions().mode() & 0o7777
                    );
                }
                Ok(meta) if meta.is_dir() => {
                    let _ = writeln!(
                        out,
                        "{indent}d{:04o} {name}/",
                        meta.permissions().mode() & 0o7777
                    );
                    walk(&path, depth + 1, out);
                }
                Ok(meta) => {
                    let _ = writeln!(
                        out,
                        "{indent}-{:04o} {name} ({} bytes, uid {} gid {})",
                        meta.permissions().mode() & 0o7777,
                        meta.len(),
                        std::os::unix::fs::MetadataExt::uid(&meta),
                        std::os::unix::fs::MetadataExt::gid(&meta),
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "{indent}? {name}: {e}");
                }
            }
        }
    }
    let mut out = format!("listing of {}:\n", dir.display());
    if !dir.exists() {
        out.push_str("  <does not exist>\n");
        return out;
    }
    walk(dir, 1, &mut out);
    out
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local_addr")
        .port()
}

/// Escapes `s` for use as a literal inside a regular expression.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The pid of a child as a rustix [`Pid`].
pub fn pid_of(child: &Child) -> Pid {
    Pid::from_child(child)
}

/// True once `/proc/<pid>/status` says the process has a handler installed for `sig`, i.e.
/// sending it will not kill the process with the default action.
pub fn catches_signal(pid: u32, sig: Signal) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let Some(mask) = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
    else {
        return false;
    };
    let n = sig.as_raw();
    n >= 1 && mask & (1u64 << (n - 1)) != 0
}

// ---------------------------------------------------------------------------------------------
// openssl: CAs and independent checks
// ---------------------------------------------------------------------------------------------

/// The kind of private key an openssl-made CA gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// EC P-256, PKCS#8 ("BEGIN PRIVATE KEY").
    EcP256Pkcs8,
    /// EC P-256, SEC1 ("BEGIN EC PRIVATE KEY"), as `openssl ecparam -genkey` writes it.
    EcP256Sec1,
    /// RSA 2048, PKCS#8.
    Rsa2048,
    /// RSA 2048, PKCS#1 ("BEGIN RSA PRIVATE KEY").
    Rsa2048Pkcs1,
    /// Ed25519, PKCS#8.
    Ed25519,
}

/// A self-signed CA made by the openssl CLI. The files live in `dir`.
pub struct OpensslCa {
    /// Holds the files: the directory is removed when the CA is dropped.
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs openssl with `args`, panicking with its output unless it succeeds; returns stdout.
pub fn openssl(args: &[&OsStr]) -> String {
    let ran = run_bounded(Command::new("openssl").args(args), COMMAND_DEADLINE);
    ran.assert_success();
    ran.stdout
}

macro_rules! os {
    ($($a:expr),* $(,)?) => { &[$(AsRef::<OsStr>::as_ref(&$a)),*] };
}

fn genkey(kind: KeyKind, key: &Path) {
    match kind {
        KeyKind::EcP256Pkcs8 => openssl(os![
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            key
        ]),
        KeyKind::EcP256Sec1 => openssl(os![
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            key
        ]),
        KeyKind::Rsa2048 => openssl(os![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            key
        ]),
        KeyKind::Rsa2048Pkcs1 => openssl(os!["genrsa", "-traditional", "-out", key, "2048"]),
        KeyKind::Ed25519 => openssl(os!["genpkey", "-algorithm", "ED25519", "-out", key]),
    };
    let pem = fs::read_to_string(key).expect("read generated key");
    let want = match kind {
        KeyKind::EcP256Sec1 => "-----BEGIN EC PRIVATE KEY-----",
        KeyKind::Rsa2048Pkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
        _ => "-----BEGIN PRIVATE KEY-----",
    };
    assert!(
        pem.starts_with(want),
        "openssl wrote {kind:?} key as:\n{pem}"
    );
}

/// Makes a self-signed certificate with openssl from a self-contained config (the machine's
/// openssl.cnf plays no part), with the given v3 extension lines.
fn self_signed(dir: &Path, kind: KeyKind, cn: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let key = dir.join("ca.key");
    let cert = dir.join("ca.crt");
    genkey(kind, &key);
    let cnf = write(
        dir,
        "openssl-req.cnf",
        &format!(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n\
             [dn]\nCN = {cn}\nO = pillion tests\n[ext]\n{extensions}\nsubjectKeyIdentifier = hash\n"
        ),
    );
    openssl(os![
        "req", "-x509", "-new", "-key", key, "-config", cnf, "-days", "2", "-out", cert
    ]);
    (cert, key)
}

/// A self-signed CA (basicConstraints=critical,CA:TRUE; keyUsage=critical,keyCertSign,cRLSign)
/// with a `kind` key, made by the openssl CLI.
pub fn openssl_ca(kind: KeyKind) -> OpensslCa {
    let dir = tempfile::tempdir().expect("create CA temp dir");
    let (cert, key) = self_signed(
        dir.path(),
        kind,
        &format!("pillion test CA {kind:?}"),
        "basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign",
    );
    OpensslCa {
        _dir: dir,
        cert,
        key,
    }
}

/// A self-signed certificate that is NOT a CA (basicConstraints=critical,CA:FALSE), shaped like
/// [`OpensslCa`] so it can be handed to pillion as one.
pub fn openssl_non_ca(kind: KeyKind) -> OpensslCa {
    let dir = tempfile::tempdir().expect("create temp dir");
    let (cert, key) = self_signed(
        dir.path(),
        kind,
        "not a CA",
        "basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature",
    );
    OpensslCa {
        _dir: dir,
        cert,
        key,
    }
}

/// `openssl verify -CAfile ca cert` (chain and signature checked by openssl, purpose any).
pub fn openssl_verify(ca: &Path, cert: &Path) -> Result<(), String> {
    let ran = run_bounded(
        Command::new("openssl").args(os!["verify", "-CAfile", ca, cert]),
        COMMAND_DEADLINE,
    );
    if ran.status.success() {
        Ok(())
    } else {
        Err(ran.describe())
    }
}

/// Normalises a hex serial: uppercase, no separators, no leading zeros.
fn normalise_serial(hex: &str) -> String {
    let s: String = hex
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let s = s.trim_start_matches('0');
    if s.is_empty() {
        "0".into()
    } else {
        s.into()
    }
}

/// The serial of the (first) certificate in `cert`, as `openssl x509 -noout -serial` prints it
/// (normalised: uppercase hex without leading zeros).
pub fn serial(cert: &Path) -> String {
    let out = openssl(os!["x509", "-in", cert, "-noout", "-serial"]);
    let hex = out
        .trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("unexpected `openssl x509 -serial` output: {out}"));
    normalise_serial(hex)
}

/// The serial of the first certificate in the PEM text, parsed in-process (cheap enough to poll
/// every 20ms). Same normalisation as [`serial`]. None when there is no parseable certificate.
pub fn serial_of_pem(pem_text: &[u8]) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text).ok()?;
    let cert = pem.parse_x509().ok()?;
    let hex: String = cert
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    Some(normalise_serial(&hex))
}

/// [`serial_of_pem`] of the file at `path` (None when missing or unparseable).
pub fn serial_fast(path: &Path) -> Option<String> {
    serial_of_pem(&fs::read(path).ok()?)
}

/// The subject alternative names openssl prints for `cert` (`openssl x509 -ext subjectAltName`).
pub fn san_text(cert: &Path) -> String {
    openssl(os!["x509", "-in", cert, "-noout", "-ext", "subjectAltName"])
}

/// The subject line openssl prints for `cert`.
pub fn subject_text(cert: &Path) -> String {
    openssl(os!["x509", "-in", cert, "-noout", "-subject"])
}

/// True when the public key in `cert` is the public half of `key` (compared as openssl prints
/// them: `openssl x509 -pubkey -noout` vs `openssl pkey -pubout`).
pub fn key_matches(cert: &Path, key: &Path) -> bool {
    key_pair_check(cert, key).is_ok()
}

/// Like [`key_matches`], but says why not: openssl's own error when it cannot read one of the
/// files, or both public keys when they differ.
pub fn key_pair_check(cert: &Path, key: &Path) -> Result<(), String> {
    let from_cert = run_bounded(
        Command::new("openssl").args(os!["x509", "-in", cert, "-pubkey", "-noout"]),
        COMMAND_DEADLINE,
    );
    let from_key = run_bounded(
        Command::new("openssl").args(os!["pkey", "-in", key, "-pubout"]),
        COMMAND_DEADLINE,
    );
    if !from_cert.status.success() || from_cert.stdout.trim().is_empty() {
        return Err(format!(
            "openssl cannot read the certificate's public key:\n{}",
            from_cert.describe()
        ));
    }
    if !from_key.status.success() {
        return Err(format!(
            "openssl cannot read the private key:\n{}",
            from_key.describe()
        ));
    }
    if from_cert.stdout.trim() != from_key.stdout.trim() {
        return Err(format!(
            "public keys differ:\ncertificate:\n{}\nprivate key:\n{}",
            from_cert.stdout, from_key.stdout
        ));
    }
    Ok(())
}

/// `openssl pkey -in key -text -noout` (key type, curve, size).
pub fn key_text(key: &Path) -> String {
    openssl(os!["pkey", "-in", key, "-text", "-noout"])
}

// ---------------------------------------------------------------------------------------------
// The output layout (kubelet AtomicWriter)
// ---------------------------------------------------------------------------------------------

/// Asserts the AtomicWriter layout in `dir`: `..data` is a symlink to a `..YYYY_...` generation
/// directory inside `dir`, and each of `names` is a symlink `name -> ..data/name` that resolves to
/// a regular file.
pub fn assert_atomic_layout(dir: &Path, names: &[&str]) {
    let ctx = || listing(dir);
    let data = dir.join("..data");
    let meta = fs::symlink_metadata(&data)
        .unwrap_or_else(|e| panic!("{} missing: {e}\n{}", data.display(), ctx()));
    assert!(
        meta.file_type().is_symlink(),
        "..data is not a symlink\n{}",
        ctx()
    );
    let target = fs::read_link(&data).expect("readlink ..data");
    let target_name = target.to_string_lossy().into_owned();
    assert!(
        target.components().count() == 1 && target_name.starts_with("..20"),
        "..data should point at a sibling `..YYYY_MM_DD_...` generation dir, points at {target_name:?}\n{}",
        ctx()
    );
    let generation = dir.join(&target);
    assert!(
        fs::symlink_metadata(&generation)
            .map(|m| m.is_dir())
            .unwrap_or(false),
        "generation {} is not a directory\n{}",
        generation.display(),
        ctx()
    );
    for name in names {
        let visible = dir.join(name);
        let meta = fs::symlink_metadata(&visible)
            .unwrap_or_else(|e| panic!("{} missing: {e}\n{}", visible.display(), ctx()));
        assert!(
            meta.file_type().is_symlink(),
            "{name} is not a symlink\n{}",
            ctx()
        );
        assert_eq!(
            fs::read_link(&visible).expect("readlink"),
            Path::new("..data").join(name),
            "{name} should be a symlink to ..data/{name}\n{}",
            ctx()
        );
        assert!(
            fs::metadata(&visible).map(|m| m.is_file()).unwrap_or(false),
            "{name} does not resolve to a regular file\n{}",
            ctx()
        );
        assert!(
            fs::symlink_metadata(generation.join(name))
                .map(|m| m.is_file())
                .unwrap_or(false),
            "{name} is not a regular file inside the generation dir\n{}",
            ctx()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// pillion run as a daemon
// ---------------------------------------------------------------------------------------------

/// A running `pillion run`, its stdout and stderr going to a log file. Killed on drop.
pub struct Daemon {
    child: Option<Child>,
    cmdline: String,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Daemon {
    /// Spawns `pillion run <args>`.
    pub fn run<I, S>(args: I) -> Daemon
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = pillion();
        cmd.arg("run").args(args);
        Daemon::spawn(cmd)
    }

    /// Spawns an arbitrary pillion command as a daemon.
    pub fn spawn(mut cmd: Command) -> Daemon {
        let log_dir = tempfile::tempdir().expect("create log dir");
        let log = log_dir.path().join("pillion.log");
        let file = fs::File::create(&log).expect("create log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log file"))
            .stderr(file);
        let line = cmdline(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
        Daemon {
            child: Some(child),
            cmdline: line,
            log,
            _log_dir: log_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Sends `sig` to the daemon. For SIGUSR1/SIGTERM/SIGHUP, first waits until the daemon has
    /// a handler for it, so an early signal cannot kill it with the default action.
    pub fn signal(&self, sig: Signal) {
        let pid = self.pid();
        self.wait_for(
            &format!(
                "pillion (pid {pid}) to install a handler for signal {}",
                sig.as_raw()
            ),
            Duration::from_secs(30),
            || catches_signal(pid, sig) || self.exited(),
        );
        rustix::process::kill_process(pid_of(self.child.as_ref().expect("running")), sig)
            .unwrap_or_else(|e| {
                panic!(
                    "kill({pid}, {}) failed: {e}\n{}",
                    sig.as_raw(),
                    self.describe()
                )
            });
    }

    /// Everything the daemon printed so far.
    pub fn logs(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read log {}: {e}>", self.log.display()))
    }

    /// The command line and the logs, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "daemon: {}\n--- daemon logs ---\n{}\n--- end of logs ---",
            self.cmdline,
            self.logs()
        )
    }

    /// True once the process has exited (it is then reaped).
    pub fn exited(&self) -> bool {
        // try_wait needs &mut; peek at /proc instead so this can be used inside closures.
        let pid = self.pid();
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .map(|state| state == "Z" || state == "X")
                .unwrap_or(true),
            Err(_) => true,
        }
    }

    /// [`wait_for_ctx`] with the daemon's logs as context.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl FnMut() -> bool) {
        wait_for_ctx(what, timeout, || self.describe(), f)
    }

    /// SIGTERM, then wait up to 5s for the exit; past that, SIGKILL. Returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        // A SIGTERM that lands before pillion installs its handler would kill it with the
        // default action, which is not what these tests are about: give it a moment to get there.
        let pid = self.pid();
        let ready = Instant::now() + Duration::from_secs(5);
        while !catches_signal(pid, Signal::TERM) && !self.exited() && Instant::now() < ready {
            thread::sleep(POLL);
        }
        let mut child = self.child.take().expect("daemon running");
        if child.try_wait().expect("try_wait").is_none() {
            let _ = rustix::process::kill_process(pid_of(&child), Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "pillion did not exit within 5s of SIGTERM; killing it\n{}",
                    self.logs()
                );
                let _ = child.kill();
                return child.wait().expect("wait after kill");
            }
            thread::sleep(POLL);
        }
    }

    /// Waits (bounded) for the daemon to exit on its own and returns the status.
    pub fn wait_exit(mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "pillion did not exit within {timeout:?}; killed it\n{}",
                    self.describe()
                );
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if thread::panicking() {
                eprintln!("{}", self.describe());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A stand-in application that counts SIGHUPs
// ---------------------------------------------------------------------------------------------

/// The counter, in Python so that it is nobody's Rust: it blocks SIGHUP and takes each one with
/// `sigtimedwait`, which tells it who sent the signal. On each SIGHUP it snapshots the files it
/// watches (as an application reloading its certificate would read them) into `seen-<n>/`, records
/// the sender pid there, then atomically rewrites `count`. It exits when its parent dies.
const HUP_COUNTER_PY: &str = r#"
import os, signal, sys, time

state = sys.argv[1]
watch = sys.argv[2:]

def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
count = 0
write_atomic(os.path.join(state, "count"), b"0\n")
write_atomic(os.path.join(state, "pid"), b"%d\n" % os.getpid())
parent = os.getppid()
while True:
    info = signal.sigtimedwait({signal.SIGHUP}, 0.1)
    if info is None:
        if os.getppid() != parent:
            sys.exit(0)
        continue
    count += 1
    snap = os.path.join(state, "seen-%d" % count)
    os.mkdir(snap + ".tmp")
    for i, path in enumerate(watch):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            data = ("unreadable: %s" % e).encode()
        write_atomic(os.path.join(snap + ".tmp", str(i)), data)
    write_atomic(os.path.join(snap + ".tmp", "sender"), b"%d\n" % info.si_pid)
    os.rename(snap + ".tmp", snap)
    write_atomic(os.path.join(state, "count"), b"%d\n" % count)
"#;

/// The real python3 binary (not a pyenv shim or wrapper script).
pub fn real_python3() -> PathBuf {
    let ran = run_bounded(
        Command::new("python3").args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ]),
        COMMAND_DEADLINE,
    );
    assert!(
        ran.status.success(),
        "python3 is needed by the tests: run ./scripts/test.sh (it apt-get installs it)\n{}",
        ran.describe()
    );
    PathBuf::from(ran.stdout.trim())
}

/// How to start a SIGHUP counter: `argv` runs it; its files live in `state`.
pub struct HupCounterSpec {
    /// `/proc/PID/comm` of the running counter.
    pub name: String,
    /// The script (its path is in the counter's cmdline, handy for `processRegex`).
    pub script: PathBuf,
    /// Holds `count`, `pid` and the `seen-<n>/` snapshots.
    pub state: PathBuf,
    pub argv: Vec<PathBuf>,
}

/// Prepares a SIGHUP counter in `dir` whose process comm is `name` (at most 15 bytes): the
/// python interpreter is exec'd through a symlink called `name`, and the kernel names the
/// process after the path it was exec'd by. On each SIGHUP it snapshots the files in `watch`.
pub fn prepare_hup_counter(dir: &Path, name: &str, watch: &[&Path]) -> HupCounterSpec {
    assert!(
        name.len() <= 15 && !name.contains('/'),
        "comm {name:?} must be a file name of at most 15 bytes"
    );
    let exe = dir.join(name);
    if !exe.exists() {
        symlink(real_python3(), &exe).expect("symlink python3");
    }
    let script = write(dir, &format!("{name}-hup_counter.py"), HUP_COUNTER_PY);
    let state = dir.join(format!("{name}-state"));
    fs::create_dir_all(&state).expect("create counter state dir");
    let mut argv = vec![exe, script.clone(), state.clone()];
    argv.extend(watch.iter().map(|p| p.to_path_buf()));
    HupCounterSpec {
        name: name.to_owned(),
        script,
        state,
        argv,
    }
}

/// One SIGHUP as the counter saw it.
#[derive(Debug, Clone)]
pub struct HupSeen {
    /// 1-based order of arrival.
    pub n: u64,
    /// Pid that sent the signal (as seen in the counter's pid namespace).
    pub sender: u32,
    /// Contents of the watched files at that moment, in `watch` order.
    pub files: Vec<Vec<u8>>,
    /// Where the snapshot lives (file `i` is `dir/i`).
    pub dir: PathBuf,
}

impl HupSeen {
    /// Serial of watched file `i` when it held a certificate.
    pub fn serial(&self, i: usize) -> Option<String> {
        serial_of_pem(self.files.get(i)?)
    }
}

impl HupCounterSpec {
    /// Number of SIGHUPs counted so far (0 before the counter started).
    pub fn count(&self) -> u64 {
        fs::read_to_string(self.state.join("count"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn pid_file(&self) -> PathBuf {
        self.state.join("pid")
    }

    /// The counter's pid once it is ready (handler installed), from its pid file.
    pub fn pid(&self) -> Option<u32> {
        fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every SIGHUP seen so far, in order.
    pub fn seen(&self) -> Vec<HupSeen> {
        let mut out = Vec::new();
        for n in 1.. {
            let dir = self.state.join(format!("seen-{n}"));
            if !dir.is_dir() {
                break;
            }
            let sender = fs::read_to_string(dir.join("sender"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            let mut files = Vec::new();
            for i in 0.. {
                match fs::read(dir.join(i.to_string())) {
                    Ok(b) => files.push(b),
                    Err(_) => break,
                }
            }
            out.push(HupSeen {
                n,
                sender,
                files,
                dir,
            });
        }
        out
    }

    /// A summary of what the counter saw, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("SIGHUP counter {:?}: count={}\n", self.name, self.count());
        for seen in self.seen() {
            let serials: Vec<String> = (0..seen.files.len())
                .map(|i| seen.serial(i).unwrap_or_else(|| "-".into()))
                .collect();
            let _ = writeln!(
                s,
                "  #{} from pid {}: serials {:?}",
                seen.n, seen.sender, serials
            );
        }
        s
    }
}

/// A running SIGHUP counter, killed on drop.
pub struct HupCounter {
    pub spec: HupCounterSpec,
    child: Option<Child>,
}

impl HupCounter {
    /// Starts a counter named `name` watching `watch`, and waits until it is ready to count.
    pub fn start(dir: &Path, name: &str, watch: &[&Path]) -> HupCounter {
        let spec = prepare_hup_counter(dir, name, watch);
        let log_path = dir.join(format!("{name}.log"));
        let log = fs::File::create(&log_path).expect("create counter log");
        let child = Command::new(&spec.argv[0])
            .args(&spec.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the SIGHUP counter: {e}"));
        let pid = child.id();
        let counter = HupCounter {
            spec,
            child: Some(child),
        };
        wait_for_ctx(
            "the SIGHUP counter to write its pid file",
            Duration::from_secs(30),
            || fs::read_to_string(&log_path).unwrap_or_default(),
            || counter.spec.pid() == Some(pid),
        );
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            name,
            "the counter's /proc/PID/comm should be its name"
        );
        counter
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("counter running").id()
    }
}

impl std::ops::Deref for HupCounter {
    type Target = HupCounterSpec;
    fn deref(&self) -> &HupCounterSpec {
        &self.spec
    }
}

impl Drop for HupCounter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// The nginx binary; panics with how to install it when missing.
pub fn nginx_bin() -> PathBuf {
    for candidate in [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ] {
        if Path::new(candidate).is_file() {
            return candidate.into();
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nginx");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("nginx is not installed: run ./scripts/test.sh (it apt-get installs nginx)");
}

/// Held by a test whose pillion reloads nginx by name (`reload.process: nginx`) for as long as
/// that pillion and its nginx run. pillion signals every process called `nginx` it can see, and
/// all tests share one process and run in parallel threads: without this, one test's pillion
/// would send SIGHUP to another test's nginx, and an nginx that has not yet installed its signal
/// handlers dies of it.
pub fn nginx_by_name() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it says nothing about the next one.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A real nginx in the foreground (`daemon off`) with its own prefix, serving TLS on a free
/// loopback port with the given certificate and key paths. Stopped on drop.
pub struct Nginx {
    pub prefix: tempfile::TempDir,
    pub port: u16,
    pub error_log: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(cert: &Path, key: &Path) -> Nginx {
        let bin = nginx_bin();
        let prefix = tempfile::tempdir().expect("create nginx prefix");
        let p = prefix.path();
        let port = free_port();
        let error_log = p.join("error.log");
        let conf = write(
            p,
            "nginx.conf",
            &format!(
                r#"worker_processes 1;
error_log {p}/error.log notice;
pid {p}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#,
                p = p.display(),
                cert = cert.display(),
                key = key.display(),
            ),
        );
        let startup_log = p.join("startup.log");
        let log = fs::File::create(p.join("stdio.log")).expect("create nginx stdio log");
        let child = Command::new(&bin)
            .arg("-e")
            .arg(&startup_log)
            .arg("-p")
            .arg(p)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let nginx = Nginx {
            prefix,
            port,
            error_log,
            child: Some(child),
        };
        wait_for_ctx(
            &format!("nginx to listen on 127.0.0.1:{port}"),
            Duration::from_secs(30),
            || nginx.describe(),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        nginx
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("nginx running").id()
    }

    /// The error log (and nginx's stdio), for assertions and failure messages.
    pub fn error_log_text(&self) -> String {
        fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        let read =
            |name: &str| fs::read_to_string(self.prefix.path().join(name)).unwrap_or_default();
        format!(
            "--- nginx.conf ---\n{}\n--- nginx error.log ---\n{}\n--- nginx startup.log ---\n{}\n--- nginx stdio ---\n{}",
            read("nginx.conf"),
            read("error.log"),
            read("startup.log"),
            read("stdio.log"),
        )
    }

    /// Serial of the certificate nginx serves to a TLS client (openssl s_client, SNI localhost),
    /// after the client verified the chain against `ca` and the host name `localhost`.
    /// Err with the client's output when the handshake or verification fails.
    pub fn served_serial(&self, ca: &Path) -> Result<String, String> {
        let connect = format!("127.0.0.1:{}", self.port);
        let ran = run_bounded(
            Command::new("openssl").args(os![
                "s_client",
                "-connect",
                connect,
                "-servername",
                "localhost",
                "-CAfile",
                ca,
                "-verify_hostname",
                "localhost",
                "-verify_return_error",
            ]),
            COMMAND_DEADLINE,
        );
        if !ran.status.success() {
            return Err(ran.describe());
        }
        serial_of_pem(ran.stdout.as_bytes())
            .ok_or_else(|| format!("no certificate in s_client output\n{}", ran.describe()))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM is nginx's fast shutdown; the master takes its workers down with it.
            let _ = rustix::process::kill_process(pid_of(&child), Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small additions for the recovery and reload tests
// ---------------------------------------------------------------------------------------------

/// The lines of `text` (e.g. a daemon's log) that contain every one of `needles`.
pub fn lines_containing(text: &str, needles: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// A serial as `openssl x509 -serial` prints it (`serial=0A1B...`, with or without the prefix),
/// normalised like [`serial`] and [`serial_of_pem`].
pub fn normalised_serial(openssl_text: &str) -> String {
    let hex = openssl_text.trim();
    normalise_serial(hex.strip_prefix("serial=").unwrap_or(hex))
}

/// Replaces `path` with `contents` by writing a sibling temp file and renaming it over `path`,
/// so a reader (pillion re-reading its CA files) never sees a half-written file.
pub fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("replace-tmp");
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), path.display()));
}

/// The directory `dir/..data` points at, as its name (None when there is no `..data`).
pub fn live_generation(dir: &Path) -> Option<String> {
    fs::read_link(dir.join("..data"))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// Names of the hidden entries of `dir` other than `..data` (generation dirs, `..data_tmp`...),
/// sorted.
pub fn hidden_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("..") && n != "..data")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
