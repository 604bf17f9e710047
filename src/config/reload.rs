//! Validating `reload`: how the app is told to read its new files.

use std::path::PathBuf;

use super::{Errors, RawReload};
use crate::reload::{ReloadSpec, ReloadTarget, SignalName};

pub(super) fn validate_reload(errs: &mut Errors, rr: RawReload) -> Option<ReloadSpec> {
    let before = errs.0.len();
    let signal = match rr.signal.as_deref().map(str::parse::<SignalName>) {
        None => SignalName::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            errs.add("reload.signal", e);
            SignalName::default()
        }
    };
    let mut targets = Vec::new();
    if let Some(p) = rr.process {
        if p.is_empty() || p.contains('/') {
            errs.add(
                "reload.process",
                format!("{p:?} is not a process name (the name in /proc/PID/comm, e.g. nginx)"),
            );
        } else if p.len() > 15 {
            errs.add("reload.process", format!("{p:?} is longer than 15 bytes, and the kernel keeps only 15 in /proc/PID/comm: use {:?} or processRegex", &p[..15]));
        }
        targets.push(ReloadTarget::Process(p));
    }
    if let Some(re) = rr.process_regex {
        match regex_lite::Regex::new(&re) {
            Ok(r) => targets.push(ReloadTarget::ProcessRegex(r)),
            Err(e) => {
                errs.add(
                    "reload.processRegex",
                    format!("{re:?} is not a valid regular expression: {e}"),
                );
                targets.push(ReloadTarget::Process(String::new()));
            }
        }
    }
    if let Some(p) = rr.pid_file {
        if p.is_empty() {
            errs.add("reload.pidFile", "is empty");
        }
        targets.push(ReloadTarget::PidFile(PathBuf::from(p)));
    }
    if let Some(c) = rr.command {
        if c.first().is_none_or(|c| c.is_empty()) {
            errs.add("reload.command", "is empty: give the program and its arguments as a list, e.g. [\"/usr/sbin/nginx\", \"-s\", \"reload\"]");
        }
        targets.push(ReloadTarget::Command(c));
    }
    if let Some(u) = rr.url {
        match url::Url::parse(&u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                targets.push(ReloadTarget::Url(parsed))
            }
            _ => {
                errs.add(
                    "reload.url",
                    format!("{u:?} is not an http:// or https:// URL"),
                );
            }
        }
    }
    match targets.len() {
        0 if errs.0.len() == before => errs.add("reload", "names no target: set one of process, processRegex, pidFile, command, url"),
        0 | 1 => {}
        _ => errs.add("reload", "names more than one target: set exactly one of process, processRegex, pidFile, command, url"),
    }
    let target = targets.pop()?;
    (errs.0.len() == before).then_some(ReloadSpec {
        signal,
        target,
        include_pid1: rr.include_pid1.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::paths;

    #[test]
    fn reload_needs_exactly_one_target() {
        let base = "outputDir: /o\ncertificates:\n- {name: a, dnsNames: [a]}\n";
        assert_eq!(
            paths(&format!("{base}reload: {{process: nginx, pidFile: /x}}\n")),
            ["reload"]
        );
        assert_eq!(
            paths(&format!(
                "{base}reload: {{signal: SIGFOO, process: nginx}}\n"
            )),
            ["reload.signal"]
        );
        assert_eq!(
            paths(&format!("{base}reload: {{processRegex: '(('}}\n")),
            ["reload.processRegex"]
        );
    }
}
