//! `hexflow policy when`: the worked example of docs/SILENCE.md through the real binary.

#![allow(clippy::unwrap_used)]

use std::process::Command;

/// `hexflow policy when --config <config> <args>`, `args` split at spaces.
fn run(config: &std::path::Path, args: &str) -> (bool, String, String) {
    let args: Vec<&str> = args.split_whitespace().collect();
    run_cmd(&["policy", "when"], config, &args)
}

/// [`run`] that must succeed: its standard output.
fn when(config: &std::path::Path, args: &str) -> String {
    let (ok, out, err) = run(config, args);
    assert!(ok, "policy when {args}: {err}");
    out
}

fn run_cmd(cmd: &[&str], config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hexflow"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(cmd)
        .arg("--config")
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

/// Writes calendar `xx`'s 2026 file (`body`) under `<dir>/cal` and a config at `config`
/// whose `calendars_dir` is that directory, followed by `rest` (more `[silence]` keys).
fn broken_calendar(dir: &std::path::Path, config: &std::path::Path, body: &str, rest: &str) {
    let cal = dir.join("cal/xx");
    std::fs::create_dir_all(&cal).unwrap();
    let head = "name = \"xx\"\nyear = 2026\ntime_zone = \"UTC\"\nweekend = [\"sat\"]\n";
    std::fs::write(cal.join("2026.toml"), format!("{head}{body}")).unwrap();
    let cal_dir = dir.join("cal").display().to_string();
    let text = format!("[silence]\ncalendars_dir = {cal_dir:?}\n{rest}");
    std::fs::write(config, text).unwrap();
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
  { name = "legal", warning = "1 working day", expiry = "more than 3 working days", calendar = "de" },
]
groups = [
  { name = "lab", policy = "field", ranges = [[100, 199]] },
  { name = "berlin", policy = "legal", ranges = [[1000, 1999]] },
]
exemptions = [
  { device = 7, reason = "bench unit" },
  { group = "lab", until = "2026-06-01T00:00:00Z", reason = "lab move" },
  { group = "berlin", from = "2026-08-01T00:00:00Z", until = "2026-08-15T00:00:00Z", reason = "summer shutdown" },
]
"#,
    )
    .unwrap();
    // (arguments, the whole output)
    let cases = [
        (
            "--policy field --last-fix 2026-05-22T18:00:00+02:00",
            "warning: 2026-05-26T16:00:00Z (2026-05-26T18:00:00+02:00 Europe/Berlin)\n\
             expiry: 2026-05-28T16:00:00Z (2026-05-28T18:00:00+02:00 Europe/Berlin)\n",
        ),
        // The date rule (the default), and the window's `from` honoured: the August shutdown
        // has not started when the May deadlines pass (the server's answer; it used to print
        // 2026-08-19).
        (
            "--policy legal --last-fix 2026-05-22T18:00:00+02:00 --device 1500",
            "warning: 2026-05-26T22:00:00Z (2026-05-27T00:00:00+02:00 Europe/Berlin)\n\
             expiry: 2026-05-28T22:00:00Z (2026-05-29T00:00:00+02:00 Europe/Berlin)\n",
        ),
        (
            "--policy default --last-fix 2026-05-22T18:00:00Z",
            "warning: 2026-05-24T18:00:00Z\nexpiry: 2026-05-25T18:00:00Z\n",
        ),
        // Permanently exempt: never.
        (
            "--policy field --last-fix 2026-05-22T18:00:00Z --device 7",
            "warning: never\nexpiry: never\n",
        ),
        // A window ending later moves the count to its end (Monday 2026-06-01 00:00 UTC =
        // 02:00 Berlin, a working day): one working day later.
        (
            "--policy field --last-fix 2026-05-22T18:00:00Z --device 150",
            "warning: 2026-06-02T00:00:00Z (2026-06-02T02:00:00+02:00 Europe/Berlin)\n\
             expiry: 2026-06-04T00:00:00Z (2026-06-04T02:00:00+02:00 Europe/Berlin)\n",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(when(&cfg, args), expected, "policy when {args}");
    }
    // --days lists what was counted (Whit Monday is a holiday in Berlin too).
    let out = when(
        &cfg,
        "--policy legal --last-fix 2026-05-22T18:00:00+02:00 --days",
    );
    assert!(
        out.ends_with(
            "warning counted in Europe/Berlin from Fri 2026-05-22: Sat 05-23 weekend, Sun 05-24 weekend, \
             Mon 05-25 holiday (Pfingstmontag), Tue 05-26 working day 1\n\
             expiry counted in Europe/Berlin from Fri 2026-05-22: Sat 05-23 weekend, Sun 05-24 weekend, \
             Mon 05-25 holiday (Pfingstmontag), Tue 05-26 working day 1, Wed 05-27 working day 2, \
             Thu 05-28 working day 3\n"
        ),
        "{out}"
    );
    // Past the calendar's coverage nothing is guessed.
    let out = when(&cfg, "--policy legal --last-fix 2027-12-30T12:00:00+01:00");
    assert!(out.starts_with("warning: 2027-12-31T23:00:00Z"), "{out}");
    assert!(out.contains("expiry: not computed"), "{out}");
    // Unknown policy and bad time are named.
    let (ok, _, err) = run(&cfg, "--policy nope --last-fix 2026-05-22T18:00:00Z");
    assert!(!ok && err.contains("nope"), "{err}");
    let (ok, _, err) = run(&cfg, "--policy field --last-fix friday");
    assert!(!ok && err.contains("friday"), "{err}");
    // A broken calendar is refused at load with file and line.
    let bad = dir.path().join("bad.toml");
    broken_calendar(
        dir.path(),
        &bad,
        "status = \"provisional\"\nsource = \"test\"\nholidays = [{ date = \"2026-13-01\", name = \"x\" }]\n",
        "policies = [{ name = \"p\", warning = \"1 working day\", expiry = \"2 working days\", calendar = \"xx\" }]\n",
    );
    let (ok, _, err) = run(&bad, "--policy p --last-fix 2026-05-22T18:00:00Z");
    assert!(!ok);
    assert!(err.contains("2026.toml:7: holidays[0].date"), "{err}");
}

#[test]
fn calendar_check_lists_coverage_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("h.toml");
    std::fs::write(&cfg, "[silence]\n").unwrap();
    let (_, out, err) = run_cmd(&["calendar", "check"], &cfg, &[]);
    // (The exit status depends on today's date: 2 once a coverage ends within 60 days.)
    assert!(
        out.contains("de (Europe/Berlin): 2025..=2027, coverage ends 2027-12-31"),
        "{out}{err}"
    );
    assert!(
        out.contains("ru (Europe/Moscow): 2025..=2027, coverage ends 2027-12-31"),
        "{out}"
    );
    assert!(
        out.contains("  2025 official: Labour Code art. 112; Government decree No. 1335"),
        "{out}"
    );
    assert!(out.contains("  2027 provisional: "), "{out}");
    // A broken calendar is named with its file and line.
    broken_calendar(dir.path(), &cfg, "status = \"draft\"\nsource = \"x\"\n", "");
    let (ok, _, err) = run_cmd(&["calendar", "check"], &cfg, &[]);
    assert!(!ok);
    assert!(err.contains("2026.toml:5: status = \"draft\""), "{err}");
}
