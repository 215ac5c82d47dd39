//! Client settings shared by the consumer and the publisher: defaults that suit Azure Event
//! Hubs, user pass-through properties, and secret indirection so that passwords come from the
//! environment or a file and never from the command line or a log line.

use super::KafkaError;
use rdkafka::ClientConfig;
use std::fmt;

/// A librdkafka property given by the user. A value of the form `${env:NAME}` or
/// `${file:PATH}` is read from that environment variable or file (trailing newline removed).
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
}

impl Property {
    /// Parses `key=value`.
    pub fn parse(s: &str) -> Result<Self, KafkaError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| KafkaError::Config(format!("property {s:?} is not key=value")))?;
        let key = k.trim();
        if key.is_empty() {
            return Err(KafkaError::Config(format!(
                "property {s:?} has an empty key"
            )));
        }
        Ok(Self {
            key: key.to_owned(),
            value: v.to_owned(),
        })
    }

    /// The value with `${env:…}` / `${file:…}` resolved.
    pub fn resolve(&self) -> Result<String, KafkaError> {
        crate::secret::resolve(&self.value)
            .map_err(|e| KafkaError::Config(format!("property {}: {e}", self.key)))
    }
}

/// Keys whose values are never printed.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "keystore", ".key"]
        .iter()
        .any(|s| k.contains(s))
        || k == "sasl.oauthbearer.config"
}

impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_secret_key(&self.key) && !crate::secret::is_reference(&self.value) {
            write!(f, "{}=<redacted>", self.key)
        } else {
            write!(f, "{}={}", self.key, self.value)
        }
    }
}

/// Connection settings common to both directions.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub brokers: String,
    /// Applied last, over kvwatch's defaults.
    pub properties: Vec<Property>,
}

impl ClientOptions {
    /// Builds a librdkafka configuration: `defaults` first, then the user's properties.
    pub fn client_config(&self, defaults: &[(&str, String)]) -> Result<ClientConfig, KafkaError> {
        if self.brokers.trim().is_empty() {
            return Err(KafkaError::Config("no brokers given (--brokers)".into()));
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.trim());
        // Event Hubs closes connections idle for 240 s; keep them alive and refresh metadata
        // before that so a quiet consumer never sees a dead socket first.
        c.set("socket.keepalive.enable", "true");
        c.set("metadata.max.age.ms", "180000");
        c.set("connections.max.idle.ms", "180000");
        c.set("reconnect.backoff.ms", "200");
        c.set("reconnect.backoff.max.ms", "10000");
        c.set("log.connection.close", "false");
        for (k, v) in defaults {
            c.set(*k, v.as_str());
        }
        for p in &self.properties {
            c.set(p.key.as_str(), p.resolve()?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_resolve_and_redact() {
        let p = Property::parse("sasl.password=hunter2").unwrap();
        assert_eq!(format!("{p:?}"), "sasl.password=<redacted>");
        assert_eq!(p.resolve().unwrap(), "hunter2");
        assert!(Property::parse("novalue").is_err());
        assert!(Property::parse("=x").is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "Endpoint=sb://x/;SharedAccessKey=abc\n").unwrap();
        let p = Property::parse(&format!("sasl.password=${{file:{}}}", f.display())).unwrap();
        assert_eq!(p.resolve().unwrap(), "Endpoint=sb://x/;SharedAccessKey=abc");
        assert!(format!("{p:?}").contains("${file:"));
        let p = Property::parse("sasl.password=${env:KVWATCH_TEST_SURELY_UNSET_VAR}").unwrap();
        assert!(p.resolve().is_err());
        let p = Property::parse("client.id=a=b").unwrap();
        assert_eq!(p.value, "a=b");
        assert_eq!(format!("{p:?}"), "client.id=a=b");
    }
}
