//! Azurite, the Azure Storage emulator (from the npm registry; `scripts/test.sh` installs it
//! once per machine, `KVWATCH_AZURITE` may point at another `azurite-blob`), started on a
//! private loopback port for a test and killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The emulator's well-known development account and key (public, documented by Microsoft).
pub const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn azurite_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KVWATCH_AZURITE") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/kvwatch/azurite/node_modules/.bin/azurite-blob");
    assert!(
        p.exists(),
        "Azurite is not installed at {}: run scripts/test.sh (it installs it) or set KVWATCH_AZURITE",
        p.display()
    );
    p
}

pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Azurite {
    /// Starts the blob service with its data under `dir`.
    pub fn start(dir: &Path) -> Azurite {
        let data = dir.join("azurite");
        std::fs::create_dir_all(&data).unwrap();
        // A free port can be taken by another test's server between our probe and Azurite's
        // bind: then Azurite exits, and a connection would reach the other server. Try again
        // on another port until our own process is the one listening.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.join("azurite.log")).unwrap();
            let mut child = Command::new(azurite_bin())
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(&data)
                .args(["--skipApiVersionCheck", "--loose", "--silent"])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start azurite");
            let start = Instant::now();
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    // Listening, and still ours a moment later.
                    std::thread::sleep(Duration::from_millis(200));
                    if child.try_wait().unwrap().is_none() {
                        return Azurite { child, port };
                    }
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "azurite did not listen"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("azurite did not start (see azurite.log)");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables that point kvwatch (the `object_store` crate) at this emulator.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), self.endpoint()),
        ]
    }

    /// The same as explicit storage options (account key, endpoint), the way a deployment
    /// against a real account is configured.
    pub fn options(&self) -> Vec<String> {
        vec![
            format!("account_name={ACCOUNT}"),
            format!("access_key={KEY}"),
            format!("endpoint={}/{ACCOUNT}", self.endpoint()),
            "allow_http=true".into(),
        ]
    }

    /// Creates a container (as `az storage container create` would), with a request signed
    /// by the account key.
    pub fn create_container(&self, name: &str) {
        self.signed("PUT", &format!("{name}?restype=container"), &[], b"");
    }

    /// Uploads a block blob.
    pub fn put_blob(&self, container: &str, blob: &str, body: &[u8]) {
        self.signed(
            "PUT",
            &format!("{container}/{blob}"),
            &[("x-ms-blob-type", "BlockBlob")],
            body,
        );
    }

    /// Appends to an append blob, creating it first when `create`.
    pub fn append_blob(&self, container: &str, blob: &str, body: &[u8], create: bool) {
        if create {
            self.signed(
                "PUT",
                &format!("{container}/{blob}"),
                &[("x-ms-blob-type", "AppendBlob")],
                b"",
            );
        }
        self.signed(
            "PUT",
            &format!("{container}/{blob}?comp=appendblock"),
            &[],
            body,
        );
    }

    /// A request authorised with the Shared Key scheme.
    fn signed(&self, verb: &str, path_query: &str, headers: &[(&str, &str)], body: &[u8]) {
        use openssl::{hash::MessageDigest, pkey::PKey, sign::Signer};
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let mut ms: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .chain([
                ("x-ms-date".into(), date.clone()),
                ("x-ms-version".into(), version.into()),
            ])
            .collect();
        ms.sort();
        let canon_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let mut params: Vec<(&str, &str)> = query
            .split('&')
            .filter(|q| !q.is_empty())
            .filter_map(|q| q.split_once('='))
            .collect();
        params.sort();
        let mut resource = format!("/{ACCOUNT}/{ACCOUNT}/{path}");
        for (k, v) in params {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        let length = if body.is_empty() {
            String::new()
        } else {
            body.len().to_string()
        };
        let to_sign = format!("{verb}\n\n\n{length}\n\n\n\n\n\n\n\n\n{canon_headers}{resource}");
        let key = PKey::hmac(&openssl::base64::decode_block(KEY).unwrap()).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
        signer.update(to_sign.as_bytes()).unwrap();
        let sig = openssl::base64::encode_block(&signer.sign_to_vec().unwrap());
        let url = format!("{}/{ACCOUNT}/{path_query}", self.endpoint());
        let mut req = ureq::http::Request::builder()
            .method(verb)
            .uri(&url)
            .header("Authorization", format!("SharedKey {ACCOUNT}:{sig}"));
        for (k, v) in &ms {
            req = req.header(k.as_str(), v.as_str());
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent.run(req.body(body.to_vec()).unwrap()).unwrap();
        let status = resp.status().as_u16();
        assert!(
            (200..300).contains(&status),
            "{verb} {url}: {status} {}",
            resp.into_body().read_to_string().unwrap_or_default()
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
