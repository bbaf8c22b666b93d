//! Folded stacks from `perf script` output, the top symbols, and a flame graph as SVG:
//! the folding step of `bench/profile.sh` (no external FlameGraph scripts needed).
//!
//! # Contract
//! * Pure: text in, counts and text out.
//! * A sample is a header line (`comm pid/tid ... event:`) followed by its frames, innermost
//!   first, one per line, and ends at a blank line. The folded stack is the thread name
//!   (`comm`) then the frames outermost first, joined by `;`, counted once per sample.
//! * Frame names: the symbol without its `+0x..` offset, `;` replaced by `:` (the separator);
//!   an unknown symbol becomes `[dso]` (the file name of the object it was in); kernel
//!   frames get the suffix `_[k]` (the flamegraph.pl convention).
//! * The reports group self time by crate ([`crate_of`]) and leave thread-start, runtime and
//!   closure plumbing out of the inclusive list ([`is_plumbing`]), so the top lines name work.
//! * The flame graph draws the root at the top (an icicle); a frame narrower than
//!   [`MIN_WIDTH_PX`] is not drawn, which bounds the output whatever the input size.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::svg::escape;

/// Frames narrower than this are left out of the flame graph, px.
pub const MIN_WIDTH_PX: f64 = 0.3;
const FLAME_WIDTH: f64 = 1200.0;
const ROW_H: f64 = 16.0;

/// Stack (`thread;outer;...;inner`) -> samples.
pub type Folded = BTreeMap<String, u64>;

/// The frame name in one `perf script` frame line (`addr symbol+0xoff (dso)`).
pub fn frame_name(line: &str) -> Option<String> {
    let line = line.trim();
    let (_addr, rest) = line.split_once(char::is_whitespace)?;
    let rest = rest.trim();
    let (sym, dso) = match rest.rfind(" (") {
        Some(i) if rest.ends_with(')') => (&rest[..i], &rest[i + 2..rest.len() - 1]),
        _ => (rest, ""),
    };
    let sym = match sym.rfind("+0x") {
        Some(i) if sym[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &sym[..i],
        _ => sym,
    };
    let name = if sym.is_empty() || sym == "[unknown]" {
        let file = dso.rsplit('/').next().unwrap_or(dso);
        format!("[{}]", if file.is_empty() { "unknown" } else { file })
    } else if dso == "[kernel.kallsyms]" {
        format!("{sym}_[k]")
    } else {
        sym.to_owned()
    };
    Some(name.replace(';', ":"))
}

/// The thread name of a sample header line: everything before the `pid` or `pid/tid` field.
pub fn header_comm(line: &str) -> Option<String> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let is_pid = |t: &str| {
        !t.is_empty()
            && t.split('/')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let at = tokens.iter().position(|t| is_pid(t))?;
    (at > 0).then(|| tokens[..at].join(" ").replace(';', ":"))
}

/// Folds the text of `perf script` (see the module contract).
pub fn fold<'a>(lines: impl IntoIterator<Item = &'a str>) -> Folded {
    let mut out = Folded::new();
    let mut comm: Option<String> = None;
    let mut frames: Vec<String> = Vec::new();
    let mut flush = |comm: &mut Option<String>, frames: &mut Vec<String>| {
        if let Some(c) = comm.take() {
            let mut stack = c;
            for f in frames.iter().rev() {
                stack.push(';');
                stack.push_str(f);
            }
            *out.entry(stack).or_default() += 1;
        }
        frames.clear();
    };
    for line in lines {
        if line.trim().is_empty() {
            flush(&mut comm, &mut frames);
        } else if line.starts_with(char::is_whitespace) {
            if comm.is_some() {
                frames.extend(frame_name(line));
            }
        } else {
            flush(&mut comm, &mut frames);
            comm = header_comm(line);
        }
    }
    flush(&mut comm, &mut frames);
    out
}

/// The folded stacks as text, one `stack count` per line (the flamegraph.pl format).
pub fn to_text(folded: &Folded) -> String {
    let mut s = String::new();
    for (stack, n) in folded {
        let _ = writeln!(s, "{stack} {n}");
    }
    s
}

/// Where a frame's code comes from: `kernel` (`_[k]`), `mimalloc` (`mi_*`), the first path
/// segment of a Rust symbol (`quinn_proto`, `h3o`, `std`, ...), or `other` (libc, inlined
/// frames without a path, unknown objects).
pub fn crate_of(frame: &str) -> &str {
    if frame.ends_with("_[k]") {
        return "kernel";
    }
    if frame.starts_with("mi_") || frame.starts_with("_mi_") {
        return "mimalloc";
    }
    let f = frame.trim_start_matches('<');
    match f.split_once("::") {
        Some((head, _))
            if !head.is_empty() && head.chars().all(|c| c.is_alphanumeric() || c == '_') =>
        {
            head
        }
        _ => "other",
    }
}

/// Frames that are on most stacks without doing the work themselves: thread start, the
/// tokio runtime's task machinery, closures and unwinding shims, syscall entry.
pub fn is_plumbing(frame: &str) -> bool {
    const PREFIXES: [&str; 16] = [
        "std::",
        "<std::",
        "core::",
        "<core::",
        "<alloc::boxed::Box<dyn core::ops::function::Fn",
        "tokio::runtime::",
        "<tokio::runtime::",
        "call_once",
        "catch_unwind",
        "do_call",
        "__rust_",
        "enter_runtime",
        "poll<tokio::runtime",
        "{closure",
        "start_thread",
        "clone3",
    ];
    const EXACT: [&str; 5] = [
        "run",
        "entry_SYSCALL_64_after_hwframe_[k]",
        "do_syscall_64_[k]",
        "[unknown]",
        "main",
    ];
    PREFIXES.iter().any(|p| frame.starts_with(p)) || EXACT.contains(&frame)
}

/// Samples by name, largest first, at most `n`: by leaf frame (`self_time`) or by every
/// frame on the stack except [`is_plumbing`] ones, each counted once per sample (inclusive).
pub fn top(folded: &Folded, n: usize, self_time: bool) -> Vec<(String, u64)> {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for (stack, &count) in folded {
        let mut frames: Vec<&str> = stack.split(';').skip(1).collect();
        if self_time {
            frames = frames.last().copied().into_iter().collect();
        } else {
            frames.retain(|f| !is_plumbing(f));
            frames.sort_unstable();
            frames.dedup();
        }
        for f in frames {
            *by.entry(f).or_default() += count;
        }
    }
    let mut v = largest_first(by);
    v.truncate(n);
    v
}

/// Sample counts by name, largest first (ties by name).
fn largest_first(by: BTreeMap<&str, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = by.into_iter().map(|(k, c)| (k.to_owned(), c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Samples summed by `key` of their stack, largest first.
fn sum_by<'a>(folded: &'a Folded, key: impl Fn(&'a str) -> &'a str) -> Vec<(String, u64)> {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for (stack, &count) in folded {
        *by.entry(key(stack)).or_default() += count;
    }
    largest_first(by)
}

/// Self samples by [`crate_of`] the leaf frame, largest first.
pub fn by_crate(folded: &Folded) -> Vec<(String, u64)> {
    sum_by(folded, |stack| {
        crate_of(stack.rsplit(';').next().unwrap_or(""))
    })
}

/// Samples by thread name (the root of every stack), largest first.
pub fn by_thread(folded: &Folded) -> Vec<(String, u64)> {
    sum_by(folded, |stack| stack.split(';').next().unwrap_or(""))
}

/// A Markdown report: samples per thread, top `n` by self time and inclusive.
pub fn top_report(folded: &Folded, n: usize) -> String {
    let total: u64 = folded.values().sum();
    let pct = |c: u64| 100.0 * c as f64 / total.max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{total} samples\n\n| thread | samples | % |\n|---|---|---|"
    );
    for (t, c) in by_thread(folded) {
        let _ = writeln!(s, "| {t} | {c} | {:.1} |", pct(c));
    }
    let _ = writeln!(s, "\n| self time by crate | samples | % |\n|---|---|---|");
    for (k, c) in by_crate(folded) {
        let _ = writeln!(s, "| {k} | {c} | {:.1} |", pct(c));
    }
    for (title, self_time) in [("self", true), ("inclusive, without plumbing", false)] {
        let _ = writeln!(s, "\n| top {n}, {title} | samples | % |\n|---|---|---|");
        for (f, c) in top(folded, n, self_time) {
            let _ = writeln!(s, "| `{}` | {c} | {:.1} |", f.replace('|', "\\|"), pct(c));
        }
    }
    s
}

#[derive(Default)]
struct Node {
    value: u64,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn depth(&self) -> usize {
        1 + self.children.values().map(Node::depth).max().unwrap_or(0)
    }
}

/// A warm colour derived from the name, stable across runs.
fn colour(name: &str) -> String {
    let h = name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    format!(
        "rgb({},{},{})",
        205 + (h % 50),
        80 + ((h >> 8) % 130),
        40 + ((h >> 16) % 40)
    )
}

/// The flame graph (icicle: root at the top) of `folded` as an SVG document.
pub fn flamegraph(folded: &Folded, title: &str) -> String {
    let mut root = Node::default();
    for (stack, &count) in folded {
        root.value += count;
        let mut node = &mut root;
        for f in stack.split(';') {
            node = node.children.entry(f.to_owned()).or_default();
            node.value += count;
        }
    }
    let depth = root.depth();
    let height = 40.0 + ROW_H * depth as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{FLAME_WIDTH}" height="{height}" viewBox="0 0 {FLAME_WIDTH} {height}">"#
    );
    s.push_str("<style>text{font-family:monospace;font-size:11px;fill:#000}.t{font-family:sans-serif;font-size:14px}</style>\n");
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" class="t">{} ({} samples)</text>"#,
        escape(title),
        root.value
    );
    let scale = FLAME_WIDTH / root.value.max(1) as f64;
    draw(&mut s, &root, "all", 0.0, 30.0, scale, root.value.max(1));
    s.push_str("</svg>\n");
    s
}

fn draw(s: &mut String, node: &Node, name: &str, x: f64, y: f64, scale: f64, total: u64) {
    let w = node.value as f64 * scale;
    if w < MIN_WIDTH_PX {
        return;
    }
    let pct = 100.0 * node.value as f64 / total as f64;
    let label = escape(name);
    let _ = write!(
        s,
        r#"<g><title>{label} ({} samples, {pct:.2}%)</title><rect x="{x:.2}" y="{y:.1}" width="{w:.2}" height="{:.1}" fill="{}"/>"#,
        node.value,
        ROW_H - 1.0,
        colour(name)
    );
    // About 7 px per character at 11 px monospace.
    let chars = ((w - 4.0) / 7.0).floor();
    if chars >= 3.0 {
        let text: String = name.chars().take(chars as usize).collect();
        let _ = write!(
            s,
            r#"<text x="{:.2}" y="{:.1}">{}</text>"#,
            x + 2.0,
            y + ROW_H - 4.0,
            escape(&text)
        );
    }
    s.push_str("</g>\n");
    let mut cx = x;
    for (child_name, child) in &node.children {
        draw(s, child, child_name, cx, y + ROW_H, scale, total);
        cx += child.value as f64 * scale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
hexflow-io 4242/4243 [001] 100.000001:   1001001 cpu-clock:pppH:
\t    55d0c0a1b2c3 quinn_proto::connection::Connection::poll+0x123 (/t/hexflow)
\t    55d0c0a1b000 <quinn::ConnectionDriver as core::future::Future>::poll+0x1f (/t/hexflow)
\t    55d0c0a10000 std::thread::start+0x10 (/t/hexflow)

wal 4242/4250 [000] 100.000002:   1001001 cpu-clock:pppH:
\t    ffffffff81000000 finish_task_switch.isra.0+0x90 ([kernel.kallsyms])
\t    7f0000000000 [unknown] (/usr/lib/x86_64-linux-gnu/libc.so.6)

hexflow-io 4242/4244 [001] 100.000003:   1001001 cpu-clock:pppH:
\t    55d0c0a1b2c4 quinn_proto::connection::Connection::poll+0x124 (/t/hexflow)
\t    55d0c0a1b001 <quinn::ConnectionDriver as core::future::Future>::poll+0x20 (/t/hexflow)
\t    55d0c0a10001 std::thread::start+0x11 (/t/hexflow)
tokio runtime w 4242/4245 [000] 100.000004:   1001001 cpu-clock:pppH:
\t    55d0c0a1b2c5 h3o::index::cell::latlng_to_cell;x+0x1 (/t/hexflow)
";

    #[test]
    fn perf_script_folds_into_counted_stacks() {
        let f = fold(SCRIPT.lines());
        let io = "hexflow-io;std::thread::start;<quinn::ConnectionDriver as core::future::Future>::poll;quinn_proto::connection::Connection::poll";
        assert_eq!(f.get(io), Some(&2), "{f:#?}");
        assert_eq!(
            f.get("wal;[libc.so.6];finish_task_switch.isra.0_[k]"),
            Some(&1)
        );
        // A header right after frames (no blank line) still starts a new sample; a thread
        // name with spaces is kept whole; `;` inside a symbol cannot split the stack.
        assert_eq!(
            f.get("tokio runtime w;h3o::index::cell::latlng_to_cell:x"),
            Some(&1)
        );
        assert_eq!(f.values().sum::<u64>(), 4);
        let text = to_text(&f);
        assert!(text.lines().all(|l| {
            l.rsplit_once(' ')
                .is_some_and(|(_, n)| n.parse::<u64>().is_ok())
        }));
    }

    #[test]
    fn frame_and_header_parsing_edges() {
        assert_eq!(frame_name("\t abc foo+0x1f (/x/y)").as_deref(), Some("foo"));
        assert_eq!(
            frame_name(" abc foo+0xzz (/x/y)").as_deref(),
            Some("foo+0xzz")
        );
        assert_eq!(
            frame_name(" abc [unknown] ([vdso])").as_deref(),
            Some("[[vdso]]")
        );
        assert_eq!(frame_name(" abc bar").as_deref(), Some("bar"));
        assert_eq!(frame_name("   "), None);
        assert_eq!(
            header_comm("hexflow-io 1/2 [000] 1.0: 1 cpu-clock:").as_deref(),
            Some("hexflow-io")
        );
        assert_eq!(header_comm("a b 77 [000] 1.0:").as_deref(), Some("a b"));
        assert_eq!(header_comm("12/13 [000]"), None);
        assert_eq!(fold(["\tframe before any header"]), Folded::new());
    }

    #[test]
    fn frames_are_grouped_by_crate_and_plumbing_is_recognised() {
        assert_eq!(crate_of("finish_task_switch.isra.0_[k]"), "kernel");
        assert_eq!(crate_of("mi_page_malloc_zero"), "mimalloc");
        assert_eq!(
            crate_of("quinn_proto::connection::Connection::poll"),
            "quinn_proto"
        );
        assert_eq!(
            crate_of("<quinn::ConnectionDriver as core::future::Future>::poll"),
            "quinn"
        );
        assert_eq!(crate_of("<std::sys::time::unix::Instant>::now"), "std");
        assert_eq!(crate_of("__memcpy_avx_unaligned_erms"), "other");
        assert_eq!(crate_of("poll<tokio::x>"), "other");
        assert_eq!(crate_of("{closure#0}"), "other");
        assert!(is_plumbing(
            "std::sys::backtrace::__rust_begin_short_backtrace"
        ));
        assert!(is_plumbing("do_syscall_64_[k]"));
        assert!(is_plumbing("run"));
        assert!(!is_plumbing("quinn_proto::connection::Connection::poll"));
        assert!(!is_plumbing("storage::wal::encode_record"));
        let f = fold(SCRIPT.lines());
        assert_eq!(
            by_crate(&f),
            vec![
                ("quinn_proto".to_owned(), 2),
                ("h3o".to_owned(), 1),
                ("kernel".to_owned(), 1)
            ]
        );
        let incl = top(&f, 10, false);
        assert!(
            incl.iter().all(|(name, _)| !name.starts_with("std::")),
            "{incl:?}"
        );
    }

    #[test]
    fn top_symbols_count_self_and_inclusive() {
        let f = fold(SCRIPT.lines());
        let selfs = top(&f, 10, true);
        assert_eq!(
            selfs[0],
            ("quinn_proto::connection::Connection::poll".to_owned(), 2)
        );
        assert_eq!(selfs.len(), 3);
        let incl = top(&f, 2, false);
        assert_eq!(incl.len(), 2);
        assert_eq!(incl[0].1, 2);
        // A recursive frame counts once per sample.
        let mut rec = Folded::new();
        rec.insert("t;a;b;a".to_owned(), 5);
        assert_eq!(
            top(&rec, 5, false),
            vec![("a".to_owned(), 5), ("b".to_owned(), 5)]
        );
        assert_eq!(by_thread(&f)[0], ("hexflow-io".to_owned(), 2));
        let report = top_report(&f, 5);
        assert!(report.starts_with("4 samples"));
        assert!(report.contains("| hexflow-io | 2 | 50.0 |"), "{report}");
    }

    #[test]
    fn flame_graph_is_proportional_and_bounded() {
        let f = fold(SCRIPT.lines());
        let svg = flamegraph(&f, "profile <x>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("profile &lt;x&gt; (4 samples)"));
        // The root spans the full width; hexflow-io is half of it.
        assert!(svg.contains(r#"width="1200.00""#));
        assert!(svg.contains(r#"<title>hexflow-io (2 samples, 50.00%)</title><rect x="0.00" y="46.0" width="600.00""#), "{svg}");
        assert_eq!(svg.matches("<g>").count(), svg.matches("</g>").count());
        // One hot stack and a million cold ones: the cold ones are too narrow to draw.
        let mut big = Folded::new();
        big.insert("t;hot".to_owned(), 10_000_000);
        for i in 0..100_000 {
            big.insert(format!("t;cold{i}"), 1);
        }
        let svg = flamegraph(&big, "big");
        assert!(svg.len() < 10_000, "{} bytes", svg.len());
    }
}
