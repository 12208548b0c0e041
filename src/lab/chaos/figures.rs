//! The figures of one chaos run, computed from a holder timeline after the fact: pure functions
//! over unix times (seconds), so every rule is a unit test.
//!
//! A run's timeline is a list of holder changes (the hosts holding the address after each
//! change). What counts as holding is the lab's: the instances the cloud attaches the address
//! to (the simulator's timeline), the hosts with the VIP on their NIC (OpenStack vip), or the
//! hosts the load balancer sends to (Azure lb-probe). A host whose cable is cut is off the
//! network for as long as the cut lasts ([`Cut`]): it serves nobody and conflicts with nobody,
//! so it holds nothing then, whatever the API says.

/// The hosts (indices, sorted) holding the address from `t` on.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub t: f64,
    pub holders: Vec<usize>,
}

/// `host` was off the network from `from` to `to`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cut {
    pub host: usize,
    pub from: f64,
    pub to: f64,
}

/// The holders in effect at `t` per `changes` (sorted by time; empty before the first one).
fn raw_at(changes: &[Step], t: f64) -> Vec<usize> {
    changes
        .iter()
        .take_while(|c| c.t <= t)
        .last()
        .map(|c| c.holders.clone())
        .unwrap_or_default()
}

/// The holder timeline within `[from, to]` once cut hosts are taken out: a first step at
/// `from`, then one per change of the effective holder set.
pub fn effective_steps(changes: &[Step], cuts: &[Cut], from: f64, to: f64) -> Vec<Step> {
    let mut points: Vec<f64> = vec![from];
    points.extend(changes.iter().map(|c| c.t));
    points.extend(cuts.iter().flat_map(|c| [c.from, c.to]));
    points.retain(|&t| t >= from && t <= to);
    points.sort_by(f64::total_cmp);
    points.dedup();
    let mut steps: Vec<Step> = Vec::new();
    for t in points {
        let mut holders = raw_at(changes, t);
        holders.retain(|h| !cuts.iter().any(|c| c.host == *h && c.from <= t && t < c.to));
        holders.sort_unstable();
        holders.dedup();
        if steps.last().is_none_or(|s| s.holders != holders) {
            steps.push(Step { t, holders });
        }
    }
    steps
}

/// The spans of `steps` (which end at `to`) whose holder set satisfies `pred`, merged.
pub fn spans(steps: &[Step], to: f64, pred: impl Fn(&[usize]) -> bool) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if !pred(&s.holders) {
            continue;
        }
        let end = steps.get(i + 1).map_or(to, |n| n.t).min(to);
        match out.last_mut() {
            Some(last) if last.1 >= s.t => last.1 = end,
            _ => out.push((s.t, end)),
        }
    }
    out
}

/// Spans with nobody holding.
pub fn no_holder_spans(steps: &[Step], to: f64) -> Vec<(f64, f64)> {
    spans(steps, to, |h| h.is_empty())
}

/// Spans with two or more holders.
pub fn multi_holder_spans(steps: &[Step], to: f64) -> Vec<(f64, f64)> {
    spans(steps, to, |h| h.len() >= 2)
}

/// Length of `span` outside `exempt` (a window during which the API was down).
pub fn outside(span: (f64, f64), exempt: Option<(f64, f64)>) -> f64 {
    let len = (span.1 - span.0).max(0.0);
    match exempt {
        Some((a, b)) => {
            let overlap = (span.1.min(b) - span.0.max(a)).max(0.0);
            len - overlap
        }
        None => len,
    }
}

/// Length of `span` from `since` on (the part before it is not counted).
pub fn after(span: (f64, f64), since: f64) -> f64 {
    (span.1 - span.0.max(since)).max(0.0)
}

/// Ownership changes: steps where a host that did not hold the address before (in the last
/// non-empty holder set) now holds it. A handover with overlap (`[a]`, `[a, b]`, `[b]`) is one
/// change, so is one through a gap (`[a]`, `[]`, `[b]`); `[a]`, `[]`, `[a]` is none.
pub fn ownership_changes(steps: &[Step]) -> usize {
    let mut last: &[usize] = steps.first().map_or(&[], |s| &s.holders[..]);
    let mut changes = 0;
    for s in steps.iter().skip(1) {
        if s.holders.is_empty() {
            continue;
        }
        if s.holders.iter().any(|h| !last.contains(h)) {
            changes += 1;
        }
        last = &s.holders;
    }
    changes
}

/// The longest time within `[from, to]` without a successful answer, given the times answers
/// arrived (any order).
pub fn longest_outage(answers: &[f64], from: f64, to: f64) -> f64 {
    let mut times: Vec<f64> = answers
        .iter()
        .copied()
        .filter(|&t| t >= from && t <= to)
        .collect();
    times.sort_by(f64::total_cmp);
    let mut prev = from;
    let mut longest: f64 = 0.0;
    for t in times.into_iter().chain(std::iter::once(to)) {
        longest = longest.max(t - prev);
        prev = t;
    }
    longest
}

/// (median, max); the median of an even count is the mean of the middle two.
pub fn median_max(samples: &[f64]) -> Option<(f64, f64)> {
    crate::lab::bench::summary(samples).map(|(_, median, max)| (median, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(t: f64, holders: &[usize]) -> Step {
        Step {
            t,
            holders: holders.to_vec(),
        }
    }

    #[test]
    fn steps_start_at_the_window_and_drop_cut_hosts() {
        let changes = vec![step(1.0, &[0]), step(5.0, &[0, 1]), step(5.1, &[1])];
        // Host 0 is cut from 3 to 8: nobody from 3 until host 1 attaches at 5.
        let cuts = [Cut {
            host: 0,
            from: 3.0,
            to: 8.0,
        }];
        let steps = effective_steps(&changes, &cuts, 2.0, 10.0);
        assert_eq!(
            steps,
            vec![step(2.0, &[0]), step(3.0, &[]), step(5.0, &[1])],
            "the overlap at 5.0 is no overlap: host 0 is off the network"
        );
        assert_eq!(no_holder_spans(&steps, 10.0), vec![(3.0, 5.0)]);
        assert!(multi_holder_spans(&steps, 10.0).is_empty());
        assert_eq!(ownership_changes(&steps), 1);
        // Without the cut, the API's view: an overlap of 0.1 s and no gap.
        let steps = effective_steps(&changes, &[], 0.0, 10.0);
        assert_eq!(steps[0], step(0.0, &[]));
        let multi = multi_holder_spans(&steps, 10.0);
        assert_eq!(multi.len(), 1);
        assert!((multi[0].1 - multi[0].0 - 0.1).abs() < 1e-9);
        assert_eq!(no_holder_spans(&steps, 10.0), vec![(0.0, 1.0)]);
        assert_eq!(ownership_changes(&steps), 2, "nobody -> 0 -> 1");
    }

    #[test]
    fn open_spans_end_at_the_window() {
        let changes = vec![step(1.0, &[0]), step(4.0, &[])];
        let steps = effective_steps(&changes, &[], 0.5, 6.0);
        assert_eq!(no_holder_spans(&steps, 6.0), vec![(0.5, 1.0), (4.0, 6.0)]);
        // Changes after the window are ignored.
        let steps = effective_steps(&changes, &[], 2.0, 3.0);
        assert_eq!(steps, vec![step(2.0, &[0])]);
        assert!(no_holder_spans(&steps, 3.0).is_empty());
    }

    #[test]
    fn ownership_changes_count_newcomers_only() {
        let s =
            |v: &[(f64, &[usize])]| -> Vec<Step> { v.iter().map(|(t, h)| step(*t, h)).collect() };
        assert_eq!(ownership_changes(&s(&[(0.0, &[0])])), 0);
        assert_eq!(
            ownership_changes(&s(&[(0.0, &[0]), (1.0, &[]), (2.0, &[0])])),
            0,
            "the same holder back after a gap"
        );
        assert_eq!(
            ownership_changes(&s(&[(0.0, &[0]), (1.0, &[]), (2.0, &[1])])),
            1
        );
        // Fighting: 0 and 1 take it from each other twice.
        assert_eq!(
            ownership_changes(&s(&[
                (0.0, &[0]),
                (1.0, &[0, 1]),
                (1.1, &[1]),
                (3.0, &[0, 1]),
                (3.1, &[0]),
                (5.0, &[0, 1]),
                (5.1, &[1]),
            ])),
            3
        );
    }

    #[test]
    fn exempt_windows_and_observable_starts() {
        assert_eq!(outside((2.0, 10.0), None), 8.0);
        assert_eq!(outside((2.0, 10.0), Some((1.0, 8.0))), 2.0);
        assert_eq!(outside((2.0, 10.0), Some((3.0, 4.0))), 7.0);
        assert_eq!(outside((2.0, 10.0), Some((11.0, 12.0))), 8.0);
        assert_eq!(after((2.0, 10.0), 5.0), 5.0);
        assert_eq!(after((2.0, 10.0), 1.0), 8.0);
        assert_eq!(after((2.0, 3.0), 5.0), 0.0);
    }

    #[test]
    fn client_outage() {
        assert_eq!(longest_outage(&[], 0.0, 2.0), 2.0);
        let answers = [0.1, 0.2, 0.3, 1.5, 1.6, 9.0];
        assert!((longest_outage(&answers, 0.0, 2.0) - 1.2).abs() < 1e-9);
        assert!((longest_outage(&answers, 1.55, 1.7) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn summaries() {
        assert_eq!(median_max(&[]), None);
        assert_eq!(median_max(&[3.0, 1.0, 2.0]), Some((2.0, 3.0)));
        assert_eq!(median_max(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 4.0)));
    }
}
