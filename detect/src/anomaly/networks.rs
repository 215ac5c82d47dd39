//! Which network an address belongs to: a named range from a local file of known egress
//! ranges (offices, VPNs, cloud regions, ASNs), else its /24 (IPv4) or /64 (IPv6). The file
//! holds `cidr,label` lines; blank lines and `#` comments are skipped. Nothing is looked up
//! over the network.

use std::net::IpAddr;
use std::path::Path;

/// Ranges as (first address, prefix length, label), IPv4 mapped into IPv6 space.
#[derive(Debug, Clone, Default)]
pub struct Networks {
    ranges: Vec<(u128, u32, String)>,
}

fn bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128 | 0xffff_0000_0000, 96),
        IpAddr::V6(a) => (u128::from(a), 0),
    }
}

fn mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

impl Networks {
    /// Reads a `cidr,label` file; an unreadable file or a bad line is an error naming it.
    pub fn load(path: &Path) -> Result<Networks, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Networks, String> {
        let mut ranges = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            let (cidr, label) = line
                .split_once(',')
                .ok_or_else(|| bad("expected `cidr,label`"))?;
            let (addr, len) = cidr.trim().split_once('/').unwrap_or((cidr.trim(), ""));
            let ip: IpAddr = addr.parse().map_err(|_| bad("not an address"))?;
            let (base, offset) = bits(ip);
            let max = 128 - offset;
            let len: u32 = if len.is_empty() {
                max
            } else {
                len.parse().map_err(|_| bad("bad prefix length"))?
            };
            if len > max {
                return Err(bad("prefix longer than the address"));
            }
            let len = len + offset;
            ranges.push((base & mask(len), len, label.trim().to_owned()));
        }
        // Longest prefix first, so the first match is the most specific.
        ranges.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(Networks { ranges })
    }

    /// The named range holding `ip`, if any.
    pub fn label(&self, ip: IpAddr) -> Option<&str> {
        let (x, _) = bits(ip);
        self.ranges
            .iter()
            .find(|(base, len, _)| x & mask(*len) == *base)
            .map(|(_, _, l)| l.as_str())
    }

    /// The network of an address: its named range, else its /24 or /64.
    pub fn network_of(&self, ip: &str) -> Option<String> {
        let addr: IpAddr = ip.parse().ok()?;
        if let Some(l) = self.label(addr) {
            return Some(format!("net:{l}"));
        }
        Some(match addr {
            IpAddr::V4(a) => {
                let o = a.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_ranges_win_longest_first_and_the_rest_fall_back_to_prefixes() {
        let n = Networks::parse(
            "# offices\n203.0.113.0/24, hq office\n203.0.113.128/25,hq vpn\n\n2001:db8::/32,v6 lab\n",
        )
        .unwrap();
        assert_eq!(n.network_of("203.0.113.7").unwrap(), "net:hq office");
        assert_eq!(n.network_of("203.0.113.200").unwrap(), "net:hq vpn");
        assert_eq!(n.network_of("2001:db8:1::5").unwrap(), "net:v6 lab");
        assert_eq!(n.network_of("198.51.100.9").unwrap(), "198.51.100.0/24");
        assert_eq!(n.network_of("<Redacted>"), None);
        for bad in ["10.0.0.0/8", "nonsense,x", "10.0.0.0/33,x"] {
            assert!(Networks::parse(bad).is_err(), "{bad}");
        }
    }
}
