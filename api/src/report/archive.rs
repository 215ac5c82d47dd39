//! Stored reports: rendered reports and their metadata under the data directory's `reports/`,
//! written whole (temp file + rename) and listed newest first.

use super::{Format, Report, ReportError};
use kvwatch_ingest::DataDir;
use serde::Serialize;

/// A report kept under `DATA/reports`: `<id>.<ext>` with its metadata in `<id>.meta.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StoredReport {
    /// `YYYYMMDDTHHMMSSZ-<kind>[-<n>]`: letters, digits and '-' only, so an ID never names
    /// a path outside the directory.
    pub id: String,
    pub kind: String,
    pub format: String,
    pub from: String,
    pub to: String,
    pub generated_at: String,
    pub bytes: u64,
    /// `api:<key name>`, `cli` or `schedule:<name>`.
    pub requested_by: String,
}

/// Whether `id` is a well-formed report ID.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 80 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The report directory of a data directory.
pub fn dir(data: &DataDir) -> std::path::PathBuf {
    data.reports_dir()
}

/// Writes a rendered report and its metadata (temp file + rename, so a listed report is
/// always complete).
pub fn save(
    data: &DataDir,
    r: &Report,
    format: Format,
    body: &str,
    requested_by: &str,
) -> Result<StoredReport, ReportError> {
    let d = dir(data);
    std::fs::create_dir_all(&d)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut id = format!("{stamp}-{}", r.kind.as_str());
    let mut n = 1;
    while d.join(format!("{id}.meta.json")).exists() {
        n += 1;
        id = format!("{stamp}-{}-{n}", r.kind.as_str());
    }
    let meta = StoredReport {
        id: id.clone(),
        kind: r.kind.as_str().into(),
        format: format.extension().into(),
        from: r.from.clone(),
        to: r.to.clone(),
        generated_at: r.generated_at.clone(),
        bytes: body.len() as u64,
        requested_by: requested_by.into(),
    };
    let put = |name: String, bytes: &[u8]| -> std::io::Result<()> {
        let tmp = d.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, d.join(name))
    };
    put(format!("{id}.{}", format.extension()), body.as_bytes())?;
    put(
        format!("{id}.meta.json"),
        &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )?;
    Ok(meta)
}

/// Stored reports, newest first.
pub fn list(data: &DataDir) -> Result<Vec<StoredReport>, ReportError> {
    let d = dir(data);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        let p = e?.path();
        if p.to_string_lossy().ends_with(".meta.json")
            && let Ok(m) = serde_json::from_slice::<StoredReport>(&std::fs::read(&p)?)
        {
            out.push(m);
        }
    }
    out.sort_by(|a, b| b.generated_at.cmp(&a.generated_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// One stored report's metadata and body; `None` for an unknown or malformed ID.
pub fn load(data: &DataDir, id: &str) -> Result<Option<(StoredReport, Vec<u8>)>, ReportError> {
    if !valid_id(id) {
        return Ok(None);
    }
    let d = dir(data);
    let meta: StoredReport = match std::fs::read(d.join(format!("{id}.meta.json"))) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| std::io::Error::other(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let body = std::fs::read(d.join(format!("{id}.{}", meta.format)))?;
    Ok(Some((meta, body)))
}
