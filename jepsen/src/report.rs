//! `report.html`: one self-contained page for a chaos run — the verdict, every checker and
//! its anomalies, throughput and latency over time with the faults shaded, the faults
//! themselves, the Raft terms around each partition ([`partitions`]) and how to read it all.
//!
//! Inline CSS and inline SVG only: no scripts, fonts or anything else fetched from anywhere,
//! so the file can be opened straight from a CI artifact. [`render`] is a pure function of
//! the history and the results and never panics, whatever is in them.

use std::collections::HashMap;
use std::fmt::Write;

use crate::history::{Op, OpType, F};
use crate::results::Results;

mod partitions;

/// At most this many latency dots are drawn (sampled deterministically beyond that).
const MAX_DOTS: usize = 20_000;
/// At most about this many time buckets in a chart.
const MAX_BUCKETS: f64 = 300.0;
/// Bucket widths to choose from, in seconds: the first that gives at most [`MAX_BUCKETS`].
const BUCKET_WIDTHS_S: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Times beyond this (about 31 years, in ms) are clamped: they can only be garbage.
const MAX_TIME_MS: f64 = 1e12;
/// At most this many anomaly markers are drawn on the latency chart.
const MAX_MARKERS: usize = 500;

/// Chart geometry, in SVG user units.
const W: f64 = 1100.0;
const H: f64 = 330.0;
const ML: f64 = 66.0;
const MR: f64 = 66.0;
const MT: f64 = 16.0;
const MB: f64 = 46.0;
const PW: f64 = W - ML - MR;
const PH: f64 = H - MT - MB;
const BOTTOM: f64 = MT + PH;

const OK_COLOUR: &str = "#2ca02c";
const FAIL_COLOUR: &str = "#d62728";
const INFO_COLOUR: &str = "#ff7f0e";
const READ_COLOUR: &str = "#1f77b4";
const P95_COLOUR: &str = "#222222";

const FAULT_KINDS: [&str; 5] = ["kill", "pause", "partition", "sink", "clock"];

/// Writes into a `String`, which cannot fail.
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = write!($dst, $($arg)*);
    }};
}

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;background:#fff;max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:20px;margin:0 0 10px;color:#57606a;font-weight:600}
h2{font-size:18px;margin:30px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.verdict{display:inline-block;font-size:46px;font-weight:800;letter-spacing:1px;color:#fff;padding:6px 22px;border-radius:8px}
.verdict.valid{background:#1a7f37}
.verdict.invalid{background:#cf222e}
.meta{margin:10px 0;font-size:15px}
.meta b{font-weight:600}
.plants{margin:12px 0;padding:10px 14px;background:#fff3cd;border:2px solid #d4a72c;border-radius:6px;font-size:17px;font-weight:700}
.plants small{display:block;font-weight:400;font-size:13px;margin-top:2px}
table{border-collapse:collapse;margin:6px 0}
th,td{border:1px solid #d0d7de;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.yes{color:#1a7f37;font-weight:800;font-size:16px}
.no{color:#cf222e;font-weight:800;font-size:16px}
ul.anomalies{margin:4px 0 10px;padding-left:22px}
ul.anomalies li{margin:2px 0}
.muted{color:#57606a}
.chart{display:block;width:100%;height:auto;max-width:1100px;border:1px solid #eaeef2;border-radius:4px}
.chart text{font-size:11px;fill:#444}
.chart .title{font-size:12px;fill:#222}
.chart .fs:hover{fill-opacity:.38}
.legend{margin:4px 0 2px;font-size:13px}
.legend .item{display:inline-block;margin-right:16px;white-space:nowrap}
.legend svg{vertical-align:-2px;margin-right:4px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:4px;border:1px solid rgba(0,0,0,.25)}
.howto{max-width:900px}
.howto li{margin:3px 0}
"#;

/// Renders `report.html` for a run.
pub fn render(history: &[Op], results: &Results) -> String {
    let tl = Timeline::new(history);
    let faults = fault_spans(history);
    let lookup = OpLookup::new(history);
    let mut out = String::with_capacity(64 * 1024);

    head(&mut out, results);
    header(&mut out, history, results, &tl);
    checkers(&mut out, results, &lookup);
    throughput_chart(&mut out, history, &tl, &faults);
    latency_chart(&mut out, history, results, &tl, &faults, &lookup);
    fault_table(&mut out, &faults, &tl);
    partitions::partition_table(&mut out, results);
    how_to_read(&mut out);
    out.push_str("</body>\n</html>\n");
    out
}

/// HTML-escapes text for element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time from the history made safe to compute with: NaN and negatives become 0, huge
/// values are clamped.
fn clean_ms(t: f64) -> f64 {
    if t.is_nan() {
        0.0
    } else {
        t.clamp(0.0, MAX_TIME_MS)
    }
}

/// Milliseconds as seconds with one decimal, or a dash.
fn secs(ms: f64) -> String {
    if ms.is_finite() {
        format!("{:.1}", ms / 1000.0)
    } else {
        "—".to_string()
    }
}

fn colour_of_kind(kind: &str) -> &'static str {
    match kind {
        "kill" => "#8250df",
        "pause" => "#0969da",
        "partition" => "#d4a72c",
        "sink" => "#6e7781",
        "clock" => "#bf3989",
        _ => "#1b9e9e",
    }
}

fn type_name(t: OpType) -> &'static str {
    match t {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

fn f_name(f: F) -> &'static str {
    match f {
        F::Write => "write",
        F::Read => "read",
        F::Sql => "sql",
        F::StartFault => "start-fault",
        F::StopFault => "stop-fault",
    }
}

// ---------------------------------------------------------------------------------------
// Time axis and scales

/// The time axis shared by both charts: from 0 to a whole number of buckets covering the
/// history.
struct Timeline {
    /// The last time in the history (ms); 0 for an empty one.
    end_ms: f64,
    bucket_s: f64,
    /// Number of buckets, at least 1.
    n: usize,
}

impl Timeline {
    fn new(history: &[Op]) -> Timeline {
        let end_ms = history
            .iter()
            .map(|o| clean_ms(o.time_ms))
            .fold(0.0, f64::max);
        Timeline::spanning(end_ms)
    }

    fn spanning(end_ms: f64) -> Timeline {
        let end_ms = clean_ms(end_ms);
        let end_s = end_ms / 1000.0;
        let bucket_s = BUCKET_WIDTHS_S
            .iter()
            .copied()
            .find(|b| end_s / b <= MAX_BUCKETS)
            .unwrap_or_else(|| (end_s / MAX_BUCKETS).ceil().max(1.0));
        let n = ((end_s / bucket_s).ceil() as usize).clamp(1, MAX_BUCKETS as usize + 1);
        Timeline {
            end_ms,
            bucket_s,
            n,
        }
    }

    fn axis_end_ms(&self) -> f64 {
        self.n as f64 * self.bucket_s * 1000.0
    }

    fn bucket(&self, t_ms: f64) -> usize {
        let i = (clean_ms(t_ms) / 1000.0 / self.bucket_s).floor();
        if i >= 0.0 {
            (i as usize).min(self.n - 1)
        } else {
            0
        }
    }

    fn x(&self, t_ms: f64) -> f64 {
        let frac = clean_ms(t_ms) / self.axis_end_ms();
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 1.0)
        } else {
            0.0
        };
        ML + frac * PW
    }

    /// Left edge and width of bucket `i`.
    fn bucket_x(&self, i: usize) -> (f64, f64) {
        let w = PW / self.n as f64;
        (ML + i as f64 * w, w)
    }

    fn bucket_centre(&self, i: usize) -> f64 {
        let (x, w) = self.bucket_x(i);
        x + w / 2.0
    }

    fn bucket_label(&self) -> String {
        if self.bucket_s == 1.0 {
            "1-second bucket".to_string()
        } else {
            format!("{}-second bucket", self.bucket_s)
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Decimals needed to print multiples of `step`.
fn decimals(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) || step >= 1.0 {
        0
    } else {
        ((-step.log10().floor()) as usize).min(6)
    }
}

/// A linear axis from 0 to `top` in steps of `step`.
struct Lin {
    top: f64,
    step: f64,
}

impl Lin {
    fn new(max: f64) -> Lin {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let step = nice_step(max / 5.0);
        let top = ((max / step).ceil() * step).max(step);
        Lin { top, step }
    }

    fn y(&self, v: f64) -> f64 {
        let frac = v / self.top;
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 1.0)
        } else {
            0.0
        };
        BOTTOM - frac * PH
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        let d = decimals(self.step);
        (0..=20)
            .map(|k| k as f64 * self.step)
            .take_while(|v| *v <= self.top * (1.0 + 1e-9))
            .map(|v| (v, format!("{v:.d$}")))
            .collect()
    }
}

/// A log axis for latencies, in ms, from one power of ten to another.
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    fn new(values: impl Iterator<Item = f64>) -> LogAxis {
        let mut min = f64::INFINITY;
        let mut max = 0.0f64;
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            min = min.min(v);
            max = max.max(v);
        }
        if max <= 0.0 {
            return LogAxis {
                lo: 1.0,
                hi: 1000.0,
            };
        }
        let lo = 10f64.powf(min.log10().floor()).clamp(1e-3, 1.0);
        let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0).min(1e9);
        LogAxis { lo, hi }
    }

    fn y(&self, v: f64) -> f64 {
        let v = if v.is_nan() { self.lo } else { v };
        let v = v.clamp(self.lo, self.hi);
        let (l, h) = (self.lo.log10(), self.hi.log10());
        let frac = (v.log10() - l) / (h - l);
        let frac = if frac.is_finite() {
            frac.clamp(0.0, 1.0)
        } else {
            0.0
        };
        BOTTOM - frac * PH
    }

    fn decades(&self) -> Vec<f64> {
        let (l, h) = (
            self.lo.log10().round() as i32,
            self.hi.log10().round() as i32,
        );
        (l..=h).take(20).map(|k| 10f64.powi(k)).collect()
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", v / 1000.0)
    } else {
        format!("{v} ms")
    }
}

// ---------------------------------------------------------------------------------------
// Faults

/// One fault as the history shows it: its start and its stop.
struct FaultSpan {
    id: u32,
    kind: String,
    nodes: Vec<u64>,
    description: String,
    start_invoke_ms: Option<f64>,
    /// The start's completion (normally `info`).
    start_done_ms: Option<f64>,
    /// The start completed with `fail`: the fault was never in place.
    start_failed: bool,
    stop_invoke_ms: Option<f64>,
    /// The stop's completion: the fault is healed.
    stop_done_ms: Option<f64>,
    /// A stop that completed with `fail`.
    heal_failed: bool,
}

impl FaultSpan {
    fn new(fault: &crate::history::Fault) -> FaultSpan {
        FaultSpan {
            id: fault.id,
            kind: fault.kind.clone(),
            nodes: fault.nodes.clone(),
            description: fault.description.clone(),
            start_invoke_ms: None,
            start_done_ms: None,
            start_failed: false,
            stop_invoke_ms: None,
            stop_done_ms: None,
            heal_failed: false,
        }
    }

    /// When the fault was in place: its start's completion, else its invoke.
    fn start_ms(&self) -> Option<f64> {
        self.start_done_ms.or(self.start_invoke_ms)
    }

    /// When it was healed, else the end of the history.
    fn end_ms(&self, tl: &Timeline) -> f64 {
        self.stop_done_ms.unwrap_or(tl.end_ms)
    }

    /// Shaded on the charts: it started, and did not fail to.
    fn shaded(&self) -> bool {
        self.start_ms().is_some() && !self.start_failed
    }
}

/// Pairs every `start-fault` with the `stop-fault` of the same fault id, in history order.
fn fault_spans(history: &[Op]) -> Vec<FaultSpan> {
    let mut spans: Vec<FaultSpan> = Vec::new();
    let mut open: HashMap<u32, usize> = HashMap::new();
    for op in history {
        let Some(fault) = &op.fault else { continue };
        let t = clean_ms(op.time_ms);
        match op.f {
            F::StartFault => {
                let pending = open.get(&fault.id).copied().filter(|&i| {
                    spans[i].start_invoke_ms.is_some() && spans[i].start_done_ms.is_none()
                });
                match (op.kind, pending) {
                    (OpType::Invoke, _) => {
                        let mut s = FaultSpan::new(fault);
                        s.start_invoke_ms = Some(t);
                        open.insert(fault.id, spans.len());
                        spans.push(s);
                    }
                    (kind, Some(i)) => {
                        spans[i].start_done_ms = Some(t);
                        if kind == OpType::Fail {
                            spans[i].start_failed = true;
                            open.remove(&fault.id);
                        }
                    }
                    (kind, None) => {
                        // A completion without its invoke.
                        let mut s = FaultSpan::new(fault);
                        s.start_done_ms = Some(t);
                        s.start_failed = kind == OpType::Fail;
                        if !s.start_failed {
                            open.insert(fault.id, spans.len());
                        }
                        spans.push(s);
                    }
                }
            }
            F::StopFault => {
                let i = match open.get(&fault.id) {
                    Some(&i) => i,
                    None => {
                        // A stop of a fault whose start is not in the history.
                        open.insert(fault.id, spans.len());
                        spans.push(FaultSpan::new(fault));
                        spans.len() - 1
                    }
                };
                match op.kind {
                    OpType::Invoke => {
                        spans[i].stop_invoke_ms.get_or_insert(t);
                    }
                    OpType::Fail => spans[i].heal_failed = true,
                    OpType::Ok | OpType::Info => {
                        spans[i].stop_done_ms = Some(t);
                        open.remove(&fault.id);
                    }
                }
            }
            _ => {}
        }
    }
    spans
}

/// Translucent bands for the faults, spanning the plot's height, with their description on
/// hover.
fn fault_shades(out: &mut String, faults: &[FaultSpan], tl: &Timeline) {
    out.push_str("<g class=\"faults\">");
    for f in faults.iter().filter(|f| f.shaded()) {
        let start = f.start_ms().unwrap_or(0.0);
        let end = f.end_ms(tl).max(start);
        let x0 = tl.x(start);
        let x1 = tl.x(end);
        let healed = if f.stop_done_ms.is_some() {
            String::new()
        } else {
            " (not healed by the end of the history)".to_string()
        };
        w!(
            out,
            "<rect class=\"fs\" x=\"{x0:.1}\" y=\"{MT:.1}\" width=\"{:.1}\" height=\"{PH:.1}\" \
             fill=\"{}\" fill-opacity=\"0.18\"><title>fault {} — {}: {} [{} s – {} s]{}</title>\
             </rect>",
            (x1 - x0).max(1.5),
            colour_of_kind(&f.kind),
            f.id,
            esc(&f.kind),
            esc(&f.description),
            secs(start),
            secs(end),
            healed
        );
    }
    out.push_str("</g>\n");
}

fn fault_legend(out: &mut String, faults: &[FaultSpan]) {
    let mut kinds: Vec<&str> = Vec::new();
    for f in faults.iter().filter(|f| f.shaded()) {
        if !kinds.contains(&f.kind.as_str()) {
            kinds.push(&f.kind);
        }
    }
    kinds.sort_by_key(|k| {
        FAULT_KINDS
            .iter()
            .position(|f| f == k)
            .unwrap_or(FAULT_KINDS.len())
    });
    out.push_str("<div class=\"legend\">Faults (shaded; hover for details): ");
    if kinds.is_empty() {
        out.push_str("<span class=\"muted\">none in this history</span>");
    }
    for k in kinds {
        w!(
            out,
            "<span class=\"item\"><span class=\"sw\" style=\"background:{};opacity:.45\">\
             </span>{}</span>",
            colour_of_kind(k),
            esc(k)
        );
    }
    out.push_str("</div>\n");
}

// ---------------------------------------------------------------------------------------
// Looking up operations by index

/// Finds an op's time by its `index`, which is normally its position.
struct OpLookup<'a> {
    history: &'a [Op],
    /// Built only when indexes are not positions.
    by_index: Option<HashMap<u64, usize>>,
}

impl<'a> OpLookup<'a> {
    fn new(history: &'a [Op]) -> OpLookup<'a> {
        let positional = history.iter().enumerate().all(|(i, o)| o.index == i as u64);
        let by_index = (!positional).then(|| {
            history
                .iter()
                .enumerate()
                .map(|(i, o)| (o.index, i))
                .collect()
        });
        OpLookup { history, by_index }
    }

    fn get(&self, index: u64) -> Option<&'a Op> {
        match &self.by_index {
            None => usize::try_from(index)
                .ok()
                .and_then(|i| self.history.get(i)),
            Some(map) => map.get(&index).and_then(|&i| self.history.get(i)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sections

fn head(out: &mut String, results: &Results) {
    let verdict = if results.valid { "VALID" } else { "INVALID" };
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Tally chaos run: {verdict} (seed {})</title>\n\
         <style>{CSS}</style>\n</head>\n<body>\n",
        results.seed
    );
}

fn header(out: &mut String, history: &[Op], results: &Results, tl: &Timeline) {
    let (class, verdict) = if results.valid {
        ("valid", "VALID")
    } else {
        ("invalid", "INVALID")
    };
    out.push_str("<h1>Tally chaos run</h1>\n");
    w!(out, "<div class=\"verdict {class}\">{verdict}</div>\n");
    let nemeses = if results.nemeses.is_empty() {
        "none".to_string()
    } else {
        esc(&results.nemeses.join(", "))
    };
    w!(
        out,
        "<div class=\"meta\"><b>seed</b> {} &nbsp;·&nbsp; <b>time limit</b> {} s &nbsp;·&nbsp; \
         <b>nemeses</b> {} &nbsp;·&nbsp; <b>history</b> {} ops over {} s</div>\n",
        results.seed,
        results.time_limit_s,
        nemeses,
        history.len(),
        secs(tl.end_ms)
    );
    if !results.plants.is_empty() {
        w!(
            out,
            "<div class=\"plants\">planted bugs: {}<small>The servers ran with these bugs \
             deliberately planted: the checkers are expected to find them, so this run should be \
             INVALID. A VALID verdict here means a checker missed a planted bug.</small></div>\n",
            esc(&results.plants.join(", "))
        );
    }
    let s = &results.stats;
    let duration = if s.duration_s.is_finite() {
        format!("{:.1} s", s.duration_s)
    } else {
        "—".to_string()
    };
    out.push_str(
        "<table class=\"stats\"><tr><th>duration</th><th>ops</th><th>writes ok</th>\
         <th>writes fail</th><th>writes info</th><th>reads ok</th><th>reads failed</th>\
         <th>events attempted</th><th>events acked</th><th>faults</th></tr>\n",
    );
    w!(
        out,
        "<tr><td class=\"num\">{duration}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td></tr></table>\n",
        s.ops,
        s.writes_ok,
        s.writes_fail,
        s.writes_info,
        s.reads_ok,
        s.reads_failed,
        s.events_attempted,
        s.events_acked,
        s.faults
    );
}

fn checkers(out: &mut String, results: &Results, lookup: &OpLookup) {
    out.push_str("<h2>Checkers</h2>\n");
    if results.checkers.is_empty() {
        out.push_str("<p class=\"muted\">No checker results.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"checkers\"><tr><th>checker</th><th>valid</th><th>anomalies</th>\
         <th>summary</th></tr>\n",
    );
    for c in &results.checkers {
        let mark = if c.valid {
            "<span class=\"yes\">✓</span>"
        } else {
            "<span class=\"no\">✗</span>"
        };
        w!(
            out,
            "<tr><td><b>{}</b></td><td>{mark}</td><td class=\"num\">{}</td><td>{}</td></tr>\n",
            esc(&c.name),
            c.anomaly_count,
            esc(&c.summary)
        );
    }
    out.push_str("</table>\n");
    for c in results.checkers.iter().filter(|c| !c.valid) {
        w!(
            out,
            "<h3>{}: {} anomal{}</h3>\n",
            esc(&c.name),
            c.anomaly_count,
            if c.anomaly_count == 1 { "y" } else { "ies" }
        );
        if c.anomalies.is_empty() {
            out.push_str("<p class=\"muted\">None listed.</p>\n");
            continue;
        }
        out.push_str("<ul class=\"anomalies\">\n");
        for a in &c.anomalies {
            w!(out, "<li><b>{}</b> {}", esc(&a.kind), esc(&a.description));
            if let Some(i) = a.op_index {
                match lookup.get(i) {
                    Some(op) => w!(
                        out,
                        " <span class=\"muted\">(op {i}: {} {} at {} s)</span>",
                        type_name(op.kind),
                        f_name(op.f),
                        secs(clean_ms(op.time_ms))
                    ),
                    None => w!(out, " <span class=\"muted\">(op {i})</span>"),
                }
            }
            out.push_str("</li>\n");
        }
        let listed = c.anomalies.len() as u64;
        if c.anomaly_count > listed {
            w!(out, "<li>… and {} more</li>\n", c.anomaly_count - listed);
        }
        out.push_str("</ul>\n");
    }
}

/// The shared frame of a chart: `<svg>`, the time axis with its grid and title.
fn open_chart(out: &mut String, tl: &Timeline, label: &str) {
    w!(
        out,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\" aria-label=\"{}\">\n\
         <rect x=\"{ML}\" y=\"{MT}\" width=\"{PW}\" height=\"{PH}\" fill=\"#fcfcfd\" \
         stroke=\"#d0d7de\"/>\n",
        esc(label)
    );
    let end_s = tl.axis_end_ms() / 1000.0;
    let step = nice_step(end_s / 10.0);
    let d = decimals(step);
    out.push_str("<g pointer-events=\"none\">");
    for k in 0..=40 {
        let t = k as f64 * step;
        if t > end_s * (1.0 + 1e-9) {
            break;
        }
        let x = tl.x(t * 1000.0);
        w!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{MT}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.d$}</text>",
            BOTTOM + 4.0,
            BOTTOM + 16.0
        );
    }
    w!(
        out,
        "<text class=\"title\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">\
         time since the start of the run (s)</text></g>\n",
        ML + PW / 2.0,
        H - 8.0
    );
}

fn y_title(out: &mut String, x: f64, text: &str, colour: &str) {
    w!(
        out,
        "<text class=\"title\" transform=\"translate({x:.1} {:.1}) rotate(-90)\" \
         text-anchor=\"middle\" style=\"fill:{colour}\">{}</text>\n",
        MT + PH / 2.0,
        esc(text)
    );
}

fn bar(d: &mut String, x: f64, w: f64, y0: f64, y1: f64) {
    if (y0 - y1).abs() < 0.05 {
        return;
    }
    w!(
        d,
        "M{x:.1} {y0:.1}H{:.1}V{y1:.1}H{x:.1}Z",
        x + (w - 0.4).max(0.3)
    );
}

fn throughput_chart(out: &mut String, history: &[Op], tl: &Timeline, faults: &[FaultSpan]) {
    let n = tl.n;
    let mut acked = vec![0u64; n];
    let mut failed = vec![0u64; n];
    let mut unknown = vec![0u64; n];
    let mut reads = vec![0u64; n];
    for op in history.iter().filter(|o| o.kind != OpType::Invoke) {
        let b = tl.bucket(op.time_ms);
        match op.f {
            F::Write => {
                let c = op.batch.map_or(0, |b| u64::from(b.count));
                let series = match op.kind {
                    OpType::Ok => &mut acked,
                    OpType::Fail => &mut failed,
                    _ => &mut unknown,
                };
                series[b] = series[b].saturating_add(c);
            }
            F::Read | F::Sql if op.kind == OpType::Ok => reads[b] = reads[b].saturating_add(1),
            _ => {}
        }
    }
    let bs = tl.bucket_s;
    let rate = |v: u64| v as f64 / bs;
    let stack_max = (0..n)
        .map(|i| rate(acked[i]) + rate(failed[i]) + rate(unknown[i]))
        .fold(0.0, f64::max);
    let reads_max = reads.iter().map(|&v| rate(v)).fold(0.0, f64::max);
    let left = Lin::new(stack_max);
    let right = Lin::new(reads_max);

    w!(
        out,
        "<h2>Throughput</h2>\n<p class=\"muted\">Per {}, averaged to a rate per second: events \
         in write batches by outcome (stacked), and successful reads (read and sql, right axis). The last bucket may be only \
         partly covered by the history.</p>\n",
        tl.bucket_label()
    );
    open_chart(out, tl, "throughput over time");
    fault_shades(out, faults, tl);

    out.push_str("<g pointer-events=\"none\">");
    for (v, label) in left.ticks() {
        let y = left.y(v);
        w!(
            out,
            "<line x1=\"{ML}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eaeef2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            ML + PW,
            ML - 5.0,
            y + 4.0
        );
    }
    for (v, label) in right.ticks() {
        w!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:{READ_COLOUR}\">{label}</text>",
            ML + PW + 5.0,
            right.y(v) + 4.0
        );
    }
    let mut d_ok = String::new();
    let mut d_fail = String::new();
    let mut d_info = String::new();
    for i in 0..n {
        let (x, w) = tl.bucket_x(i);
        let a = rate(acked[i]);
        let f = a + rate(failed[i]);
        let u = f + rate(unknown[i]);
        bar(&mut d_ok, x, w, left.y(0.0), left.y(a));
        bar(&mut d_fail, x, w, left.y(a), left.y(f));
        bar(&mut d_info, x, w, left.y(f), left.y(u));
    }
    for (d, colour) in [
        (d_ok, OK_COLOUR),
        (d_fail, FAIL_COLOUR),
        (d_info, INFO_COLOUR),
    ] {
        if !d.is_empty() {
            w!(
                out,
                "<path fill=\"{colour}\" fill-opacity=\"0.85\" d=\"{d}\"/>\n"
            );
        }
    }
    let mut line = String::new();
    for (i, &r) in reads.iter().enumerate() {
        w!(
            line,
            "{}{:.1},{:.1}",
            if i == 0 { "" } else { " " },
            tl.bucket_centre(i),
            right.y(rate(r))
        );
    }
    w!(
        out,
        "<polyline fill=\"none\" stroke=\"{READ_COLOUR}\" stroke-width=\"1.2\" points=\"{line}\"/>\n</g>\n"
    );
    y_title(out, 16.0, "events / s", "#222");
    y_title(out, W - 12.0, "reads ok / s", READ_COLOUR);
    out.push_str("</svg>\n");

    w!(
        out,
        "<div class=\"legend\"><span class=\"item\"><span class=\"sw\" style=\"background:{OK_COLOUR}\"></span>\
         acknowledged (ok writes)</span><span class=\"item\"><span class=\"sw\" style=\"background:{FAIL_COLOUR}\"></span>\
         failed writes</span><span class=\"item\"><span class=\"sw\" style=\"background:{INFO_COLOUR}\"></span>\
         unknown (info writes)</span><span class=\"item\"><svg width=\"18\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"18\" y2=\"5\" \
         stroke=\"{READ_COLOUR}\" stroke-width=\"1.5\"/></svg>reads ok (right axis)</span></div>\n"
    );
    fault_legend(out, faults);
}

/// One completion on the latency chart.
#[derive(Clone, Copy)]
struct Dot {
    t_ms: f64,
    latency_ms: f64,
    kind: OpType,
    f: F,
}

/// Every completion of a write, read or sql with a latency that is a number.
fn dots(history: &[Op]) -> Vec<Dot> {
    history
        .iter()
        .filter(|o| o.kind != OpType::Invoke && matches!(o.f, F::Write | F::Read | F::Sql))
        .filter_map(|o| {
            let l = o.latency_ms?;
            (!l.is_nan()).then_some(Dot {
                t_ms: clean_ms(o.time_ms),
                latency_ms: l,
                kind: o.kind,
                f: o.f,
            })
        })
        .collect()
}

/// `k` of `items`, evenly spaced (all of them if there are no more than `k`).
fn spread<T: Copy>(items: &[T], k: usize) -> Vec<T> {
    let n = items.len();
    if n <= k {
        return items.to_vec();
    }
    (0..k)
        .filter_map(|j| {
            let i = (j as u128 * n as u128 / k as u128) as usize;
            items.get(i).copied()
        })
        .collect()
}

/// At most `max` dots, deterministically: the rarer failed and unknown completions get at
/// least half of the budget, the rest is spread evenly over time.
fn sample_dots(all: &[Dot], max: usize) -> Vec<Dot> {
    if all.len() <= max {
        return all.to_vec();
    }
    let (ok, other): (Vec<Dot>, Vec<Dot>) = all.iter().partition(|d| d.kind == OpType::Ok);
    let other_budget = other.len().min((max / 2).max(max.saturating_sub(ok.len())));
    let mut kept = spread(&other, other_budget);
    kept.extend(spread(&ok, max - kept.len()));
    kept
}

fn dot_shape(d: &mut String, f: F, x: f64, y: f64) {
    match f {
        F::Read => w!(d, "M{:.1} {:.1}h3v3h-3z", x - 1.5, y - 1.5),
        F::Sql => w!(d, "M{x:.1} {:.1}l2.3 2.3l-2.3 2.3l-2.3 -2.3z", y - 2.3),
        _ => w!(
            d,
            "M{:.1} {y:.1}a1.8 1.8 0 1 0 3.6 0a1.8 1.8 0 1 0 -3.6 0",
            x - 1.8
        ),
    }
}

fn shape_swatch(f: F) -> String {
    let mut d = String::new();
    dot_shape(&mut d, f, 6.0, 6.0);
    format!("<svg width=\"12\" height=\"12\"><path fill=\"#555\" d=\"{d}\"/></svg>")
}

/// The p95 (nearest rank) of `v`, which it sorts.
fn p95(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((v.len() as f64) * 0.95).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

fn latency_chart(
    out: &mut String,
    history: &[Op],
    results: &Results,
    tl: &Timeline,
    faults: &[FaultSpan],
    lookup: &OpLookup,
) {
    let all = dots(history);
    let axis = LogAxis::new(all.iter().map(|d| d.latency_ms));
    let shown = sample_dots(&all, MAX_DOTS);

    let mut per_bucket: Vec<Vec<f64>> = vec![Vec::new(); tl.n];
    for d in all
        .iter()
        .filter(|d| d.kind == OpType::Ok && d.f == F::Write && d.latency_ms.is_finite())
    {
        per_bucket[tl.bucket(d.t_ms)].push(d.latency_ms.max(0.0));
    }

    out.push_str("<h2>Latency</h2>\n");
    w!(
        out,
        "<p class=\"muted\">Every completed write, read and sql at its completion time and its \
         latency (log scale); the line is the 95th percentile of acknowledged writes per {}. ",
        tl.bucket_label()
    );
    if shown.len() < all.len() {
        w!(
            out,
            "Showing {} of {} completions, sampled evenly (failed and unknown ones first).",
            shown.len(),
            all.len()
        );
    } else {
        w!(out, "Showing all {} completions.", all.len());
    }
    out.push_str("</p>\n");

    open_chart(out, tl, "latency over time");
    fault_shades(out, faults, tl);

    out.push_str("<g pointer-events=\"none\">");
    for decade in axis.decades() {
        let y = axis.y(decade);
        w!(
            out,
            "<line x1=\"{ML}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#d8dee4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            ML + PW,
            ML - 5.0,
            y + 4.0,
            fmt_ms(decade)
        );
        for m in [2.0, 5.0] {
            let v = decade * m;
            if v < axis.hi {
                let y = axis.y(v);
                w!(
                    out,
                    "<line x1=\"{ML}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#f0f2f4\"/>",
                    ML + PW
                );
            }
        }
    }
    out.push('\n');
    for (kind, colour, opacity) in [
        (OpType::Ok, OK_COLOUR, 0.45),
        (OpType::Info, INFO_COLOUR, 0.8),
        (OpType::Fail, FAIL_COLOUR, 0.8),
    ] {
        for f in [F::Write, F::Read, F::Sql] {
            let mut d = String::new();
            for dot in shown.iter().filter(|d| d.kind == kind && d.f == f) {
                dot_shape(&mut d, f, tl.x(dot.t_ms), axis.y(dot.latency_ms));
            }
            if !d.is_empty() {
                w!(
                    out,
                    "<path fill=\"{colour}\" fill-opacity=\"{opacity}\" d=\"{d}\"/>\n"
                );
            }
        }
    }
    let mut line = String::new();
    let mut pen_down = false;
    for (i, v) in per_bucket.iter_mut().enumerate() {
        match p95(v) {
            Some(p) => {
                w!(
                    line,
                    "{}{:.1} {:.1}",
                    if pen_down { "L" } else { "M" },
                    tl.bucket_centre(i),
                    axis.y(p)
                );
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    if !line.is_empty() {
        w!(
            out,
            "<path fill=\"none\" stroke=\"{P95_COLOUR}\" stroke-width=\"1.6\" \
             stroke-linejoin=\"round\" d=\"{line}\"/>\n"
        );
    }
    out.push_str("</g>\n");

    // Anomalies that name an operation, marked at its time along the top edge.
    let mut markers = 0;
    out.push_str("<g class=\"anomalies\">");
    for c in &results.checkers {
        for a in &c.anomalies {
            if markers >= MAX_MARKERS {
                break;
            }
            let Some(op) = a.op_index.and_then(|i| lookup.get(i)) else {
                continue;
            };
            let x = tl.x(op.time_ms);
            w!(
                out,
                "<path fill=\"{FAIL_COLOUR}\" d=\"M{:.1} {:.1}h9l-4.5 8z\"><title>{}: {} — {} \
                 (op {} at {} s)</title></path>",
                x - 4.5,
                MT + 1.0,
                esc(&c.name),
                esc(&a.kind),
                esc(&a.description),
                op.index,
                secs(clean_ms(op.time_ms))
            );
            markers += 1;
        }
    }
    out.push_str("</g>\n");
    y_title(out, 16.0, "latency", "#222");
    out.push_str("</svg>\n");

    w!(
        out,
        "<div class=\"legend\"><span class=\"item\"><span class=\"sw\" style=\"background:{OK_COLOUR}\"></span>ok</span>\
         <span class=\"item\"><span class=\"sw\" style=\"background:{FAIL_COLOUR}\"></span>fail</span>\
         <span class=\"item\"><span class=\"sw\" style=\"background:{INFO_COLOUR}\"></span>info (unknown)</span>\
         <span class=\"item\">{}write</span><span class=\"item\">{}read</span><span class=\"item\">{}sql</span>\
         <span class=\"item\"><svg width=\"18\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"18\" y2=\"5\" \
         stroke=\"{P95_COLOUR}\" stroke-width=\"1.6\"/></svg>p95 of ok writes</span>",
        shape_swatch(F::Write),
        shape_swatch(F::Read),
        shape_swatch(F::Sql)
    );
    if markers > 0 {
        w!(
            out,
            "<span class=\"item\"><svg width=\"10\" height=\"9\"><path fill=\"{FAIL_COLOUR}\" d=\"M0 0h9l-4.5 8z\"/></svg>\
             operation named by an anomaly (hover)</span>"
        );
    }
    out.push_str("</div>\n");
    fault_legend(out, faults);
}

fn fault_table(out: &mut String, faults: &[FaultSpan], tl: &Timeline) {
    out.push_str("<h2>Faults</h2>\n");
    if faults.is_empty() {
        out.push_str("<p class=\"muted\">No faults in this history.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"faults\"><tr><th>id</th><th>kind</th><th>nodes</th><th>description</th>\
         <th>start s</th><th>end s</th><th>duration s</th></tr>\n",
    );
    for f in faults {
        let nodes = if f.nodes.is_empty() {
            "—".to_string()
        } else {
            f.nodes
                .iter()
                .map(|n| format!("n{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let start = f.start_ms();
        let start_cell = match start {
            Some(s) if f.start_failed => format!("{} (failed to start)", secs(s)),
            Some(s) => secs(s),
            None => "— (start not recorded)".to_string(),
        };
        let end = f.end_ms(tl);
        let end_cell = match (f.stop_done_ms, f.heal_failed) {
            (Some(e), _) => secs(e),
            _ if f.start_failed => "—".to_string(),
            (None, true) => format!("{}+ (heal failed)", secs(end)),
            (None, false) => format!("{}+ (not healed)", secs(end)),
        };
        let duration = match start {
            Some(_) if f.start_failed => "—".to_string(),
            Some(s) => {
                let d = (end - s).max(0.0);
                if f.stop_done_ms.is_some() {
                    secs(d)
                } else {
                    format!("≥ {}", secs(d))
                }
            }
            None => "—".to_string(),
        };
        w!(
            out,
            "<tr><td class=\"num\">{}</td><td><span class=\"sw\" style=\"background:{};opacity:.45\"></span>{}</td>\
             <td>{nodes}</td><td>{}</td><td class=\"num\">{start_cell}</td><td class=\"num\">{end_cell}</td>\
             <td class=\"num\">{duration}</td></tr>\n",
            f.id,
            colour_of_kind(&f.kind),
            esc(&f.kind),
            esc(&f.description)
        );
    }
    out.push_str("</table>\n");
}

fn how_to_read(out: &mut String) {
    out.push_str(
        "<h2>How to read this</h2>\n<div class=\"howto\"><p>Every operation a client or the \
         nemesis performed is in the history: an <i>invoke</i> when it starts and one completion. \
         <b>ok</b>: it happened. <b>fail</b>: it certainly did not happen. <b>info</b>: the outcome \
         is unknown (a timeout, a dropped connection) — it may or may not have taken effect.</p>\n\
         <ul><li>The verdict is VALID only if every checker is.</li>\
         <li>Every <b>acknowledged</b> event (in an ok write) must be in the store <b>exactly \
         once</b> and counted exactly once; losing one, or storing or counting it twice, is an \
         anomaly. Retries and replays re-send the same event ids, so they must not add \
         anything.</li>\
         <li>Events of failed or unknown writes may or may not be stored (a retry may have \
         succeeded), but never more than once, and nothing that was never sent may appear.</li>\
         <li>Reads must be linearizable: a read sees at least everything acknowledged before it \
         began and never more than was attempted.</li>\
         <li>Shaded bands are the faults the nemesis injected, from the moment each was in place \
         to the moment it was healed; hover over one for what it did. Throughput dips and slow \
         or failed requests during faults are expected: availability is shown, correctness is \
         what the checkers judge.</li>\
         <li>Anomalies name the history index of the operation involved where there is one; \
         history.jsonl has every operation by that index.</li></ul></div>\n",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Batch, Fault, Process, NEMESIS};
    use crate::results::{Anomaly, CheckerResult, Stats};

    fn results(valid: bool) -> Results {
        Results {
            valid,
            seed: 42,
            time_limit_s: 60,
            nemeses: vec!["kill".into(), "pause".into()],
            plants: Vec::new(),
            stats: Stats::default(),
            checkers: Vec::new(),
            partitions: Vec::new(),
            elections: Default::default(),
        }
    }

    /// Builds a history, numbering the ops.
    struct Hist(Vec<Op>);

    impl Hist {
        fn push(&mut self, t: f64, process: Process, kind: OpType, f: F) -> &mut Op {
            let mut op = Op::new(process, kind, f);
            op.index = self.0.len() as u64;
            op.time_ms = t;
            self.0.push(op);
            self.0.last_mut().unwrap()
        }

        fn write(&mut self, client: u32, t: f64, latency: f64, kind: OpType, count: u32) {
            let batch = Batch {
                client,
                first: 0,
                count,
                attempt: 0,
                replay: false,
            };
            self.push(
                t - latency,
                Process::Client(client),
                OpType::Invoke,
                F::Write,
            )
            .batch = Some(batch);
            let op = self.push(t, Process::Client(client), kind, F::Write);
            op.batch = Some(batch);
            op.latency_ms = Some(latency);
        }

        fn read(&mut self, client: u32, t: f64, latency: f64, kind: OpType, f: F) {
            self.push(t - latency, Process::Client(client), OpType::Invoke, f);
            let op = self.push(t, Process::Client(client), kind, f);
            op.latency_ms = Some(latency);
            op.count = Some(10);
        }

        fn fault(&mut self, t: f64, kind: OpType, f: F, fault: &Fault) {
            self.push(t, NEMESIS, kind, f).fault = Some(fault.clone());
        }
    }

    /// No number came out as NaN or infinity.
    fn assert_clean(html: &str) {
        assert!(!html.contains("NaN"), "NaN in the report");
        for (i, _) in html.match_indices("inf") {
            let before = html[..i].chars().next_back().unwrap_or(' ');
            let after = html[i + 3..].chars().next().unwrap_or(' ');
            assert!(
                before.is_alphabetic() || after.is_alphabetic(),
                "infinity in the report: {}",
                &html[i.saturating_sub(40)..(i + 40).min(html.len())]
            );
        }
    }

    fn fault(id: u32, kind: &str, nodes: Vec<u64>, description: &str) -> Fault {
        Fault {
            id,
            kind: kind.into(),
            nodes,
            description: description.into(),
        }
    }

    fn checker(name: &str, valid: bool, count: u64, anomalies: Vec<Anomaly>) -> CheckerResult {
        CheckerResult {
            name: name.into(),
            valid,
            summary: format!("{name} summary"),
            anomaly_count: count,
            anomalies,
        }
    }

    fn anomaly(kind: &str, description: &str, op_index: Option<u64>) -> Anomaly {
        Anomaly {
            kind: kind.into(),
            description: description.into(),
            op_index,
        }
    }

    fn small_history() -> Vec<Op> {
        let mut h = Hist(Vec::new());
        let kill = fault(1, "kill", vec![2], "kill -9 node 2 (the leader)");
        let pause = fault(
            2,
            "pause",
            vec![3],
            "SIGSTOP node 3 <script>alert(1)</script>",
        );
        h.write(0, 500.0, 12.0, OpType::Ok, 10);
        h.read(1, 700.0, 3.0, OpType::Ok, F::Read);
        h.fault(1900.0, OpType::Invoke, F::StartFault, &kill);
        h.fault(2000.0, OpType::Info, F::StartFault, &kill);
        h.write(0, 2500.0, 1500.0, OpType::Info, 7);
        h.write(1, 3000.0, 40.0, OpType::Fail, 5);
        h.read(2, 3500.0, 0.5, OpType::Ok, F::Sql);
        h.fault(4900.0, OpType::Invoke, F::StopFault, &kill);
        h.fault(5000.0, OpType::Info, F::StopFault, &kill);
        h.write(0, 6000.0, 8.0, OpType::Ok, 10);
        h.fault(7000.0, OpType::Invoke, F::StartFault, &pause);
        h.write(1, 9000.0, 900.0, OpType::Ok, 3);
        h.read(1, 9500.0, 2.0, OpType::Fail, F::Read);
        h.0
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("plain — ✓"), "plain — ✓");
    }

    #[test]
    fn renders_an_empty_history() {
        let html = render(&[], &results(true));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        assert!(html.contains("<div class=\"verdict valid\">VALID</div>"));
        assert!(!html.contains("INVALID"));
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 2);
        assert!(html.contains("No faults in this history."));
        assert!(html.contains("No checker results."));
        assert_clean(&html);
        assert!(!html.contains("class=\"fs\""));
        assert!(!html.contains("planted bugs"));
    }

    #[test]
    fn renders_a_small_history() {
        let history = small_history();
        let mut r = results(false);
        r.plants = vec!["skip-dedup".into(), "stale-reads".into()];
        r.checkers = vec![
            checker(
                "set-full",
                false,
                5,
                vec![
                    anomaly("lost", "event run-c0-3 acknowledged but missing", Some(1)),
                    anomaly("duplicated", "event run-c1-0 stored twice", None),
                ],
            ),
            checker("counter", true, 0, Vec::new()),
            checker(
                "linearizable-reads",
                false,
                1,
                vec![anomaly("stale-read", "<b>read</b> missed 10", Some(999))],
            ),
        ];
        let html = render(&history, &r);

        assert!(html.contains("<div class=\"verdict invalid\">INVALID</div>"));
        assert!(html.contains("planted bugs: skip-dedup, stale-reads"));
        for name in ["set-full", "counter", "linearizable-reads"] {
            assert!(html.contains(&format!("<td><b>{name}</b></td>")), "{name}");
        }
        for kind in ["lost", "duplicated", "stale-read"] {
            assert!(html.contains(&format!("<li><b>{kind}</b>")), "{kind}");
        }
        assert!(html.contains("… and 3 more"));
        assert!(!html.contains("… and 0 more"));
        // The lost anomaly points at op 1, the ok write completed at 0.5 s.
        assert!(html.contains("(op 1: ok write at 0.5 s)"));
        assert!(html.contains("(op 999)"));
        assert!(html.contains("&lt;b&gt;read&lt;/b&gt; missed 10"));
        assert_eq!(html.matches("<svg class=\"chart\"").count(), 2);
        // Two faults, shaded on both charts.
        assert_eq!(html.matches("<rect class=\"fs\"").count(), 4);
        assert!(!html.contains("<script"));
        assert!(html.contains("SIGSTOP node 3 &lt;script&gt;alert(1)&lt;/script&gt;"));
        // The kill is from its start's info to its stop's info; the pause is never healed
        // and runs to the end of the history (9.5 s).
        assert!(html.contains(
            "<td>n2</td><td>kill -9 node 2 (the leader)</td><td class=\"num\">2.0</td>\
             <td class=\"num\">5.0</td><td class=\"num\">3.0</td>"
        ));
        assert!(html.contains(
            "<td class=\"num\">7.0</td><td class=\"num\">9.5+ (not healed)</td>\
             <td class=\"num\">≥ 2.5</td>"
        ));
        // Every completion with a latency is drawn.
        assert!(html.contains("Showing all 8 completions."));
        assert!(html.contains("p95 of ok writes"));
        assert_clean(&html);
    }

    #[test]
    fn fault_shades_span_start_info_to_stop_info() {
        let history = small_history();
        let tl = Timeline::new(&history);
        assert_eq!((tl.bucket_s, tl.n), (1.0, 10));
        let spans = fault_spans(&history);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].start_ms(), Some(2000.0));
        assert_eq!(spans[0].end_ms(&tl), 5000.0);
        assert_eq!(spans[1].start_ms(), Some(7000.0));
        assert_eq!(spans[1].end_ms(&tl), 9500.0);
        let mut out = String::new();
        fault_shades(&mut out, &spans, &tl);
        let x0 = tl.x(2000.0);
        let w = tl.x(5000.0) - x0;
        assert!(out.contains(&format!("x=\"{x0:.1}\" y=\"{MT:.1}\" width=\"{w:.1}\"")));
    }

    #[test]
    fn never_panics_on_odd_histories() {
        let mut h = Hist(Vec::new());
        let f = fault(9, "sink", Vec::new(), "record store down");
        let other = fault(10, "weird\"kind", vec![1], "");
        // A stop without a start, a start that failed, a completion without an invoke.
        h.fault(f64::NAN, OpType::Info, F::StopFault, &f);
        h.fault(10.0, OpType::Invoke, F::StartFault, &other);
        h.fault(20.0, OpType::Fail, F::StartFault, &other);
        h.fault(30.0, OpType::Info, F::StartFault, &f);
        h.fault(40.0, OpType::Fail, F::StopFault, &f);
        h.push(50.0, NEMESIS, OpType::Info, F::StartFault); // no fault at all
        h.write(0, -5.0, f64::NAN, OpType::Ok, 3);
        h.write(0, f64::INFINITY, -3.0, OpType::Info, 3);
        h.write(0, f64::NEG_INFINITY, f64::INFINITY, OpType::Fail, u32::MAX);
        h.write(0, 1e300, 0.0, OpType::Ok, u32::MAX);
        h.push(0.0, Process::Client(3), OpType::Ok, F::Write); // no batch, no latency
        let mut odd = h.0;
        odd[3].index = u64::MAX; // indexes that are not positions
        let mut r = results(false);
        r.stats.duration_s = f64::NAN;
        r.checkers = vec![checker(
            "usage",
            false,
            0,
            vec![anomaly("usage-mismatch", "", Some(u64::MAX))],
        )];
        let html = render(&odd, &r);
        assert!(html.ends_with("</html>\n"));
        assert_clean(&html);
        assert!(html.contains("weird&quot;kind"));
        assert!(html.contains("(failed to start)"));
        assert!(html.contains("— (start not recorded)"));
        assert!(html.contains("(op 18446744073709551615: info start-fault"));

        // Only invokes, all at the same instant.
        let mut h = Hist(Vec::new());
        for c in 0..5 {
            h.push(0.0, Process::Client(c), OpType::Invoke, F::Write);
        }
        let html = render(&h.0, &results(true));
        assert!(html.contains("Showing all 0 completions."));
        assert_clean(&html);
    }

    #[test]
    fn buckets_get_coarser_for_long_runs() {
        let tl = Timeline::spanning(1_000_000.0);
        assert_eq!((tl.bucket_s, tl.n), (5.0, 200));
        let tl = Timeline::spanning(60_000.0);
        assert_eq!((tl.bucket_s, tl.n), (1.0, 60));
        assert_eq!(tl.bucket(59_999.0), 59);
        assert_eq!(tl.bucket(60_000.0), 59);
        assert_eq!(tl.bucket(-1.0), 0);
        let tl = Timeline::spanning(0.0);
        assert_eq!(tl.n, 1);
        let tl = Timeline::spanning(1e11);
        assert!(tl.n <= 301, "{}", tl.n);
    }

    #[test]
    fn caps_the_dots_keeping_failures() {
        let mut all = Vec::new();
        for i in 0..50_000 {
            all.push(Dot {
                t_ms: i as f64,
                latency_ms: 5.0,
                kind: if i % 1000 == 0 {
                    OpType::Fail
                } else {
                    OpType::Ok
                },
                f: F::Write,
            });
        }
        let kept = sample_dots(&all, MAX_DOTS);
        assert_eq!(kept.len(), MAX_DOTS);
        assert_eq!(kept.iter().filter(|d| d.kind == OpType::Fail).count(), 50);
        // Spread over the whole run, not just its start.
        assert!(kept.iter().any(|d| d.t_ms > 49_000.0));
        assert_eq!(p95(&mut [3.0, 1.0, 2.0]), Some(3.0));
        assert_eq!(
            p95(&mut (1..=100).map(f64::from).collect::<Vec<_>>()),
            Some(95.0)
        );
    }

    /// A long, busy synthetic run: the file stays bounded, and a copy is left in
    /// `$TMPDIR/report-sample.html` to look at.
    #[test]
    fn writes_a_sample_report() {
        let mut h = Hist(Vec::new());
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let faults = [
            (
                20_000.0,
                35_000.0,
                fault(1, "kill", vec![1], "kill -9 leader 1"),
            ),
            (
                50_000.0,
                62_000.0,
                fault(2, "pause", vec![2], "SIGSTOP follower 2"),
            ),
            (
                80_000.0,
                100_000.0,
                fault(3, "partition", vec![1, 2, 3], "isolate leader 3 from 1, 2"),
            ),
            (
                115_000.0,
                125_000.0,
                fault(4, "sink", Vec::new(), "record store down"),
            ),
            (
                140_000.0,
                f64::NAN,
                fault(5, "kill", vec![2, 3], "kill -9 nodes 2, 3"),
            ),
        ];
        let mut t = 0.0;
        let mut events = Vec::new();
        while t < 180_000.0 {
            t += 2.0 + next() * 4.0;
            let in_fault = faults
                .iter()
                .any(|(s, e, _)| t >= *s && (e.is_nan() || t < *e));
            let r = next();
            let (kind, lat) = if in_fault && r < 0.3 {
                (OpType::Info, 1000.0 + next() * 4000.0)
            } else if in_fault && r < 0.5 {
                (OpType::Fail, 5.0 + next() * 200.0)
            } else if r < 0.002 {
                (OpType::Fail, 2.0 + next() * 50.0)
            } else {
                let base = if in_fault { 30.0 } else { 4.0 };
                (OpType::Ok, base * (1.0 + 10.0 * next().powi(4)))
            };
            events.push((t, kind, lat, next()));
        }
        let mut fi = 0;
        for (t, kind, lat, r) in events {
            while fi < faults.len() && faults[fi].0 <= t {
                let (s, e, f) = &faults[fi];
                h.fault(s - 50.0, OpType::Invoke, F::StartFault, f);
                h.fault(*s, OpType::Info, F::StartFault, f);
                if !e.is_nan() {
                    h.fault(e - 50.0, OpType::Invoke, F::StopFault, f);
                    h.fault(*e, OpType::Info, F::StopFault, f);
                }
                fi += 1;
            }
            let client = (r * 8.0) as u32;
            if r < 0.8 {
                h.write(client, t, lat, kind, 1 + (r * 100.0) as u32 % 20);
            } else if r < 0.95 {
                h.read(client, t, lat / 2.0, kind, F::Read);
            } else {
                h.read(client, t, lat * 1.5, kind, F::Sql);
            }
        }
        // Not necessarily in time order any more (stops were recorded early); sort like a
        // recorder would have.
        h.0.sort_by(|a, b| a.time_ms.total_cmp(&b.time_ms));
        for (i, op) in h.0.iter_mut().enumerate() {
            op.index = i as u64;
        }
        let completions = h.0.iter().filter(|o| o.kind != OpType::Invoke).count();
        assert!(completions > MAX_DOTS);
        let mut r = results(false);
        r.nemeses = vec![
            "kill".into(),
            "pause".into(),
            "partition".into(),
            "sink".into(),
        ];
        r.plants = vec!["ack-before-commit".into()];
        r.stats = Stats {
            duration_s: 185.2,
            ops: (h.0.len() / 2) as u64,
            writes_ok: 100,
            ..Stats::default()
        };
        r.checkers = vec![
            checker(
                "set-full",
                false,
                120,
                (0..50)
                    .map(|i| {
                        anomaly(
                            "lost",
                            &format!("event run-c0-{i} acknowledged, not stored"),
                            Some(i * 997),
                        )
                    })
                    .collect(),
            ),
            checker("counter", true, 0, Vec::new()),
            checker("linearizable-reads", true, 0, Vec::new()),
            checker("digests", true, 0, Vec::new()),
            checker("usage", true, 0, Vec::new()),
        ];
        let html = render(&h.0, &r);
        std::fs::write(std::env::temp_dir().join("report-sample.html"), &html).ok();
        assert!(html.len() < 3_000_000, "{} bytes", html.len());
        assert!(html.contains(&format!("Showing {MAX_DOTS} of ")));
        assert_eq!(html.matches("<rect class=\"fs\"").count(), 10);
        assert!(html.contains("… and 70 more"));
        assert_clean(&html);
    }
}
