//! Supply chain: Cargo.lock never resolves a crate below the version that fixes a known
//! advisory (the list is `docs/advisories.toml`; CI cannot fetch the advisory database).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// `major.minor.patch` of a version string (pre-release and build suffixes ignored).
fn triple(v: &str) -> (u64, u64, u64) {
    let core = v.split(['-', '+']).next().unwrap_or(v);
    let mut it = core
        .split('.')
        .map(|p| p.parse::<u64>().expect("numeric version"));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

fn read_toml(rel: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_field<'a>(t: &'a toml::Table, key: &str) -> &'a str {
    t.get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("missing {key}"))
}

/// Every `(crate, version)` of Cargo.lock below its advisory floor.
fn violations(lock: &toml::Table, advisories: &toml::Table) -> Vec<String> {
    let packages = lock["package"].as_array().expect("package array");
    let mut out = Vec::new();
    for adv in advisories["advisory"].as_array().expect("advisory array") {
        let adv = adv.as_table().expect("table");
        let name = str_field(adv, "crate");
        let (lmaj, lmin, _) = triple(str_field(adv, "line"));
        let floor = triple(str_field(adv, "floor"));
        for p in packages.iter().filter_map(toml::Value::as_table) {
            if str_field(p, "name") != name {
                continue;
            }
            let v = triple(str_field(p, "version"));
            if (v.0, v.1) >= (lmaj, lmin) && v < floor {
                out.push(format!("{name} {v:?} < {floor:?} ({:?})", adv["ids"]));
            }
        }
    }
    out
}

#[test]
fn cargo_lock_is_at_or_above_every_advisory_floor() {
    let lock = read_toml("Cargo.lock");
    let advisories = read_toml("docs/advisories.toml");
    assert_eq!(violations(&lock, &advisories), Vec::<String>::new());
    // The transport and TLS crates the list exists for are really in the lock file.
    let names: Vec<&str> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.get("name").and_then(toml::Value::as_str))
        .collect();
    for needed in ["quinn-proto", "rustls", "ring", "tokio"] {
        assert!(names.contains(&needed), "{needed} not in Cargo.lock");
    }
}

#[test]
fn a_lock_below_a_floor_is_caught() {
    let lock: toml::Table = r#"
        [[package]]
        name = "quinn-proto"
        version = "0.11.13"
        [[package]]
        name = "rustls"
        version = "0.23.18"
        [[package]]
        name = "rustls-webpki"
        version = "0.100.1"
    "#
    .parse()
    .unwrap();
    let advisories = read_toml("docs/advisories.toml");
    let v = violations(&lock, &advisories);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("quinn-proto (0, 11, 13)"), "{v:?}");
    assert_eq!(triple("1.2.3-rc.1+x"), (1, 2, 3));
}
