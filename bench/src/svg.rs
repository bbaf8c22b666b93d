//! A picture of a run's timeline: ack latency p50 / p99 / p99.9 per slot on a log scale,
//! throughput per slot, and the server's CPU per slot when it was sampled; the moment
//! every connection was up (start of the steady state) and the end of the sending phase
//! are marked, so a stall is visible at a glance.
//!
//! # Contract
//! * Pure: [`render`] turns a [`TimelineReport`] into a standalone SVG document (no
//!   scripts, no external resources); the caller writes it next to the JSON report.
//! * A slot with nothing acked has no latency point: the latency lines break there instead
//!   of dropping to zero, and the throughput panel shows the zero.
//! * Every text from the caller is XML-escaped.

use std::fmt::Write as _;

use crate::timeline::{SlotReport, TimelineReport};

/// Picture width, px.
pub const WIDTH: f64 = 960.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 20.0;
const TITLE_H: f64 = 40.0;
const LATENCY_H: f64 = 300.0;
const SMALL_H: f64 = 120.0;
const GAP: f64 = 45.0;

/// What the throughput panel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerSecond {
    /// Fixes acked per second (hexflow batches carry many fixes).
    Fixes,
    /// Requests acked per second (bare-quinn messages, handshakes).
    Requests,
}

/// How to draw the picture.
#[derive(Debug, Clone)]
pub struct SvgOptions {
    /// Title line (escaped).
    pub title: String,
    /// What the throughput panel counts.
    pub per_second: PerSecond,
}

/// A vertical band of the picture with its y mapping.
#[derive(Debug, Clone, Copy)]
struct Panel {
    top: f64,
    height: f64,
    scale: Scale,
}

#[derive(Debug, Clone, Copy)]
enum Scale {
    /// log10 from 10^lo to 10^hi.
    Log { lo: i32, hi: i32 },
    /// 0 ..= max.
    Linear { max: f64 },
}

impl Panel {
    /// The y pixel of `v` (clamped into the panel).
    fn y(&self, v: f64) -> f64 {
        let frac = match self.scale {
            Scale::Log { lo, hi } => {
                let l = v.max(1e-9).log10();
                (l - f64::from(lo)) / f64::from(hi - lo)
            }
            Scale::Linear { max } => v / max,
        };
        self.top + self.height * (1.0 - frac.clamp(0.0, 1.0))
    }
}

/// The log scale (powers of ten) that holds every value of `values` (µs), at least 1 decade.
fn log_scale(values: impl Iterator<Item = u64>) -> Scale {
    let (mut min, mut max) = (u64::MAX, 0);
    for v in values.filter(|&v| v > 0) {
        min = min.min(v);
        max = max.max(v);
    }
    if max == 0 {
        return Scale::Log { lo: 2, hi: 4 };
    }
    let lo = (min as f64).log10().floor() as i32;
    let hi = ((max as f64).log10().ceil() as i32).max(lo + 1);
    Scale::Log { lo, hi }
}

/// The smallest "nice" bound (1, 2 or 5 times a power of ten) at or above `max`.
pub fn nice_max(max: f64) -> f64 {
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&b| b >= max * (1.0 - 1e-12))
        .unwrap_or(10.0 * p)
}

/// A latency in µs as a short label: `100 µs`, `1 ms`, `10 s`.
pub fn latency_label(us: f64) -> String {
    short_label(us, [" s", " ms", " µs"])
}

/// A count as a short label: `950`, `12k`, `1.5M`.
fn count_label(v: f64) -> String {
    short_label(v, ["M", "k", ""])
}

/// `v` in millions, thousands or ones (the largest it reaches), followed by that unit's
/// suffix in `suffixes`.
fn short_label(v: f64, suffixes: [&str; 3]) -> String {
    let [millions, thousands, ones] = suffixes;
    if v >= 1e6 {
        format!("{}{millions}", v / 1e6)
    } else if v >= 1e3 {
        format!("{}{thousands}", v / 1e3)
    } else {
        format!("{v}{ones}")
    }
}

/// Escapes `&`, `<`, `>` and `"` for XML text and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

struct Canvas {
    out: String,
    span_s: f64,
}

impl Canvas {
    fn x(&self, t_s: f64) -> f64 {
        let w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
        MARGIN_LEFT + w * (t_s / self.span_s).clamp(0.0, 1.0)
    }

    fn text(&mut self, x: f64, y: f64, anchor: &str, class: &str, s: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" class="{class}">{}</text>"#,
            escape(s)
        );
    }

    fn hline(&mut self, y: f64, class: &str) {
        let (x0, x1) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT);
        let _ = writeln!(
            self.out,
            r#"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" class="{class}"/>"#
        );
    }

    fn vline(&mut self, x: f64, y0: f64, y1: f64, class: &str) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" class="{class}"/>"#
        );
    }

    /// Polylines through the points, broken wherever a point is `None`.
    fn series(&mut self, points: &[Option<(f64, f64)>], class: &str) {
        for run in points.split(Option::is_none) {
            if run.is_empty() {
                continue;
            }
            let mut d = String::new();
            for (x, y) in run.iter().flatten() {
                let _ = write!(d, "{x:.1},{y:.1} ");
            }
            let _ = writeln!(
                self.out,
                r#"<polyline points="{}" class="{class}"/>"#,
                d.trim_end()
            );
        }
    }

    fn frame(&mut self, p: &Panel, label: &str) {
        let _ = writeln!(
            self.out,
            r#"<rect x="{MARGIN_LEFT:.1}" y="{:.1}" width="{:.1}" height="{:.1}" class="frame"/>"#,
            p.top,
            WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
            p.height
        );
        self.text(MARGIN_LEFT, p.top - 6.0, "start", "label", label);
    }
}

/// The middle of each slot, s.
fn mid(s: &SlotReport, slot_s: f64) -> f64 {
    s.t_s + slot_s / 2.0
}

fn latency_panel(c: &mut Canvas, r: &TimelineReport, top: f64) -> Panel {
    let acked = || r.slots.iter().filter(|s| s.batches > 0);
    let scale = log_scale(acked().flat_map(|s| [s.p50_us, s.p99_us, s.p999_us]));
    let p = Panel {
        top,
        height: LATENCY_H,
        scale,
    };
    c.frame(&p, "ack latency per slot (log scale): p50, p99, p99.9");
    if let Scale::Log { lo, hi } = scale {
        for e in lo..=hi {
            let v = 10f64.powi(e);
            let y = p.y(v);
            c.hline(y, "grid");
            c.text(MARGIN_LEFT - 6.0, y + 4.0, "end", "tick", &latency_label(v));
        }
    }
    type Pick = fn(&SlotReport) -> u64;
    let picks: [(Pick, &str); 3] = [
        (|s| s.p999_us, "p999"),
        (|s| s.p99_us, "p99"),
        (|s| s.p50_us, "p50"),
    ];
    for (pick, class) in picks {
        let pts: Vec<_> = r
            .slots
            .iter()
            .map(|s| (s.batches > 0).then(|| (c.x(mid(s, r.slot_s)), p.y(pick(s) as f64))))
            .collect();
        c.series(&pts, class);
    }
    // The legend sits on the panel's label row, at the right.
    let y = top - 10.0;
    for (i, (class, name)) in [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")]
        .iter()
        .enumerate()
    {
        let lx = WIDTH - MARGIN_RIGHT - 210.0 + 70.0 * i as f64;
        let _ = writeln!(
            c.out,
            r#"<line x1="{lx:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="{class}"/>"#,
            lx + 24.0
        );
        c.text(lx + 30.0, y + 4.0, "start", "tick", name);
    }
    p
}

/// A linear panel of one value per slot (`None`: not known for that slot).
fn linear_panel(c: &mut Canvas, r: &TimelineReport, top: f64, label: &str, values: &[Option<f64>]) {
    let max = nice_max(values.iter().flatten().copied().fold(0.0, f64::max));
    let p = Panel {
        top,
        height: SMALL_H,
        scale: Scale::Linear { max },
    };
    c.frame(&p, label);
    for v in [0.0, max / 2.0, max] {
        let y = p.y(v);
        c.hline(y, "grid");
        c.text(MARGIN_LEFT - 6.0, y + 4.0, "end", "tick", &count_label(v));
    }
    let pts: Vec<_> = r
        .slots
        .iter()
        .zip(values)
        .map(|(s, v)| v.map(|v| (c.x(mid(s, r.slot_s)), p.y(v))))
        .collect();
    c.series(&pts, "rate");
}

/// The time span drawn: up to one slot after the later of the end of the sending phase and
/// the last slot with an ack (the empty tail of the grace period is left out).
fn shown_span_s(r: &TimelineReport) -> f64 {
    let all = r.slots.len() as f64 * r.slot_s;
    let last_ack = r
        .slots
        .iter()
        .rposition(|s| s.batches > 0)
        .map_or(0.0, |i| (i + 1) as f64 * r.slot_s);
    (last_ack.max(r.load_end_s) + r.slot_s)
        .min(all)
        .max(r.slot_s)
        .max(1e-3)
}

/// A tick value without float noise (`0.2`, `15`, `2000`).
fn round_label(t: f64) -> String {
    let r = (t * 1000.0).round() / 1000.0;
    format!("{r}")
}

/// Renders the timeline as an SVG document.
pub fn render(r: &TimelineReport, opts: &SvgOptions) -> String {
    let span_s = shown_span_s(r);
    let cpu: Vec<Option<f64>> = r
        .slots
        .iter()
        .map(|s| s.server_cpu_s.map(|c| c / r.slot_s))
        .collect();
    let has_cpu = cpu.iter().any(Option::is_some);
    let panels = if has_cpu { 3.0 } else { 2.0 };
    let height = TITLE_H + LATENCY_H + (panels - 1.0) * (SMALL_H + GAP) + GAP + 20.0;
    let mut c = Canvas {
        out: String::new(),
        span_s,
    };
    let _ = writeln!(
        c.out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">"#
    );
    c.out.push_str(concat!(
        "<style>text{font-family:sans-serif;font-size:12px;fill:#222}",
        ".title{font-size:15px}.label{font-size:12px;fill:#444}.tick{font-size:11px;fill:#555}",
        ".frame{fill:none;stroke:#888}.grid{stroke:#ddd}",
        "polyline,line.p50,line.p99,line.p999{fill:none;stroke-width:1.8}",
        ".p50{stroke:#1f77b4}.p99{stroke:#d62728}.p999{stroke:#ff7f0e;stroke-dasharray:4 3}",
        ".rate{stroke:#2ca02c}.mark{stroke:#000;stroke-dasharray:6 4}.end{stroke:#777;stroke-dasharray:2 3}",
        "</style>\n"
    ));
    c.text(MARGIN_LEFT, 24.0, "start", "title", &opts.title);
    let mut top = TITLE_H + 10.0;
    latency_panel(&mut c, r, top);
    top += LATENCY_H + GAP;
    let (label, per_s): (&str, Vec<Option<f64>>) = match opts.per_second {
        PerSecond::Fixes => (
            "fixes acked per second",
            r.slots
                .iter()
                .map(|s| Some(s.fixes as f64 / r.slot_s))
                .collect(),
        ),
        PerSecond::Requests => (
            "requests acked per second",
            r.slots
                .iter()
                .map(|s| Some(s.batches as f64 / r.slot_s))
                .collect(),
        ),
    };
    linear_panel(&mut c, r, top, label, &per_s);
    if has_cpu {
        top += SMALL_H + GAP;
        linear_panel(&mut c, r, top, "server CPU, cores", &cpu);
    }
    let bottom = top + SMALL_H;
    let axis_y = bottom + 18.0;
    let step = nice_max(span_s / 8.0);
    let mut t = 0.0;
    while t <= span_s * (1.0 + 1e-9) {
        c.text(
            c.x(t),
            axis_y,
            "middle",
            "tick",
            &format!("{} s", round_label(t)),
        );
        t += step;
    }
    let first_top = TITLE_H + 10.0;
    if let Some(at) = r.all_connected_at_s {
        let x = c.x(at);
        c.vline(x, first_top, bottom, "mark");
        let label = format!("all connected at {at:.1} s: steady state from here");
        c.text(
            x + 4.0,
            first_top + LATENCY_H - 6.0,
            "start",
            "label",
            &label,
        );
    }
    let x = c.x(r.load_end_s);
    c.vline(x, first_top, bottom, "end");
    c.text(x - 4.0, first_top + 14.0, "end", "label", "sending ends");
    c.out.push_str("</svg>\n");
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(t_s: f64, batches: u64, p50: u64, p99: u64, cpu: Option<f64>) -> SlotReport {
        SlotReport {
            t_s,
            batches,
            fixes: batches * 50,
            p50_us: p50,
            p99_us: p99,
            p999_us: p99 * 2,
            max_us: p99 * 3,
            server_cpu_s: cpu,
            server_rss_kb: cpu.map(|_| 1000),
        }
    }

    fn report(slots: Vec<SlotReport>) -> TimelineReport {
        TimelineReport {
            slot_s: 1.0,
            load_end_s: (slots.len() - 1) as f64,
            all_connected_at_s: Some(2.0),
            all_devices_connected_at_s: Some(2.0),
            slots,
        }
    }

    fn opts(title: &str) -> SvgOptions {
        SvgOptions {
            title: title.to_owned(),
            per_second: PerSecond::Fixes,
        }
    }

    /// Every opened element is closed in order (self-closing ones count as both).
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let j = rest[i..].find('>').expect("tag closed") + i;
            let tag = &rest[i + 1..j];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name.to_owned());
            }
            rest = &rest[j + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    #[test]
    fn log_scale_maps_decades_evenly() {
        let scale = log_scale([150u64, 2_000, 0, 420_000].into_iter());
        let Scale::Log { lo, hi } = scale else {
            panic!("log")
        };
        assert_eq!((lo, hi), (2, 6));
        let p = Panel {
            top: 100.0,
            height: 400.0,
            scale,
        };
        assert_eq!(p.y(100.0), 500.0);
        assert_eq!(p.y(1_000_000.0), 100.0);
        assert!((p.y(10_000.0) - 300.0).abs() < 1e-9);
        assert_eq!(p.y(1.0), 500.0, "clamped");
        let Scale::Log { lo, hi } = log_scale([1_000u64].into_iter()) else {
            panic!("log")
        };
        assert_eq!((lo, hi), (3, 4), "at least one decade");
    }

    #[test]
    fn nice_bounds_and_labels() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(nice_max(101.0), 200.0);
        assert_eq!(nice_max(420_000.0), 500_000.0);
        assert_eq!(latency_label(100.0), "100 µs");
        assert_eq!(latency_label(1e4), "10 ms");
        assert_eq!(latency_label(1e7), "10 s");
        assert_eq!(count_label(500_000.0), "500k");
        assert_eq!(escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
    }

    #[test]
    fn empty_slots_break_the_latency_lines() {
        let r = report(vec![
            slot(0.0, 10, 1_000, 5_000, None),
            slot(1.0, 10, 1_000, 5_000, None),
            slot(2.0, 0, 0, 0, None),
            slot(3.0, 10, 2_000, 900_000, None),
            slot(4.0, 10, 1_000, 5_000, None),
        ]);
        let svg = render(&r, &opts("run <1> & more"));
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg "));
        assert!(svg.contains("run &lt;1&gt; &amp; more"));
        // Three latency series, each in two pieces, plus one unbroken throughput line.
        assert_eq!(svg.matches("<polyline").count(), 3 * 2 + 1);
        assert_eq!(
            svg.matches(r#"class="p99""#).count(),
            2 + 1,
            "two pieces + legend"
        );
        assert!(!svg.contains("server CPU"), "no CPU panel without samples");
        assert!(svg.contains("all connected at 2.0 s"));
        assert!(svg.contains("sending ends"));
        // The steady-state mark sits at t = 2 s of a 5 s span.
        let x = MARGIN_LEFT + (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) * 2.0 / 5.0;
        assert!(svg.contains(&format!(r#"<line x1="{x:.1}""#)), "{svg}");
        // The spike of slot 3 is drawn higher (smaller y) than the steady p99.
        assert!(
            svg.contains("1 s</text>"),
            "scale reaches the 900 ms p99.9 spike"
        );
    }

    #[test]
    fn server_cpu_gets_its_own_panel() {
        let r = report(vec![
            slot(0.0, 10, 1_000, 5_000, Some(0.5)),
            slot(1.0, 10, 1_000, 5_000, Some(1.5)),
            slot(2.0, 10, 1_000, 5_000, None),
        ]);
        let svg = render(
            &r,
            &SvgOptions {
                title: "t".into(),
                per_second: PerSecond::Requests,
            },
        );
        assert_well_formed(&svg);
        assert!(svg.contains("server CPU, cores"));
        assert!(svg.contains("requests acked per second"));
        // 3 latency lines + rate line + CPU line broken after slot 1.
        assert_eq!(svg.matches("<polyline").count(), 3 + 1 + 1);
        assert!(svg.contains(r#"height="735""#), "{}", &svg[..200]);
    }

    #[test]
    fn the_empty_tail_is_left_out_and_ticks_are_round() {
        let mut slots: Vec<SlotReport> = (0..4)
            .map(|i| slot(f64::from(i), 10, 1_000, 2_000, None))
            .collect();
        slots.extend((4..14).map(|i| slot(f64::from(i), 0, 0, 0, None)));
        let mut r = report(slots);
        r.load_end_s = 6.0;
        assert_eq!(shown_span_s(&r), 7.0);
        r.load_end_s = 1.0;
        assert_eq!(shown_span_s(&r), 5.0, "one slot after the last ack");
        r.load_end_s = 30.0;
        assert_eq!(shown_span_s(&r), 14.0, "never beyond the slots");
        r.load_end_s = 6.0;
        let svg = render(&r, &opts("t"));
        // Span 7 s: a tick every 1 s (nice_max(7 / 8) = 1), 0 s ..= 7 s.
        for t in 0..=7 {
            assert!(svg.contains(&format!(">{t} s</text>")), "tick {t}");
        }
        assert!(!svg.contains(">8 s</text>"));
        assert_eq!(round_label(0.1 + 0.2), "0.3");
    }

    #[test]
    fn a_run_with_nothing_acked_still_renders() {
        let mut r = report(vec![slot(0.0, 0, 0, 0, None), slot(1.0, 0, 0, 0, None)]);
        r.all_connected_at_s = None;
        let svg = render(&r, &opts("nothing"));
        assert_well_formed(&svg);
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "only the zero throughput"
        );
        assert!(!svg.contains("all connected"));
    }
}
