//! Small parsers shared by the validators: durations, modes, names.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::Errors;

pub(super) fn required_path(errs: &mut Errors, path: &str, value: Option<String>) -> PathBuf {
    match value {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => {
            errs.add(path, "is required");
            PathBuf::new()
        }
    }
}

/// A certificate's or secret's name; `None` for an entry whose shape was
/// already reported as invalid (its placeholder name starts with `#invalid-`).
pub(super) fn credential_name(
    errs: &mut Errors,
    path: &str,
    raw: Option<String>,
) -> Option<String> {
    Some(match raw {
        Some(n) if n.starts_with("#invalid-") => return None,
        Some(n) if is_valid_name(&n) => n,
        Some(n) => {
            errs.add(
                format!("{path}.name"),
                format!("{n:?} is not a valid name (use 1-63 lowercase letters, digits and '-')"),
            );
            n
        }
        None => {
            errs.add(format!("{path}.name"), "is required");
            String::new()
        }
    })
}

pub(super) fn required_string(errs: &mut Errors, path: &str, value: Option<String>) -> String {
    match value {
        Some(v) if !v.is_empty() => v,
        _ => {
            errs.add(path, "is required");
            String::new()
        }
    }
}

/// The longest duration any setting takes. A bound keeps every sum of a
/// configured duration and a time (`now + duration`) far from overflow, and
/// no certificate, timeout or interval needs more.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `24h`, `90m`, `1h30m`, `6s`, up to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|_| format!("{s:?} is not a duration (examples: 90s, 30m, 24h, 1h30m)"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is longer than the limit of 100 years (876000h)"
        ));
    }
    Ok(d)
}

/// File modes are octal: `"0640"`, `"640"`, or a YAML integer written as octal
/// digits (`0640` or `640`).
pub(super) fn parse_mode(v: &Value) -> Result<u32, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(format!(
                "{other:?} is not a file mode (expected octal, e.g. \"0640\")"
            ))
        }
    };
    let digits = text.strip_prefix("0o").unwrap_or(&text);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!(
            "{text:?} is not a file mode (expected octal from 0000 to 0777, e.g. \"0640\")"
        )),
    }
}

/// Certificate and issuer names: DNS-label style, as Kubernetes object names.
pub(super) fn is_valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

/// A DNS name for a certificate (RFC 1123 labels; a leading `*.` wildcard is
/// allowed, as RFC 6125 describes).
pub fn is_valid_dns_name(n: &str) -> bool {
    let body = n.strip_prefix("*.").unwrap_or(n);
    !body.is_empty()
        && n.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::paths;
    use crate::config::Config;

    #[test]
    fn durations_beyond_the_limit_are_refused_before_any_arithmetic() {
        // 70000000h once passed validation and overflowed `now + duration`.
        let p = paths("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a]\n  duration: 70000000h\n  renewBefore: 69000000h\n");
        assert_eq!(
            p,
            ["certificates[0].duration", "certificates[0].renewBefore"]
        );
        assert!(parse_duration("876000h").is_ok());
        assert!(parse_duration("876001h").is_err());
    }

    #[test]
    fn dns_names_follow_rfc_1123() {
        for ok in ["localhost", "a.b-c.example", "*.example.com", "x1"] {
            assert!(is_valid_dns_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "*",
            "a.*.b",
            "é.com",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn modes_are_octal_in_every_spelling() {
        for (v, want) in [
            ("'0640'", 0o640),
            ("'640'", 0o640),
            ("0640", 0o640),
            ("644", 0o644),
        ] {
            let c = Config::from_yaml(&format!("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a]\n  files: {{mode: {v}}}\n"), "t").unwrap();
            assert_eq!(c.certificates[0].files.mode, want, "{v}");
        }
        assert_eq!(paths("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a]\n  files: {mode: '0999'}\n"), ["certificates[0].files.mode"]);
    }
}
