//! Validating `vault.tokenSink`: pillion's Vault token as a file for the app.

use std::path::PathBuf;

use super::{parse_mode, Errors, RawTokenSink, TokenSinkSpec, DEFAULT_KEY_MODE};

/// Validates the token sink of the Vault issuer `issuer`.
pub(super) fn validate_token_sink(
    errs: &mut Errors,
    issuer: &str,
    raw: RawTokenSink,
) -> TokenSinkSpec {
    let path = format!("issuers.{issuer}.vault.tokenSink");
    let name = format!("{issuer}-token");
    let file = raw.file.unwrap_or_else(|| "token".to_owned());
    if let Err(e) = crate::output::check_relative_path(&file, false) {
        errs.add(format!("{path}.file"), format!("{file:?} {e}"));
    }
    let dir = raw.dir.unwrap_or_else(|| name.clone());
    if let Err(e) = crate::output::check_relative_path(&dir, false) {
        errs.add(
            format!("{path}.dir"),
            format!("{dir:?} {e} (the token needs a directory of its own)"),
        );
    }
    let mode = match raw.mode.map(|m| parse_mode(&m)) {
        None => DEFAULT_KEY_MODE,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errs.add(format!("{path}.mode"), e);
            DEFAULT_KEY_MODE
        }
    };
    TokenSinkSpec {
        name,
        issuer: issuer.to_owned(),
        dir: PathBuf::from(dir),
        file,
        mode,
        uid: raw.uid,
        gid: raw.gid,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::paths;
    use crate::config::Config;

    const VAULT: &str = "issuers:\n  v:\n    vault:\n      address: https://v:8200\n      auth: {token: {file: /t}}\n";

    #[test]
    fn a_token_sink_alone_is_a_configuration_with_defaults() {
        let c = Config::from_yaml(
            &format!("outputDir: /o\n{VAULT}      tokenSink: {{}}\n"),
            "c.yaml",
        )
        .unwrap();
        let t = &c.token_sinks[0];
        assert_eq!(
            (t.name.as_str(), t.file.as_str(), t.mode),
            ("v-token", "token", 0o600)
        );
        assert_eq!(
            t.target_dir(std::path::Path::new("/o")),
            std::path::Path::new("/o/v-token")
        );
    }

    #[test]
    fn a_token_sink_needs_its_own_directory_and_a_file_name() {
        let p = paths(&format!(
            "outputDir: /o\n{VAULT}      tokenSink: {{dir: ., file: ../t, mode: '0999'}}\n"
        ));
        assert_eq!(
            p,
            [
                "issuers.v.vault.tokenSink.file",
                "issuers.v.vault.tokenSink.dir",
                "issuers.v.vault.tokenSink.mode"
            ]
        );
    }
}
