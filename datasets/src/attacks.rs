//! The attack library: one generator per attack kind of the detection catalog, each producing
//! its audit events (and Activity Log records) plus a ground-truth label. Actors, times,
//! volumes and vaults vary with the seed; some attacks run in business hours to blend in.

use crate::benign::{Cast, HOUR_NS, MIN_NS, ev};
use crate::render::{Caller, Ev, policy, render_activity, vault_state};
use crate::world::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

mod careful;
pub use careful::CLASSES as CAREFUL;

/// The class an attack kind is scored under: its own slug for the careful classes, `loud`
/// for the rest.
pub fn class_of(kind: &str) -> &str {
    if CAREFUL.contains(&kind) {
        kind
    } else {
        "loud"
    }
}

/// Every loud attack kind (the detection catalog's), by slug.
pub const KINDS: &[&str] = &[
    "mass-retrieval",
    "burst-distinct",
    "low-and-slow",
    "token-replay",
    "deny-probe",
    "self-grant-then-read",
    "add-remove-policy",
    "rbac-flip-self-grant",
    "firewall-opened",
    "recovery-weakened",
    "delete-purge",
    "backup-exfil",
    "crypto-spike",
    "role-assignment",
    "diag-deleted-silence",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub oid: Option<String>,
    pub upn: Option<String>,
    pub appid: Option<String>,
}

/// Ground truth for one attack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    pub id: String,
    pub kind: String,
    pub actor: Actor,
    pub ips: Vec<String>,
    pub vaults: Vec<String>,
    pub start: String,
    pub end: String,
    /// One sentence on what happens.
    pub description: String,
}

/// A planned attack.
pub struct Attack {
    pub label: Label,
    pub events: Vec<Ev>,
    /// (time, rendered Activity Log record).
    pub activity: Vec<(i64, String)>,
    /// The vault goes quiet: (vault index, from, to).
    pub silence: Option<(usize, i64, i64)>,
}

fn actor_of(id: &Identity) -> Actor {
    Actor {
        oid: Some(id.oid.clone()),
        upn: id.upn.clone(),
        appid: Some(id.appid.clone()),
    }
}

fn attacker_user(rng: &mut ChaCha8Rng, name: &str) -> Identity {
    Identity {
        label: name.to_owned(),
        kind: IdKind::User,
        oid: guid(rng),
        upn: Some(format!("{name}@contoso.com")),
        appid: AZURE_CLI_APPID.to_owned(),
        mirid: None,
        ips: vec![outside_ip(rng)],
        user_agent: "AZURECLI/2.59.0 (PIP) azsdk-python-core/1.28.0 Python/3.10.12 (Linux-6.5.0-kali3-amd64-x86_64-with-glibc2.37)".into(),
    }
}

struct Ctx<'a> {
    rng: ChaCha8Rng,
    world: &'a World,
    cast: &'a Cast,
    events: Vec<Ev>,
    activity: Vec<(i64, String)>,
}

// Private helpers mirroring an audit record's fields; bundling them would only rename them.
#[allow(clippy::too_many_arguments)]
impl Ctx<'_> {
    fn vault(&self, t: usize) -> usize {
        self.world.vault(self.cast.unit, t)
    }
    fn obj(&self, vault: usize, i: usize) -> (ObjKind, String, Option<String>) {
        let o = &self.world.vaults[vault].objects[i];
        (o.kind, o.name.clone(), Some(o.version.clone()))
    }
    fn push(
        &mut self,
        t: i64,
        vault: usize,
        op: &'static str,
        object: Option<(ObjKind, String, Option<String>)>,
        status: u16,
        caller: &Caller,
        ip: &str,
    ) -> &mut Ev {
        let e = ev(
            &mut self.rng,
            t,
            vault,
            op,
            object,
            status,
            caller.clone(),
            ip.to_owned(),
        );
        self.events.push(e);
        self.events.last_mut().expect("just pushed")
    }
    fn list(&mut self, t: i64, vault: usize, kind: ObjKind, caller: &Caller, ip: &str) {
        let op = match kind {
            ObjKind::Secret => "SecretList",
            ObjKind::Key => "KeyList",
            ObjKind::Certificate => "CertificateList",
        };
        self.push(
            t,
            vault,
            op,
            Some((kind, String::new(), None)),
            200,
            caller,
            ip,
        );
    }
    /// Reads `n` distinct objects of `kind` starting at `t`, `gap` apart on average.
    fn reads(
        &mut self,
        mut t: i64,
        vault: usize,
        kind: ObjKind,
        n: usize,
        gap_s: i64,
        caller: &Caller,
        ip: &str,
    ) -> i64 {
        let objs = self.world.vaults[vault].objects_of(kind);
        for &idx in objs.iter().take(n) {
            let o = self.obj(vault, idx);
            let op = match kind {
                ObjKind::Secret => "SecretGet",
                ObjKind::Key => "KeyGet",
                ObjKind::Certificate => "CertificateGet",
            };
            self.push(t, vault, op, Some(o), 200, caller, ip);
            t += (gap_s * 1_000_000_000).max(1) / 2
                + self.rng.random_range(0..gap_s.max(1)) * 1_000_000_000;
        }
        t
    }
    fn patch(
        &mut self,
        t: i64,
        vault: usize,
        op: &'static str,
        caller: &Caller,
        ip: &str,
        config: serde_json::Value,
    ) {
        let mut c = caller.clone();
        c.style = ClaimStyle::Long;
        c.user_agent = "azure-resource-manager/2.0".into();
        let e = self.push(t, vault, op, None, 200, &c, ip);
        e.config = Some(config);
    }
    fn arm(
        &mut self,
        t: i64,
        op: &str,
        resource_id: &str,
        caller: &Identity,
        ip: &str,
        body: Option<serde_json::Value>,
    ) {
        let corr = guid(&mut self.rng);
        self.activity.push((
            t,
            render_activity(
                t,
                op,
                resource_id,
                caller,
                ip,
                &corr,
                "Started",
                body.clone(),
            ),
        ));
        let done = t + self.rng.random_range(800..3000) * 1_000_000;
        self.activity.push((
            done,
            render_activity(done, op, resource_id, caller, ip, &corr, "Success", body),
        ));
    }
}

/// Plans attack `kind` (a slug of [`KINDS`] or [`CAREFUL`]) as attack number `n`.
pub fn plan(
    kind: &str,
    n: usize,
    seed: u64,
    world: &World,
    casts: &[Cast],
    start_ns: i64,
    days: u32,
) -> Attack {
    if CAREFUL.contains(&kind) {
        return careful::plan(kind, n, seed, world, casts, start_ns, days);
    }
    let mut rng = rng_for(seed, kind, n as u64);
    let unit = rng.random_range(0..casts.len());
    let cast = &casts[unit];
    // Day 0 is baseline; attacks start from day 1 (or day 0 in a one-day run).
    let day = if days > 1 {
        rng.random_range(1..days)
    } else {
        0
    };
    let business = rng.random_bool(0.4);
    let hour = if business {
        rng.random_range(9..16)
    } else {
        [0, 1, 2, 3, 4, 21, 22, 23][rng.random_range(0..8)]
    };
    let t0 = start_ns
        + day as i64 * 24 * HOUR_NS
        + hour * HOUR_NS
        + rng.random_range(0..40) * MIN_NS
        + rng.random_range(0..1_000_000_000);
    let mut cx = Ctx {
        rng,
        world,
        cast,
        events: Vec::new(),
        activity: Vec::new(),
    };
    let dev = cast.devs[cx.rng.random_range(0..cast.devs.len())].clone();
    let out_ip = outside_ip(&mut cx.rng);
    let mut actor;
    let mut ips = vec![out_ip.clone()];
    let mut vaults: Vec<usize> = Vec::new();
    let mut silence = None;
    let description;
    match kind {
        "mass-retrieval" => {
            actor = dev.clone();
            actor.user_agent =
                "AZURECLI/2.59.0 (PIP) azsdk-python-core/1.28.0 Python/3.10.12".into();
            let c = Caller::of(&actor);
            let v = cx.vault(V_PAY);
            cx.list(t0, v, ObjKind::Secret, &c, &out_ip);
            let n = cx.rng.random_range(30..41);
            cx.reads(
                t0 + 20 * 1_000_000_000,
                v,
                ObjKind::Secret,
                n,
                8,
                &c,
                &out_ip,
            );
            let v2 = cx.vault(V_PROD);
            cx.list(t0 + 8 * MIN_NS, v2, ObjKind::Secret, &c, &out_ip);
            cx.reads(t0 + 9 * MIN_NS, v2, ObjKind::Secret, 20, 6, &c, &out_ip);
            vaults = vec![v, v2];
            description = format!(
                "{} lists then reads {} secrets of two production vaults from {out_ip}",
                dev.label,
                n + 20
            );
        }
        "burst-distinct" => {
            actor = cast.cicd.clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_PROD);
            let ns = cx.rng.random_range(6..10);
            let t = cx.reads(t0, v, ObjKind::Secret, ns, 90, &c, &out_ip);
            let t = cx.reads(t, v, ObjKind::Certificate, 2, 60, &c, &out_ip);
            cx.reads(t, v, ObjKind::Key, 1, 30, &c, &out_ip);
            vaults = vec![v];
            description = format!(
                "the CI/CD principal reads {} distinct items outside its deployment window from {out_ip}",
                ns + 3
            );
        }
        "low-and-slow" => {
            actor = dev.clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_PAY);
            let night = start_ns + day as i64 * 24 * HOUR_NS + cx.rng.random_range(0..2) * HOUR_NS;
            let secrets = world.vaults[v].objects_of(ObjKind::Secret);
            let count = cx.rng.random_range(15..20);
            let mut t = night;
            for &s in secrets.iter().skip(5).take(count) {
                let o = cx.obj(v, s);
                cx.push(t, v, "SecretGet", Some(o), 200, &c, &out_ip);
                t += cx.rng.random_range(17..24) * MIN_NS;
            }
            vaults = vec![v];
            description = format!(
                "{} reads one new secret about every twenty minutes through the night ({count} secrets)",
                dev.label
            );
            return finish(
                kind,
                n,
                cx,
                actor_of(&dev),
                ips,
                vaults,
                world,
                description,
                silence,
            );
        }
        "token-replay" => {
            let (mi, v, objs) = cast.web_apps[cx.rng.random_range(0..cast.web_apps.len())].clone();
            actor = mi.clone();
            let mut c = Caller::of(&mi);
            c.user_agent = "python-requests/2.31.0".into();
            let mut t = t0;
            for round in 0..3 {
                for &o in &objs {
                    let ob = cx.obj(v, o);
                    cx.push(t, v, "SecretGet", Some(ob), 200, &c, &out_ip);
                    t += cx.rng.random_range(1..5) * 1_000_000_000;
                }
                if round == 1 {
                    cx.list(t, v, ObjKind::Secret, &c, &out_ip);
                }
                t += cx.rng.random_range(2..6) * MIN_NS;
            }
            vaults = vec![v];
            description = format!(
                "the managed identity {}'s token is replayed from {out_ip} with a different client",
                mi.label
            );
        }
        "deny-probe" => {
            actor = attacker_user(&mut cx.rng, "ext-contractor");
            let c = Caller::of(&actor);
            let mut t = t0;
            for tmpl in 0..World::templates() {
                let v = cx.vault(tmpl);
                vaults.push(v);
                for k in 0..cx.rng.random_range(3..6) {
                    let op = if k == 0 { "SecretList" } else { "SecretGet" };
                    let objs = world.vaults[v].objects_of(ObjKind::Secret);
                    let o = if objs.is_empty() {
                        None
                    } else {
                        Some(cx.obj(v, objs[k % objs.len()]))
                    };
                    cx.push(
                        t,
                        v,
                        op,
                        o.map(|(kd, nm, _)| {
                            (
                                kd,
                                if op == "SecretList" {
                                    String::new()
                                } else {
                                    nm
                                },
                                None,
                            )
                        }),
                        403,
                        &c,
                        &out_ip,
                    );
                    t += cx.rng.random_range(3..30) * 1_000_000_000;
                }
                t += cx.rng.random_range(1..6) * MIN_NS;
            }
            ips = vec![out_ip.clone()];
            description = format!(
                "a new identity is denied on {} vaults in under an hour",
                World::templates()
            );
        }
        "self-grant-then-read" => {
            actor = dev.clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_PAY);
            cx.patch(
                t0,
                v,
                "VaultPatch",
                &c,
                &out_ip,
                json!({
                    "addedAccessPolicy": policy(&actor.oid, &["get", "list"], &[], &[]),
                    "properties": vault_state(false, true, 90, true, Some("Deny")),
                }),
            );
            cx.list(t0 + 2 * MIN_NS, v, ObjKind::Secret, &c, &out_ip);
            cx.reads(t0 + 3 * MIN_NS, v, ObjKind::Secret, 12, 20, &c, &out_ip);
            vaults = vec![v];
            description = format!(
                "{} grants itself secret get/list on a payments vault, then reads 12 secrets",
                dev.label
            );
        }
        "add-remove-policy" => {
            actor = cast.admins[0].clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_DEV);
            let outsider = attacker_user(&mut cx.rng, "temp-access");
            cx.patch(
                t0,
                v,
                "VaultPatch",
                &c,
                &out_ip,
                json!({
                    "addedAccessPolicy": policy(&outsider.oid, &["get", "list"], &[], &["get"]),
                    "properties": vault_state(false, true, 90, false, Some("Deny")),
                }),
            );
            let oc = Caller::of(&outsider);
            cx.reads(
                t0 + 2 * MIN_NS,
                v,
                ObjKind::Secret,
                4,
                15,
                &oc,
                &outsider.ips[0],
            );
            let gap = cx.rng.random_range(4..9) * MIN_NS;
            cx.patch(
                t0 + gap,
                v,
                "VaultPatch",
                &c,
                &out_ip,
                json!({
                    "removedAccessPolicy": policy(&outsider.oid, &["get", "list"], &[], &["get"]),
                    "properties": vault_state(false, true, 90, false, Some("Deny")),
                }),
            );
            ips.push(outsider.ips[0].clone());
            vaults = vec![v];
            description = format!(
                "{} grants an outside principal access and removes it {} minutes later",
                actor.label,
                gap / MIN_NS
            );
        }
        "rbac-flip-self-grant" => {
            actor = cast.admins[1].clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_PROD);
            cx.patch(
                t0,
                v,
                "VaultPatch",
                &c,
                &out_ip,
                json!({
                    "properties": vault_state(false, true, 90, true, Some("Deny")),
                }),
            );
            let later = t0 + cx.rng.random_range(5..25) * MIN_NS;
            cx.patch(later, v, "VaultPatch", &c, &out_ip, json!({
                "addedAccessPolicy": policy(&actor.oid, &["get", "list"], &["get", "unwrapKey"], &["get"]),
                "properties": vault_state(false, true, 90, true, Some("Deny")),
            }));
            cx.reads(later + 2 * MIN_NS, v, ObjKind::Secret, 8, 20, &c, &out_ip);
            vaults = vec![v];
            description = format!(
                "{} switches an RBAC vault to access policies, grants itself access and reads secrets",
                actor.label
            );
        }
        "firewall-opened" => {
            actor = cast.admins[0].clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_PAY);
            cx.patch(
                t0,
                v,
                "VaultPatch",
                &c,
                &out_ip,
                json!({
                    "addedIpRule": {"Value": "0.0.0.0/0"},
                    "properties": vault_state(false, true, 90, true, Some("Allow")),
                }),
            );
            cx.reads(t0 + 3 * MIN_NS, v, ObjKind::Secret, 5, 30, &c, &out_ip);
            vaults = vec![v];
            description = format!(
                "{} opens the payments vault firewall to 0.0.0.0/0 and reads from {out_ip}",
                actor.label
            );
        }
        "recovery-weakened" => {
            actor = dev.clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_CERTS);
            cx.patch(
                t0,
                v,
                "VaultPut",
                &c,
                &out_ip,
                json!({
                    "properties": vault_state(true, false, 7, false, Some("Deny")),
                }),
            );
            vaults = vec![v];
            description = format!(
                "{} disables soft delete and cuts retention to 7 days on the certificates vault",
                dev.label
            );
        }
        "delete-purge" => {
            actor = dev.clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_DEV);
            let secrets = world.vaults[v].objects_of(ObjKind::Secret);
            let n = cx.rng.random_range(6..10);
            let mut t = t0;
            for &s in secrets.iter().take(n) {
                let (k, name, _) = cx.obj(v, s);
                cx.push(
                    t,
                    v,
                    "SecretDelete",
                    Some((k, name, None)),
                    200,
                    &c,
                    &out_ip,
                );
                t += cx.rng.random_range(5..40) * 1_000_000_000;
            }
            t += 2 * MIN_NS;
            for &s in secrets.iter().take(n) {
                let (k, name, _) = cx.obj(v, s);
                cx.push(t, v, "SecretPurge", Some((k, name, None)), 204, &c, &out_ip);
                t += cx.rng.random_range(5..40) * 1_000_000_000;
            }
            for &k in world.vaults[v].objects_of(ObjKind::Key).iter().take(1) {
                let (kd, name, _) = cx.obj(v, k);
                cx.push(
                    t,
                    v,
                    "KeyDelete",
                    Some((kd, name.clone(), None)),
                    200,
                    &c,
                    &out_ip,
                );
                cx.push(
                    t + MIN_NS,
                    v,
                    "KeyPurge",
                    Some((kd, name, None)),
                    204,
                    &c,
                    &out_ip,
                );
            }
            vaults = vec![v];
            description = format!("{} deletes then purges {n} secrets and a key", dev.label);
        }
        "backup-exfil" => {
            actor = cast.cicd.clone();
            let c = Caller::of(&actor);
            let v = cx.vault(V_PAY);
            let mut t = t0;
            for &s in world.vaults[v].objects_of(ObjKind::Secret).iter().take(10) {
                let o = cx.obj(v, s);
                cx.push(t, v, "SecretBackup", Some(o), 200, &c, &out_ip);
                t += cx.rng.random_range(3..20) * 1_000_000_000;
            }
            for &k in world.vaults[v].objects_of(ObjKind::Key).iter().take(3) {
                let o = cx.obj(v, k);
                cx.push(t, v, "KeyBackup", Some(o), 200, &c, &out_ip);
                t += cx.rng.random_range(3..20) * 1_000_000_000;
            }
            vaults = vec![v];
            description =
                format!("the CI/CD principal backs up 10 secrets and 3 keys from {out_ip}");
        }
        "crypto-spike" => {
            let (mi, v) = cast.cmk[0].clone();
            actor = mi.clone();
            let c = Caller::of(&mi);
            let keys = world.vaults[v].objects_of(ObjKind::Key);
            let ip = mi.ips[0].clone();
            let n = cx.rng.random_range(1500..2500);
            for i in 0..n {
                let t = t0 + cx.rng.random_range(0..HOUR_NS);
                let o = cx.obj(v, keys[i % keys.len()]);
                let op = if i % 3 == 0 {
                    "KeyDecrypt"
                } else {
                    "KeyUnwrap"
                };
                let e = cx.push(t, v, op, Some(o), 200, &c, &ip);
                e.action = Some(if op == "KeyDecrypt" {
                    "decrypt"
                } else {
                    "unwrapkey"
                });
            }
            ips = vec![ip];
            vaults = vec![v];
            description = format!(
                "the established CMK identity {} performs {n} key operations across all keys in one hour",
                mi.label
            );
        }
        "role-assignment" => {
            actor = cast.admins[0].clone();
            let v = cx.vault(V_PROD);
            let grantee = Identity {
                label: "svc-exfil".into(),
                kind: IdKind::ServicePrincipal,
                oid: guid(&mut cx.rng),
                upn: None,
                appid: guid(&mut cx.rng),
                mirid: None,
                ips: vec![outside_ip(&mut cx.rng)],
                user_agent: "azsdk-go-azsecrets/v1.1.0 (go1.22.3; linux)".into(),
            };
            let role = [
                "00482a5a-887f-4fb3-b363-3b7fe8e74483",
                "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
            ][cx.rng.random_range(0..2)];
            let vault_id = world.vaults[v].arm_id();
            let ra = format!(
                "{vault_id}/providers/Microsoft.Authorization/roleAssignments/{}",
                guid(&mut cx.rng)
            );
            let body = json!({"properties": {
                "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{role}", world.vaults[v].subscription),
                "principalId": grantee.oid, "principalType": "ServicePrincipal", "scope": vault_id}});
            let a = actor.clone();
            cx.arm(
                t0,
                "Microsoft.Authorization/roleAssignments/write",
                &ra,
                &a,
                &out_ip,
                Some(body),
            );
            let gc = Caller::of(&grantee);
            cx.reads(
                t0 + 6 * MIN_NS,
                v,
                ObjKind::Secret,
                6,
                20,
                &gc,
                &grantee.ips[0],
            );
            ips.push(grantee.ips[0].clone());
            vaults = vec![v];
            description = format!(
                "{} assigns a Key Vault data role on the production vault to a new service principal, which reads secrets",
                actor.label
            );
        }
        "diag-deleted-silence" => {
            actor = cast.admins[1].clone();
            let v = cx.vault(V_PROD);
            let end = start_ns + days as i64 * 24 * HOUR_NS;
            // Leave at least ten hours of silence before the period ends.
            let t = t0.min(end - 10 * HOUR_NS).max(start_ns);
            let diag = format!(
                "{}/providers/Microsoft.Insights/diagnosticSettings/send-to-sentinel",
                world.vaults[v].arm_id()
            );
            let a = actor.clone();
            cx.arm(
                t,
                "Microsoft.Insights/diagnosticSettings/delete",
                &diag,
                &a,
                &out_ip,
                None,
            );
            silence = Some((v, t + 30 * 1_000_000_000, end));
            vaults = vec![v];
            description = format!(
                "{} deletes the production vault's diagnostic setting; its audit stream stops",
                actor.label
            );
            let label_actor = actor_of(&actor);
            let mut atk = finish(
                kind,
                n,
                cx,
                label_actor,
                ips,
                vaults,
                world,
                description,
                silence,
            );
            atk.label.end = crate::render::fmt_time(end - 1);
            return atk;
        }
        other => unreachable!("unknown attack kind {other}"),
    }
    finish(
        kind,
        n,
        cx,
        actor_of(&actor),
        ips,
        vaults,
        world,
        description,
        silence,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    kind: &str,
    n: usize,
    mut cx: Ctx<'_>,
    actor: Actor,
    ips: Vec<String>,
    vaults: Vec<usize>,
    world: &World,
    description: String,
    silence: Option<(usize, i64, i64)>,
) -> Attack {
    cx.events.sort_by_key(|e| e.time_ns);
    cx.activity.sort_by_key(|a| a.0);
    let times = cx
        .events
        .iter()
        .map(|e| e.time_ns)
        .chain(cx.activity.iter().map(|a| a.0));
    let start = times.clone().min().unwrap_or(0);
    let end = times.max().unwrap_or(0);
    let mut ips = ips;
    ips.sort();
    ips.dedup();
    Attack {
        label: Label {
            id: format!("atk-{:02}-{kind}", n + 1),
            kind: kind.to_owned(),
            actor,
            ips,
            vaults: vaults
                .iter()
                .map(|v| world.vaults[*v].name.clone())
                .collect(),
            start: crate::render::fmt_time(start),
            end: crate::render::fmt_time(end),
            description,
        },
        events: cx.events,
        activity: cx.activity,
        silence,
    }
}
