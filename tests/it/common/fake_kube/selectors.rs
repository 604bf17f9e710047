//! Field and label selectors on list and watch (`fieldSelector`, `labelSelector`), parsed and
//! matched as the API server does, with its error messages.

use serde_json::Value;

use super::helpers::str_at;
use super::resources::{ObjKey, Res};
use super::routing::Ctx;

pub(super) struct Selector {
    res: Res,
    ns: Option<String>,
    fields: Vec<(String, bool, String)>,
    labels: Vec<LabelReq>,
}

enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selector {
    pub(super) fn parse(res: Res, ns: Option<&str>, ctx: &Ctx) -> Result<Selector, String> {
        let mut fields = Vec::new();
        for req in ctx
            .param("fieldSelector")
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
        {
            let (field, eq, value) = if let Some((f, v)) = req.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = req.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = req.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{req}'; can't understand '{req}'"
                ));
            };
            if !res.field_labels().contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            fields.push((field.to_string(), eq, value.to_string()));
        }
        let mut labels = Vec::new();
        for req in split_top_level(ctx.param("labelSelector").unwrap_or("")) {
            let req = req.trim();
            if req.is_empty() {
                continue;
            }
            let bad = || {
                format!("unable to parse requirement: found '{req}', expected: in, notin, =, ==, !=, gt, lt")
            };
            let set = |s: &str| -> Result<Vec<String>, String> {
                let s = s.trim();
                let inner = s
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(bad)?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let parsed = if let Some(k) = req.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = req.split_once(" notin ") {
                LabelReq::NotIn(k.trim().to_string(), set(v)?)
            } else if let Some((k, v)) = req.split_once(" in ") {
                LabelReq::In(k.trim().to_string(), set(v)?)
            } else if let Some((k, v)) = req.split_once("!=") {
                LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = req.split_once("==") {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = req.split_once('=') {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if req.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
                return Err(bad());
            } else {
                LabelReq::Exists(req.to_string())
            };
            labels.push(parsed);
        }
        Ok(Selector {
            res,
            ns: ns.map(str::to_string),
            fields,
            labels,
        })
    }

    pub(super) fn matches(&self, key: &ObjKey, obj: &Value) -> bool {
        if key.res != self.res {
            return false;
        }
        if let Some(ns) = &self.ns {
            if &key.ns != ns {
                return false;
            }
        }
        for (field, eq, value) in &self.fields {
            let actual = match field.as_str() {
                "metadata.name" => key.name.as_str(),
                "metadata.namespace" => key.ns.as_str(),
                "spec.signerName" => str_at(obj, "/spec/signerName"),
                _ => "",
            };
            if (actual == value) != *eq {
                return false;
            }
        }
        let label = |k: &str| {
            obj.pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

/// Splits a label selector at the commas that are not inside `( )`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}
