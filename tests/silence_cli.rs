//! `hexflow policy when`: the worked example of docs/SILENCE.md through the real binary.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hexflow"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["policy", "when", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_when_prints_warning_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("h.toml");
    std::fs::write(
        &cfg,
        r#"[silence]
policies = [
  { name = "field", warning = "1 working day", expiry = "3 working days", calendar = "de", counting = "instant" },
]
groups = [{ name = "lab", policy = "field", ranges = [[100, 199]] }]
exemptions = [
  { device = 7, reason = "bench unit" },
  { group = "lab", until = "2026-06-01T00:00:00Z", reason = "lab move" },
]
"#,
    )
    .unwrap();
    let (ok, out, err) = run(
        &cfg,
        &[
            "--policy",
            "field",
            "--last-fix",
            "2026-05-22T18:00:00+02:00",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "warning: 2026-05-26T16:00:00Z\nexpiry: 2026-05-28T16:00:00Z\n"
    );
    let (ok, out, _) = run(
        &cfg,
        &["--policy", "default", "--last-fix", "2026-05-22T18:00:00Z"],
    );
    assert!(ok);
    assert_eq!(
        out,
        "warning: 2026-05-24T18:00:00Z\nexpiry: 2026-05-25T18:00:00Z\n"
    );
    // Permanently exempt: never.
    let (ok, out, _) = run(
        &cfg,
        &[
            "--policy",
            "field",
            "--last-fix",
            "2026-05-22T18:00:00Z",
            "--device",
            "7",
        ],
    );
    assert!(ok);
    assert_eq!(out, "warning: never\nexpiry: never\n");
    // A window ending later moves the count to its end (Monday 2026-06-01 00:00 UTC = 02:00
    // Berlin, a working day): one working day later.
    let (ok, out, _) = run(
        &cfg,
        &[
            "--policy",
            "field",
            "--last-fix",
            "2026-05-22T18:00:00Z",
            "--device",
            "150",
        ],
    );
    assert!(ok);
    assert_eq!(
        out,
        "warning: 2026-06-02T00:00:00Z\nexpiry: 2026-06-04T00:00:00Z\n"
    );
    // Unknown policy and bad time are named.
    let (ok, _, err) = run(
        &cfg,
        &["--policy", "nope", "--last-fix", "2026-05-22T18:00:00Z"],
    );
    assert!(!ok && err.contains("nope"), "{err}");
    let (ok, _, err) = run(&cfg, &["--policy", "field", "--last-fix", "friday"]);
    assert!(!ok && err.contains("friday"), "{err}");
    // A broken calendar is refused at load with file and line.
    let cal = dir.path().join("cal/xx");
    std::fs::create_dir_all(&cal).unwrap();
    std::fs::write(
        cal.join("2026.toml"),
        "name = \"xx\"\nyear = 2026\ntime_zone = \"UTC\"\nweekend = [\"sat\"]\nstatus = \"provisional\"\nsource = \"test\"\nholidays = [{ date = \"2026-13-01\", name = \"x\" }]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[silence]\ncalendars_dir = {:?}\npolicies = [{{ name = \"p\", warning = \"1 working day\", expiry = \"2 working days\", calendar = \"xx\" }}]\n",
            dir.path().join("cal").display().to_string()
        ),
    )
    .unwrap();
    let (ok, _, err) = run(
        &bad,
        &["--policy", "p", "--last-fix", "2026-05-22T18:00:00Z"],
    );
    assert!(!ok);
    assert!(err.contains("2026.toml:7: holidays[0].date"), "{err}");
}
