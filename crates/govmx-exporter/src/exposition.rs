//! Helpers for tools that read the classic Prometheus text format rather than OpenMetrics
//! (`promtool check metrics`), and for tests that compare metric names.
//!
//! Every govmx service serves OpenMetrics text (prometheus-client), where a counter family is
//! declared as `# TYPE x counter` and sampled as `x_total`. The classic format declares the
//! sample name itself; [`to_classic_text`] rewrites the declarations accordingly and drops the
//! OpenMetrics-only lines (`# UNIT`, `# EOF`). Sample lines are left untouched.

use std::collections::BTreeSet;

/// OpenMetrics text → classic Prometheus text (see the module docs).
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(line) => out.push_str(line.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The sample names in exposition text (`x_total`, `x_bucket`, … as they appear), sorted.
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let end = l.find(['{', ' '])?;
            Some(l[..end].to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_declarations() {
        let om = "# HELP govmx_a Things.\n# TYPE govmx_a counter\ngovmx_a_total{x=\"1\"} 2\n\
                  # HELP govmx_b_seconds Age.\n# TYPE govmx_b_seconds gauge\n# UNIT govmx_b_seconds seconds\ngovmx_b_seconds 3.0\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP govmx_a_total Things.\n# TYPE govmx_a_total counter\ngovmx_a_total{x=\"1\"} 2\n\
             # HELP govmx_b_seconds Age.\n# TYPE govmx_b_seconds gauge\ngovmx_b_seconds 3.0\n"
        );
        assert_eq!(
            sample_names(om).into_iter().collect::<Vec<_>>(),
            vec!["govmx_a_total", "govmx_b_seconds"]
        );
    }
}
