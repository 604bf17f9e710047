//! One test's pillion world, built the same way by every integration test: a temp dir holding
//! the config file (`pillion.yaml`), the output dir (`out/`) and the state dir (`state/`);
//! pillion commands against them with a controlled environment; and what a failure message
//! needs to show (the config and a listing of the output dir).
//!
//! The peers a test points pillion at (a real OpenBao, a real Kubernetes API server) wrap a
//! [`Fixture`] for their specifics ([`super::openbao::Case`], [`super::kube_case::KubeCase`]);
//! what they share lives here once.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{listing, run_bounded, write, Daemon, Ran, COMMAND_DEADLINE};

/// How to build a [`Fixture`]: `Fixture::builder()...build()`, or [`Fixture::new`] for the
/// plain one.
#[derive(Default)]
pub struct FixtureBuilder {
    prefix: Option<String>,
    unset_env: Vec<String>,
    files: Vec<(PathBuf, String)>,
}

impl FixtureBuilder {
    /// Names the temp dir `<prefix>XXXXXX` (it shows in paths pillion prints).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_owned());
        self
    }

    /// Removes `vars` from the environment of every pillion command the fixture builds, so a
    /// test sets exactly the ones it means (the developer's shell may have them set).
    pub fn unset_env(mut self, vars: &[&str]) -> Self {
        self.unset_env.extend(vars.iter().map(|v| (*v).to_owned()));
        self
    }

    /// Writes `contents` to `name` (relative to the temp dir; parents created) when built, e.g.
    /// a file planted in `out/` that pillion must leave alone.
    pub fn file(mut self, name: impl AsRef<Path>, contents: &str) -> Self {
        self.files
            .push((name.as_ref().to_path_buf(), contents.to_owned()));
        self
    }

    pub fn build(self) -> Fixture {
        let mut temp = tempfile::Builder::new();
        if let Some(prefix) = &self.prefix {
            temp.prefix(prefix);
        }
        let dir = temp.tempdir().expect("create test dir");
        for (name, contents) in &self.files {
            write(dir.path(), &name.to_string_lossy(), contents);
        }
        Fixture {
            out: dir.path().join("out"),
            state: dir.path().join("state"),
            config: dir.path().join("pillion.yaml"),
            dir,
            unset_env: self.unset_env,
        }
    }
}

/// One test's temp dir with the config, output and state paths in it (none of them created
/// unless the builder planted a file there). Removed on drop.
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The output dir (`outputDir`).
    pub out: PathBuf,
    /// The state dir (`--state-dir`).
    pub state: PathBuf,
    /// The config file (`--config`).
    pub config: PathBuf,
    unset_env: Vec<String>,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Fixture {
    /// A fixture with nothing planted and the common test environment.
    pub fn new() -> Fixture {
        Fixture::builder().build()
    }

    pub fn builder() -> FixtureBuilder {
        FixtureBuilder::default()
    }

    /// The temp dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the config: `outputDir` (this fixture's), then `body` verbatim.
    pub fn write_config(&self, body: &str) {
        let yaml = format!("outputDir: \"{}\"\n{body}", self.out.display());
        fs::write(&self.config, yaml).expect("write config");
    }

    /// `pillion <args>` (not run) in this fixture's environment: nothing else added.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = super::pillion();
        for var in &self.unset_env {
            cmd.env_remove(var);
        }
        cmd.args(args);
        cmd
    }

    /// `pillion --config C --state-dir S <args>` (not run).
    pub fn pillion(&self, args: &[&str]) -> Command {
        let mut cmd = self.command(&[
            OsStr::new("--config"),
            self.config.as_os_str(),
            OsStr::new("--state-dir"),
            self.state.as_os_str(),
        ]);
        cmd.args(args);
        cmd
    }

    /// `pillion init --timeout <timeout>`, bounded by [`COMMAND_DEADLINE`].
    pub fn init(&self, timeout: &str) -> Ran {
        run_bounded(
            &mut self.pillion(&["init", "--timeout", timeout]),
            COMMAND_DEADLINE,
        )
    }

    /// `pillion run` as a daemon.
    pub fn run(&self) -> Daemon {
        Daemon::spawn(self.pillion(&["run"]))
    }

    /// The config and the output dir listing, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- config {} ---\n{}\n{}",
            self.config.display(),
            fs::read_to_string(&self.config).unwrap_or_default(),
            listing(&self.out)
        )
    }
}
