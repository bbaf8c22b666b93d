//! The silence subcommands of the binary: `hexflow policy when` and `hexflow calendar check`.
//!
//! Both only format: every answer comes from the `silence` crate's code the server runs
//! ([`silence::PolicySet::fires`] applies the rules of the scan; [`silence::Calendar`]'s
//! coverage is the one the start-up check reports).

use anyhow::Context;
use silence::SilenceConfig;

/// `policy when`: the `warning:` and `expiry:` lines for a device of `policy` whose newest fix
/// is at `last_fix` (RFC 3339), with `device`'s exemptions if given
/// ([`silence::render_when`]: UTC, then the threshold's own zone when it counts days); with
/// `days`, one more line per working-day threshold lists the days it counted
/// ([`silence::render_counted_days`]).
///
/// # Errors
/// An unknown policy, a bad time, or a configuration that does not load.
pub fn policy_when(
    cfg: &SilenceConfig,
    policy: &str,
    last_fix: &str,
    device: Option<u64>,
    days: bool,
) -> anyhow::Result<String> {
    let set = cfg.policy_set()?;
    let p = set.policy(policy).with_context(|| {
        let names: Vec<&str> = set.policies().iter().map(|p| p.name.as_str()).collect();
        format!("unknown policy {policy:?}; defined: {names:?}")
    })?;
    let fix_s = silence::parse_rfc3339(last_fix)
        .with_context(|| format!("--last-fix {last_fix:?} is not an RFC 3339 time"))?;
    let when = set.fires(p, device, fix_s);
    let mut out = silence::render_when(&when, p);
    if days {
        let counted = [
            ("warning", when.warning, when.warning_from_s, &p.warning),
            ("expiry", when.expiry, when.expiry_from_s, &p.expiry),
        ];
        for (name, firing, from_s, threshold) in counted {
            if let silence::Firing::At(at_s) = firing
                && let Some(line) = silence::render_counted_days(threshold, from_s, at_s)
            {
                out.push_str(&format!("{name} {line}\n"));
            }
        }
    }
    Ok(out)
}

/// `calendar check`: every calendar under `calendars_dir` with its coverage and each year's
/// status, judged at `now_s`; `true` when every coverage lasts at least
/// [`silence::calendar::COVERAGE_WARNING_DAYS`] more days.
///
/// # Errors
/// A calendar directory or file that cannot be read or is invalid (with its file and line).
pub fn calendar_check(cfg: &SilenceConfig, now_s: i64) -> anyhow::Result<(String, bool)> {
    let calendars = cfg.calendars_with_fs(&sys::fs::RealFs)?;
    let mut out = String::new();
    let mut ok = true;
    for c in &calendars {
        let cov = c.coverage_at(now_s);
        ok &= !cov.ends_soon();
        out.push_str(&cov.to_string());
    }
    if calendars.is_empty() {
        out.push_str(&format!(
            "no calendars in {}\n",
            cfg.calendars_dir.display()
        ));
    }
    Ok((out, ok))
}
