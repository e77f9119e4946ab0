//! The lists the benchmark loads, written the way each tool reads them: a
//! feed for the agent and a restore script per baseline. Shared by the
//! `sync`, `footprint` and `live` parts, so every tool gets the same list in
//! the same form.

use std::fmt::Write as _;

use blocklist_agent::prefix::Prefix;

/// A plain-text feed: one prefix per line.
pub fn feed(list: &[Prefix]) -> String {
    let mut s = String::with_capacity(list.len() * 18);
    for p in list {
        let _ = writeln!(s, "{p}");
    }
    s
}

/// `iptables-restore` input: one DROP rule per entry in raw PREROUTING
/// (the classic cron job).
pub fn iptables(list: &[Prefix]) -> String {
    let mut s = String::from("*raw\n:PREROUTING ACCEPT [0:0]\n");
    for p in list {
        let _ = writeln!(s, "-A PREROUTING -s {p} -j DROP");
    }
    s.push_str("COMMIT\n");
    s
}

/// `ipset restore` input: a `hash:net` set `name` with `hashsize` buckets
/// and room for twice the list.
pub fn ipset(name: &str, list: &[Prefix], hashsize: usize) -> String {
    let maxelem = (2 * list.len()).max(131_072);
    let mut s =
        format!("create {name} hash:net family inet hashsize {hashsize} maxelem {maxelem}\n");
    for p in list {
        let _ = writeln!(s, "add {name} {p}");
    }
    s
}

/// `nft -f` input: netdev table `table` with the list as interval set `bl`
/// and, given a device, an ingress chain on it that drops sources in it.
pub fn nft(table: &str, list: &[Prefix], ingress_device: Option<&str>) -> String {
    let mut s = format!(
        "table netdev {table} {{\n set bl {{\n  type ipv4_addr\n  flags interval\n  auto-merge\n  elements = {{ "
    );
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{p}");
    }
    s.push_str(" }\n }\n");
    if let Some(dev) = ingress_device {
        let _ = write!(
            s,
            " chain in {{\n  type filter hook ingress device \"{dev}\" priority -500; policy accept;\n  ip saddr @bl drop\n }}\n"
        );
    }
    s.push_str("}\n");
    s
}
