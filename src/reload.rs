//! Telling the main container that new files are in place.
//!
//! The usual way in a pod is a signal through the shared process namespace
//! (`shareProcessNamespace: true`): pillion scans `/proc` for the app by its
//! exact `comm` or a regex on its command line, exactly as `pkill` would. It can
//! also read a PID file, run a command, or POST to a URL. Errors say what to do:
//! a permission error names both UIDs, a miss points at the pod setting.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustix::process::{Pid, Signal};

/// How long a reload command or URL may take before it is abandoned.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A signal pillion may send, with the name the user wrote it as.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignalName {
    /// The signal sent to the app's processes.
    pub signal: Signal,
    name: &'static str,
}

/// Signals an app may reasonably use for "reload"; others are a likely typo.
const SIGNALS: [(&str, Signal); 11] = [
    ("SIGHUP", Signal::HUP),
    ("SIGUSR1", Signal::USR1),
    ("SIGUSR2", Signal::USR2),
    ("SIGINT", Signal::INT),
    ("SIGQUIT", Signal::QUIT),
    ("SIGTERM", Signal::TERM),
    ("SIGWINCH", Signal::WINCH),
    ("SIGALRM", Signal::ALARM),
    ("SIGCONT", Signal::CONT),
    ("SIGIO", Signal::IO),
    ("SIGKILL", Signal::KILL),
];

impl Default for SignalName {
    /// SIGHUP: what nginx, haproxy, envoy's hot restarter and most daemons take as "reload".
    fn default() -> Self {
        SignalName {
            signal: Signal::HUP,
            name: "SIGHUP",
        }
    }
}

impl fmt::Debug for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for SignalName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        SIGNALS
            .iter()
            .find(|(n, _)| *n == full)
            .map(|&(name, signal)| SignalName { signal, name })
            .ok_or_else(|| {
                let names: Vec<_> = SIGNALS.iter().map(|(n, _)| *n).collect();
                format!(
                    "{s:?} is not a signal pillion sends (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// What to do after a round of publishing.
#[derive(Debug, Clone)]
pub struct ReloadSpec {
    /// `reload.signal` (default SIGHUP); used by the process, processRegex and
    /// pidFile targets only.
    pub signal: SignalName,
    /// Who is told: the one target `reload` names.
    pub target: ReloadTarget,
    /// Scans skip PID 1 (the pause container, or the app's init) unless asked.
    pub include_pid1: bool,
}

/// Who is told to reload, and how: exactly one per configuration.
#[derive(Debug, Clone)]
pub enum ReloadTarget {
    /// Exact match on `/proc/PID/comm`.
    Process(String),
    /// A regex searched in `/proc/PID/cmdline`, arguments joined by spaces.
    ProcessRegex(regex_lite::Regex),
    /// A file holding the PID to signal, read again at each reload.
    PidFile(PathBuf),
    /// A program and its arguments, run without a shell.
    Command(Vec<String>),
    /// POSTed to, with an empty body.
    Url(url::Url),
}

impl ReloadTarget {
    /// The kind of target, as configured (`process`, `url`, ...), for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReloadTarget::Process(_) => "process",
            ReloadTarget::ProcessRegex(_) => "processRegex",
            ReloadTarget::PidFile(_) => "pidFile",
            ReloadTarget::Command(_) => "command",
            ReloadTarget::Url(_) => "url",
        }
    }
}

impl fmt::Display for ReloadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            ReloadTarget::Process(p) => write!(f, "{} to processes named {p:?}", self.signal),
            ReloadTarget::ProcessRegex(r) => write!(
                f,
                "{} to processes whose command line matches {:?}",
                self.signal,
                r.as_str()
            ),
            ReloadTarget::PidFile(p) => write!(f, "{} to the PID in {}", self.signal, p.display()),
            ReloadTarget::Command(c) => write!(f, "run {c:?}"),
            ReloadTarget::Url(u) => write!(f, "POST {u}"),
        }
    }
}

/// Why the app could not be told to reload; the new files stay published.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No process matches, or the PID from the PID file is not running.
    #[error("no process {what} is running where pillion can see it; if the app runs in another container, the pod needs `shareProcessNamespace: true`")]
    NotFound {
        /// The processes looked for, as the message words it, e.g. `named "nginx"`.
        what: String,
    },
    /// The kernel refused the signal (EPERM): another UID, no CAP_KILL.
    #[error("not permitted to send {signal} to PID {pid} ({comm}, uid {target_uid}) from uid {our_uid}: run pillion as the same UID as the app or add the CAP_KILL capability")]
    Permission {
        /// The signal that was refused.
        signal: SignalName,
        /// The process it was meant for.
        pid: i32,
        /// That process's name from `/proc/PID/status`, or `unknown`.
        comm: String,
        /// That process's real UID from `/proc/PID/status`, or `unknown`.
        target_uid: String,
        /// pillion's effective UID.
        our_uid: u32,
    },
    /// Sending the signal failed for a reason other than a missing process or
    /// a permission.
    #[error("failed to send {signal} to PID {pid}")]
    Signal {
        /// The signal being sent.
        signal: SignalName,
        /// The process it was meant for.
        pid: i32,
        /// The error `kill(2)` returned.
        source: std::io::Error,
    },
    /// `reload.pidFile` cannot be read.
    #[error("failed to read the PID file {}", path.display())]
    PidFile {
        /// The PID file as configured.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// `reload.pidFile` holds something other than a positive number.
    #[error("the PID file {} does not hold a process ID (found {content:?})", path.display())]
    BadPid {
        /// The PID file as configured.
        path: PathBuf,
        /// The file's first 40 characters.
        content: String,
    },
    /// `reload.pidFile` names pillion's own PID.
    #[error("refusing to signal PID {pid} from {}: it is pillion itself", path.display())]
    OwnPid {
        /// pillion's PID, as found in the file.
        pid: i32,
        /// The PID file as configured.
        path: PathBuf,
    },
    /// The reload command could not be started, or waiting for it failed.
    #[error("failed to run the reload command {program:?}")]
    Spawn {
        /// The program, the first word of `reload.command`.
        program: String,
        /// The error from starting or waiting for it.
        source: std::io::Error,
    },
    /// The reload command exited unsuccessfully.
    #[error("the reload command {program:?} exited with {status}{stderr}")]
    CommandFailed {
        /// The program, the first word of `reload.command`.
        program: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// `: ` and the last non-blank line of its stderr (at most 300
        /// characters), or empty when it wrote none.
        stderr: String,
    },
    /// The reload command ran past [`RELOAD_TIMEOUT`] and was killed.
    #[error("the reload command {program:?} did not finish within {}s and was killed", RELOAD_TIMEOUT.as_secs())]
    CommandTimeout {
        /// The program, the first word of `reload.command`.
        program: String,
    },
    /// The POST to `reload.url` got no answer: connecting, TLS, or the timeout
    /// failed.
    #[error("POST {url} failed")]
    Http {
        /// `reload.url`.
        url: url::Url,
        /// The HTTP client's error.
        source: reqwest::Error,
    },
    /// `reload.url` answered with a status other than 2xx.
    #[error("POST {url} answered {status}{body}")]
    HttpStatus {
        /// `reload.url`.
        url: url::Url,
        /// The status it answered.
        status: reqwest::StatusCode,
        /// `: ` and the trimmed answer body (at most 300 characters), or empty
        /// when there was none.
        body: String,
    },
}

/// Carries out a reload. On success returns a description for the log
/// (which PIDs got which signal).
///
/// Cancelling the future abandons a running command (it is killed) or request.
pub async fn reload(spec: &ReloadSpec) -> Result<String, ReloadError> {
    match &spec.target {
        ReloadTarget::Process(name) => {
            let pids = find_processes(spec.include_pid1, |p| p.comm == *name);
            signal_all(spec.signal, pids, || format!("named {name:?}"))
        }
        ReloadTarget::ProcessRegex(re) => {
            let pids = find_processes(spec.include_pid1, |p| re.is_match(&p.cmdline));
            signal_all(spec.signal, pids, || {
                format!("with a command line matching {:?}", re.as_str())
            })
        }
        ReloadTarget::PidFile(path) => {
            let pid = read_pid_file(path)?;
            signal_all(spec.signal, vec![pid], || {
                format!("with PID {pid} (from {})", path.display())
            })
        }
        ReloadTarget::Command(argv) => run_command(argv).await,
        ReloadTarget::Url(url) => post(url).await,
    }
}

struct ProcInfo {
    pid: i32,
    ppid: i32,
    comm: String,
    cmdline: String,
}

/// Lists processes in our PID namespace that match, leaving out pillion itself,
/// PID 1 unless asked, and any match whose parent also matches (nginx's
/// workers share its name; only the master should get the signal).
fn find_processes(include_pid1: bool, matches: impl Fn(&ProcInfo) -> bool) -> Vec<i32> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let found: Vec<ProcInfo> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && (include_pid1 || pid != 1))
        .filter_map(read_proc)
        .filter(|p| matches(p))
        .collect();
    let pids: Vec<i32> = found.iter().map(|p| p.pid).collect();
    found
        .iter()
        .filter(|p| !pids.contains(&p.ppid))
        .map(|p| p.pid)
        .collect()
}

/// Reads one process's details; `None` when it exited meanwhile.
fn read_proc(pid: i32) -> Option<ProcInfo> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    let raw = std::fs::read(dir.join("cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The comm in stat is in parentheses and may itself contain ") ": the ppid
    // is the second field after the last ')'.
    let ppid = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(ProcInfo {
        pid,
        ppid,
        comm: comm.trim_end_matches('\n').to_owned(),
        cmdline,
    })
}

fn read_pid_file(path: &Path) -> Result<i32, ReloadError> {
    let content =
        crate::small_file::read_to_string(path).map_err(|source| ReloadError::PidFile {
            path: path.to_owned(),
            source,
        })?;
    let pid = content
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ReloadError::BadPid {
            path: path.to_owned(),
            content: content.chars().take(40).collect(),
        })?;
    if pid == rustix::process::getpid().as_raw_nonzero().get() {
        return Err(ReloadError::OwnPid {
            pid,
            path: path.to_owned(),
        });
    }
    Ok(pid)
}

fn signal_all(
    signal: SignalName,
    pids: Vec<i32>,
    what: impl Fn() -> String,
) -> Result<String, ReloadError> {
    let mut sent = Vec::new();
    for pid in pids {
        let target = Pid::from_raw(pid).expect("PIDs from /proc and PID files are positive");
        match rustix::process::kill_process(target, signal.signal) {
            Ok(()) => sent.push(pid.to_string()),
            // It exited between the scan and the signal: nothing to reload.
            Err(rustix::io::Errno::SRCH) => {}
            Err(rustix::io::Errno::PERM) => {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let field = |key: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
                        .unwrap_or_else(|| "unknown".into())
                };
                return Err(ReloadError::Permission {
                    signal,
                    pid,
                    comm: field("Name:"),
                    target_uid: field("Uid:"),
                    our_uid: rustix::process::geteuid().as_raw(),
                });
            }
            Err(e) => {
                return Err(ReloadError::Signal {
                    signal,
                    pid,
                    source: e.into(),
                })
            }
        }
    }
    if sent.is_empty() {
        return Err(ReloadError::NotFound { what: what() });
    }
    Ok(format!("sent {signal} to PID {}", sent.join(", ")))
}

async fn run_command(argv: &[String]) -> Result<String, ReloadError> {
    let program = argv[0].clone();
    let child = tokio::process::Command::new(&program)
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ReloadError::Spawn {
            program: program.clone(),
            source,
        })?;
    let output = tokio::time::timeout(RELOAD_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| ReloadError::CommandTimeout {
            program: program.clone(),
        })?
        .map_err(|source| ReloadError::Spawn {
            program: program.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(format!("ran {program:?}"));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let stderr = if last.is_empty() {
        String::new()
    } else {
        format!(": {}", last.chars().take(300).collect::<String>())
    };
    Err(ReloadError::CommandFailed {
        program,
        status: output.status,
        stderr,
    })
}

async fn post(url: &url::Url) -> Result<String, ReloadError> {
    let client = reqwest::Client::builder()
        .timeout(RELOAD_TIMEOUT)
        // Plain HTTP needs no roots; loading them reads every file under /etc/ssl/certs.
        .tls_built_in_root_certs(url.scheme() == "https")
        .build()
        .map_err(|source| ReloadError::Http {
            url: url.clone(),
            source,
        })?;
    let response = client
        .post(url.clone())
        .send()
        .await
        .map_err(|source| ReloadError::Http {
            url: url.clone(),
            source,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(format!("POST {url} answered {status}"));
    }
    let body = response.text().await.unwrap_or_default();
    let body = body.trim();
    let body = if body.is_empty() {
        String::new()
    } else {
        format!(": {}", body.chars().take(300).collect::<String>())
    };
    Err(ReloadError::HttpStatus {
        url: url.clone(),
        status,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_accept_common_spellings() {
        for s in ["SIGHUP", "HUP", "hup", "SigHup"] {
            assert_eq!(s.parse::<SignalName>().unwrap().signal, Signal::HUP, "{s}");
        }
        assert!("SIGFOO"
            .parse::<SignalName>()
            .unwrap_err()
            .contains("SIGUSR1"));
    }

    #[test]
    fn the_scan_never_matches_pillion_itself() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        assert!(!find_processes(true, |_| true).contains(&me));
        assert!(!find_processes(false, |_| true).contains(&1));
    }

    #[test]
    fn a_pid_file_naming_pillion_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(
            read_pid_file(&path),
            Err(ReloadError::OwnPid { .. })
        ));
        std::fs::write(&path, "nope").unwrap();
        assert!(matches!(
            read_pid_file(&path),
            Err(ReloadError::BadPid { .. })
        ));
    }
}
