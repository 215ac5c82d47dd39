//! Fields derived from raw values: resource ID parts, object coordinates, operation family,
//! principal type. Pure functions, shared by the audit-event and activity-log paths.

use std::borrow::Cow;

/// Parts of an ARM resource ID such as
/// `/SUBSCRIPTIONS/{sub}/RESOURCEGROUPS/{rg}/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{name}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResourceParts {
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    /// `vaults` or `managedhsms` (lower-case) when the ID names a Key Vault resource.
    pub resource_type: Option<String>,
    /// Lower-case vault or HSM name.
    pub vault: Option<String>,
}

/// Splits a resource ID on whole segments, case-insensitively. Values are lower-cased: Azure
/// writes the same IDs upper-case in audit events and mixed-case in the Activity Log, and every
/// join between them is on the lower-case form.
pub fn parse_resource_id(id: &str) -> ResourceParts {
    with_segments(id, resource_parts)
}

/// The lower-case form of a resource ID every table stores. Blanks around segments (an ID
/// re-typed or wrapped by hand: `resourceGroups/ lab-rg /providers`) are dropped.
pub fn resource_id_key(id: &str) -> String {
    if !id.bytes().any(|b| b.is_ascii_whitespace()) {
        return id.to_ascii_lowercase();
    }
    with_segments(id, |segs| {
        let mut out = String::with_capacity(id.len());
        for s in segs {
            out.push('/');
            out.push_str(&s.to_ascii_lowercase());
        }
        out
    })
}

/// Calls `f` with the non-empty `/`-separated segments of `path`, without allocating for the
/// usual short paths (this runs twice per ingested record).
fn with_segments<R>(path: &str, f: impl FnOnce(&[&str]) -> R) -> R {
    const CAP: usize = 24;
    let mut buf = [""; CAP];
    let mut n = 0;
    for seg in path.split('/').map(str::trim).filter(|s| !s.is_empty()) {
        if n == CAP {
            let all: Vec<&str> = path
                .split('/')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            return f(&all);
        }
        buf[n] = seg;
        n += 1;
    }
    f(&buf[..n])
}

fn resource_parts(segs: &[&str]) -> ResourceParts {
    let mut out = ResourceParts::default();
    let mut i = 0;
    while i + 1 < segs.len() {
        let k = segs[i];
        let v = segs[i + 1];
        if k.eq_ignore_ascii_case("subscriptions") && out.subscription_id.is_none() {
            out.subscription_id = Some(v.to_ascii_lowercase());
            i += 2;
        } else if k.eq_ignore_ascii_case("resourcegroups") && out.resource_group.is_none() {
            out.resource_group = Some(v.to_ascii_lowercase());
            i += 2;
        } else if k.eq_ignore_ascii_case("microsoft.keyvault") {
            // PROVIDERS/MICROSOFT.KEYVAULT/{type}/{name}; deletedVaults live under locations/{loc}.
            let t = v.to_ascii_lowercase();
            match t.as_str() {
                "vaults" | "managedhsms" => {
                    out.resource_type = Some(t);
                    out.vault = segs.get(i + 2).map(|s| s.to_ascii_lowercase());
                    return out;
                }
                "locations" => {
                    if let (Some(kind), Some(name)) = (segs.get(i + 3), segs.get(i + 4)) {
                        let kind = kind.to_ascii_lowercase();
                        if kind == "deletedvaults" || kind == "deletedmanagedhsms" {
                            out.resource_type = Some(if kind == "deletedvaults" {
                                "vaults".into()
                            } else {
                                "managedhsms".into()
                            });
                            out.vault = Some(name.to_ascii_lowercase());
                        }
                    }
                    return out;
                }
                _ => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Object coordinates taken from `properties.id` or `requestUri`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `secret`, `key`, `certificate`, `vault`, `storage`, `other`.
    pub object_type: Option<&'static str>,
    pub name: Option<String>,
    pub version: Option<String>,
    /// Lower-case vault name from a data-plane host (`{vault}.vault.azure.net`).
    pub host_vault: Option<String>,
}

fn collection_type(seg: &str) -> Option<&'static str> {
    const TYPES: [(&str, &str); 15] = [
        ("secrets", "secret"),
        ("keys", "key"),
        ("certificates", "certificate"),
        ("deletedsecrets", "secret"),
        ("deletedkeys", "key"),
        ("deletedcertificates", "certificate"),
        ("storage", "storage"),
        ("deletedstorage", "storage"),
        ("rbac", "hsm"),
        ("roleassignments", "hsm"),
        ("roledefinitions", "hsm"),
        ("securitydomain", "hsm"),
        ("backup", "hsm"),
        ("restore", "hsm"),
        ("settings", "hsm"),
    ];
    TYPES
        .iter()
        .find(|(name, _)| seg.eq_ignore_ascii_case(name))
        .map(|(_, t)| *t)
}

fn is_version(seg: &str) -> bool {
    seg.len() == 32 && seg.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Parses an object URI. Data-plane URIs look like `https://{vault}.vault.azure.net/secrets/{name}/{version}`
/// (optionally with an action segment after the version for crypto calls); management URIs
/// (`management.azure.com`, `control-*.vaultcore.azure.net`) name the vault itself.
pub fn parse_object_uri(uri: &str) -> ObjectRef {
    let no_query = uri.split(['?', '#']).next().unwrap_or("");
    let rest = match no_query.find("://") {
        Some(p) => &no_query[p + 3..],
        None => no_query,
    };
    let (host, path) = match rest.find('/') {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, ""),
    };
    let host_name = host.split(':').next().unwrap_or("");
    with_segments(path, |segs| object_ref(host_name, segs))
}

fn object_ref(host_name: &str, segs: &[&str]) -> ObjectRef {
    let mut out = ObjectRef::default();
    let starts_ci = |s: &str, prefix: &str| {
        s.len() >= prefix.len()
            && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let management = starts_ci(host_name, "management.")
        || starts_ci(host_name, "control-")
        || segs
            .first()
            .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"));
    if management {
        let rp = resource_parts(segs);
        if rp.vault.is_some() {
            out.object_type = Some("vault");
            out.name = rp.vault;
        }
        return out;
    }
    if let Some(first) = host_name.split('.').next()
        && !first.is_empty()
        && host_name.contains('.')
    {
        out.host_vault = Some(first.to_ascii_lowercase());
    }
    match segs.first() {
        None => {
            if out.host_vault.is_some() {
                out.object_type = Some("vault");
                out.name = out.host_vault.clone();
            }
        }
        Some(c) => match collection_type(c) {
            Some(t) => {
                out.object_type = Some(t);
                if let Some(n) = segs.get(1) {
                    out.name = Some((*n).to_owned());
                }
                if let Some(v) = segs.get(2)
                    && is_version(v)
                {
                    out.version = Some(v.to_ascii_lowercase());
                }
            }
            None => out.object_type = Some("other"),
        },
    }
    out
}

/// Groups an `operationName` into the families of the ingestion reference (§8). Unknown names
/// get `other`: new operations appear over time and must still be stored.
pub fn operation_family(op: &str) -> &'static str {
    match op {
        "Authentication" => return "authentication",
        "VaultGet" | "VaultList" | "VaultGetDeleted" | "VaultListDeleted" => return "vault_read",
        "SecretGet" | "KeyGet" | "CertificateGet" => return "material_read",
        "SecretBackup" | "KeyBackup" | "CertificateBackup" | "BackupCreate" => return "export",
        "CertificateIssuersList"
        | "SecretGetDeleted"
        | "KeyGetDeleted"
        | "CertificateGetDeleted" => return "enumeration",
        "CertificatePolicyGet"
        | "CertificateContactsGet"
        | "CertificateIssuerGet"
        | "CertificatePendingGet"
        | "KeyRotationPolicyGet" => return "metadata_read",
        "KeySign" | "KeyVerify" | "KeyEncrypt" | "KeyDecrypt" | "KeyWrap" | "KeyUnwrap"
        | "KeyRelease" => return "crypto",
        "VaultPut"
        | "VaultPatch"
        | "VaultRecover"
        | "VaultCreate"
        | "KeyRotationPolicySet"
        | "CertificatePolicySet"
        | "CertificatePolicyUpdate"
        | "CertificateContactsSet"
        | "CertificateIssuerSet"
        | "CertificateIssuerUpdate" => return "config_change",
        "VaultDelete"
        | "VaultPurge"
        | "CertificatePendingDelete"
        | "CertificateContactsDelete"
        | "CertificateIssuerDelete" => return "destruction",
        _ => {}
    }
    if op.ends_with("EventGridNotification") {
        return "notification";
    }
    let is_obj = op.starts_with("Secret") || op.starts_with("Key") || op.starts_with("Certificate");
    if is_obj {
        if op.ends_with("List") || op.ends_with("ListVersions") || op.ends_with("ListDeleted") {
            return "enumeration";
        }
        if op.ends_with("Delete") || op.ends_with("Purge") {
            return "destruction";
        }
        for verb in [
            "Set",
            "Update",
            "Restore",
            "Recover",
            "Create",
            "Import",
            "Rotate",
            "RotateIfDue",
            "Enroll",
            "Renew",
            "PendingMerge",
            "PendingUpdate",
        ] {
            if op.ends_with(verb) {
                return "object_write";
            }
        }
    }
    "other"
}

/// `user`, `service_principal`, `managed_identity` or `unknown`, from the token claims.
pub fn principal_type(
    upn: Option<&str>,
    idtyp: Option<&str>,
    appid: Option<&str>,
    mirid: Option<&str>,
    oid: Option<&str>,
) -> &'static str {
    if mirid.is_some() {
        return "managed_identity";
    }
    match idtyp.map(|s| s.to_ascii_lowercase()) {
        Some(t) if t == "user" => return "user",
        Some(t) if t == "app" => return "service_principal",
        _ => {}
    }
    if upn.is_some() {
        return "user";
    }
    if appid.is_some() && oid.is_some() {
        return "service_principal";
    }
    "unknown"
}

/// A caller address as logged, read as an address: `IP:port`, `[IPv6]`, `[IPv6]:port`, a zone
/// suffix, surrounding blanks and IPv4-mapped IPv6 are undone; anything that is not an address
/// (`<Redacted>`, `unknown`, empty) is [`CallerIp::NotAnAddress`].
pub fn caller_ip(text: &str) -> CallerIp {
    use std::net::{IpAddr, Ipv4Addr};
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if let Ok(ip) = text.parse::<IpAddr>() {
        // An IPv4 address that parses is canonical already (no leading zeros are accepted).
        if ip.is_ipv4() {
            return CallerIp::Canonical;
        }
        let s = canonical(ip).to_string();
        return if s == text {
            CallerIp::Canonical
        } else {
            CallerIp::Normalised(s)
        };
    }
    let t = text.trim();
    let inner = if let Some(rest) = t.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || tail.strip_prefix(':').is_some_and(is_port) => {
                v6
            }
            _ => return CallerIp::NotAnAddress,
        }
    } else if let Some((host, port)) = t.rsplit_once(':')
        && is_port(port)
        && host.parse::<Ipv4Addr>().is_ok()
    {
        host
    } else {
        t
    };
    let inner = inner.split_once('%').map_or(inner, |(a, _)| a);
    match inner.parse::<IpAddr>() {
        Ok(ip) => CallerIp::Normalised(canonical(ip).to_string()),
        Err(_) => CallerIp::NotAnAddress,
    }
}

/// What a logged caller address is, read as an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerIp {
    /// Already the address in canonical form (the common case: nothing is allocated).
    Canonical,
    /// An address written another way; here in canonical form.
    Normalised(String),
    NotAnAddress,
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Splits a logged caller address into the column value (a parsed address or null) and the raw
/// text kept beside it when the two differ.
pub fn split_caller_ip<'a>(
    raw: Option<Cow<'a, str>>,
) -> (Option<Cow<'a, str>>, Option<Cow<'a, str>>) {
    let Some(raw) = raw else {
        return (None, None);
    };
    match caller_ip(&raw) {
        CallerIp::Canonical => (Some(raw), None),
        CallerIp::Normalised(ip) => (Some(Cow::Owned(ip)), Some(raw)),
        CallerIp::NotAnAddress => (None, Some(raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_id_upper_case() {
        let p = parse_resource_id(
            "/SUBSCRIPTIONS/AAAA0A0A-BB1B-CC2C-DD3D-EEEEEE4E4E4E/RESOURCEGROUPS/PROD-RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/CONTOSO-PROD-KV",
        );
        assert_eq!(
            p.subscription_id.as_deref(),
            Some("aaaa0a0a-bb1b-cc2c-dd3d-eeeeee4e4e4e")
        );
        assert_eq!(p.resource_group.as_deref(), Some("prod-rg"));
        assert_eq!(p.resource_type.as_deref(), Some("vaults"));
        assert_eq!(p.vault.as_deref(), Some("contoso-prod-kv"));
        let h = parse_resource_id(
            "/subscriptions/s/resourceGroups/r/providers/Microsoft.KeyVault/managedHSMs/hsm1",
        );
        assert_eq!(h.resource_type.as_deref(), Some("managedhsms"));
        assert_eq!(h.vault.as_deref(), Some("hsm1"));
        let d = parse_resource_id(
            "/subscriptions/s/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/gone-kv/purge",
        );
        assert_eq!(d.vault.as_deref(), Some("gone-kv"));
    }

    #[test]
    fn object_uris() {
        let o = parse_object_uri(
            "https://Contoso-Prod-KV.vault.azure.net/secrets/sql-root/d1230f9a8b7c4d6e9f0a1b2c3d4e5f60",
        );
        assert_eq!(o.object_type, Some("secret"));
        assert_eq!(o.name.as_deref(), Some("sql-root"));
        assert_eq!(
            o.version.as_deref(),
            Some("d1230f9a8b7c4d6e9f0a1b2c3d4e5f60")
        );
        assert_eq!(o.host_vault.as_deref(), Some("contoso-prod-kv"));
        let o = parse_object_uri("https://kv.vault.azure.net/secrets/DbPassword/?api-version=7.4");
        assert_eq!(
            (o.object_type, o.name.as_deref(), o.version),
            (Some("secret"), Some("DbPassword"), None)
        );
        let o = parse_object_uri(
            "https://kv.vault.azure.net/keys/k1/0123456789abcdef0123456789abcdef/unwrapkey?api-version=7.4",
        );
        assert_eq!(o.object_type, Some("key"));
        assert!(o.version.is_some());
        let o = parse_object_uri("https://kv.vault.azure.net/certificates?api-version=7.0");
        assert_eq!((o.object_type, o.name), (Some("certificate"), None));
        let o = parse_object_uri("https://contosokeyvault.vault.azure.net/");
        assert_eq!(
            (o.object_type, o.name.as_deref()),
            (Some("vault"), Some("contosokeyvault"))
        );
        let o = parse_object_uri(
            "https://control-prod-wus.vaultcore.azure.net/subscriptions/x/resourcegroups/g/providers/Microsoft.KeyVault/vaults/contosokeyvault?api-version=2015-06-01",
        );
        assert_eq!(
            (o.object_type, o.name.as_deref()),
            (Some("vault"), Some("contosokeyvault"))
        );
    }

    #[test]
    fn families() {
        assert_eq!(operation_family("SecretGet"), "material_read");
        assert_eq!(operation_family("SecretListVersions"), "enumeration");
        assert_eq!(operation_family("KeyPurge"), "destruction");
        assert_eq!(operation_family("KeyRotateIfDue"), "object_write");
        assert_eq!(
            operation_family("SecretNearExpiryEventGridNotification"),
            "notification"
        );
        assert_eq!(operation_family("VaultPatch"), "config_change");
        assert_eq!(operation_family("SomethingNew"), "other");
    }

    #[test]
    fn principal_types() {
        assert_eq!(
            principal_type(Some("a@b"), None, None, None, Some("o")),
            "user"
        );
        assert_eq!(
            principal_type(None, Some("app"), Some("x"), Some("/sub/.."), Some("o")),
            "managed_identity"
        );
        assert_eq!(
            principal_type(None, Some("app"), Some("x"), None, Some("o")),
            "service_principal"
        );
        assert_eq!(principal_type(None, None, None, None, None), "unknown");
    }

    #[test]
    fn caller_addresses_are_read_as_addresses() {
        for (raw, want) in [
            ("203.0.113.5", CallerIp::Canonical),
            (
                "203.0.113.5:51234",
                CallerIp::Normalised("203.0.113.5".into()),
            ),
            (" 203.0.113.5 ", CallerIp::Normalised("203.0.113.5".into())),
            ("2001:db8::1", CallerIp::Canonical),
            (
                "2001:DB8:0:0:0:0:0:1",
                CallerIp::Normalised("2001:db8::1".into()),
            ),
            ("[2001:db8::1]", CallerIp::Normalised("2001:db8::1".into())),
            (
                "[2001:db8::1]:443",
                CallerIp::Normalised("2001:db8::1".into()),
            ),
            ("fe80::1%eth0", CallerIp::Normalised("fe80::1".into())),
            (
                "::ffff:198.51.100.7",
                CallerIp::Normalised("198.51.100.7".into()),
            ),
            ("<Redacted>", CallerIp::NotAnAddress),
            ("unknown", CallerIp::NotAnAddress),
            ("", CallerIp::NotAnAddress),
            ("10.0.0.1:99999999", CallerIp::NotAnAddress),
            ("[2001:db8::1", CallerIp::NotAnAddress),
            ("2001:db8::1:443x", CallerIp::NotAnAddress),
        ] {
            assert_eq!(caller_ip(raw), want, "{raw:?}");
        }
        assert_eq!(
            split_caller_ip(Some(Cow::Borrowed("<Redacted>"))),
            (None, Some(Cow::Borrowed("<Redacted>")))
        );
        assert_eq!(
            split_caller_ip(Some(Cow::Borrowed("1.2.3.4"))),
            (Some(Cow::Borrowed("1.2.3.4")), None)
        );
    }
}
