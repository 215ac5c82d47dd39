//! Benign personas, each with its own rhythm. Every persona generates one hour at a time from
//! an RNG seeded by (seed, persona, hour), so output is deterministic and memory stays flat
//! however long the period.

use crate::render::{Caller, Ev, vault_state};
use crate::world::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub const HOUR_NS: i64 = 3_600_000_000_000;
pub const MIN_NS: i64 = 60_000_000_000;

/// The hour being generated.
#[derive(Debug, Clone, Copy)]
pub struct Hour {
    pub start_ns: i64,
    /// Index of the day in the period (0-based).
    pub day: u32,
    pub hour: u32,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u32,
}

impl Hour {
    pub fn business(&self) -> bool {
        self.weekday < 5 && (8..18).contains(&self.hour)
    }
}

/// The identities of one scale unit.
#[derive(Debug, Clone)]
pub struct Cast {
    pub unit: u32,
    pub web_apps: Vec<(Identity, usize, Vec<usize>)>,
    pub csi: (Identity, usize, Vec<usize>),
    pub cmk: Vec<(Identity, usize)>,
    pub cicd: Identity,
    pub admins: Vec<Identity>,
    pub devs: Vec<Identity>,
    pub misconfigured: (Identity, usize),
    pub graph: Identity,
    pub policy: Identity,
    pub new_worker: (Identity, usize, Vec<usize>),
}

fn mi(rng: &mut ChaCha8Rng, label: &str, sub: &str, rg: &str, site: &str) -> Identity {
    let host = if site.starts_with("aks") {
        format!(
            "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{site}"
        )
    } else {
        format!("/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.Web/sites/{site}")
    };
    Identity {
        label: label.to_owned(),
        kind: IdKind::ManagedIdentity,
        oid: guid(rng),
        upn: None,
        appid: guid(rng),
        mirid: Some(host),
        ips: (0..3).map(|_| azure_ip(rng)).collect(),
        user_agent: [
            "azsdk-net-Security.KeyVault.Secrets/4.6.0 (.NET 8.0.4; Linux)",
            "azsdk-python-keyvault-secrets/4.8.0 Python/3.11.9 (Linux-5.15.0-azure-x86_64)",
            "azsdk-java-azure-security-keyvault-secrets/4.8.2 (17.0.10; Linux)",
        ][rng.random_range(0..3)]
        .to_owned(),
    }
}

fn user(rng: &mut ChaCha8Rng, name: &str, unit: u32, ua: &str) -> Identity {
    let upn = if unit == 0 {
        format!("{name}@contoso.com")
    } else {
        format!("{name}{unit}@contoso.com")
    };
    Identity {
        label: upn.clone(),
        kind: IdKind::User,
        oid: guid(rng),
        upn: Some(upn),
        appid: AZURE_CLI_APPID.to_owned(),
        mirid: None,
        ips: (0..2).map(|_| office_ip(rng)).collect(),
        user_agent: ua.to_owned(),
    }
}

fn sp(rng: &mut ChaCha8Rng, label: &str, appid: Option<&str>, ua: &str) -> Identity {
    Identity {
        label: label.to_owned(),
        kind: IdKind::ServicePrincipal,
        oid: guid(rng),
        upn: None,
        appid: appid.map(str::to_owned).unwrap_or_else(|| guid(rng)),
        mirid: None,
        ips: (0..2).map(|_| azure_ip(rng)).collect(),
        user_agent: ua.to_owned(),
    }
}

impl Cast {
    pub fn build(seed: u64, world: &World, unit: u32) -> Cast {
        let mut rng = rng_for(seed, "cast", unit as u64);
        let sub = world.subscriptions[unit as usize].clone();
        let v = |t| world.vault(unit, t);
        let secrets = |vi: usize, rng: &mut ChaCha8Rng, n: usize| -> Vec<usize> {
            let all = world.vaults[vi].objects_of(ObjKind::Secret);
            let start = rng.random_range(0..all.len());
            (0..n.min(all.len()))
                .map(|i| all[(start + i) % all.len()])
                .collect()
        };
        let web_apps = vec![
            (
                mi(&mut rng, "contoso-api", &sub, "web-rg", "contoso-api"),
                v(V_PROD),
                secrets(v(V_PROD), &mut rng, 4),
            ),
            (
                mi(&mut rng, "contoso-web", &sub, "web-rg", "contoso-web"),
                v(V_PROD),
                secrets(v(V_PROD), &mut rng, 3),
            ),
            (
                mi(
                    &mut rng,
                    "payments-api",
                    &sub,
                    "payments-rg",
                    "payments-api",
                ),
                v(V_PAY),
                secrets(v(V_PAY), &mut rng, 5),
            ),
            (
                mi(&mut rng, "dev-api", &sub, "dev-rg", "dev-api"),
                v(V_DEV),
                secrets(v(V_DEV), &mut rng, 3),
            ),
        ];
        let mut csi_objs = secrets(v(V_PROD), &mut rng, 4);
        csi_objs.extend(
            world.vaults[v(V_PROD)]
                .objects_of(ObjKind::Certificate)
                .into_iter()
                .take(1),
        );
        let csi = (
            mi(
                &mut rng,
                "aks-csi-driver",
                &sub,
                "aks-rg",
                "aks-csi-secrets-provider",
            ),
            v(V_PROD),
            csi_objs,
        );
        let cmk = vec![
            (
                mi(&mut rng, "storage-cmk", &sub, "data-rg", "st-contoso-data"),
                v(V_CMK),
            ),
            (
                mi(&mut rng, "sql-tde", &sub, "data-rg", "sql-contoso"),
                v(V_CMK),
            ),
        ];
        let cicd = sp(
            &mut rng,
            "github-deploy",
            None,
            "azsdk-js-keyvault-secrets/4.8.0 core-rest-pipeline/1.16.0 Node/v20.12.2 OS/(x64-Linux-6.5.0-1021-azure)",
        );
        let admins = vec![
            user(
                &mut rng,
                "alice.admin",
                unit,
                "AZURECLI/2.61.0 (DEB) azsdk-python-core/1.28.0 Python/3.11.8 (Linux-6.8.0-1008-azure-x86_64-with-glibc2.36)",
            ),
            user(
                &mut rng,
                "bob.ops",
                unit,
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0",
            ),
        ];
        let devs = vec![
            user(
                &mut rng,
                "carol.dev",
                unit,
                "AZURECLI/2.60.0 (HOMEBREW) azsdk-python-core/1.28.0 Python/3.11.9 (macOS-14.5-arm64-arm-64bit)",
            ),
            user(
                &mut rng,
                "dave.dev",
                unit,
                "azsdk-net-Security.KeyVault.Secrets/4.6.0 (.NET 8.0.4; Microsoft Windows 10.0.22631)",
            ),
            user(
                &mut rng,
                "erin.dev",
                unit,
                "azsdk-python-keyvault-secrets/4.8.0 Python/3.12.3 (Windows-11-10.0.22631-SP0)",
            ),
        ];
        let misconfigured = (
            sp(&mut rng, "legacy-batch", None, "python-requests/2.31.0"),
            v(V_PAY),
        );
        let graph = sp(
            &mut rng,
            "azure-resource-graph",
            Some(RESOURCE_GRAPH_APPID),
            "azure-resource-manager/2.0",
        );
        let policy = sp(
            &mut rng,
            "policy-insights",
            Some(POLICY_APPID),
            "PolicyScan-GF",
        );
        let new_worker = (
            mi(&mut rng, "contoso-worker", &sub, "web-rg", "contoso-worker"),
            v(V_PROD),
            secrets(v(V_PROD), &mut rng, 2),
        );
        Cast {
            unit,
            web_apps,
            csi,
            cmk,
            cicd,
            admins,
            devs,
            misconfigured,
            graph,
            policy,
            new_worker,
        }
    }

    /// Every identity of the unit, for attacks that borrow one.
    pub fn all(&self) -> Vec<&Identity> {
        let mut v: Vec<&Identity> = self.web_apps.iter().map(|w| &w.0).collect();
        v.push(&self.csi.0);
        v.extend(self.cmk.iter().map(|c| &c.0));
        v.push(&self.cicd);
        v.extend(self.admins.iter());
        v.extend(self.devs.iter());
        v
    }
}

/// Builds an event with the usual defaults.
#[allow(clippy::too_many_arguments)]
pub fn ev(
    rng: &mut ChaCha8Rng,
    time_ns: i64,
    vault: usize,
    op: &'static str,
    object: Option<(ObjKind, String, Option<String>)>,
    status: u16,
    caller: Caller,
    ip: String,
) -> Ev {
    let fast = op.starts_with("Key") && (op.ends_with("Wrap") || op.ends_with("Unwrap"));
    Ev {
        time_ns,
        vault,
        op,
        object,
        status,
        caller,
        ip,
        correlation: if rng.random_bool(0.7) {
            guid(rng)
        } else {
            String::new()
        },
        duration_ms: if fast {
            rng.random_range(1..8)
        } else {
            rng.random_range(4..120)
        },
        tls: if rng.random_bool(0.7) {
            "TLS1_2"
        } else {
            "TLS1_3"
        },
        config: None,
        action: None,
    }
}

fn obj(world: &World, vault: usize, idx: usize) -> (ObjKind, String, Option<String>) {
    let o = &world.vaults[vault].objects[idx];
    (o.kind, o.name.clone(), Some(o.version.clone()))
}

fn get_op(kind: ObjKind) -> &'static str {
    match kind {
        ObjKind::Secret => "SecretGet",
        ObjKind::Key => "KeyGet",
        ObjKind::Certificate => "CertificateGet",
    }
}

/// An `Authentication` 401 challenge preceding a client's first call.
fn challenge(rng: &mut ChaCha8Rng, t: i64, vault: usize, ua: &str, ip: &str) -> Ev {
    let before = t - rng.random_range(5..80) * 1_000_000;
    let mut e = ev(
        rng,
        before,
        vault,
        "Authentication",
        None,
        401,
        Caller::anonymous(ua),
        ip.to_owned(),
    );
    e.correlation = String::new();
    e
}

/// A workload polling a fixed set of objects every `period_s` seconds around the clock.
#[allow(clippy::too_many_arguments)] // private helper; the arguments are the persona's rhythm
fn poller(
    out: &mut Vec<Ev>,
    rng: &mut ChaCha8Rng,
    world: &World,
    h: &Hour,
    id: &Identity,
    vault: usize,
    objects: &[usize],
    period_s: i64,
) {
    // A workload's instances share the platform's outbound addresses: each poll leaves from
    // any of them.
    let mut t = h.start_ns + rng.random_range(0..period_s) * 1_000_000_000;
    let mut first = true;
    while t < h.start_ns + HOUR_NS {
        let ip = id.ips[rng.random_range(0..id.ips.len())].clone();
        if first {
            out.push(challenge(rng, t, vault, &id.user_agent, &ip));
            first = false;
        }
        for (k, &o) in objects.iter().enumerate() {
            let (kind, name, ver) = obj(world, vault, o);
            let at = t + k as i64 * rng.random_range(2..40) * 1_000_000;
            out.push(ev(
                rng,
                at,
                vault,
                get_op(kind),
                Some((kind, name, ver)),
                200,
                Caller::of(id),
                ip.clone(),
            ));
        }
        t += (period_s + rng.random_range(-20..20)) * 1_000_000_000;
    }
}

/// The office-hours vault: two HR staff, who use no other vault, read a few secrets in working
/// hours (09:00–17:00 on weekdays), 2–5 records an hour between them, and nothing else ever
/// touches it. From RNG streams of its own, so the rest of the traffic is as it was before the
/// vault existed.
fn office_hours(out: &mut Vec<Ev>, seed: u64, world: &World, cast: &Cast, h: &Hour) {
    if h.weekday >= 5 || !(9..17).contains(&h.hour) {
        return;
    }
    let mut srng = rng_for(seed, &format!("office-staff-{}", cast.unit), 0);
    let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/125.0.0.0 Safari/537.36 Edg/125.0.0.0";
    let staff = [
        user(&mut srng, "hana.hr", cast.unit, ua),
        user(&mut srng, "omar.hr", cast.unit, ua),
    ];
    let n = h.day as u64 * 24 + h.hour as u64;
    let mut rng = rng_for(seed, &format!("office-{}", cast.unit), n);
    let rng = &mut rng;
    let vault = world.office_vault(cast.unit);
    for _ in 0..rng.random_range(2..6) {
        let person = &staff[rng.random_range(0..staff.len())];
        let t = h.start_ns + rng.random_range(0..HOUR_NS);
        let idx = rng.random_range(0..world.vaults[vault].objects.len());
        out.push(ev(
            rng,
            t,
            vault,
            "SecretGet",
            Some(obj(world, vault, idx)),
            200,
            Caller::of(person),
            person.ips[0].clone(),
        ));
    }
}

/// Honest novelty, the benign side of the careful attacks (each from RNG streams of its own,
/// so the rest of the traffic is unchanged), from the middle of the period on:
/// - a new developer joins and works like the others;
/// - a developer is granted access to the payments vault by an admin (the approval trail)
///   and from then on reads a few of its secrets in office hours;
/// - the deployment pipeline adds a new secret in its nightly run and reads it back, and a
///   web app starts reading it;
/// - the on-call engineer works one night from home, reading a few production secrets.
fn newcomers(out: &mut Vec<Ev>, seed: u64, world: &World, cast: &Cast, h: &Hour, days: u32) {
    let from = (days / 2).max(1);
    if days < 3 || h.day < from {
        return;
    }
    let unit = cast.unit;
    let n = h.day as u64 * 24 + h.hour as u64;
    let mut rng = rng_for(seed, &format!("newcomers-{unit}"), n);
    let rng = &mut rng;
    let mut ids = rng_for(seed, &format!("newcomer-ids-{unit}"), 0);
    let joiner = user(
        &mut ids,
        "frank.dev",
        unit,
        "AZURECLI/2.61.0 (MSI) azsdk-python-core/1.28.0 Python/3.11.8 (Windows-11-10.0.22631-SP0)",
    );
    let home_ip = format!("198.51.100.{}", ids.random_range(10..250));
    let first_business = h.business() && h.hour >= 11;
    if h.business() && rng.random_bool(0.5) {
        let vault = world.vault(unit, if rng.random_bool(0.85) { V_DEV } else { V_PROD });
        session(out, rng, world, h, &joiner, vault, false);
    }
    // The grant, on the first day at 10:00, by the first admin from the office.
    let pay = world.vault(unit, V_PAY);
    let grantee = &cast.devs[2];
    let admin = &cast.admins[0];
    if h.day == from && h.hour == 10 {
        let mut c = Caller::of(admin);
        c.style = ClaimStyle::Long;
        c.user_agent = "azure-resource-manager/2.0".into();
        let t = h.start_ns + rng.random_range(0..20) * MIN_NS;
        let mut e = ev(
            rng,
            t,
            pay,
            "VaultPatch",
            None,
            200,
            c,
            admin.ips[0].clone(),
        );
        e.config = Some(serde_json::json!({
            "addedAccessPolicy": crate::render::policy(&grantee.oid, &["get", "list"], &[], &[]),
            "properties": vault_state(false, true, 90, true, Some("Deny")),
        }));
        out.push(e);
    }
    if (h.day > from || first_business) && h.business() && rng.random_bool(0.3) {
        let secrets = world.vaults[pay].objects_of(ObjKind::Secret);
        let mut t = h.start_ns + rng.random_range(0..45) * MIN_NS;
        for _ in 0..rng.random_range(1..3) {
            let o = secrets[rng.random_range(0..secrets.len())];
            out.push(ev(
                rng,
                t,
                pay,
                "SecretGet",
                Some(obj(world, pay, o)),
                200,
                Caller::of(grantee),
                grantee.ips[0].clone(),
            ));
            t += rng.random_range(10..300) * 1_000_000_000;
        }
    }
    // The new secret: created and read back in the nightly run, then read by a web app.
    let prod = world.vault(unit, V_PROD);
    let secret = (
        ObjKind::Secret,
        "release-signing-secret".to_owned(),
        Some(format!("{:032x}", seed ^ 0x5eed)),
    );
    let run_hour = (from * 24 + 2) as i64;
    let rel = (h.day * 24 + h.hour) as i64;
    if rel == run_hour {
        let t = h.start_ns + 40 * MIN_NS;
        let ip = cast.cicd.ips[0].clone();
        for (dt, op) in [(0, "SecretSet"), (3, "SecretGet")] {
            out.push(ev(
                rng,
                t + dt * 1_000_000_000,
                prod,
                op,
                Some(secret.clone()),
                200,
                Caller::of(&cast.cicd),
                ip.clone(),
            ));
        }
    }
    if rel > run_hour {
        let (app, _, _) = &cast.web_apps[0];
        let t = h.start_ns + rng.random_range(0..HOUR_NS);
        let ip = app.ips[rng.random_range(0..app.ips.len())].clone();
        out.push(ev(
            rng,
            t,
            prod,
            "SecretGet",
            Some(secret.clone()),
            200,
            Caller::of(app),
            ip,
        ));
    }
    // On call: one night, from home.
    if h.day == from + 1 && (1..3).contains(&h.hour) {
        let bob = &cast.admins[1];
        let mut t = h.start_ns + rng.random_range(0..30) * MIN_NS;
        let secrets = world.vaults[prod].objects_of(ObjKind::Secret);
        for _ in 0..rng.random_range(2..4) {
            let o = secrets[rng.random_range(0..secrets.len())];
            out.push(ev(
                rng,
                t,
                prod,
                "SecretGet",
                Some(obj(world, prod, o)),
                200,
                Caller::of(bob),
                home_ip.clone(),
            ));
            t += rng.random_range(30..600) * 1_000_000_000;
        }
    }
}

/// Generates the benign traffic of one scale unit for one hour.
pub fn hour(out: &mut Vec<Ev>, seed: u64, world: &World, cast: &Cast, h: &Hour, days: u32) {
    office_hours(out, seed, world, cast, h);
    newcomers(out, seed, world, cast, h, days);
    let n = h.day as u64 * 24 + h.hour as u64;
    let mut rng = rng_for(seed, &format!("benign-{}", cast.unit), n);
    let rng = &mut rng;

    for (id, vault, objs) in &cast.web_apps {
        poller(out, rng, world, h, id, *vault, objs, 300);
    }
    poller(out, rng, world, h, &cast.csi.0, cast.csi.1, &cast.csi.2, 60);
    // A new deployment appears mid-period: its identity is new to the vault (benign first-seen).
    if days >= 4 && h.day > days / 2 {
        poller(
            out,
            rng,
            world,
            h,
            &cast.new_worker.0,
            cast.new_worker.1,
            &cast.new_worker.2,
            600,
        );
    }

    // Customer-managed keys: storage and SQL unwrap their data keys at a steady high rate.
    for (id, vault) in &cast.cmk {
        let keys = world.vaults[*vault].objects_of(ObjKind::Key);
        let key = keys[(id.oid.len() + id.label.len()) % keys.len()];
        let per_hour = rng.random_range(70..110);
        let ip = id.ips[0].clone();
        for _ in 0..per_hour {
            let t = h.start_ns + rng.random_range(0..HOUR_NS);
            let op = if rng.random_bool(0.9) {
                "KeyUnwrap"
            } else {
                "KeyWrap"
            };
            let mut e = ev(
                rng,
                t,
                *vault,
                op,
                Some(obj(world, *vault, key)),
                200,
                Caller::of(id),
                ip.clone(),
            );
            e.action = Some(if op == "KeyUnwrap" {
                "unwrapkey"
            } else {
                "wrapkey"
            });
            out.push(e);
        }
        if rng.random_bool(0.2) {
            let t = h.start_ns + rng.random_range(0..HOUR_NS);
            out.push(ev(
                rng,
                t,
                *vault,
                "KeyGet",
                Some(obj(world, *vault, key)),
                200,
                Caller::of(id),
                ip,
            ));
        }
    }

    // CI/CD: nightly deployment on weekdays at 02:00, reading every app secret of the prod vaults.
    if h.weekday < 5 && h.hour == 2 {
        let id = &cast.cicd;
        let ip = id.ips[0].clone();
        let mut t = h.start_ns + rng.random_range(5..20) * MIN_NS;
        for vt in [V_PROD, V_PAY] {
            let vault = world.vault(cast.unit, vt);
            out.push(challenge(rng, t, vault, &id.user_agent, &ip));
            out.push(ev(
                rng,
                t,
                vault,
                "SecretList",
                Some((ObjKind::Secret, String::new(), None)),
                200,
                Caller::of(id),
                ip.clone(),
            ));
            let secrets = world.vaults[vault].objects_of(ObjKind::Secret);
            for &s in secrets.iter().take(8) {
                t += rng.random_range(200..2000) * 1_000_000;
                out.push(ev(
                    rng,
                    t,
                    vault,
                    "SecretGet",
                    Some(obj(world, vault, s)),
                    200,
                    Caller::of(id),
                    ip.clone(),
                ));
            }
            t += rng.random_range(1..3) * MIN_NS;
        }
        // Weekly rotation of one secret on Wednesdays.
        if h.weekday == 2 {
            let vault = world.vault(cast.unit, V_PROD);
            let secrets = world.vaults[vault].objects_of(ObjKind::Secret);
            let s = secrets[(h.day as usize) % secrets.len()];
            let (kind, name, _) = obj(world, vault, s);
            let version = hex32(rng);
            out.push(ev(
                rng,
                t + MIN_NS,
                vault,
                "SecretSet",
                Some((kind, name, Some(version))),
                200,
                Caller::of(id),
                ip,
            ));
        }
    }

    // People: weekdays in office hours, from office addresses.
    if h.business() {
        for (i, person) in cast.admins.iter().chain(cast.devs.iter()).enumerate() {
            // dave.dev is on holiday for three days mid-period.
            if i == 3 && (2..5).contains(&h.day) {
                continue;
            }
            if !rng.random_bool(0.55) {
                continue;
            }
            let admin = i < 2;
            let vault = if admin {
                world.vault(
                    cast.unit,
                    [V_PROD, V_PAY, V_CERTS, V_DEV][rng.random_range(0..4)],
                )
            } else {
                world.vault(
                    cast.unit,
                    if rng.random_bool(0.85) { V_DEV } else { V_PROD },
                )
            };
            session(out, rng, world, h, person, vault, admin && i == 1);
        }
    }

    // Azure Resource Graph indexes every vault every 6 hours (ARM-proxied, long claim names);
    // Azure Policy scans daily.
    if h.hour % 6 == 3 {
        let mut c = Caller::of(&cast.graph);
        c.style = ClaimStyle::Long;
        sweep(out, rng, world, cast.unit, h, &c, &cast.graph.ips[0]);
    }
    if h.hour == 5 {
        sweep(
            out,
            rng,
            world,
            cast.unit,
            h,
            &Caller::of(&cast.policy),
            &cast.policy.ips[0],
        );
    }

    // A misconfigured batch job keeps failing to read a secret it was never granted.
    {
        let (id, vault) = &cast.misconfigured;
        let s = world.vaults[*vault].objects_of(ObjKind::Secret)[0];
        let (kind, name, _) = obj(world, *vault, s);
        let mut t = h.start_ns + rng.random_range(0..600) * 1_000_000_000;
        while t < h.start_ns + HOUR_NS {
            out.push(challenge(rng, t, *vault, &id.user_agent, &id.ips[0]));
            out.push(ev(
                rng,
                t,
                *vault,
                "SecretGet",
                Some((kind, name.clone(), None)),
                403,
                Caller::of(id),
                id.ips[0].clone(),
            ));
            t += rng.random_range(540..660) * 1_000_000_000;
        }
    }

    // Event Grid expiry notifications, daily just after midnight.
    if h.hour == 0 {
        let certs = world.vault(cast.unit, V_CERTS);
        let cert = world.vaults[certs]
            .objects_of(ObjKind::Certificate)
            .first()
            .copied();
        let dev = world.vault(cast.unit, V_DEV);
        let secret = world.vaults[dev]
            .objects_of(ObjKind::Secret)
            .get(1)
            .copied();
        for (vault, object, op) in [
            (certs, cert, "CertificateNearExpiryEventGridNotification"),
            (dev, secret, "SecretNearExpiryEventGridNotification"),
        ] {
            let Some(o) = object else { continue };
            let at = h.start_ns + rng.random_range(1..10) * MIN_NS;
            let caller = Caller::anonymous("Microsoft.EventGrid");
            let mut e = ev(
                rng,
                at,
                vault,
                op,
                Some(obj(world, vault, o)),
                200,
                caller,
                "127.0.0.1".into(),
            );
            e.correlation = String::new();
            out.push(e);
        }
    }

    // The vaults' configuration as of the start of the period: an admin's routine tag update
    // through the portal (no setting changes), which seeds the per-vault state table.
    if h.day == 0 && h.hour == 9 {
        let admin = &cast.admins[1];
        for t in 0..World::templates() {
            let vault = world.vault(cast.unit, t);
            let v = &world.vaults[vault];
            let at =
                h.start_ns + (10 + t as i64) * MIN_NS + rng.random_range(0..50_000) * 1_000_000;
            let mut c = Caller::of(admin);
            c.style = ClaimStyle::Long;
            c.appid = Some(PORTAL_APPID.to_owned());
            c.user_agent = "azure-resource-manager/2.0".into();
            let mut e = ev(
                rng,
                at,
                vault,
                "VaultPut",
                None,
                200,
                c,
                admin.ips[0].clone(),
            );
            e.config = Some(serde_json::json!({
                "properties": vault_state(v.rbac, true, 90, v.prod, Some("Deny"))
            }));
            out.push(e);
        }
    }
}

/// A `VaultGet` of every vault of a scale unit within the hour's first 50 minutes.
fn sweep(
    out: &mut Vec<Ev>,
    rng: &mut ChaCha8Rng,
    world: &World,
    unit: u32,
    h: &Hour,
    caller: &Caller,
    ip: &str,
) {
    for t in 0..World::templates() {
        let vault = world.vault(unit, t);
        let at = h.start_ns + rng.random_range(0..50) * MIN_NS;
        out.push(ev(
            rng,
            at,
            vault,
            "VaultGet",
            None,
            200,
            caller.clone(),
            ip.to_owned(),
        ));
    }
}

/// An interactive session: list, read a few items, now and then update a secret.
fn session(
    out: &mut Vec<Ev>,
    rng: &mut ChaCha8Rng,
    world: &World,
    h: &Hour,
    person: &Identity,
    vault: usize,
    portal: bool,
) {
    let ip = person.ips[rng.random_range(0..person.ips.len())].clone();
    let mut t = h.start_ns + rng.random_range(0..45) * MIN_NS;
    let mut caller = Caller::of(person);
    if portal {
        caller.appid = Some(PORTAL_APPID.to_owned());
    }
    out.push(challenge(rng, t, vault, &caller.user_agent, &ip));
    if portal {
        let mut mgmt = caller.clone();
        mgmt.style = ClaimStyle::Long;
        mgmt.user_agent = "azure-resource-manager/2.0".into();
        out.push(ev(rng, t, vault, "VaultGet", None, 200, mgmt, ip.clone()));
        t += rng.random_range(2..20) * 1_000_000_000;
    }
    let kinds = [
        ObjKind::Secret,
        ObjKind::Secret,
        ObjKind::Certificate,
        ObjKind::Key,
    ];
    let kind = kinds[rng.random_range(0..kinds.len())];
    let objs = world.vaults[vault].objects_of(kind);
    if objs.is_empty() {
        return;
    }
    let list_op = match kind {
        ObjKind::Secret => "SecretList",
        ObjKind::Key => "KeyList",
        ObjKind::Certificate => "CertificateList",
    };
    out.push(ev(
        rng,
        t,
        vault,
        list_op,
        Some((kind, String::new(), None)),
        200,
        caller.clone(),
        ip.clone(),
    ));
    let reads = rng.random_range(1..4);
    for _ in 0..reads {
        t += rng.random_range(5..120) * 1_000_000_000;
        let o = objs[rng.random_range(0..objs.len())];
        out.push(ev(
            rng,
            t,
            vault,
            get_op(kind),
            Some(obj(world, vault, o)),
            200,
            caller.clone(),
            ip.clone(),
        ));
    }
    if kind == ObjKind::Secret && rng.random_bool(0.08) {
        t += rng.random_range(5..60) * 1_000_000_000;
        let o = objs[rng.random_range(0..objs.len())];
        let (k, name, _) = obj(world, vault, o);
        let version = hex32(rng);
        out.push(ev(
            rng,
            t,
            vault,
            "SecretSet",
            Some((k, name, Some(version))),
            200,
            caller.clone(),
            ip.clone(),
        ));
    }
}
