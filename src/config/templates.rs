//! Validating `templates` of a certificate or a secret: files rendered from
//! templates and published with the credential's own.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{
    parse_mode, CertificateSpec, Errors, RawTemplate, SecretSpec, TemplateSource, TemplateSpec,
    DEFAULT_KEY_MODE,
};

/// Validates the `templates` of the credential at `path`; `taken` are the
/// names of the credential's other files, which a template must not reuse.
pub(super) fn validate_templates(
    errs: &mut Errors,
    path: &str,
    raw: Option<Vec<RawTemplate>>,
    taken: &[&str],
) -> Vec<TemplateSpec> {
    let mut seen: BTreeSet<String> = taken.iter().map(|t| (*t).to_owned()).collect();
    let mut specs = Vec::new();
    for (m, rt) in raw.unwrap_or_default().into_iter().enumerate() {
        let field = format!("{path}.templates[{m}]");
        let file = match rt.file {
            None => {
                errs.add(
                    format!("{field}.file"),
                    "is required: the name of the rendered file in the credential's directory",
                );
                continue;
            }
            Some(f) => f,
        };
        if let Err(e) = crate::output::check_relative_path(&file, false) {
            errs.add(format!("{field}.file"), format!("{file:?} {e}"));
        } else if !seen.insert(file.clone()) {
            errs.add(
                format!("{field}.file"),
                format!(
                    "{file:?} is already a file of this credential: every file needs its own name"
                ),
            );
        }
        let source = match (rt.template, rt.template_file) {
            (Some(text), None) => TemplateSource::Inline(text),
            (None, Some(p)) if !p.is_empty() => TemplateSource::File(PathBuf::from(p)),
            (None, Some(_)) => {
                errs.add(format!("{field}.templateFile"), "is empty");
                continue;
            }
            (None, None) => {
                errs.add(
                    &field,
                    "names no template: set template (inline) or templateFile",
                );
                continue;
            }
            (Some(_), Some(_)) => {
                errs.add(&field, "sets both template and templateFile: set one");
                continue;
            }
        };
        let mode = match rt.mode.map(|m| parse_mode(&m)) {
            None => DEFAULT_KEY_MODE,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                errs.add(format!("{field}.mode"), e);
                DEFAULT_KEY_MODE
            }
        };
        specs.push(TemplateSpec {
            file,
            source,
            mode,
            field,
        });
    }
    specs
}

/// Compiles every inline template and checks the names it uses against the
/// configured credentials and the environment ([`crate::template::check_uses`]).
/// Templates read from files are checked by preflight, which reads files.
pub(super) fn check_inline_templates(
    errs: &mut Errors,
    certificates: &[CertificateSpec],
    secrets: &[SecretSpec],
) {
    let cert_names: Vec<&str> = certificates.iter().map(|c| c.name.as_str()).collect();
    let secret_names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    let templates = certificates
        .iter()
        .flat_map(|c| &c.templates)
        .chain(secrets.iter().flat_map(|s| &s.templates));
    for t in templates {
        let TemplateSource::Inline(text) = &t.source else {
            continue;
        };
        let field = format!("{}.template", t.field);
        for problem in check_template(&field, text, &cert_names, &secret_names) {
            errs.add(&field, problem);
        }
    }
}

/// The problems of one template's text ([`crate::template::check`]), `name`
/// being what its messages start with.
fn check_template(name: &str, text: &str, certificates: &[&str], secrets: &[&str]) -> Vec<String> {
    crate::template::check(name, text, certificates, secrets, |v| std::env::var(v).ok())
        .into_iter()
        .map(|e| match e.line {
            Some(line) => format!("line {line}: {}", e.message),
            None => e.message,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::testing::paths;

    #[test]
    fn templates_need_a_file_name_of_their_own_and_one_source() {
        let p = paths("outputDir: /o\ncertificates:\n- name: a\n  dnsNames: [a]\n  templates:\n  - {file: tls.crt, template: x}\n  - {template: x}\n  - {file: b}\n  - {file: c, template: x, templateFile: /t}\n  - {file: ../d, template: x}\n  - {file: e, templateFile: /t, mode: '0999'}\n");
        assert_eq!(
            p,
            [
                "certificates[0].templates[0].file",
                "certificates[0].templates[1].file",
                "certificates[0].templates[2]",
                "certificates[0].templates[3]",
                "certificates[0].templates[4].file",
                "certificates[0].templates[5].mode",
            ]
        );
    }

    #[test]
    fn inline_templates_are_compiled_and_their_names_checked() {
        let errors = crate::config::Config::from_yaml(
            "outputDir: /o\ncertificates:\n- name: web\n  dnsNames: [a]\n  templates:\n  - {file: ok, template: \"{{ certs.web.cert }}{% for n in certs.web.dnsNames %}{{ n }}{% endfor %}{{ range(3) | join }}\"}\n  - {file: bad, template: \"a\\n{% if x %}\"}\n  - {file: names, template: \"{{ secrets.db.password }}{{ certs.web.crt }}{{ certs.api.cert }}{{ nope }}{{ pod.uid }}\"}\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(!errors.contains("templates[0]"), "{errors}");
        assert!(
            errors.contains("certificates[0].templates[1].template: line 2: syntax error"),
            "{errors}"
        );
        for expected in [
            "`secrets.db.password`: no secret is named \"db\" (secrets: none)",
            "`certs.web.crt`: a certificate has no \"crt\"",
            "`certs.api.cert`: no certificate is named \"api\" (certificates: web)",
            "`nope` is not defined",
            "`pod.uid`: the pod has no \"uid\"",
        ] {
            assert!(errors.contains(expected), "{expected}\n{errors}");
        }
    }
}
