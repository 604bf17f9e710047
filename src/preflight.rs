//! The checks before anything is obtained: what parsing the configuration
//! could not see, because it needs the file system (issuer files, the output
//! directory, who pillion runs as). `pillion check` runs them without
//! writing anything; `init` and `run` run them before the loop starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, IssuerSpec, TemplateSource};
use crate::issuers::Issuer;
use crate::sinks;
use crate::telemetry::chain;

/// Checks every template read from a file ([`crate::template::check`]), as
/// the configuration check does for inline ones; `skip` are the fields
/// whose file could not be read (already reported).
fn check_template_files(config: &Config, skip: &[String]) -> Vec<String> {
    let certs: Vec<&str> = config
        .certificates
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let secrets: Vec<&str> = config.secrets.iter().map(|s| s.name.as_str()).collect();
    let templates = config
        .certificates
        .iter()
        .flat_map(|c| &c.templates)
        .chain(config.secrets.iter().flat_map(|s| &s.templates));
    let mut errors = Vec::new();
    for t in templates {
        let TemplateSource::File(path) = &t.source else {
            continue;
        };
        let field = format!("{}.templateFile", t.field);
        if skip.contains(&field) {
            continue;
        }
        let Ok(text) = crate::small_file::read_to_string(path) else {
            continue;
        };
        let env = |v: &str| std::env::var(v).ok();
        for problem in crate::template::check(&t.origin(), &text, &certs, &secrets, env) {
            errors.push(format!("{field}: {problem}"));
        }
    }
    errors
}

/// Problems found by [`preflight`], one sentence each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n  "))]
pub struct PreflightErrors(pub Vec<String>);

/// Checks what parsing could not: that each issuer's files are usable, and
/// that the output directory can be created and written. With `create`, the
/// development CA is created when needed; without, nothing is written.
///
/// # Errors
/// Every problem found, each naming its file or directory.
pub fn preflight(
    config: &Config,
    create: bool,
) -> Result<BTreeMap<String, Issuer>, PreflightErrors> {
    let mut errors = Vec::new();
    if let Err(e) = check_writable(&config.output_dir) {
        errors.push(format!("outputDir: {e}"));
    }
    if let Some(sds) = &config.sds {
        if let Err(e) = check_socket_path(&sds.socket) {
            errors.push(format!("sds.socket: {e}"));
        }
    }
    if let Some(w) = &config.workload_api {
        if let Err(e) = check_socket_path(&w.socket) {
            errors.push(format!("workloadApi.socket: {e}"));
        }
        if config.sds.as_ref().is_some_and(|s| s.socket == w.socket) {
            errors.push("workloadApi.socket: is also sds.socket: each needs its own socket".into());
        }
    }
    let sinks = config
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!("certificates[{i}]"),
                sinks::for_certificate(c, None, None),
            )
        })
        .chain(
            config
                .secrets
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("secrets[{i}]"), sinks::for_secret(s))),
        );
    let mut unreadable = Vec::new();
    for (field, sinks) in sinks {
        for (sub, e) in sinks.iter().filter_map(|s| s.check().err()) {
            errors.push(format!("{field}.{sub}: {e}"));
            unreadable.push(format!("{field}.{sub}"));
        }
    }
    errors.extend(check_template_files(config, &unreadable));
    let owners = config
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("certificates[{i}].files"), c.files.uid, c.files.gid))
        .chain(
            config
                .secrets
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("secrets[{i}]"), s.uid, s.gid)),
        )
        .chain(config.sds.iter().map(|s| ("sds".to_owned(), s.uid, s.gid)))
        .chain(
            config
                .workload_api
                .iter()
                .map(|w| ("workloadApi".to_owned(), w.uid, w.gid)),
        )
        .chain(config.token_sinks.iter().map(|t| {
            (
                format!("issuers.{}.vault.tokenSink", t.issuer),
                t.uid,
                t.gid,
            )
        }));
    let mut me = None;
    for (field, uid, gid) in owners.filter(|(_, u, g)| u.is_some() || g.is_some()) {
        if let Err(e) = me
            .get_or_insert_with(Identity::current)
            .can_give_files_to(uid, gid)
        {
            errors.push(format!("{field}: {e}"));
        }
    }
    let mut issuers = BTreeMap::new();
    for (name, spec) in &config.issuers {
        match Issuer::load(spec, &config.state_dir, false) {
            Ok(issuer) => {
                issuers.insert(name.clone(), issuer);
            }
            Err(e) => errors.push(format!("issuers.{name}: {}", chain(&e))),
        }
    }
    // The development CA is created only once everything else checked out, so
    // a bad configuration leaves the state directory untouched too.
    if create && errors.is_empty() {
        for (name, spec) in config
            .issuers
            .iter()
            .filter(|(_, s)| **s == IssuerSpec::Development)
        {
            match Issuer::load(spec, &config.state_dir, true) {
                Ok(issuer) => {
                    issuers.insert(name.clone(), issuer);
                }
                Err(e) => errors.push(format!("issuers.{name}: {}", chain(&e))),
            }
        }
    }
    if errors.is_empty() {
        Ok(issuers)
    } else {
        Err(PreflightErrors(errors))
    }
}

/// Who pillion runs as, for the owner check: read once per check.
struct Identity {
    /// CAP_CHOWN (bit 0 of the effective capabilities) lets it give files
    /// to anyone.
    cap_chown: bool,
    euid: u32,
    /// The effective gid and the supplementary groups.
    gids: Vec<u32>,
}

impl Identity {
    fn current() -> Identity {
        let cap_chown = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapEff:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .is_some_and(|caps| caps & 1 == 1);
        let mut gids: Vec<u32> = rustix::process::getgroups()
            .unwrap_or_default()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        gids.push(rustix::process::getegid().as_raw());
        Identity {
            cap_chown,
            euid: rustix::process::geteuid().as_raw(),
            gids,
        }
    }

    /// Whether files can be given owner `uid` and group `gid`: with CAP_CHOWN
    /// any; without, only pillion's own uid and its groups (chown(2)).
    fn can_give_files_to(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(), String> {
        if self.cap_chown {
            return Ok(());
        }
        let euid = self.euid;
        if let Some(u) = uid.filter(|u| *u != euid) {
            return Err(format!(
                "uid {u} cannot be set: pillion runs as uid {euid} without CAP_CHOWN (run it as uid {u}, or grant CAP_CHOWN)"
            ));
        }
        if let Some(g) = gid.filter(|g| !self.gids.contains(g)) {
            return Err(format!(
                "gid {g} cannot be set: pillion (uid {euid}) is not in group {g} and lacks CAP_CHOWN (add the group with supplementalGroups or fsGroup, or grant CAP_CHOWN)"
            ));
        }
        Ok(())
    }
}

/// A socket can be made at `path`: nothing but an old socket is there, and
/// its directory is writable or can be created. Nothing is created here.
fn check_socket_path(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(format!(
                "{} exists and is not a socket: pillion will not replace it",
                path.display()
            ))
        }
        _ => {}
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    check_writable(parent).map_err(|e| format!("cannot create the socket {}: {e}", path.display()))
}

/// The output directory must be a writable directory, or creatable in the
/// nearest existing ancestor. Nothing is created here.
fn check_writable(dir: &Path) -> Result<(), String> {
    let mut probe = dir.to_path_buf();
    loop {
        match std::fs::metadata(&probe) {
            Ok(m) if m.is_dir() => {
                return rustix::fs::access(&probe, rustix::fs::Access::WRITE_OK)
                    .map_err(|e| format!("{} is not writable by pillion ({e})", probe.display()));
            }
            Ok(_) => {
                return Err(format!(
                    "{} cannot be created: {} is not a directory",
                    dir.display(),
                    probe.display()
                ))
            }
            Err(_) => {
                if !probe.pop() || probe.as_os_str().is_empty() {
                    probe = PathBuf::from(".");
                }
            }
        }
    }
}
