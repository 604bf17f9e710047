//! Reading the YAML document into the raw shape.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{Errors, FieldError, RawCertificate, RawConfig, RawSecret};

/// Parses YAML into the raw shape, reporting each bad part of the document on
/// its own so that one typo does not hide the rest: the raw shape of what
/// parsed, and the problems of what did not. `Err` when nothing parses.
pub(super) fn parse_yaml(text: &str) -> Result<(RawConfig, Vec<FieldError>), Vec<FieldError>> {
    let syntax = |e: serde_yaml_ng::Error| {
        vec![FieldError {
            path: "(yaml)".into(),
            message: format!("is not valid YAML: {e}"),
        }]
    };
    if let Some(at) = too_many_flow_openers(text) {
        return Err(vec![FieldError {
            path: "(yaml)".into(),
            message: format!(
                "holds more than {MAX_FLOW_OPENERS} [ and {{ (the next at byte {at}): not a configuration"
            ),
        }]);
    }
    let doc: Value = serde_yaml_ng::from_str(text).map_err(syntax)?;
    let Value::Mapping(top) = doc else {
        return Err(vec![FieldError {
            path: "(top level)".into(),
            message: "must be a mapping with outputDir, issuers, certificates, reload".into(),
        }]);
    };
    let mut errs = Errors::default();
    let mut raw = RawConfig::default();
    for (key, value) in top {
        let Some(key) = key.as_str().map(str::to_owned) else {
            errs.add("(top level)", format!("has a non-string key {key:?}"));
            continue;
        };
        match key.as_str() {
            "outputDir" => raw.output_dir = typed(&mut errs, &key, value),
            "stateDir" => raw.state_dir = typed(&mut errs, &key, value),
            "reload" => raw.reload = typed(&mut errs, &key, value),
            "server" => raw.server = typed(&mut errs, &key, value),
            "sds" => raw.sds = typed(&mut errs, &key, value),
            "workloadApi" => raw.workload_api = typed(&mut errs, &key, value),
            "issuers" => match value {
                Value::Mapping(map) => {
                    let mut issuers = BTreeMap::new();
                    for (name, value) in map {
                        let name = name.as_str().map(str::to_owned).unwrap_or_else(|| format!("{name:?}"));
                        match typed(&mut errs, &format!("issuers.{name}"), value) {
                            Some(issuer) => {
                                issuers.insert(name, issuer);
                            }
                            None => raw.unparsed_issuers.push(name),
                        }
                    }
                    raw.issuers = Some(issuers);
                }
                Value::Null => {}
                _ => errs.add("issuers", "must be a mapping of issuer names to issuers"),
            },
            "secrets" => match value {
                Value::Sequence(seq) => {
                    let mut secrets = Vec::new();
                    for (i, value) in seq.into_iter().enumerate() {
                        secrets.push(typed(&mut errs, &format!("secrets[{i}]"), value).unwrap_or_else(|| RawSecret {
                            name: Some(format!("#invalid-{i}")),
                            ..RawSecret::default()
                        }));
                    }
                    raw.secrets = Some(secrets);
                }
                Value::Null => {}
                _ => errs.add("secrets", "must be a list of secrets"),
            },
            "certificates" => match value {
                Value::Sequence(seq) => {
                    let mut certs = Vec::new();
                    for (i, value) in seq.into_iter().enumerate() {
                        // A bad certificate still takes its index, so later paths stay right.
                        certs.push(typed(&mut errs, &format!("certificates[{i}]"), value).unwrap_or_else(|| RawCertificate {
                            name: Some(format!("#invalid-{i}")),
                            ..RawCertificate::default()
                        }));
                    }
                    raw.certificates = Some(certs);
                }
                _ => errs.add("certificates", "must be a list of certificates"),
            },
            other => errs.add(
                other,
                "unknown field (expected one of outputDir, stateDir, issuers, certificates, secrets, reload, server, sds, workloadApi)",
            ),
        }
    }
    Ok((raw, errs.0))
}

/// The most flow-collection openers (`[`, `{`) a configuration may hold,
/// quoted or not. The YAML parser refuses deep nesting, but only after
/// scanning in time that grows with the square of the depth: 200 KB of `[`
/// took 25 s of CPU. Counting every opener byte cannot be dodged by quotes
/// or comments, and a real configuration holds a few dozen.
const MAX_FLOW_OPENERS: usize = 10_000;

/// Where `text` holds its `MAX_FLOW_OPENERS + 1`th `[` or `{`, if it does.
fn too_many_flow_openers(text: &str) -> Option<usize> {
    text.bytes()
        .enumerate()
        .filter(|(_, b)| matches!(b, b'[' | b'{'))
        .nth(MAX_FLOW_OPENERS)
        .map(|(i, _)| i)
}

/// Deserializes one part of the document, recording a failure under `path`.
///
/// An unknown key is recorded, taken out, and the part deserialized again,
/// so that a typo does not hide the other problems of the same part: every
/// bad field is reported at once. Any other error ends the part.
fn typed<T: for<'de> Deserialize<'de>>(errs: &mut Errors, path: &str, value: Value) -> Option<T> {
    let mut value = value;
    // Each retry removes one key and deserializes the part again: bounded,
    // as a part with thousands of unknown keys would cost their square.
    for _ in 0..=MAX_UNKNOWN_KEYS {
        match serde_path_to_error::deserialize(value.clone()) {
            // With unknown keys recorded, the rest is still validated.
            Ok(v) => return Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let full = if inner == "." {
                    path.to_owned()
                } else {
                    format!("{path}.{inner}")
                };
                let segments: Vec<_> = e.path().iter().cloned().collect();
                let message = e.into_inner().to_string();
                let unknown = message.starts_with("unknown field");
                errs.add(full.replace(".[", "["), message);
                if !(unknown && remove_key(&mut value, &segments)) {
                    return None;
                }
            }
        }
    }
    errs.add(
        path,
        format!("has more than {MAX_UNKNOWN_KEYS} unknown keys; fix these first"),
    );
    None
}

/// Unknown keys reported in one part (a certificate, an issuer) before the
/// part is given up.
const MAX_UNKNOWN_KEYS: usize = 20;

/// Removes the mapping key at `path` from `value`; false when it is not there.
fn remove_key(value: &mut Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parents {
        let next = match (seg, cur) {
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str()),
            (Segment::Seq { index }, Value::Sequence(s)) => s.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        cur = next;
    }
    match (last, cur) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::paths;

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        let p = paths("outputDir: /o\nbogus: 1\ncertificates:\n- name: a\n  dnsName: x\n- name: b\n  dnsNames: [b]\n  files: {cert: x}\n");
        assert_eq!(
            p,
            [
                "bogus",
                "certificates[0].dnsName",
                "certificates[1].files.cert",
                // What the typo leaves: a certificate with no names.
                "certificates[0]"
            ]
        );
    }

    #[test]
    fn an_unknown_key_does_not_hide_the_other_errors_of_its_part() {
        let p = paths("outputDir: /o\ncertificates:\n- name: a\n  dnsName: x\n  dnsNames: ['bad!']\n  duration: 24x\n  files: {cert: x, mode: '999'}\n");
        assert_eq!(
            p,
            [
                "certificates[0].dnsName",
                "certificates[0].files.cert",
                "certificates[0].dnsNames[0]",
                "certificates[0].duration",
                "certificates[0].files.mode",
            ]
        );
    }

    #[test]
    fn floods_of_flow_collections_are_refused_before_parsing() {
        let deep = format!("outputDir: {}", "[".repeat(200_000));
        assert_eq!(paths(&deep), ["(yaml)"]);
        // Quotes and comments do not hide them.
        let hidden = format!("outputDir: [a#\n{}", "[ #]\n".repeat(20_000));
        assert_eq!(paths(&hidden), ["(yaml)"]);
        assert_eq!(too_many_flow_openers(&"{".repeat(MAX_FLOW_OPENERS)), None);
        assert_eq!(
            too_many_flow_openers(&"[".repeat(MAX_FLOW_OPENERS + 1)),
            Some(MAX_FLOW_OPENERS)
        );
    }

    #[test]
    fn type_errors_inside_lists_carry_the_index() {
        let p = paths("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a, [nested]]\n");
        assert_eq!(p, ["certificates[0].dnsNames[1]"]);
    }
}
