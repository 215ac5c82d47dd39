//! Careful attacks: the goals of the loud ones (read secrets, keys, certificates) pursued so
//! that no single hour, no fixed threshold and no famous bad address gives them away. Four
//! classes, each with variants picked per seed:
//!
//! - `spread-out`: a person reads a vault's secrets a few per hour across a working day;
//! - `trusted-identity`: a pipeline or workload identity, at its usual time, from its usual
//!   address and client, reads a handful of objects it never touched on top of its routine;
//! - `nearby-address`: a workload's token used from another address of the same cloud, with
//!   the workload's own client string, at a modest volume;
//! - `insider`: a person reads a production vault their peers never read, from the office, in
//!   office hours.

use super::{Attack, Ctx, finish};
use crate::benign::{Cast, HOUR_NS, MIN_NS};
use crate::render::Caller;
use crate::world::*;
use rand::Rng;
use rand::seq::SliceRandom;

/// The careful classes, by slug.
pub const CLASSES: &[&str] = &[
    "spread-out",
    "trusted-identity",
    "nearby-address",
    "insider",
];

const SEC: i64 = 1_000_000_000;

/// 0 = Monday … 6 = Sunday, for day `day` of a period starting at `start_ns` (1970-01-01 was
/// a Thursday).
fn weekday(start_ns: i64, day: u32) -> u32 {
    (start_ns.div_euclid(24 * HOUR_NS) + day as i64 + 3).rem_euclid(7) as u32
}

/// A weekday after the first day (the baseline), or day 0 in a one-day run.
fn working_day(rng: &mut impl Rng, start_ns: i64, days: u32) -> u32 {
    let candidates: Vec<u32> = (1..days).filter(|&d| weekday(start_ns, d) < 5).collect();
    if candidates.is_empty() {
        return days.saturating_sub(1);
    }
    candidates[rng.random_range(0..candidates.len())]
}

fn get_op(kind: ObjKind) -> &'static str {
    match kind {
        ObjKind::Secret => "SecretGet",
        ObjKind::Key => "KeyGet",
        ObjKind::Certificate => "CertificateGet",
    }
}

/// What a careful attack returns to [`plan`]: actor, addresses, vaults, description.
type Outline = (Identity, Vec<String>, Vec<usize>, String);

#[allow(clippy::too_many_arguments)] // private helpers mirroring an audit record's fields
impl Ctx<'_> {
    /// `objs` of `vault` in random order.
    fn shuffled(&mut self, vault: usize, kind: ObjKind, skip: usize) -> Vec<usize> {
        let mut objs: Vec<usize> = self.world.vaults[vault]
            .objects_of(kind)
            .into_iter()
            .skip(skip)
            .collect();
        objs.shuffle(&mut self.rng);
        objs
    }

    /// A random `count` of the objects of `vault` (after the first `skip`), in random order.
    fn pick(
        &mut self,
        vault: usize,
        kind: ObjKind,
        skip: usize,
        count: std::ops::Range<usize>,
    ) -> Vec<usize> {
        let objs = self.shuffled(vault, kind, skip);
        let n = self.rng.random_range(count);
        objs.into_iter().take(n).collect()
    }

    /// Reads `objs` a few per hour from `from` on, `per_hour` (inclusive range) at a time at
    /// random minutes; returns how many hours it took.
    fn trickle(
        &mut self,
        from: i64,
        vault: usize,
        kind: ObjKind,
        objs: &[usize],
        per_hour: (usize, usize),
        caller: &Caller,
        ip: &str,
    ) -> i64 {
        let mut hour = 0;
        let mut rest = objs;
        while !rest.is_empty() {
            let k = self
                .rng
                .random_range(per_hour.0..=per_hour.1)
                .min(rest.len());
            let (now, later) = rest.split_at(k);
            for &o in now {
                let t = from + hour * HOUR_NS + self.rng.random_range(0..55) * MIN_NS;
                let ob = self.obj(vault, o);
                self.push(t, vault, get_op(kind), Some(ob), 200, caller, ip);
            }
            rest = later;
            hour += 1;
        }
        hour
    }
}

/// Plans careful attack `kind` (one of [`CLASSES`]) as attack number `n`.
pub fn plan(
    kind: &str,
    n: usize,
    seed: u64,
    world: &World,
    casts: &[Cast],
    start_ns: i64,
    days: u32,
) -> Attack {
    let mut rng = rng_for(seed, kind, n as u64);
    let unit = rng.random_range(0..casts.len());
    let cast = &casts[unit];
    let day = working_day(&mut rng, start_ns, days);
    let day_ns = start_ns + day as i64 * 24 * HOUR_NS;
    let variant = rng.random_range(0..3);
    let mut cx = Ctx {
        rng,
        world,
        cast,
        events: Vec::new(),
        activity: Vec::new(),
    };
    let (actor, ips, vaults, description) = match kind {
        "spread-out" => spread_out(&mut cx, variant, day_ns),
        "trusted-identity" => trusted_identity(&mut cx, variant, day_ns),
        "nearby-address" => nearby_address(&mut cx, variant, day_ns),
        "insider" => insider(&mut cx, variant, day_ns),
        other => unreachable!("unknown careful attack {other}"),
    };
    let actor = super::actor_of(&actor);
    finish(
        kind,
        n,
        cx,
        actor,
        ips,
        vaults,
        world,
        format!("{description} (variant {})", variant + 1),
        None,
    )
}

fn a_dev(cx: &mut Ctx<'_>) -> Identity {
    cx.cast.devs[cx.rng.random_range(0..cx.cast.devs.len())].clone()
}

/// A person reads a vault's secrets two to four an hour across a working day, from the
/// office, with their own client.
fn spread_out(cx: &mut Ctx<'_>, variant: usize, day_ns: i64) -> Outline {
    let dev = a_dev(cx);
    let c = Caller::of(&dev);
    let ip = dev.ips[cx.rng.random_range(0..dev.ips.len())].clone();
    let from = day_ns + cx.rng.random_range(8..11) * HOUR_NS;
    let (vaults, description) = match variant {
        0 => {
            let v = cx.vault(V_PAY);
            let objs: Vec<usize> = cx.pick(v, ObjKind::Secret, 0, 18..27);
            let hours = cx.trickle(from, v, ObjKind::Secret, &objs, (2, 4), &c, &ip);
            (
                vec![v],
                format!(
                    "{} reads {} payments secrets, two to four an hour over {hours} hours",
                    dev.label,
                    objs.len()
                ),
            )
        }
        1 => {
            let v = cx.vault(V_PROD);
            let objs: Vec<usize> = cx.pick(v, ObjKind::Secret, 0, 14..21);
            let hours = cx.trickle(from, v, ObjKind::Secret, &objs, (1, 3), &c, &ip);
            (
                vec![v],
                format!(
                    "{} reads {} production secrets, one to three an hour over {hours} hours",
                    dev.label,
                    objs.len()
                ),
            )
        }
        _ => {
            let v = cx.vault(V_PAY);
            let v2 = cx.vault(V_CERTS);
            let a: Vec<usize> = cx.pick(v, ObjKind::Secret, 0, 8..13);
            let b: Vec<usize> = cx.pick(v2, ObjKind::Certificate, 0, 4..8);
            let h1 = cx.trickle(from, v, ObjKind::Secret, &a, (1, 2), &c, &ip);
            let h2 = cx.trickle(
                from + HOUR_NS / 2,
                v2,
                ObjKind::Certificate,
                &b,
                (1, 2),
                &c,
                &ip,
            );
            (
                vec![v, v2],
                format!(
                    "{} reads {} payments secrets and {} certificates, one or two an hour each over {} hours",
                    dev.label,
                    a.len(),
                    b.len(),
                    h1.max(h2)
                ),
            )
        }
    };
    (dev, vec![ip], vaults, description)
}

/// A pipeline or workload identity reads, at its usual time, from its usual address and
/// client, a handful of objects it never touched, on top of its routine.
fn trusted_identity(cx: &mut Ctx<'_>, variant: usize, day_ns: i64) -> Outline {
    match variant {
        0 => {
            // The deployment pipeline's nightly 02:00 run also reads payments secrets beyond the
            // eight it deploys.
            let id = cx.cast.cicd.clone();
            let c = Caller::of(&id);
            let ip = id.ips[0].clone();
            let v = cx.vault(V_PAY);
            let objs: Vec<usize> = cx.pick(v, ObjKind::Secret, 8, 4..8);
            let mut t = day_ns + 2 * HOUR_NS + cx.rng.random_range(6..25) * MIN_NS;
            for &o in &objs {
                let ob = cx.obj(v, o);
                cx.push(t, v, "SecretGet", Some(ob), 200, &c, &ip);
                t += cx.rng.random_range(1..40) * SEC;
            }
            let d = format!(
                "the deployment pipeline reads {} payments secrets it never deploys during its nightly run",
                objs.len()
            );
            (id, vec![ip], vec![v], d)
        }
        1 => {
            // A web app's identity reads a few more secrets of its own vault, among its polls.
            let (mi, v, mine) =
                cx.cast.web_apps[cx.rng.random_range(0..cx.cast.web_apps.len())].clone();
            let c = Caller::of(&mi);
            let ip = mi.ips[cx.rng.random_range(0..mi.ips.len())].clone();
            let objs: Vec<usize> = cx
                .shuffled(v, ObjKind::Secret, 0)
                .into_iter()
                .filter(|o| !mine.contains(o))
                .take(cx.rng.random_range(3..7))
                .collect();
            let from = day_ns + cx.rng.random_range(0..20) * HOUR_NS;
            let hours = cx.trickle(from, v, ObjKind::Secret, &objs, (1, 3), &c, &ip);
            let d = format!(
                "the managed identity {} reads {} secrets of its vault it never used, over {hours} hours",
                mi.label,
                objs.len()
            );
            (mi, vec![ip], vec![v], d)
        }
        _ => {
            // The CSI driver's identity reads certificates (with their private keys) it never
            // mounted.
            let (mi, v, _) = cx.cast.csi.clone();
            let c = Caller::of(&mi);
            let ip = mi.ips[cx.rng.random_range(0..mi.ips.len())].clone();
            let certs: Vec<usize> = cx
                .shuffled(v, ObjKind::Certificate, 1)
                .into_iter()
                .collect();
            let mut t =
                day_ns + cx.rng.random_range(0..22) * HOUR_NS + cx.rng.random_range(0..50) * MIN_NS;
            for &o in &certs {
                let (kind, name, ver) = cx.obj(v, o);
                cx.push(
                    t,
                    v,
                    "CertificateGet",
                    Some((kind, name.clone(), ver.clone())),
                    200,
                    &c,
                    &ip,
                );
                // The certificate's backing secret holds its private key.
                let later = t + cx.rng.random_range(1..5) * SEC;
                cx.push(
                    later,
                    v,
                    "SecretGet",
                    Some((ObjKind::Secret, name, ver)),
                    200,
                    &c,
                    &ip,
                );
                t += cx.rng.random_range(2..15) * MIN_NS;
            }
            let d = format!(
                "the CSI driver's identity reads {} certificates it never mounted and their private keys",
                certs.len()
            );
            (mi, vec![ip], vec![v], d)
        }
    }
}

/// A workload's token used from another address of the same cloud with the workload's own
/// client string, reading what the workload reads, at a modest volume.
fn nearby_address(cx: &mut Ctx<'_>, variant: usize, day_ns: i64) -> Outline {
    let (id, v, objs) = match variant {
        0 | 1 => cx.cast.web_apps[cx.rng.random_range(0..cx.cast.web_apps.len())].clone(),
        _ => cx.cast.csi.clone(),
    };
    let ip = if variant == 1 {
        // An address in the same /16 as one of the workload's own.
        let own = &id.ips[cx.rng.random_range(0..id.ips.len())];
        let ab: Vec<&str> = own.split('.').take(2).collect();
        loop {
            let ip = format!(
                "{}.{}.{}.{}",
                ab[0],
                ab[1],
                cx.rng.random_range(0..256),
                cx.rng.random_range(1..255)
            );
            if !id.ips.contains(&ip) {
                break ip;
            }
        }
    } else {
        loop {
            let ip = azure_ip(&mut cx.rng);
            if !id.ips.contains(&ip) {
                break ip;
            }
        }
    };
    let c = Caller::of(&id);
    let rounds = cx.rng.random_range(2..6);
    let mut t = day_ns + cx.rng.random_range(0..21) * HOUR_NS + cx.rng.random_range(0..50) * MIN_NS;
    for _ in 0..rounds {
        for &o in &objs {
            let ob = cx.obj(v, o);
            let kind = ob.0;
            cx.push(t, v, get_op(kind), Some(ob), 200, &c, &ip);
            t += cx.rng.random_range(1..20) * SEC;
        }
        t += cx.rng.random_range(5..40) * MIN_NS;
    }
    let d = format!(
        "{}'s token reads its own {} objects {rounds} times from {ip}, another address of the same cloud",
        id.label,
        objs.len()
    );
    (id, vec![ip], vec![v], d)
}

/// A person reads a production vault none of their peers read, from the office, in office
/// hours, with their own client.
fn insider(cx: &mut Ctx<'_>, variant: usize, day_ns: i64) -> Outline {
    let dev = a_dev(cx);
    let c = Caller::of(&dev);
    let ip = dev.ips[cx.rng.random_range(0..dev.ips.len())].clone();
    let mut t = day_ns + cx.rng.random_range(9..17) * HOUR_NS + cx.rng.random_range(0..40) * MIN_NS;
    let (v, kind, count, what) = match variant {
        0 => (
            cx.vault(V_PAY),
            ObjKind::Secret,
            cx.rng.random_range(4..10),
            "payments secrets",
        ),
        1 => (
            cx.vault(V_CERTS),
            ObjKind::Certificate,
            cx.rng.random_range(3..6),
            "platform certificates",
        ),
        _ => (
            cx.vault(V_CMK),
            ObjKind::Key,
            cx.rng.random_range(2..5),
            "customer-managed keys",
        ),
    };
    if cx.rng.random_bool(0.5) {
        cx.list(t, v, kind, &c, &ip);
        t += cx.rng.random_range(10..90) * SEC;
    }
    let objs: Vec<usize> = cx.shuffled(v, kind, 0).into_iter().take(count).collect();
    for &o in &objs {
        let ob = cx.obj(v, o);
        cx.push(t, v, get_op(kind), Some(ob), 200, &c, &ip);
        t += cx.rng.random_range(20..240) * SEC;
    }
    let d = format!(
        "{} reads {} {what} from the office in office hours; no developer reads that vault",
        dev.label,
        objs.len()
    );
    (dev, vec![ip], vec![v], d)
}
