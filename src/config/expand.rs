//! Pod-variable expansion in certificate names.

use super::Errors;

/// The pod identity variables a name may use, as the downward API exposes
/// them, so one configuration serves every replica.
pub const POD_VARIABLES: [&str; 4] = [
    "POD_NAME",
    "POD_NAMESPACE",
    "POD_IP",
    "SERVICE_ACCOUNT_NAME",
];

/// Expands `${POD_NAME}`, `${POD_NAMESPACE}`, `${POD_IP}` and
/// `${SERVICE_ACCOUNT_NAME}` from the environment. An unset or empty
/// variable is an error, never an empty string.
pub(super) fn expand_pod_vars(errs: &mut Errors, path: &str, value: &str) -> String {
    expand_with(value, |name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })
    .unwrap_or_else(|e| {
        errs.add(path, e);
        value.to_owned()
    })
}

fn expand_with(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{value:?} has an unclosed ${{"))?;
        let name = &after[..end];
        if !POD_VARIABLES.contains(&name) {
            return Err(format!(
                "${{{name}}} is not a variable pillion expands (use one of {})",
                POD_VARIABLES.map(|v| format!("${{{v}}}")).join(", ")
            ));
        }
        let v = lookup(name).ok_or_else(|| {
            format!("${{{name}}} is not set: expose it to pillion's container with the downward API (env {name})")
        })?;
        out.push_str(&v);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_variables_expand_and_unset_ones_are_errors() {
        let lookup = |n: &str| (n == "POD_NAMESPACE").then(|| "shop".to_owned());
        assert_eq!(
            expand_with("app.${POD_NAMESPACE}.svc", lookup).unwrap(),
            "app.shop.svc"
        );
        assert_eq!(expand_with("plain", lookup).unwrap(), "plain");
        assert!(expand_with("${POD_IP}", lookup)
            .unwrap_err()
            .contains("downward API"));
        assert!(expand_with("${HOME}", lookup)
            .unwrap_err()
            .contains("${POD_NAME}"));
        assert!(expand_with("${POD_NAME", lookup).is_err());
    }
}
