//! Secrets in configuration: a value written `${env:NAME}` or `${file:PATH}` is read from that
//! environment variable or file (one trailing newline removed), so passwords and tokens stay
//! off command lines, out of config files under version control, and out of logs. A resolved
//! [`Secret`] prints as `<redacted>`.

use std::fmt;

/// A resolved credential. Its `Debug` is redacted, so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Resolves `raw` (a literal, `${env:NAME}` or `${file:PATH}`).
    pub fn resolve(raw: &str) -> Result<Self, SecretError> {
        resolve(raw).map(Self)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret reference could not be read. Never carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    NoVariable(String),
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
}

/// `url` with the password of its `user:password@` part replaced by `<redacted>`, for
/// messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>{host}"),
        None => url.to_owned(),
    }
}

/// `raw` with every `${env:…}` / `${file:…}` reference inside it replaced by what it names,
/// percent-encoded (for a password inside a URL).
pub fn resolve_embedded(raw: &str) -> Result<String, SecretError> {
    if is_reference(raw) {
        return resolve(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let reference = &rest[start..start + len + 1];
        if !is_reference(reference) {
            out.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        for b in resolve(reference)?.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `raw` names a secret elsewhere instead of holding it.
pub fn is_reference(raw: &str) -> bool {
    let v = raw.trim();
    (v.starts_with("${env:") || v.starts_with("${file:")) && v.ends_with('}')
}

/// The value of `raw`: itself, or what its `${env:…}` / `${file:…}` reference names.
pub fn resolve(raw: &str) -> Result<String, SecretError> {
    let v = raw.trim();
    if let Some(name) = v.strip_prefix("${env:").and_then(|r| r.strip_suffix('}')) {
        return std::env::var(name).map_err(|_| SecretError::NoVariable(name.to_owned()));
    }
    if let Some(path) = v.strip_prefix("${file:").and_then(|r| r.strip_suffix('}')) {
        let text = std::fs::read_to_string(path).map_err(|e| SecretError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_inside_a_url_are_resolved_and_encoded_and_passwords_redacted() {
        // SAFETY: test-only variable, set before any thread of this test reads it.
        unsafe { std::env::set_var("KVWATCH_TEST_PG_PW", "p@ss:w/rd") };
        let url = resolve_embedded("postgres://kv:${env:KVWATCH_TEST_PG_PW}@db:5432/kv").unwrap();
        assert_eq!(url, "postgres://kv:p%40ss%3Aw%2Frd@db:5432/kv");
        assert_eq!(redact_url(&url), "postgres://kv:<redacted>@db:5432/kv");
        assert_eq!(redact_url("postgres://db/kv"), "postgres://db/kv");
        assert!(resolve_embedded("postgres://kv:${env:KVWATCH_TEST_NOPE}@db/kv").is_err());
        assert_eq!(resolve_embedded("a${b}c").unwrap(), "a${b}c");
    }

    #[test]
    fn literals_variables_and_files() {
        assert_eq!(resolve("plain").unwrap(), "plain");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "abc\n").unwrap();
        assert_eq!(
            resolve(&format!("${{file:{}}}", f.display())).unwrap(),
            "abc"
        );
        assert_eq!(
            resolve("${env:KVWATCH_TEST_SURELY_UNSET_VAR}"),
            Err(SecretError::NoVariable(
                "KVWATCH_TEST_SURELY_UNSET_VAR".into()
            ))
        );
        assert!(is_reference(" ${env:X} ") && !is_reference("x"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
    }
}
