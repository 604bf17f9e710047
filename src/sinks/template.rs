//! Files rendered from templates (`templates[]` of a certificate or a
//! secret), published in the same generation as the credential's own files.
//!
//! A template sees every configured credential that has been obtained:
//! `secrets.<name>.<key>`, `certs.<name>.<field>` ([`CERT_FIELDS`]), the
//! environment as `env.<VAR>` and the pod as `pod.<field>` ([`POD_FIELDS`]).
//! An undefined name is an error naming the template and line; nothing of
//! the credential is published then, and the files on disk stay.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::value::Serde;
use minijinja::Value;
use serde::Serialize;
use zeroize::Zeroizing;

use super::{Sink, SinkError};
use crate::config::{TemplateSource, TemplateSpec};
use crate::credential::{Credential, Inputs};
use crate::output::FileEntry;
use crate::pem;
use crate::template::{self, TemplateError, CERT_FIELDS, POD_FIELDS};
use crate::verify::fmt_time;

/// One template of the credential `owner`.
#[derive(Debug)]
pub struct Template {
    owner: String,
    spec: TemplateSpec,
    /// The template's text, or why it could not be read.
    text: Result<Zeroizing<String>, String>,
    /// The names it uses (`secrets.db.password`), from compiling it.
    used: Vec<String>,
}

impl Template {
    /// The template `spec` of the credential `owner`; a template file is
    /// read now (and again when the configuration is reloaded).
    pub fn new(owner: &str, spec: &TemplateSpec) -> Template {
        let text = match &spec.source {
            TemplateSource::Inline(t) => Ok(Zeroizing::new(t.clone())),
            TemplateSource::File(p) => read_template(p),
        };
        let used = text
            .as_ref()
            .ok()
            .and_then(|t| template::compile(&spec.origin(), t).ok())
            .unwrap_or_default();
        Template {
            owner: owner.to_owned(),
            spec: spec.clone(),
            text,
            used,
        }
    }

    /// Whether the template uses anything of `top` (`secrets`, `certs`)
    /// without naming which credential, e.g. `secrets | tojson`.
    fn uses_all_of(&self, top: &str) -> bool {
        self.used.iter().any(|u| u == top)
    }

    /// Whether the template needs private keys in its context.
    fn uses_keys(&self) -> bool {
        self.used.iter().any(|u| {
            let parts: Vec<&str> = u.split('.').collect();
            parts[0] == "certs" && (parts.len() < 3 || parts[2] == "key")
        })
    }
}

/// Reads a template file (a ConfigMap mount: small, text).
fn read_template(path: &Path) -> Result<Zeroizing<String>, String> {
    let bytes = crate::small_file::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| "the template is not UTF-8 text".to_owned())
}

impl Sink for Template {
    fn files(&self) -> Vec<(&str, u32)> {
        vec![(self.spec.file.as_str(), self.spec.mode)]
    }

    /// Only that a template file reads: preflight compiles every template
    /// and checks the names it uses against the configuration.
    fn check(&self) -> Result<(), (String, String)> {
        match &self.text {
            Err(e) => Err((
                format!("{}.templateFile", field_in_credential(&self.spec.field)),
                format!("{}: {e}", self.spec.origin()),
            )),
            Ok(_) => Ok(()),
        }
    }

    fn render(
        &self,
        credential: &Credential,
        inputs: &Inputs,
    ) -> Result<Vec<FileEntry>, SinkError> {
        let text = self.text.as_ref().map_err(|e| {
            SinkError::Template(TemplateError {
                name: self.spec.origin(),
                line: None,
                message: e.clone(),
            })
        })?;
        let context = self.context(credential, inputs);
        let rendered = template::render(&self.spec.origin(), text, &context)?;
        Ok(vec![FileEntry {
            path: self.spec.file.clone(),
            data: Zeroizing::new(rendered.as_bytes().to_vec()),
            mode: self.spec.mode,
        }])
    }

    fn reads_others(&self) -> bool {
        true
    }

    fn reads(&self, name: &str) -> bool {
        ["secrets", "meta", "certs"]
            .iter()
            .any(|top| self.uses_all_of(top))
            || self.used.iter().any(|u| {
                let mut parts = u.split('.');
                matches!(parts.next(), Some("secrets" | "meta" | "certs"))
                    && parts.next() == Some(name)
            })
    }
}

impl Template {
    /// What the template sees: every credential in `inputs`, this one's as
    /// `credential` (it may not be in `inputs` yet), the environment and
    /// the pod.
    fn context(&self, credential: &Credential, inputs: &Inputs) -> Value {
        let with_keys = self.uses_keys();
        let mut secrets = BTreeMap::new();
        let mut meta = BTreeMap::new();
        let mut certs = BTreeMap::new();
        let own = std::iter::once((self.owner.as_str(), credential));
        let others = inputs.iter().filter(|(n, _)| *n != self.owner);
        for (name, c) in own.chain(others) {
            match c {
                Credential::Secret(s) => {
                    secrets.insert(name.to_owned(), Value::from(Serde(&s.data)));
                    meta.insert(name.to_owned(), Value::from(Serde(&s.meta)));
                }
                Credential::Certificate(c) => {
                    if let Some(view) = CertView::of(c, with_keys) {
                        certs.insert(name.to_owned(), Value::from(Serde(view)));
                    }
                }
                // Not offered to templates: an app that needs the token
                // reads its tokenSink file.
                Credential::Token(_) => {}
            }
        }
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let pod: BTreeMap<&str, String> = POD_FIELDS
            .iter()
            .filter_map(|(field, var)| {
                let v = env.get(*var).filter(|v| !v.is_empty())?;
                Some((*field, v.clone()))
            })
            .collect();
        Value::from(BTreeMap::from([
            ("secrets", Value::from(secrets)),
            ("meta", Value::from(meta)),
            ("certs", Value::from(certs)),
            ("env", Value::from(env)),
            ("pod", Value::from(pod)),
        ]))
    }
}

/// A certificate as templates see it ([`CERT_FIELDS`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertView {
    /// The leaf alone, PEM.
    cert: String,
    /// The leaf and the intermediates, PEM: what `tls.crt` holds.
    chain: String,
    /// The private key, PKCS#8 PEM; only when the template uses it.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The trust anchors, PEM: what `ca.crt` holds.
    ca: String,
    not_before: String,
    not_after: String,
    serial: String,
    common_name: Option<String>,
    dns_names: Vec<String>,
    ip_addresses: Vec<String>,
    uris: Vec<String>,
}

impl CertView {
    fn of(c: &crate::credential::Certificate, with_key: bool) -> Option<CertView> {
        let leaf = c.issued.chain.first()?;
        let info = crate::verify::inspect(leaf).ok()?;
        debug_assert_eq!(CERT_FIELDS.len(), 11);
        Some(CertView {
            cert: pem::encode_certificates(std::slice::from_ref(leaf)),
            chain: pem::encode_certificates(&c.issued.chain),
            key: with_key.then(|| c.key.to_pem().to_string()),
            ca: pem::encode_certificates(&c.issued.ca),
            not_before: fmt_time(info.not_before).to_string(),
            not_after: fmt_time(info.not_after).to_string(),
            serial: info.serial,
            common_name: info.names.common_name,
            dns_names: info.names.dns_names,
            ip_addresses: info
                .names
                .ip_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            uris: info.names.uris,
        })
    }
}

/// `templates[M]`, the template's field relative to its credential.
fn field_in_credential(field: &str) -> &str {
    field.find(".templates[").map_or(field, |i| &field[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Secret;

    fn secret(json: serde_json::Value) -> Credential {
        Credential::Secret(Secret {
            path: "p".into(),
            data: json.as_object().unwrap().clone(),
            expires: None,
            meta: serde_json::Map::new(),
        })
    }

    fn template(owner: &str, text: &str) -> Template {
        Template::new(
            owner,
            &TemplateSpec {
                file: "out.txt".into(),
                source: TemplateSource::Inline(text.into()),
                mode: 0o600,
                field: "secrets[0].templates[0]".into(),
            },
        )
    }

    fn text(files: Vec<FileEntry>) -> String {
        String::from_utf8(files[0].data.to_vec()).unwrap()
    }

    #[test]
    fn a_template_sees_its_own_credential_and_the_others() {
        let mut inputs = Inputs::default();
        inputs.insert(
            "a",
            std::sync::Arc::new(secret(serde_json::json!({"x": 1}))),
        );
        let t = template(
            "b",
            "{{ secrets.a.x }}-{{ secrets.b.y }}-{{ secrets['b'].y }}-{{ meta.b.version }}",
        );
        let mut own = secret(serde_json::json!({"y": "two"}));
        if let Credential::Secret(s) = &mut own {
            s.meta.insert("version".into(), serde_json::json!(7));
        }
        match t.render(&own, &inputs) {
            Ok(files) => assert_eq!(text(files), "1-two-two-7"),
            Err(e) => panic!("{e}: {}", crate::telemetry::chain(&e)),
        }
        // `secrets['b']` could be any secret: it reads them all.
        assert!(t.reads("a") && t.reads("c"));
        let t = template("b", "{{ secrets.a.x }}{{ certs.web.cert }}");
        assert!(t.reads("a") && t.reads("web") && !t.reads("c"));
        assert!(!t.uses_keys());
        assert!(template("b", "{{ certs.web.key }}").uses_keys());
        assert!(template("b", "{{ certs.web | tojson }}").uses_keys());
    }

    #[test]
    fn an_undefined_key_names_the_template_line_and_name() {
        let t = template("b", "ok\n{{ secrets.b.nope }}");
        let Err(e) = t.render(&secret(serde_json::json!({"y": 1})), &Inputs::default()) else {
            panic!("an undefined key must be an error");
        };
        assert_eq!(
            crate::telemetry::chain(&e),
            "rendering the template failed: secrets[0].templates[0].template:2: `secrets.b.nope` is undefined"
        );
    }
}
