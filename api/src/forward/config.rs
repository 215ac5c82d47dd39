//! Sink configuration: the `[[sinks]]` tables of `kvwatch.toml` as typed serde structs, one
//! per sink type (tagged on `type`, unknown keys refused), checked and turned into the
//! [`SinkConfig`] a forwarder runs with. Secrets resolve here and nowhere else.

use super::{ForwardError, format};
use kvwatch_detect::{Alert, Severity};
use kvwatch_ingest::secret::Secret;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

fn resolve_secret(sink: &str, field: &str, raw: &str) -> Result<Secret, ForwardError> {
    Secret::resolve(raw).map_err(|e| ForwardError::Config {
        sink: sink.to_owned(),
        msg: format!("{field}: {e}"),
    })
}

/// Syslog transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Tcp,
    Tls,
    Udp,
}

/// The payload format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    Native,
    Ocsf,
    Cef,
}

impl PayloadFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "native" => Some(Self::Native),
            "ocsf" => Some(Self::Ocsf),
            "cef" => Some(Self::Cef),
            _ => None,
        }
    }

    /// One alert in this format.
    pub fn render(self, a: &Alert) -> Value {
        match self {
            Self::Native => serde_json::to_value(a).unwrap_or_default(),
            Self::Ocsf => a.to_ocsf(),
            Self::Cef => Value::String(format::to_cef(a)),
        }
    }
}

/// What a sink delivers to.
#[derive(Debug, Clone)]
pub enum SinkKind {
    Sentinel {
        /// Data collection endpoint, e.g. `https://my-dce.westeurope-1.ingest.monitor.azure.com`.
        endpoint: String,
        dcr_immutable_id: String,
        stream: String,
        tenant_id: String,
        client_id: String,
        client_secret: Secret,
        /// Entra ID authority host.
        authority: String,
        scope: String,
    },
    SplunkHec {
        /// Base URL, e.g. `https://splunk:8088`.
        url: String,
        token: Secret,
        index: Option<String>,
        source: String,
        sourcetype: String,
        host: String,
        /// Wait for indexer acknowledgement before counting an event delivered.
        ack: bool,
        channel: String,
        ack_timeout: Duration,
    },
    Syslog {
        /// `host:port`.
        address: String,
        transport: SyslogTransport,
        /// PEM file of the CA that signed the receiver's certificate (TLS); the system roots
        /// otherwise.
        ca_file: Option<PathBuf>,
        /// Name checked against the receiver's certificate [default: the address's host].
        server_name: Option<String>,
        facility: u8,
        hostname: String,
        app_name: String,
        /// UDP datagrams are cut to this size (counted as truncated).
        max_message_bytes: usize,
    },
    Webhook {
        url: String,
        /// HMAC-SHA256 key; the signature goes in `X-Kvwatch-Signature`.
        secret: Option<Secret>,
        format: PayloadFormat,
    },
}

impl SinkKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Sentinel { .. } => "sentinel",
            SinkKind::SplunkHec { .. } => "splunk_hec",
            SinkKind::Syslog { .. } => "syslog",
            SinkKind::Webhook { .. } => "webhook",
        }
    }

    /// Where the sink delivers to, without credentials.
    pub fn target(&self) -> String {
        match self {
            SinkKind::Sentinel {
                endpoint, stream, ..
            } => format!("{endpoint} ({stream})"),
            SinkKind::SplunkHec { url, .. } => url.clone(),
            SinkKind::Syslog {
                address, transport, ..
            } => format!("{transport:?}://{address}").to_lowercase(),
            SinkKind::Webhook { url, .. } => url.clone(),
        }
    }
}

/// One configured sink.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique name; also the key of the durable cursor.
    pub name: String,
    pub kind: SinkKind,
    /// Alerts read from the change feed per round.
    pub batch_size: usize,
    /// Largest request body (HTTP sinks).
    pub max_batch_bytes: usize,
    /// Alerts below this severity are skipped (counted, never sent).
    pub min_severity: Option<Severity>,
    /// Pause when caught up.
    pub poll_interval: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Declares a sink type's table: the keys every sink has, then the type's own; any other key
/// is an error (`deny_unknown_fields`).
macro_rules! sink_spec {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Unique name; also the key of the durable cursor.
            pub name: String,
            /// Alerts read from the change feed per round [default: 500].
            pub batch_size: Option<usize>,
            /// Largest request body in KiB [default: 1000 for Sentinel, 4096 otherwise].
            pub max_batch_kb: Option<usize>,
            /// Alerts below this severity are skipped.
            pub min_severity: Option<String>,
            /// Pause when caught up, in milliseconds [default: 1000].
            pub poll_interval_ms: Option<u64>,
            /// Longest wait between retries, in seconds [default: 60].
            pub max_backoff_secs: Option<u64>,
            /// Per-request timeout, in seconds [default: 30].
            pub timeout_secs: Option<u64>,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
    };
}

sink_spec!(
    /// `type = "sentinel"`: the Logs Ingestion API of Azure Monitor.
    SentinelSpec {
        endpoint: Option<String>,
        dcr_immutable_id: Option<String>,
        stream: Option<String>,
        tenant_id: Option<String>,
        client_id: Option<String>,
        /// `${env:…}` / `${file:…}` or the secret itself.
        client_secret: Option<String>,
        authority: Option<String>,
        scope: Option<String>,
    }
);
sink_spec!(
    /// `type = "splunk_hec"`: Splunk's HTTP Event Collector.
    HecSpec {
        url: Option<String>,
        token: Option<String>,
        index: Option<String>,
        source: Option<String>,
        sourcetype: Option<String>,
        host: Option<String>,
        ack: Option<bool>,
        channel: Option<String>,
        ack_timeout_secs: Option<u64>,
    }
);
sink_spec!(
    /// `type = "syslog"`: RFC 5424 lines with CEF over TCP, TLS or UDP.
    SyslogSpec {
        address: Option<String>,
        transport: Option<String>,
        ca_file: Option<PathBuf>,
        server_name: Option<String>,
        facility: Option<String>,
        hostname: Option<String>,
        app_name: Option<String>,
        max_message_bytes: Option<usize>,
    }
);
sink_spec!(
    /// `type = "webhook"`: JSON POSTs, signed when a secret is set.
    WebhookSpec {
        url: Option<String>,
        secret: Option<String>,
        format: Option<String>,
    }
);

/// One `[[sinks]]` table as written in the config file, tagged by its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkSpec {
    Sentinel(SentinelSpec),
    SplunkHec(HecSpec),
    Syslog(SyslogSpec),
    Webhook(WebhookSpec),
}

/// The keys every sink type shares.
struct Common<'a> {
    name: &'a str,
    batch_size: Option<usize>,
    max_batch_kb: Option<usize>,
    min_severity: Option<&'a str>,
    poll_interval_ms: Option<u64>,
    max_backoff_secs: Option<u64>,
    timeout_secs: Option<u64>,
}

macro_rules! common_of {
    ($s:expr) => {
        Common {
            name: &$s.name,
            batch_size: $s.batch_size,
            max_batch_kb: $s.max_batch_kb,
            min_severity: $s.min_severity.as_deref(),
            poll_interval_ms: $s.poll_interval_ms,
            max_backoff_secs: $s.max_backoff_secs,
            timeout_secs: $s.timeout_secs,
        }
    };
}

impl SinkSpec {
    fn common(&self) -> Common<'_> {
        match self {
            SinkSpec::Sentinel(s) => common_of!(s),
            SinkSpec::SplunkHec(s) => common_of!(s),
            SinkSpec::Syslog(s) => common_of!(s),
            SinkSpec::Webhook(s) => common_of!(s),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            SinkSpec::Sentinel(_) => "sentinel",
            SinkSpec::SplunkHec(_) => "splunk_hec",
            SinkSpec::Syslog(_) => "syslog",
            SinkSpec::Webhook(_) => "webhook",
        }
    }
}

/// Syslog facility by name or number.
fn facility(s: &str) -> Option<u8> {
    const NAMES: [&str; 24] = [
        "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
        "authpriv", "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2",
        "local3", "local4", "local5", "local6", "local7",
    ];
    NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(s))
        .map(|i| i as u8)
        .or_else(|| s.parse::<u8>().ok().filter(|n| *n < 24))
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kvwatch".into())
}

impl SinkConfig {
    /// Checks a `[[sinks]]` table and fills in its defaults; secrets are resolved here.
    pub fn from_spec(spec: &SinkSpec) -> Result<SinkConfig, ForwardError> {
        let c = spec.common();
        let name = c.name.to_owned();
        let kind_name = spec.type_name();
        let err = |msg: String| ForwardError::Config {
            sink: name.clone(),
            msg,
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err("name must be letters, digits, '-' or '_'".into()));
        }
        let need = |field: &str, v: &Option<String>| -> Result<String, ForwardError> {
            v.clone()
                .filter(|s| !s.trim().is_empty())
                .ok_or_else(|| err(format!("{field} is required for type {kind_name}")))
        };
        let url = |field: &str, v: &Option<String>| -> Result<String, ForwardError> {
            let u = need(field, v)?;
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(err(format!("{field} must be an http(s) URL")));
            }
            Ok(u.trim_end_matches('/').to_owned())
        };
        let kind = match spec {
            SinkSpec::Sentinel(r) => SinkKind::Sentinel {
                endpoint: url("endpoint", &r.endpoint)?,
                dcr_immutable_id: need("dcr_immutable_id", &r.dcr_immutable_id)?,
                stream: need("stream", &r.stream)?,
                tenant_id: need("tenant_id", &r.tenant_id)?,
                client_id: need("client_id", &r.client_id)?,
                client_secret: resolve_secret(
                    &name,
                    "client_secret",
                    &need("client_secret", &r.client_secret)?,
                )?,
                authority: r
                    .authority
                    .clone()
                    .unwrap_or_else(|| "https://login.microsoftonline.com".into())
                    .trim_end_matches('/')
                    .to_owned(),
                scope: r
                    .scope
                    .clone()
                    .unwrap_or_else(|| "https://monitor.azure.com/.default".into()),
            },
            SinkSpec::SplunkHec(r) => SinkKind::SplunkHec {
                url: url("url", &r.url)?,
                token: resolve_secret(&name, "token", &need("token", &r.token)?)?,
                index: r.index.clone(),
                source: r.source.clone().unwrap_or_else(|| "kvwatch".into()),
                sourcetype: r
                    .sourcetype
                    .clone()
                    .unwrap_or_else(|| "kvwatch:alert".into()),
                host: r.host.clone().unwrap_or_else(local_hostname),
                ack: r.ack.unwrap_or(false),
                channel: r.channel.clone().unwrap_or_else(|| {
                    // A stable channel per sink name, in the GUID form HEC requires.
                    let h = blake3::hash(name.as_bytes()).to_hex();
                    format!(
                        "{}-{}-{}-{}-{}",
                        &h[0..8],
                        &h[8..12],
                        &h[12..16],
                        &h[16..20],
                        &h[20..32]
                    )
                }),
                ack_timeout: Duration::from_secs(r.ack_timeout_secs.unwrap_or(60)),
            },
            SinkSpec::Syslog(r) => {
                let transport = match r.transport.as_deref().unwrap_or("tcp") {
                    "tcp" => SyslogTransport::Tcp,
                    "tls" => SyslogTransport::Tls,
                    "udp" => SyslogTransport::Udp,
                    other => return Err(err(format!("transport {other:?} (tcp, tls or udp)"))),
                };
                let address = need("address", &r.address)?;
                if !address.contains(':') {
                    return Err(err("address must be host:port".into()));
                }
                SinkKind::Syslog {
                    address,
                    transport,
                    ca_file: r.ca_file.clone(),
                    server_name: r.server_name.clone(),
                    facility: match r.facility.as_deref() {
                        None => 20,
                        Some(f) => facility(f)
                            .ok_or_else(|| err(format!("unknown syslog facility {f:?}")))?,
                    },
                    hostname: r.hostname.clone().unwrap_or_else(local_hostname),
                    app_name: r.app_name.clone().unwrap_or_else(|| "kvwatch".into()),
                    max_message_bytes: r.max_message_bytes.unwrap_or(8192).max(480),
                }
            }
            SinkSpec::Webhook(r) => SinkKind::Webhook {
                url: url("url", &r.url)?,
                secret: r
                    .secret
                    .as_deref()
                    .map(|s| resolve_secret(&name, "secret", s))
                    .transpose()?,
                format: match r.format.as_deref() {
                    None => PayloadFormat::Native,
                    Some(f) => PayloadFormat::parse(f)
                        .ok_or_else(|| err(format!("format {f:?} (native, ocsf or cef)")))?,
                },
            },
        };
        let default_kb = match kind {
            // The Logs Ingestion API refuses calls over 1 MB.
            SinkKind::Sentinel { .. } => 1000,
            _ => 4096,
        };
        Ok(SinkConfig {
            batch_size: c.batch_size.unwrap_or(500).clamp(1, 10_000),
            max_batch_bytes: c.max_batch_kb.unwrap_or(default_kb).max(1) * 1024,
            min_severity: c
                .min_severity
                .map(|s| Severity::parse(s).ok_or_else(|| err(format!("unknown severity {s:?}"))))
                .transpose()?,
            poll_interval: Duration::from_millis(c.poll_interval_ms.unwrap_or(1000).max(10)),
            max_backoff: Duration::from_secs(c.max_backoff_secs.unwrap_or(60).max(1)),
            timeout: Duration::from_secs(c.timeout_secs.unwrap_or(30).max(1)),
            name,
            kind,
        })
    }
}

/// Parses one `[[sinks]]` table given as JSON (tests, tools).
pub fn parse_sink(v: &Value) -> Result<SinkConfig, ForwardError> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_owned();
    let spec: SinkSpec = serde_json::from_value(v.clone()).map_err(|e| ForwardError::Config {
        sink: name,
        msg: e.to_string(),
    })?;
    SinkConfig::from_spec(&spec)
}

/// Checks every sink and that names are unique.
pub fn parse_sinks(specs: &[SinkSpec]) -> Result<Vec<SinkConfig>, ForwardError> {
    let sinks = specs
        .iter()
        .map(SinkConfig::from_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = BTreeSet::new();
    for s in &sinks {
        if !seen.insert(s.name.clone()) {
            return Err(ForwardError::Config {
                sink: s.name.clone(),
                msg: "two sinks have this name".into(),
            });
        }
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sinks_parse_with_defaults_and_reject_mistakes() {
        // SAFETY: test-only variable, set before any thread reads it.
        unsafe { std::env::set_var("KVWATCH_TEST_HEC_TOKEN", "abc-123") };
        let s = parse_sink(&json!({
            "name": "splunk", "type": "splunk_hec", "url": "https://splunk:8088/",
            "token": "${env:KVWATCH_TEST_HEC_TOKEN}", "ack": true
        }))
        .unwrap();
        match &s.kind {
            SinkKind::SplunkHec {
                url,
                token,
                channel,
                ..
            } => {
                assert_eq!(url, "https://splunk:8088");
                assert_eq!(token.expose(), "abc-123");
                assert_eq!(channel.len(), 36);
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{s:?}").contains("abc-123"), "secret in Debug");
        assert_eq!(s.batch_size, 500);
        let sentinel = parse_sink(&json!({
            "name": "sentinel", "type": "sentinel", "endpoint": "https://dce.example",
            "dcr_immutable_id": "dcr-1", "stream": "Custom-KvwatchAlerts_CL",
            "tenant_id": "t", "client_id": "c", "client_secret": "s"
        }))
        .unwrap();
        assert_eq!(sentinel.max_batch_bytes, 1000 * 1024);
        for (bad, why) in [
            (
                json!({"name": "x", "type": "kafka"}),
                "unknown variant `kafka`",
            ),
            (
                json!({"name": "x", "type": "webhook", "url": "https://h", "token": "t"}),
                "unknown field `token`",
            ),
            (json!({"name": "x", "type": "webhook"}), "url is required"),
            (
                json!({"name": "x", "type": "webhook", "url": "ftp://h"}),
                "http(s) URL",
            ),
            (
                json!({"name": "x y", "type": "webhook", "url": "https://h"}),
                "name must be",
            ),
            (
                json!({"name": "x", "type": "syslog", "address": "h:514", "transport": "sctp"}),
                "transport",
            ),
            (
                json!({"name": "x", "type": "syslog", "address": "h:514", "facility": "local9"}),
                "facility",
            ),
            (
                json!({"name": "x", "type": "webhook", "url": "https://h", "colour": 1}),
                "unknown field",
            ),
            (
                json!({"name": "x", "type": "webhook", "url": "https://h", "secret": "${env:KVWATCH_NOT_SET_ANYWHERE}"}),
                "not set",
            ),
        ] {
            let e = parse_sink(&bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let spec = |v: Value| serde_json::from_value::<SinkSpec>(v).unwrap();
        let dup = parse_sinks(&[
            spec(json!({"name": "a", "type": "webhook", "url": "https://h"})),
            spec(json!({"name": "a", "type": "webhook", "url": "https://i"})),
        ]);
        assert!(dup.is_err());
    }
}
