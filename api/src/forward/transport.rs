//! The four transports. HTTP sinks share one classification of responses; syslog keeps a
//! connection open and reconnects (resending the whole batch) after any write error.

use super::format::{hec_event, sentinel_row, syslog_line};
use super::{
    ForwardError, PayloadFormat, SendError, SinkConfig, SinkKind, SinkStatus, SyslogTransport,
    Transport,
};
use kvwatch_detect::Alert;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) fn build(cfg: &SinkConfig) -> Result<Box<dyn Transport>, ForwardError> {
    Ok(match &cfg.kind {
        SinkKind::Sentinel { .. } => Box::new(Sentinel {
            http: Http::new(cfg),
            token: None,
        }),
        SinkKind::SplunkHec { .. } => Box::new(Hec {
            http: Http::new(cfg),
        }),
        SinkKind::Webhook { .. } => Box::new(Webhook {
            http: Http::new(cfg),
        }),
        SinkKind::Syslog { .. } => Box::new(Syslog::new(cfg)?),
    })
}

/// An HTTP client with the sink's timeout; statuses are data, not errors.
struct Http {
    agent: ureq::Agent,
    cfg: SinkConfig,
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(v: Option<&str>) -> Option<Duration> {
    let v = v?.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = when.timestamp() - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(wait.max(0) as u64))
}

/// Sorts a response into success or the kind of failure.
fn classify(status: u16, retry: Option<Duration>, body: &str) -> Result<(), SendError> {
    let msg: String = body.chars().take(300).collect();
    match status {
        200..=299 => Ok(()),
        413 => Err(SendError::TooLarge { msg }),
        408 | 429 | 500..=599 => Err(SendError::Transient {
            status: Some(status),
            retry_after: retry,
            msg,
        }),
        _ => Err(SendError::Permanent {
            status: Some(status),
            msg,
        }),
    }
}

impl Http {
    fn new(cfg: &SinkConfig) -> Self {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .max_redirects(0)
            .tls_config(tls)
            .user_agent(concat!("kvwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            agent,
            cfg: cfg.clone(),
        }
    }

    /// POSTs `body`; returns the status, `Retry-After` and the body text.
    fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<(u16, Option<Duration>, String), SendError> {
        let mut req = self.agent.post(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let mut resp = req.send(body).map_err(|e| SendError::Transient {
            status: None,
            retry_after: None,
            msg: format!("{url}: {e}"),
        })?;
        let code = resp.status().as_u16();
        let ra = retry_after(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        Ok((code, ra, text))
    }
}

/// JSON array of the items.
fn json_array(items: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(it);
    }
    body.push(b']');
    body
}

/// Microsoft Sentinel through the Azure Monitor Logs Ingestion API.
struct Sentinel {
    http: Http,
    /// Access token and when to stop using it.
    token: Option<(String, Instant)>,
}

impl Sentinel {
    fn token(&mut self) -> Result<String, SendError> {
        if let Some((t, until)) = &self.token
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let SinkKind::Sentinel {
            tenant_id,
            client_id,
            client_secret,
            authority,
            scope,
            ..
        } = &self.http.cfg.kind
        else {
            unreachable!("a Sentinel transport has a Sentinel config")
        };
        let url = format!("{authority}/{tenant_id}/oauth2/v2.0/token");
        let mut resp = self
            .http
            .agent
            .post(&url)
            .send_form([
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.expose()),
                ("scope", scope.as_str()),
            ])
            .map_err(|e| SendError::Transient {
                status: None,
                retry_after: None,
                msg: format!("token request to {url}: {e}"),
            })?;
        let code = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if code != 200 {
            // A wrong secret or tenant is fixed by an operator, not by waiting; keep the
            // alerts queued (not dead-lettered) since none of them was refused.
            return Err(SendError::Transient {
                status: Some(code),
                retry_after: None,
                msg: format!(
                    "token request refused: {}",
                    body.chars().take(300).collect::<String>()
                ),
            });
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| SendError::Transient {
                status: Some(code),
                retry_after: None,
                msg: "token response without access_token".into(),
            })?
            .to_owned();
        let life = v["expires_in"]
            .as_u64()
            .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(3600);
        // Renew five minutes early.
        let until = Instant::now() + Duration::from_secs(life.saturating_sub(300).max(30));
        self.token = Some((token.clone(), until));
        Ok(token)
    }
}

impl Transport for Sentinel {
    fn item(&self, seq: i64, a: &Alert) -> Vec<u8> {
        serde_json::to_vec(&sentinel_row(a, seq)).unwrap_or_default()
    }

    fn send(&mut self, items: &[Vec<u8>], _status: &SinkStatus) -> Result<(), SendError> {
        let SinkKind::Sentinel {
            endpoint,
            dcr_immutable_id,
            stream,
            ..
        } = &self.http.cfg.kind
        else {
            unreachable!("a Sentinel transport has a Sentinel config")
        };
        let url = format!(
            "{endpoint}/dataCollectionRules/{dcr_immutable_id}/streams/{stream}?api-version=2023-01-01"
        );
        let token = self.token()?;
        let (code, ra, text) = self.http.post(
            &url,
            &[
                ("Authorization", format!("Bearer {token}")),
                ("Content-Type", "application/json".into()),
            ],
            &json_array(items),
        )?;
        if code == 401 {
            // An expired or revoked token: fetch a new one on the next attempt.
            self.token = None;
            return Err(SendError::Transient {
                status: Some(code),
                retry_after: None,
                msg: text,
            });
        }
        classify(code, ra, &text)
    }
}

/// Splunk HTTP Event Collector.
struct Hec {
    http: Http,
}

impl Transport for Hec {
    fn item(&self, _seq: i64, a: &Alert) -> Vec<u8> {
        let SinkKind::SplunkHec {
            index,
            source,
            sourcetype,
            host,
            ..
        } = &self.http.cfg.kind
        else {
            unreachable!("a HEC transport has a HEC config")
        };
        serde_json::to_vec(&hec_event(a, host, source, sourcetype, index.as_deref()))
            .unwrap_or_default()
    }

    fn send(&mut self, items: &[Vec<u8>], _status: &SinkStatus) -> Result<(), SendError> {
        let SinkKind::SplunkHec {
            url,
            token,
            ack,
            channel,
            ack_timeout,
            ..
        } = &self.http.cfg.kind
        else {
            unreachable!("a HEC transport has a HEC config")
        };
        let body = items.join(&b'\n');
        let headers = [
            ("Authorization", format!("Splunk {}", token.expose())),
            ("Content-Type", "application/json".into()),
            ("X-Splunk-Request-Channel", channel.clone()),
        ];
        let (code, ra, text) =
            self.http
                .post(&format!("{url}/services/collector/event"), &headers, &body)?;
        classify(code, ra, &text)?;
        if !ack {
            return Ok(());
        }
        // Indexer acknowledgement: the events count as delivered only once Splunk says they
        // are indexed; a timeout resends them (at least once).
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let Some(id) = v["ackId"].as_u64() else {
            return Err(SendError::Permanent {
                status: Some(code),
                msg: format!("ack is on but HEC returned no ackId: {text}"),
            });
        };
        let started = Instant::now();
        let ack_body = serde_json::to_vec(&serde_json::json!({"acks": [id]})).unwrap_or_default();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let (code, ra, text) = self.http.post(
                &format!("{url}/services/collector/ack?channel={channel}"),
                &headers,
                &ack_body,
            )?;
            classify(code, ra, &text)?;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if v["acks"][id.to_string()].as_bool() == Some(true) {
                return Ok(());
            }
            if started.elapsed() > *ack_timeout {
                return Err(SendError::Transient {
                    status: None,
                    retry_after: None,
                    msg: format!("no indexer acknowledgement for ackId {id} in {ack_timeout:?}"),
                });
            }
        }
    }
}

/// A generic webhook with an HMAC-SHA256 signature over `timestamp.body`.
struct Webhook {
    http: Http,
}

/// Hex HMAC-SHA256 of `parts` concatenated.
pub fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
    let sign = || -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let key = PKey::hmac(key)?;
        let mut s = Signer::new(MessageDigest::sha256(), &key)?;
        for p in parts {
            s.update(p)?;
        }
        s.sign_to_vec()
    };
    sign()
        .map(|m| m.iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

impl Transport for Webhook {
    fn item(&self, _seq: i64, a: &Alert) -> Vec<u8> {
        let SinkKind::Webhook { format, .. } = &self.http.cfg.kind else {
            unreachable!("a webhook transport has a webhook config")
        };
        serde_json::to_vec(&format.render(a)).unwrap_or_default()
    }

    fn send(&mut self, items: &[Vec<u8>], _status: &SinkStatus) -> Result<(), SendError> {
        let SinkKind::Webhook {
            url,
            secret,
            format,
        } = &self.http.cfg.kind
        else {
            unreachable!("a webhook transport has a webhook config")
        };
        let mut body = b"{\"alerts\":".to_vec();
        body.extend_from_slice(&json_array(items));
        body.push(b'}');
        let ts = chrono::Utc::now().timestamp().to_string();
        // The same batch resent after a failure carries the same delivery ID, so a receiver
        // can drop the duplicate.
        let delivery = blake3::hash(&body).to_hex()[..32].to_owned();
        let mut headers = vec![
            ("Content-Type", "application/json".to_owned()),
            ("X-Kvwatch-Timestamp", ts.clone()),
            ("X-Kvwatch-Delivery", delivery),
            (
                "X-Kvwatch-Format",
                match format {
                    PayloadFormat::Native => "native",
                    PayloadFormat::Ocsf => "ocsf",
                    PayloadFormat::Cef => "cef",
                }
                .to_owned(),
            ),
        ];
        if let Some(s) = secret {
            let sig = hmac_sha256_hex(s.expose().as_bytes(), &[ts.as_bytes(), b".", &body]);
            headers.push(("X-Kvwatch-Signature", format!("sha256={sig}")));
        }
        let (code, ra, text) = self.http.post(url, &headers, &body)?;
        classify(code, ra, &text)
    }
}

/// Syslog over TCP (octet-counted frames, RFC 6587), TLS (RFC 5425) or UDP (RFC 5426).
struct Syslog {
    cfg: SinkConfig,
    tls: Option<native_tls::TlsConnector>,
    conn: Option<Box<dyn Write + Send>>,
    udp: Option<UdpSocket>,
}

impl Syslog {
    fn new(cfg: &SinkConfig) -> Result<Self, ForwardError> {
        let SinkKind::Syslog {
            transport, ca_file, ..
        } = &cfg.kind
        else {
            unreachable!("a syslog transport has a syslog config")
        };
        let err = |msg: String| ForwardError::Config {
            sink: cfg.name.clone(),
            msg,
        };
        let tls = if *transport == SyslogTransport::Tls {
            let mut b = native_tls::TlsConnector::builder();
            b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
            if let Some(path) = ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
                let cert = native_tls::Certificate::from_pem(&pem)
                    .map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
                b.add_root_certificate(cert);
            }
            Some(b.build().map_err(|e| err(format!("TLS: {e}")))?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            tls,
            conn: None,
            udp: None,
        })
    }

    fn transient(msg: String) -> SendError {
        SendError::Transient {
            status: None,
            retry_after: None,
            msg,
        }
    }

    fn connect(&mut self) -> Result<(), SendError> {
        let SinkKind::Syslog {
            address,
            transport,
            server_name,
            ..
        } = &self.cfg.kind
        else {
            unreachable!("a syslog transport has a syslog config")
        };
        let addr = address
            .to_socket_addrs()
            .map_err(|e| Self::transient(format!("resolving {address}: {e}")))?
            .next()
            .ok_or_else(|| Self::transient(format!("{address} resolves to nothing")))?;
        if *transport == SyslogTransport::Udp {
            let sock = UdpSocket::bind(if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })
            .and_then(|s| s.connect(addr).map(|_| s))
            .map_err(|e| Self::transient(format!("udp {address}: {e}")))?;
            self.udp = Some(sock);
            return Ok(());
        }
        let tcp = TcpStream::connect_timeout(&addr, self.cfg.timeout)
            .map_err(|e| Self::transient(format!("connecting to {address}: {e}")))?;
        let _ = tcp.set_write_timeout(Some(self.cfg.timeout));
        let _ = tcp.set_nodelay(true);
        self.conn =
            Some(match &self.tls {
                None => Box::new(tcp),
                Some(c) => {
                    let host = server_name.clone().unwrap_or_else(|| {
                        address
                            .rsplit_once(':')
                            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
                            .unwrap_or_default()
                    });
                    Box::new(c.connect(&host, tcp).map_err(|e| {
                        Self::transient(format!("TLS handshake with {address}: {e}"))
                    })?)
                }
            });
        Ok(())
    }
}

impl Transport for Syslog {
    fn item(&self, _seq: i64, a: &Alert) -> Vec<u8> {
        let SinkKind::Syslog {
            facility,
            hostname,
            app_name,
            ..
        } = &self.cfg.kind
        else {
            unreachable!("a syslog transport has a syslog config")
        };
        syslog_line(a, *facility, hostname, app_name).into_bytes()
    }

    fn send(&mut self, items: &[Vec<u8>], status: &SinkStatus) -> Result<(), SendError> {
        let SinkKind::Syslog {
            max_message_bytes, ..
        } = self.cfg.kind
        else {
            unreachable!("a syslog transport has a syslog config")
        };
        if self.conn.is_none() && self.udp.is_none() {
            self.connect()?;
        }
        if let Some(sock) = &self.udp {
            for it in items {
                let msg = if it.len() > max_message_bytes {
                    status.truncated.fetch_add(1, Ordering::Relaxed);
                    // Cut on a character boundary.
                    let mut end = max_message_bytes;
                    while end > 0 && (it[end] & 0xC0) == 0x80 {
                        end -= 1;
                    }
                    &it[..end]
                } else {
                    &it[..]
                };
                sock.send(msg)
                    .map_err(|e| Self::transient(format!("udp send: {e}")))?;
            }
            return Ok(());
        }
        let mut frames = Vec::with_capacity(items.iter().map(|i| i.len() + 8).sum());
        for it in items {
            frames.extend_from_slice(format!("{} ", it.len()).as_bytes());
            frames.extend_from_slice(it);
        }
        let conn = self.conn.as_mut().expect("connected above");
        if let Err(e) = conn.write_all(&frames).and_then(|_| conn.flush()) {
            // The peer may have the first frames; resending them all is the at-least-once side.
            self.conn = None;
            return Err(Self::transient(format!("writing to the receiver: {e}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_classified() {
        assert!(classify(204, None, "").is_ok());
        assert!(matches!(
            classify(429, Some(Duration::from_secs(3)), ""),
            Err(SendError::Transient {
                retry_after: Some(_),
                ..
            })
        ));
        assert!(matches!(
            classify(503, None, ""),
            Err(SendError::Transient { .. })
        ));
        assert!(matches!(
            classify(403, None, "forbidden"),
            Err(SendError::Permanent {
                status: Some(403),
                ..
            })
        ));
        assert!(matches!(
            classify(413, None, ""),
            Err(SendError::TooLarge { .. })
        ));
        assert_eq!(retry_after(Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some("soon")), None);
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hmac_sha256_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
