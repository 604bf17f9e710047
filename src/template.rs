//! Templates: Jinja2 syntax by minijinja, strict about undefined names.
//!
//! The one place that knows the template engine. A template is compiled
//! when the configuration is checked ([`check`], with placeholder data, so
//! that `pillion check` reports syntax errors and unknown names with their
//! line) and rendered when its credential is published ([`render`]).
//!
//! What a template sees (the context) is built by the caller; this module
//! adds the filters a configuration file needs: `b64encode`, `b64decode`,
//! `toyaml`, `shell_quote`, `dotenv_quote`, beside minijinja's own
//! (`tojson`, `indent`, `default`, `join`, `upper`, ...).

use std::fmt;

use base64::Engine;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use zeroize::Zeroizing;

/// What `certs.<name>` holds for each certificate, as templates name it.
pub const CERT_FIELDS: [&str; 11] = [
    "cert",
    "chain",
    "key",
    "ca",
    "notBefore",
    "notAfter",
    "serial",
    "commonName",
    "dnsNames",
    "ipAddresses",
    "uris",
];

/// What `pod.<field>` holds, and the downward-API variable it comes from.
pub const POD_FIELDS: [(&str, &str); 4] = [
    ("name", "POD_NAME"),
    ("namespace", "POD_NAMESPACE"),
    ("ip", "POD_IP"),
    ("serviceAccount", "SERVICE_ACCOUNT_NAME"),
];

/// Checks the names a template uses (from [`compile`]) against what will
/// be there: `secrets.<name>` and `certs.<name>.<field>` against the
/// configured credentials, `env.<VAR>` and `pod.<field>` against the
/// environment through `env`. Keys inside a secret are known only once it is
/// read. One message per problem.
pub fn check_uses(
    used: &[String],
    certificates: &[&str],
    secrets: &[&str],
    env: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for name in used {
        let mut parts = name.split('.');
        let top = parts.next().unwrap_or_default();
        let second = parts.next();
        let third = parts.next();
        match (top, second) {
            (_, None) if ["secrets", "meta", "certs", "env", "pod"].contains(&top) => {}
            ("secrets", Some(s)) if !secrets.contains(&s) => problems.push(format!(
                "`{name}`: no secret is named {s:?} (secrets: {})",
                listed(secrets)
            )),
            ("secrets", Some(_)) => {}
            ("meta", Some(s)) if !secrets.contains(&s) => problems.push(format!(
                "`{name}`: no secret is named {s:?} (secrets: {})",
                listed(secrets)
            )),
            ("meta", Some(_)) => {}
            ("certs", Some(c)) if !certificates.contains(&c) => problems.push(format!(
                "`{name}`: no certificate is named {c:?} (certificates: {})",
                listed(certificates)
            )),
            ("certs", Some(_)) => {
                if let Some(f) = third.filter(|f| !CERT_FIELDS.contains(f)) {
                    problems.push(format!(
                        "`{name}`: a certificate has no {f:?} (it has {})",
                        CERT_FIELDS.join(", ")
                    ));
                }
            }
            ("env", Some(var)) => {
                if env(var).is_none() {
                    problems.push(format!(
                        "`{name}`: {var} is not set in pillion's environment"
                    ));
                }
            }
            ("pod", Some(field)) => match POD_FIELDS.iter().find(|(f, _)| *f == field) {
                None => problems.push(format!(
                    "`{name}`: the pod has no {field:?} (it has {})",
                    POD_FIELDS.map(|(f, _)| f).join(", ")
                )),
                Some((_, var)) if env(var).is_none_or(|v| v.is_empty()) => problems.push(format!(
                    "`{name}` needs {var}: expose it to pillion's container with the downward API"
                )),
                Some(_) => {}
            },
            // minijinja's global functions.
            ("range" | "dict" | "namespace" | "debug", _) => {}
            _ => problems.push(format!(
                "`{name}` is not defined: a template can use secrets, meta, certs, env and pod"
            )),
        }
    }
    problems
}

/// Everything `pillion check` can find wrong in a template without the
/// data: a syntax error; a name that will not be there ([`check_uses`]);
/// and, rendering it once against placeholder data (every configured
/// secret holding any key, every certificate every field, the environment
/// as it is), a filter, test, function or method that does not exist or is
/// called with the wrong arguments. What depends on the values (a key the
/// secret may lack, a value a filter refuses) is left to the render.
/// Problems of names have no line.
pub fn check(
    name: &str,
    source: &str,
    certificates: &[&str],
    secrets: &[&str],
    env: impl Fn(&str) -> Option<String>,
) -> Vec<TemplateError> {
    let used = match compile(name, source) {
        Ok(used) => used,
        Err(e) => return vec![e],
    };
    let problems: Vec<TemplateError> = check_uses(&used, certificates, secrets, &env)
        .into_iter()
        .map(|message| TemplateError {
            name: name.to_owned(),
            line: None,
            message,
        })
        .collect();
    if !problems.is_empty() {
        return problems;
    }
    let context = placeholders(certificates, secrets, std::env::vars().collect());
    let engine = environment();
    let template = engine
        .template_from_named_str(name, source)
        .expect("compiled above");
    match template.render(&context) {
        Err(e) if !depends_on_data(e.kind()) => vec![TemplateError::from_engine(name, &e)],
        _ => Vec::new(),
    }
}

/// Whether an error met rendering placeholders could be the placeholders'
/// fault (a value of another type, a key the real data may have).
fn depends_on_data(kind: ErrorKind) -> bool {
    !matches!(
        kind,
        ErrorKind::SyntaxError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownMethod
            | ErrorKind::TooManyArguments
            | ErrorKind::MissingArgument
            | ErrorKind::TemplateNotFound
            | ErrorKind::BadInclude
            | ErrorKind::BadEscape
    )
}

/// The value every placeholder holds: text that is also valid base64 (of
/// "placeholder"), so that `b64decode` takes it as real data would be.
const PLACEHOLDER: &str = "cGxhY2Vob2xkZXI=";

/// A secret's data or metadata before it is read: any key is there.
#[derive(Debug)]
struct AnyKey;

impl minijinja::value::Object for AnyKey {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Map
    }

    fn get_value(self: &std::sync::Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().map(|_| Value::from(PLACEHOLDER))
    }

    /// One key, so that a loop over the secret runs its body once.
    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        minijinja::value::Enumerator::Str(&["key"])
    }
}

/// The context [`check`] renders with.
fn placeholders(
    certificates: &[&str],
    secrets: &[&str],
    env: std::collections::BTreeMap<String, String>,
) -> Value {
    use std::collections::BTreeMap;
    let any = || Value::from_object(AnyKey);
    let secret_map: BTreeMap<&str, Value> = secrets.iter().map(|s| (*s, any())).collect();
    let cert: BTreeMap<&str, Value> = CERT_FIELDS
        .iter()
        .map(|f| {
            let v = match *f {
                "dnsNames" | "ipAddresses" | "uris" => Value::from(vec![PLACEHOLDER]),
                _ => Value::from(PLACEHOLDER),
            };
            (*f, v)
        })
        .collect();
    let certs: BTreeMap<&str, Value> = certificates
        .iter()
        .map(|c| (*c, Value::from(cert.clone())))
        .collect();
    let pod: BTreeMap<&str, &str> = POD_FIELDS.iter().map(|(f, _)| (*f, PLACEHOLDER)).collect();
    Value::from(BTreeMap::from([
        ("secrets", Value::from(secret_map.clone())),
        ("meta", Value::from(secret_map)),
        ("certs", Value::from(certs)),
        ("env", Value::from(env)),
        ("pod", Value::from(pod)),
    ]))
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Why a template could not be compiled or rendered: where (the template's
/// name, its line) and what, in minijinja's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The template's name: its file, or the configuration field of an
    /// inline one.
    pub name: String,
    /// The line in the template, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.name, self.message),
            None => write!(f, "{}: {}", self.name, self.message),
        }
    }
}

impl std::error::Error for TemplateError {}

impl TemplateError {
    fn from_engine(name: &str, e: &minijinja::Error) -> TemplateError {
        // minijinja's Display repeats the name and line ("... (in x:3)");
        // the kind and the detail say the rest without it.
        let message = match (e.kind(), e.detail()) {
            (ErrorKind::UndefinedError, Some(d)) => d.to_owned(),
            (ErrorKind::UndefinedError, None) => {
                "a name or key used here is not defined".to_owned()
            }
            (kind, Some(d)) => format!("{kind}: {d}"),
            (kind, None) => kind.to_string(),
        };
        TemplateError {
            name: name.to_owned(),
            line: e.line(),
            message,
        }
    }
}

/// The engine as pillion runs it: undefined names and keys are errors (not
/// empty strings), nothing is HTML-escaped whatever the file name, the
/// source's last newline is kept, and the filters above are added.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Without debug, a release build's error says only "undefined value",
    // not which name. Never show `{:#}` or `display_debug_info()` of an
    // error: with debug on, they list the values in scope, secrets included.
    env.set_debug(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("toyaml", toyaml);
    env.add_filter("shell_quote", shell_quote);
    env.add_filter("dotenv_quote", dotenv_quote);
    env
}

/// Compiles `source`; the names it uses from its context, with nested
/// attributes (`secrets.db.password`), for the caller to check.
///
/// # Errors
/// A syntax error, with its line.
pub fn compile(name: &str, source: &str) -> Result<Vec<String>, TemplateError> {
    let env = environment();
    let template = env
        .template_from_named_str(name, source)
        .map_err(|e| TemplateError::from_engine(name, &e))?;
    let mut used: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    used.sort();
    Ok(used)
}

/// Renders `source` with `context`. The text is held in a wiped buffer,
/// since templates may carry keys and passwords.
///
/// # Errors
/// A syntax error, an undefined name or key, or a filter that failed, each
/// with its line.
pub fn render(
    name: &str,
    source: &str,
    context: &Value,
) -> Result<Zeroizing<String>, TemplateError> {
    let env = environment();
    let template = env
        .template_from_named_str(name, source)
        .map_err(|e| TemplateError::from_engine(name, &e))?;
    template.render(context).map(Zeroizing::new).map_err(|e| {
        let mut error = TemplateError::from_engine(name, &e);
        // A missing key handed to a filter fails in the filter ("value is
        // not a string"), not as undefined: name what is missing.
        if matches!(
            e.kind(),
            ErrorKind::UndefinedError | ErrorKind::InvalidOperation
        ) {
            let used = template.undeclared_variables(true);
            let mut used: Vec<&String> = used.iter().collect();
            used.sort();
            if let Some(missing) = used.iter().find_map(|u| undefined_part(context, u)) {
                error.message = format!("`{missing}` is undefined");
            }
        }
        error
    })
}

/// The leading part of the dotted `name` that is undefined in `context`
/// (`secrets.db.password` when `secrets.db` has no `password`), if any.
fn undefined_part(context: &Value, name: &str) -> Option<String> {
    let mut value = context.clone();
    let mut end = 0;
    for part in name.split('.') {
        end += part.len() + usize::from(end > 0);
        value = value.get_attr(part).unwrap_or(Value::UNDEFINED);
        if value.is_undefined() {
            return Some(name[..end].to_owned());
        }
    }
    None
}

fn b64encode(value: &Value) -> Result<String, minijinja::Error> {
    let bytes = match value.as_bytes() {
        Some(b) => b.to_vec(),
        None => value.to_string().into_bytes(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn b64decode(value: &str) -> Result<String, minijinja::Error> {
    let bad =
        |why: &str| minijinja::Error::new(ErrorKind::InvalidOperation, format!("b64decode: {why}"));
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| bad("the value is not base64"))?;
    String::from_utf8(bytes).map_err(|_| bad("the decoded value is not UTF-8 text"))
}

fn toyaml(value: &Value) -> Result<String, minijinja::Error> {
    serde_yaml_ng::to_string(value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("toyaml: {e}")))
}

/// `'text'` for a POSIX shell: nothing inside single quotes is special
/// but the single quote, written as `'\''`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// `"text"` as pillion's `env` secret format writes values: `\`, `"`, `$`,
/// a backquote and a newline escaped, for dotenv files and `sh -c 'source'`.
fn dotenv_quote(value: &str) -> String {
    format!("\"{}\"", escape_double_quoted(value).as_str())
}

/// Escapes `s` for a double-quoted shell or dotenv string: `\`, `"`, `$`,
/// backquote, and a newline as `\n`.
pub fn escape_double_quoted(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len() + 8));
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '$' => out.push_str("\\$"),
            '`' => out.push_str("\\`"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        Value::from(minijinja::value::Serde(serde_json::json!({
            "secrets": {"db": {"password": "p'w$\"x", "user": "app", "n": 3}},
            "env": {"HOME": "/root"},
        })))
    }

    #[test]
    fn renders_with_filters_and_keeps_the_last_newline() {
        let out = render(
            "app.env",
            "U={{ secrets.db.user | b64encode }}\nP={{ secrets.db.password | shell_quote }}\nQ={{ secrets.db.password | dotenv_quote }}\n",
            &ctx(),
        )
        .unwrap();
        assert_eq!(out.as_str(), "U=YXBw\nP='p'\\''w$\"x'\nQ=\"p'w\\$\\\"x\"\n");
        let out = render(
            "x",
            "{{ 'YXBw' | b64decode }} {{ secrets.db | tojson }}",
            &ctx(),
        )
        .unwrap();
        // Jinja2's tojson: HTML-safe escapes (\u0027), still JSON.
        assert_eq!(
            out.as_str(),
            r#"app {"n": 3, "password": "p\u0027w$\"x", "user": "app"}"#
        );
        let out = render("x.html", "{{ '<a>' }}", &ctx()).unwrap();
        assert_eq!(out.as_str(), "<a>", "nothing is HTML-escaped");
        let out = render("x", "{{ secrets.db | toyaml }}", &ctx()).unwrap();
        assert!(out.contains("user: app\n"), "{}", out.as_str());
    }

    #[test]
    fn undefined_names_and_keys_are_errors_with_their_line() {
        let e = render(
            "app.properties",
            "a=1\nb={{ secrets.db.pasword }}\n",
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(
            e.to_string(),
            "app.properties:2: `secrets.db.pasword` is undefined"
        );
        let e = render("t", "x\n{{ secrets.db.nope | shell_quote }}", &ctx()).unwrap_err();
        assert_eq!(e.to_string(), "t:2: `secrets.db.nope` is undefined");
        let e = render("t", "{{ nothing }}", &ctx()).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let e = render("t", "{{ 'not base64!' | b64decode }}", &ctx()).unwrap_err();
        assert!(
            e.to_string().contains("b64decode: the value is not base64"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line_and_compile_lists_what_is_used() {
        let e = compile("t.j2", "ok\n{% if x %}\nno end\n").unwrap_err();
        assert!(e.to_string().starts_with("t.j2:"), "{e}");
        assert!(e.line.is_some(), "{e}");
        let used = compile(
            "t",
            "{{ secrets.db.password }}{% for k in certs.web.dnsNames %}{{ k }}{% endfor %}",
        )
        .unwrap();
        assert_eq!(used, ["certs.web.dnsNames", "secrets.db.password"]);
    }

    #[test]
    fn check_renders_placeholders_to_find_unknown_filters_and_bad_calls() {
        let check = |text: &str| -> Vec<String> {
            check("t.j2", text, &["web"], &["db"], |v| {
                Some(format!("{v}-value"))
            })
            .iter()
            .map(ToString::to_string)
            .collect()
        };
        // What real data would render is fine, loops over a secret included.
        let fine = "{{ secrets.db.password | b64decode | upper }}\n{% for k, v in secrets.db | items %}{{ k }}={{ v | dotenv_quote }}{% endfor %}\n{{ certs.web.dnsNames | join(',') }}{{ meta.db.version }}{{ secrets.db | tojson | indent(2) }}{{ pod.name | default('x') }}";
        assert_eq!(check(fine), Vec::<String>::new());
        // Values the placeholders cannot stand for are not blamed.
        assert_eq!(
            check("{{ secrets.db.port + 1 }}{{ secrets.db.nested.key }}"),
            Vec::<String>::new()
        );
        let e = check("ok\n{{ secrets.db.password | to_json }}");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.j2:2: unknown filter"), "{e:?}");
        let e = check("\n\n{% if secrets.db.x is nonsense %}{% endif %}");
        assert!(e[0].starts_with("t.j2:3: unknown test"), "{e:?}");
        let e = check("{{ secrets.db.x | replace('a') }}");
        assert!(e[0].starts_with("t.j2:1: missing argument"), "{e:?}");
        // Names that will not be there are reported without rendering.
        let e = check("{{ secrets.cache.x }}");
        assert_eq!(
            e,
            ["t.j2: `secrets.cache.x`: no secret is named \"cache\" (secrets: db)"]
        );
    }
}
