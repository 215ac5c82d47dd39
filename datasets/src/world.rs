//! The synthetic tenant: vaults, their objects, and the identities that call them.
//!
//! Everything is derived from the seed, so the same seed always builds the same tenant.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A deterministic RNG for one named stream of the generator.
pub fn rng_for(seed: u64, stream: &str, n: u64) -> ChaCha8Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in stream.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= n.wrapping_mul(0xff51_afd7_ed55_8ccd);
    ChaCha8Rng::seed_from_u64(h)
}

/// A random version-4 style GUID.
pub fn guid(rng: &mut impl Rng) -> String {
    let v: u128 = rng.random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// 32 lower-case hex characters (object versions, assignment IDs).
pub fn hex32(rng: &mut impl Rng) -> String {
    let v: u128 = rng.random();
    format!("{v:032x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjKind {
    Secret,
    Key,
    Certificate,
}

impl ObjKind {
    pub fn collection(self) -> &'static str {
        match self {
            ObjKind::Secret => "secrets",
            ObjKind::Key => "keys",
            ObjKind::Certificate => "certificates",
        }
    }
    pub fn prefix(self) -> &'static str {
        match self {
            ObjKind::Secret => "Secret",
            ObjKind::Key => "Key",
            ObjKind::Certificate => "Certificate",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Object {
    pub kind: ObjKind,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct Vault {
    /// Lower-case name as it appears in data-plane hosts.
    pub name: String,
    pub resource_group: String,
    pub subscription: String,
    pub rbac: bool,
    pub prod: bool,
    pub objects: Vec<Object>,
    pub region: &'static str,
}

impl Vault {
    pub fn resource_id(&self) -> String {
        format!(
            "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/{}/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{}",
            self.subscription.to_uppercase(),
            self.resource_group.to_uppercase(),
            self.name.to_uppercase()
        )
    }
    pub fn arm_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}",
            self.subscription, self.resource_group, self.name
        )
    }
    pub fn host(&self) -> String {
        format!("https://{}.vault.azure.net", self.name)
    }
    pub fn objects_of(&self, kind: ObjKind) -> Vec<usize> {
        (0..self.objects.len())
            .filter(|i| self.objects[*i].kind == kind)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    ServicePrincipal,
    ManagedIdentity,
}

/// How a caller's token claims are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStyle {
    Short,
    Long,
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub label: String,
    pub kind: IdKind,
    pub oid: String,
    pub upn: Option<String>,
    pub appid: String,
    pub mirid: Option<String>,
    /// Addresses the identity normally calls from.
    pub ips: Vec<String>,
    pub user_agent: String,
}

pub const AZURE_CLI_APPID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
pub const PORTAL_APPID: &str = "c44b4083-3bb0-49c1-b47d-974e53cbdf3c";
pub const RESOURCE_GRAPH_APPID: &str = "509e4652-da8d-478d-a730-e9d4a1996ca4";
pub const POLICY_APPID: &str = "8cae6e77-e04e-42ce-b5cb-50d82bce26b1";
pub const TENANT_ID: &str = "72f988bf-0000-4000-8000-2d7cd011db47";

/// Vault templates of one scale unit: (name, resource group, rbac, prod, secrets, keys, certificates).
const VAULTS: &[(&str, &str, bool, bool, usize, usize, usize)] = &[
    ("contoso-prod-kv", "prod-rg", true, true, 24, 2, 3),
    ("contoso-dev-kv", "dev-rg", false, false, 30, 3, 2),
    ("payments-prod-kv", "payments-rg", false, true, 40, 4, 2),
    ("shared-cmk-kv", "platform-rg", true, true, 2, 6, 0),
    ("platform-certs-kv", "platform-rg", true, true, 4, 0, 12),
];

const SECRET_WORDS: &[&str] = &[
    "sql",
    "redis",
    "storage",
    "servicebus",
    "cosmos",
    "api",
    "jwt",
    "smtp",
    "stripe",
    "github",
    "datadog",
    "sendgrid",
    "oauth",
    "webhook",
    "ldap",
    "vpn",
];
const SECRET_SUFFIX: &[&str] = &[
    "password",
    "connection-string",
    "key",
    "token",
    "secret",
    "client-secret",
];

/// The tenant at a given scale: `scale` copies of the vault set, each with its own workloads.
#[derive(Debug, Clone)]
pub struct World {
    pub vaults: Vec<Vault>,
    pub subscriptions: Vec<String>,
    pub scale: u32,
}

impl World {
    pub fn build(seed: u64, scale: u32) -> World {
        let mut rng = rng_for(seed, "world", 0);
        let scale = scale.max(1);
        let mut vaults = Vec::new();
        let mut subscriptions = Vec::new();
        for unit in 0..scale {
            let sub = guid(&mut rng);
            subscriptions.push(sub.clone());
            for (name, rg, rbac, prod, ns, nk, nc) in VAULTS {
                let name = if unit == 0 {
                    (*name).to_owned()
                } else {
                    format!("{name}-{unit}")
                };
                let mut objects = Vec::new();
                let mut used = std::collections::BTreeSet::new();
                while objects.len() < *ns {
                    let n = format!(
                        "{}-{}",
                        SECRET_WORDS[rng.random_range(0..SECRET_WORDS.len())],
                        SECRET_SUFFIX[rng.random_range(0..SECRET_SUFFIX.len())]
                    );
                    if used.insert(n.clone()) {
                        objects.push(Object {
                            kind: ObjKind::Secret,
                            name: n,
                            version: hex32(&mut rng),
                        });
                    }
                }
                for i in 0..*nk {
                    objects.push(Object {
                        kind: ObjKind::Key,
                        name: format!("{}-key-{i}", if *nk > 4 { "cmk" } else { "signing" }),
                        version: hex32(&mut rng),
                    });
                }
                for i in 0..*nc {
                    objects.push(Object {
                        kind: ObjKind::Certificate,
                        name: format!("tls-{}-{i}", name.split('-').next().unwrap_or("app")),
                        version: hex32(&mut rng),
                    });
                }
                vaults.push(Vault {
                    name,
                    resource_group: (*rg).to_owned(),
                    subscription: sub.clone(),
                    rbac: *rbac,
                    prod: *prod,
                    objects,
                    region: ["westeurope", "eastus", "northeurope"][unit as usize % 3],
                });
            }
        }
        // One low-volume vault per unit that people use only in office hours (HR's): no
        // workload polls it and no sweep reads it, so it is quiet every night and weekend.
        // Built from its own RNG stream, after every other vault, so adding it left the rest
        // of the world as it was.
        for unit in 0..scale {
            let mut rng = rng_for(seed, "office-vault", unit as u64);
            let name = if unit == 0 {
                "hr-records-kv".to_owned()
            } else {
                format!("hr-records-kv-{unit}")
            };
            let objects = ["payroll-db-password", "hris-api-token", "benefits-sftp-key"]
                .iter()
                .map(|n| Object {
                    kind: ObjKind::Secret,
                    name: (*n).to_owned(),
                    version: hex32(&mut rng),
                })
                .collect();
            vaults.push(Vault {
                name,
                resource_group: "hr-rg".into(),
                subscription: subscriptions[unit as usize].clone(),
                rbac: true,
                prod: true,
                objects,
                region: ["westeurope", "eastus", "northeurope"][unit as usize % 3],
            });
        }
        World {
            vaults,
            subscriptions,
            scale,
        }
    }

    /// Index of unit `unit`'s office-hours vault.
    pub fn office_vault(&self, unit: u32) -> usize {
        self.scale as usize * VAULTS.len() + unit as usize
    }

    /// Index of the vault `template` (0..5) in scale unit `unit`.
    pub fn vault(&self, unit: u32, template: usize) -> usize {
        unit as usize * VAULTS.len() + template
    }

    pub fn templates() -> usize {
        VAULTS.len()
    }
}

pub const V_PROD: usize = 0;
pub const V_DEV: usize = 1;
pub const V_PAY: usize = 2;
pub const V_CMK: usize = 3;
pub const V_CERTS: usize = 4;

/// An Azure data-centre address (managed identities, services).
pub fn azure_ip(rng: &mut impl Rng) -> String {
    let prefixes = [(20, 50), (20, 103), (52, 174), (40, 74), (13, 69)];
    let (a, b) = prefixes[rng.random_range(0..prefixes.len())];
    format!(
        "{a}.{b}.{}.{}",
        rng.random_range(0..256),
        rng.random_range(1..255)
    )
}

/// An office egress address.
pub fn office_ip(rng: &mut impl Rng) -> String {
    format!("203.0.113.{}", rng.random_range(10..40))
}

/// An address on the internet that no benign workload uses.
pub fn outside_ip(rng: &mut impl Rng) -> String {
    let prefixes = [
        "185.220.101",
        "45.155.205",
        "91.219.236",
        "193.142.146",
        "80.94.95",
    ];
    format!(
        "{}.{}",
        prefixes[rng.random_range(0..prefixes.len())],
        rng.random_range(2..250)
    )
}
