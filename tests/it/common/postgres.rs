//! A throwaway PostgreSQL from Debian's packages, for OpenBao's database secrets engine: one
//! server per test process on a free loopback port, in its own temp dir, stopped (and its dir
//! removed) when the test process exits. Its superuser `bao` is the account OpenBao creates
//! database users with.
//!
//! initdb and postgres refuse to run as root: as root, they run as `nobody` through `setpriv`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::openbao::OpenBao;
use super::{free_port, run_bounded, Ran, COMMAND_DEADLINE};

/// The superuser OpenBao connects as.
pub const SUPERUSER: &str = "bao";
/// Its password.
pub const SUPERUSER_PASSWORD: &str = "pillion-test-superuser";

/// Holds the server until stdin closes (the test process exited), then stops it and removes
/// its dir; as for OpenBao.
const WRAPPER_SH: &str = r#"
dir=$1; shift
"$@" </dev/null >>"$dir/server.log" 2>&1 &
pid=$!
stop() { kill -INT "$pid" 2>/dev/null; wait "$pid"; rm -rf "$dir"; exit 0; }
trap stop INT TERM HUP
while read -r _; do :; done
stop
"#;

/// A running PostgreSQL.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    _wrapper: Mutex<(Child, ChildStdin)>,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop().expect(
        "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): scripts/test.sh installs it",
    )
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// `program args` as the user PostgreSQL runs as.
fn as_db_user(program: &Path) -> Command {
    if is_root() {
        let gid = run_bounded(Command::new("id").args(["-g", "nobody"]), COMMAND_DEADLINE);
        gid.assert_success();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=nobody",
            &format!("--regid={}", gid.stdout.trim()),
            "--clear-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// The server of this test process, started once.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("pillion-postgres-")
            .tempdir()
            .expect("create PostgreSQL dir")
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let password_file = dir.join("password");
        fs::write(&password_file, format!("{SUPERUSER_PASSWORD}\n")).unwrap();
        fs::create_dir(dir.join("sock")).unwrap();
        if is_root() {
            let chown = run_bounded(
                Command::new("chown").args(["-R", "nobody"]).arg(&dir),
                COMMAND_DEADLINE,
            );
            chown.assert_success();
        }
        let initdb = run_bounded(
            as_db_user(&bin.join("initdb"))
                .arg("-D")
                .arg(dir.join("data"))
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
                .arg(format!("--pwfile={}", password_file.display()))
                .env("HOME", &dir),
            COMMAND_DEADLINE,
        );
        initdb.assert_success();
        let port = free_port();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER_SH)
            .arg("sh")
            .arg(&dir)
            .arg(as_db_user(&bin.join("postgres")).get_program())
            .args(as_db_user(&bin.join("postgres")).get_args())
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            .arg("-k")
            .arg(dir.join("sock"))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .env("HOME", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start sh for PostgreSQL");
        let stdin = child.stdin.take().expect("piped stdin");
        let pg = Postgres {
            port,
            dir,
            bin,
            _wrapper: Mutex::new((child, stdin)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if pg.login(SUPERUSER, SUPERUSER_PASSWORD).is_ok() {
                return pg;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within 30s:\n{}",
                fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `psql -c sql` over TCP as `user` with `password`.
    pub fn psql(&self, user: &str, password: &str, sql: &str) -> Ran {
        run_bounded(
            Command::new(self.bin.join("psql"))
                .args(["-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .arg(format!(
                    "host=127.0.0.1 port={} user={user} dbname=postgres connect_timeout=5",
                    self.port
                ))
                .env("PGPASSWORD", password),
            COMMAND_DEADLINE,
        )
    }

    /// Logs in as `user` and asks who it is: `Err` with psql's words when the login fails.
    pub fn login(&self, user: &str, password: &str) -> Result<(), String> {
        let ran = self.psql(user, password, "select current_user");
        match ran.status.success() && ran.stdout.trim() == user {
            true => Ok(()),
            false => Err(ran.describe()),
        }
    }

    /// Whether the role `name` exists.
    pub fn role_exists(&self, name: &str) -> bool {
        let ran = self.psql(
            SUPERUSER,
            SUPERUSER_PASSWORD,
            &format!("select count(*) from pg_roles where rolname = '{name}'"),
        );
        ran.assert_success();
        ran.stdout.trim() == "1"
    }

    /// The server's log, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- PostgreSQL on port {} ---\n{}",
            self.port,
            fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        )
    }
}

/// OpenBao's database engine at `database/`, connected to the shared PostgreSQL, with a role
/// `app` whose leases last 4 s and at most 12 s. Set up once per test process.
pub fn database_engine(bao: &OpenBao) -> &'static Postgres {
    static READY: OnceLock<()> = OnceLock::new();
    let pg = Postgres::shared();
    READY.get_or_init(|| {
        bao.bao_ok(["secrets", "enable", "-path=database", "database"]);
        bao.bao_ok([
            "write".to_owned(),
            "database/config/pg".to_owned(),
            "plugin_name=postgresql-database-plugin".to_owned(),
            format!(
                "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
                pg.port
            ),
            format!("username={SUPERUSER}"),
            format!("password={SUPERUSER_PASSWORD}"),
            "allowed_roles=app".to_owned(),
        ]);
        bao.bao_ok([
            "write",
            "database/roles/app",
            "db_name=pg",
            "default_ttl=4s",
            "max_ttl=12s",
            "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        ]);
    });
    pg
}
