//! The report's "Partitions and elections" section: the Raft leader and term around every
//! partition, and the elections each heal caused (`crate::elections`).

use std::fmt::Write;

use super::{esc, secs};
use crate::elections::{ElectionSummary, Moment, PartitionTerms};
use crate::results::Results;

/// Shown when the run had the partition nemesis or recorded any partition.
pub(super) fn partition_table(out: &mut String, results: &Results) {
    let had_nemesis = results.nemeses.iter().any(|n| n == "partition");
    if !had_nemesis && results.partitions.is_empty() {
        return;
    }
    out.push_str("<h2>Partitions and elections</h2>\n");
    if results.partitions.is_empty() {
        out.push_str("<p class=\"muted\">No partition in this run.</p>\n");
        return;
    }
    summary(out, &results.elections);
    out.push_str(
        "<table class=\"partitions\"><tr><th>fault</th><th>cut off</th><th>start: leader, term</th>\
         <th>heal: leader, term (highest)</th><th>after: leader, term</th>\
         <th>elections by the heal</th><th>deposed</th><th>elections</th></tr>\n",
    );
    for p in &results.partitions {
        row(out, p);
    }
    out.push_str("</table>\n");
    out.push_str(
        "<p class=\"muted\">Terms from every node's <code>/v1/cluster</code>: when the cut was \
         made, just before it healed, and after the heal once every node followed one leader in \
         one term (at least 1 s after it; <i>unsettled</i>: the last reading before the next \
         fault). <b>Highest</b> is the highest term any node had at the heal: above the leader's \
         when a cut-off node campaigned alone. <b>Elections by the heal</b> = term after − \
         leader's term at the heal. <b>Deposed</b>: the leader at the heal was not cut off, yet it \
         lost its term (re-elected or not).</p>\n",
    );
}

fn summary(out: &mut String, e: &ElectionSummary) {
    let _ = writeln!(
        out,
        "<p>{} partitions: <b>{:.2} elections per heal</b> ({} in all), <b>{} of {} heals \
         deposed a leader</b> that had a majority; {:.2} elections per partition, the needed \
         ones included; {} of {} settled after the heal.</p>",
        e.partitions,
        e.elections_per_heal,
        e.elections_by_heals,
        e.heals_that_deposed,
        e.partitions,
        e.elections_per_partition,
        e.settled,
        e.partitions
    );
    out.push_str(
        "<table class=\"cuts\"><tr><th>cut off</th><th>partitions</th>\
         <th>elections by heals</th><th>heals that deposed</th><th>elections</th></tr>\n",
    );
    for c in &e.by_cut {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            c.cut.name(),
            c.partitions,
            c.elections_by_heals,
            c.heals_that_deposed,
            c.elections
        );
    }
    out.push_str("</table>\n");
}

fn row(out: &mut String, p: &PartitionTerms) {
    let isolated = if p.isolated.is_empty() {
        String::new()
    } else {
        let nodes: Vec<String> = p.isolated.iter().map(|n| format!("n{n}")).collect();
        format!(" ({})", nodes.join(", "))
    };
    let heal = if p.heal.max_term > p.heal.term {
        format!("{} ({})", moment(&p.heal), p.heal.max_term)
    } else {
        moment(&p.heal)
    };
    let after = if p.settled {
        moment(&p.after)
    } else {
        format!("{} <i>unsettled</i>", moment(&p.after))
    };
    let deposed = match (p.deposed, p.leader_changed) {
        (true, true) => "<span class=\"no\">yes</span>, another leader",
        (true, false) => "<span class=\"no\">yes</span>, re-elected",
        _ => "no",
    };
    let _ = writeln!(
        out,
        "<tr><td class=\"num\">{}</td><td>{}{}</td><td>{}</td><td>{heal}</td><td>{after}</td>\
         <td class=\"num\">{}</td><td>{deposed}</td><td class=\"num\">{}</td></tr>",
        p.fault_id,
        esc(p.cut.name()),
        esc(&isolated),
        moment(&p.start),
        p.elections_by_heal,
        p.elections
    );
}

/// "n1, 4 at 12.3 s", or "none, 4 at 12.3 s".
fn moment(m: &Moment) -> String {
    let leader = m
        .leader
        .map_or_else(|| "none".to_string(), |l| format!("n{l}"));
    format!(
        "{leader}, {} <span class=\"muted\">at {} s</span>",
        m.term,
        secs(m.at_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elections::{summarize, Cut};
    use crate::results::Stats;

    fn results(nemeses: &[&str], partitions: Vec<PartitionTerms>) -> Results {
        Results {
            valid: true,
            seed: 7,
            time_limit_s: 60,
            nemeses: nemeses.iter().map(|n| n.to_string()).collect(),
            plants: Vec::new(),
            stats: Stats::default(),
            checkers: Vec::new(),
            elections: summarize(&partitions),
            partitions,
        }
    }

    fn at(at_ms: f64, leader: Option<u64>, term: u64, max_term: u64) -> Moment {
        Moment {
            at_ms,
            leader,
            term,
            max_term,
        }
    }

    #[test]
    fn no_section_without_the_partition_nemesis() {
        let mut out = String::new();
        partition_table(&mut out, &results(&["kill"], Vec::new()));
        assert!(out.is_empty());
        partition_table(&mut out, &results(&["partition"], Vec::new()));
        assert!(out.contains("No partition in this run."));
    }

    #[test]
    fn shows_each_partition_and_the_totals() {
        let deposing = PartitionTerms::new(
            4,
            Cut::Follower,
            vec![2],
            (
                at(1_000.0, Some(1), 4, 4),
                at(6_000.0, Some(1), 4, 7),
                at(7_200.0, Some(1), 8, 8),
            ),
            true,
        );
        let quiet = PartitionTerms::new(
            6,
            Cut::Bridge,
            vec![],
            (
                at(9_000.0, Some(1), 8, 8),
                at(12_000.0, Some(1), 8, 8),
                at(13_000.0, None, 8, 8),
            ),
            false,
        );
        let mut out = String::new();
        partition_table(&mut out, &results(&["partition"], vec![deposing, quiet]));
        assert!(out.contains("<b>2.00 elections per heal</b> (4 in all)"));
        assert!(out.contains("<b>1 of 2 heals deposed a leader</b>"));
        assert!(out.contains("1 of 2 settled"));
        assert!(out.contains("<td>follower (n2)</td>"));
        assert!(out.contains("n1, 4 <span class=\"muted\">at 6.0 s</span> (7)"));
        assert!(out.contains("yes</span>, re-elected"));
        assert!(out.contains("none, 8 <span class=\"muted\">at 13.0 s</span> <i>unsettled</i>"));
        assert!(out.contains("<td>bridge</td>"));
        assert_eq!(out.matches("<tr>").count(), 1 + 2 + 1 + 2);
    }
}
