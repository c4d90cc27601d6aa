//! `elevate creds` and `elevate console`: temporary AWS credentials in the
//! shapes shells and the AWS CLI read.

use serde::Deserialize;

use crate::args::CredsFormat;
use crate::error::CliError;

/// What `POST /requests/{id}/credentials` answers.
#[derive(Deserialize)]
pub(crate) struct CredentialsView {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// What `POST /requests/{id}/console` answers.
#[derive(Deserialize)]
pub(crate) struct ConsoleView {
    pub(crate) url: String,
}

/// A value as a single-quoted sh/fish word (AWS keys hold no quote, but a
/// server's answer is not trusted to be shell-safe).
fn quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// A value as a PowerShell single-quoted string.
fn ps_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The credentials printed in `format` (not `json`, which `run` prints as
/// the server's answer).
pub(crate) fn credentials(format: CredsFormat, c: &CredentialsView) -> Result<String, CliError> {
    let vars = [
        ("AWS_ACCESS_KEY_ID", &c.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", &c.secret_access_key),
        ("AWS_SESSION_TOKEN", &c.session_token),
        ("AWS_CREDENTIAL_EXPIRATION", &c.expiration),
    ];
    let mut out = String::new();
    match format {
        CredsFormat::Env => {
            for (k, v) in vars {
                out.push_str(&format!("export {k}={}\n", quoted(v)));
            }
        }
        CredsFormat::Fish => {
            for (k, v) in vars {
                out.push_str(&format!("set -gx {k} {}\n", quoted(v)));
            }
        }
        CredsFormat::Powershell => {
            for (k, v) in vars {
                out.push_str(&format!("$Env:{k} = {}\n", ps_quoted(v)));
            }
        }
        CredsFormat::Json | CredsFormat::CredentialProcess => {
            // The AWS CLI's "sourcing credentials with an external
            // process": Version must be the integer 1. (`json` is printed
            // as the server's answer before this is reached.)
            let value = serde_json::json!({
                "Version": 1,
                "AccessKeyId": c.access_key_id,
                "SecretAccessKey": c.secret_access_key,
                "SessionToken": c.session_token,
                "Expiration": c.expiration,
            });
            out = serde_json::to_string_pretty(&value)
                .map_err(|e| CliError::Protocol(e.to_string()))?;
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> CredentialsView {
        CredentialsView {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "se'cret".into(),
            session_token: "tok".into(),
            expiration: "2026-05-01T12:34:56Z".into(),
        }
    }

    #[test]
    fn shell_formats_quote_every_value() {
        let sh = credentials(CredsFormat::Env, &view()).unwrap_or_default();
        assert!(sh.contains("export AWS_ACCESS_KEY_ID='ASIAEXAMPLE'\n"));
        assert!(sh.contains("export AWS_SECRET_ACCESS_KEY='se'\\''cret'\n"));
        let fish = credentials(CredsFormat::Fish, &view()).unwrap_or_default();
        assert!(fish.contains("set -gx AWS_SESSION_TOKEN 'tok'\n"));
        let ps = credentials(CredsFormat::Powershell, &view()).unwrap_or_default();
        assert!(ps.contains("$Env:AWS_SECRET_ACCESS_KEY = 'se''cret'\n"));
    }

    #[test]
    fn credential_process_output_has_version_1() {
        let out = credentials(CredsFormat::CredentialProcess, &view()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(v["Version"], 1);
        assert_eq!(v["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(v["Expiration"], "2026-05-01T12:34:56Z");
    }
}
