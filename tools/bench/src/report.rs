//! The results table: one row per measured quantity, one column per system, the medians, the
//! ratios ElkFS ÷ MooseFS, and whether the target is met. Rendered as a Markdown table
//! (padded, so it also reads well in a terminal).

use crate::stats::{self, Unit};

/// The system a value was measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column {
    /// ElkFS, default settings.
    Elk,
    /// MooseFS, mounted with its defaults.
    Mfs,
    /// MooseFS mounted with `-o mfscachemode=DIRECT`.
    MfsDirect,
}

impl Column {
    /// Every column, in table order.
    pub const ALL: [Column; 3] = [Column::Elk, Column::Mfs, Column::MfsDirect];

    /// The header of the column.
    pub fn label(self) -> &'static str {
        match self {
            Column::Elk => "ElkFS",
            Column::Mfs => "MooseFS",
            Column::MfsDirect => "MooseFS DIRECT",
        }
    }

    fn index(self) -> usize {
        match self {
            Column::Elk => 0,
            Column::Mfs => 1,
            Column::MfsDirect => 2,
        }
    }
}

/// A target from the issue, checked against ElkFS's median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// ElkFS ÷ MooseFS (default or DIRECT) at least or at most `ratio`.
    Ratio {
        /// The MooseFS column compared with.
        against: Column,
        /// `true` for "at least", `false` for "at most".
        at_least: bool,
        /// The ratio ElkFS ÷ MooseFS to reach.
        ratio: f64,
    },
    /// ElkFS's value below `limit`, in the row's unit (a time the issue gives in seconds).
    Below {
        /// The limit, not included.
        limit: f64,
    },
    /// ElkFS's value at most ElkFS's value in the row `base` plus `slack`: memory that does not
    /// grow with the namespace beyond what a bounded cache may add.
    Bounded {
        /// The key of the row compared with.
        base: &'static str,
        /// What may be added to the base row's value, in the row's unit.
        slack: f64,
    },
}

impl Goal {
    /// ElkFS at least `ratio` times MooseFS's default mount.
    pub const fn at_least(ratio: f64) -> Goal {
        Goal::Ratio {
            against: Column::Mfs,
            at_least: true,
            ratio,
        }
    }

    /// ElkFS at least `ratio` times MooseFS DIRECT.
    pub const fn at_least_direct(ratio: f64) -> Goal {
        Goal::Ratio {
            against: Column::MfsDirect,
            at_least: true,
            ratio,
        }
    }

    /// ElkFS at most `ratio` times MooseFS's default mount.
    pub const fn at_most(ratio: f64) -> Goal {
        Goal::Ratio {
            against: Column::Mfs,
            at_least: false,
            ratio,
        }
    }

    /// ElkFS's value below `limit`.
    pub const fn below(limit: f64) -> Goal {
        Goal::Below { limit }
    }

    /// ElkFS's value at most its value in the row keyed `base`, plus `slack`.
    pub const fn bounded(base: &'static str, slack: f64) -> Goal {
        Goal::Bounded { base, slack }
    }

    /// Whether `row` meets the goal; `None` when a value it needs is missing. `rows` are the
    /// report's rows, where a [`Goal::Bounded`] finds its base.
    fn verdict(&self, row: &Row, rows: &[Row]) -> Option<bool> {
        match *self {
            Goal::Ratio {
                against,
                at_least,
                ratio,
            } => {
                let actual = row.ratio(against)?;
                Some(if at_least {
                    actual >= ratio
                } else {
                    actual <= ratio
                })
            }
            Goal::Below { limit } => Some(row.elk_median()? < limit),
            Goal::Bounded { base, slack } => {
                let base = rows.iter().find(|r| r.metric.key == base)?.elk_median()?;
                Some(row.elk_median()? <= base + slack)
            }
        }
    }

    fn describe(&self, unit: Unit, rows: &[Row]) -> String {
        match *self {
            Goal::Ratio {
                against,
                at_least,
                ratio,
            } => {
                let sign = if at_least { "≥" } else { "≤" };
                let against = if against == Column::MfsDirect {
                    " DIRECT"
                } else {
                    ""
                };
                format!("{sign} {}×{against}", trim_ratio(ratio))
            }
            Goal::Below { limit } => format!("< {}", unit.format_limit(limit)),
            Goal::Bounded { base, slack } => {
                let base = rows
                    .iter()
                    .find(|r| r.metric.key == base)
                    .map_or(base, |r| r.metric.label.as_str());
                format!("bounded: ≤ ({base}) + {}", unit.format_limit(slack))
            }
        }
    }
}

fn trim_ratio(ratio: f64) -> String {
    let text = format!("{ratio:.2}");
    let text = text.trim_end_matches('0');
    if text.ends_with('.') {
        format!("{text}0")
    } else {
        text.to_owned()
    }
}

/// One measured quantity (a row of the table).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// A stable identifier, used to find the row again.
    pub key: &'static str,
    /// What the row says in its first column.
    pub label: String,
    /// What the values are.
    pub unit: Unit,
    /// The targets for this row.
    pub goals: Vec<Goal>,
}

/// What one cell holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Not measured.
    Empty,
    /// The samples of each run.
    Samples(Vec<f64>),
    /// A sentence in place of a number ("not available", "timed out").
    Note(String),
}

impl Cell {
    fn median(&self) -> Option<f64> {
        match self {
            Cell::Samples(samples) => stats::median(samples),
            _ => None,
        }
    }
}

/// A row: the metric and its three cells.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The quantity.
    pub metric: Metric,
    /// ElkFS, MooseFS, MooseFS DIRECT.
    pub cells: [Cell; 3],
}

impl Row {
    /// ElkFS's median ÷ the median in `against`, when both exist.
    pub fn ratio(&self, against: Column) -> Option<f64> {
        let elk = self.cells[Column::Elk.index()].median()?;
        let other = self.cells[against.index()].median()?;
        (other != 0.0).then(|| elk / other)
    }

    /// ElkFS's median, if measured.
    pub fn elk_median(&self) -> Option<f64> {
        self.cells[Column::Elk.index()].median()
    }

    /// The target column: the goals and whether they are met (`met`, `missed`), or nothing.
    /// `rows` are the report's rows, which a [`Goal::Bounded`] refers to.
    pub fn target_text(&self, rows: &[Row]) -> String {
        if self.metric.goals.is_empty() {
            return String::new();
        }
        let goals: Vec<String> = self
            .metric
            .goals
            .iter()
            .map(|g| g.describe(self.metric.unit, rows))
            .collect();
        let verdicts: Vec<Option<bool>> = self
            .metric
            .goals
            .iter()
            .map(|g| g.verdict(self, rows))
            .collect();
        let verdict = if verdicts.contains(&Some(false)) {
            ": missed"
        } else if verdicts.iter().all(|v| *v == Some(true)) {
            ": met"
        } else {
            ""
        };
        format!("{}{verdict}", goals.join(", "))
    }

    fn cell_text(&self, column: Column) -> String {
        match &self.cells[column.index()] {
            Cell::Empty => "—".to_owned(),
            Cell::Note(note) => note.clone(),
            cell => cell
                .median()
                .map_or_else(|| "—".to_owned(), |m| self.metric.unit.format(m)),
        }
    }

    fn ratio_text(&self, against: Column) -> String {
        self.ratio(against)
            .map_or_else(String::new, |r| format!("{r:.2}×"))
    }
}

/// Every row measured so far, in the order first measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The rows.
    pub rows: Vec<Row>,
}

impl Report {
    fn row_mut(&mut self, metric: &Metric) -> &mut Row {
        let index = match self.rows.iter().position(|r| r.metric.key == metric.key) {
            Some(index) => index,
            None => {
                self.rows.push(Row {
                    metric: metric.clone(),
                    cells: [Cell::Empty, Cell::Empty, Cell::Empty],
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[index]
    }

    /// Adds `metric`'s row, still empty, if it is not there yet: rows appear in the order they
    /// are declared or first measured.
    pub fn declare(&mut self, metric: &Metric) {
        self.row_mut(metric);
    }

    /// Adds one run's value.
    pub fn add_sample(&mut self, metric: &Metric, column: Column, value: f64) {
        let cell = &mut self.row_mut(metric).cells[column.index()];
        match cell {
            Cell::Samples(samples) => samples.push(value),
            _ => *cell = Cell::Samples(vec![value]),
        }
    }

    /// Puts a sentence in a cell in place of a value.
    pub fn set_note(&mut self, metric: &Metric, column: Column, note: &str) {
        self.row_mut(metric).cells[column.index()] = Cell::Note(note.to_owned());
    }

    /// The table in Markdown, columns padded to line up.
    pub fn table(&self) -> String {
        let header: Vec<String> = [
            "workload",
            Column::Elk.label(),
            Column::Mfs.label(),
            Column::MfsDirect.label(),
            "ElkFS ÷ MooseFS",
            "ElkFS ÷ DIRECT",
            "target",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let body: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                vec![
                    row.metric.label.clone(),
                    row.cell_text(Column::Elk),
                    row.cell_text(Column::Mfs),
                    row.cell_text(Column::MfsDirect),
                    row.ratio_text(Column::Mfs),
                    row.ratio_text(Column::MfsDirect),
                    row.target_text(&self.rows),
                ]
            })
            .collect();
        markdown_table(
            &header,
            &body,
            &[false, true, true, true, true, true, false],
        )
    }

    /// Every sample of every cell, one line per row, for the report's appendix.
    pub fn samples(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            let cells: Vec<String> = Column::ALL
                .iter()
                .filter_map(|&c| match &row.cells[c.index()] {
                    Cell::Samples(s) => {
                        let values: Vec<String> =
                            s.iter().map(|v| row.metric.unit.format(*v)).collect();
                        Some(format!("{}: {}", c.label(), values.join(", ")))
                    }
                    _ => None,
                })
                .collect();
            if !cells.is_empty() {
                out.push_str(&format!("- {}: {}\n", row.metric.label, cells.join("; ")));
            }
        }
        out
    }
}

/// A Markdown table with each column padded to its widest cell; `right` says which columns are
/// right-aligned.
pub fn markdown_table(header: &[String], body: &[Vec<String>], right: &[bool]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h).max(3)).collect();
    for row in body {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(cell));
            }
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(width(c));
                if right.get(i).copied().unwrap_or(false) {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            // Each cell is padded by one space on both sides: the rule spans both.
            if right.get(i).copied().unwrap_or(false) {
                format!("{}:", "-".repeat(w + 1))
            } else {
                "-".repeat(w + 2)
            }
        })
        .collect();
    let mut out = line(header);
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for row in body {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(goals: Vec<Goal>) -> Metric {
        Metric {
            key: "seq-write",
            label: "seq write".into(),
            unit: Unit::MibPerSec,
            goals,
        }
    }

    #[test]
    fn ratios_use_medians_and_goals_say_met_or_missed() {
        let m = metric(vec![Goal::at_least(2.0), Goal::at_least_direct(1.3)]);
        let mut report = Report::default();
        for v in [400.0, 600.0, 500.0] {
            report.add_sample(&m, Column::Elk, v);
        }
        report.add_sample(&m, Column::Mfs, 200.0);
        report.add_sample(&m, Column::MfsDirect, 400.0);
        let row = &report.rows[0];
        assert_eq!(row.ratio(Column::Mfs), Some(2.5));
        assert_eq!(row.ratio(Column::MfsDirect), Some(1.25));
        assert_eq!(
            row.target_text(&report.rows),
            "≥ 2.0×, ≥ 1.3× DIRECT: missed"
        );

        let rss = Metric {
            key: "rss",
            label: "RSS".into(),
            unit: Unit::Mib,
            goals: vec![Goal::at_most(0.25)],
        };
        report.add_sample(&rss, Column::Elk, 50.0);
        report.add_sample(&rss, Column::Mfs, 400.0);
        assert_eq!(report.rows[1].target_text(&report.rows), "≤ 0.25×: met");
    }

    #[test]
    fn a_goal_without_both_values_has_no_verdict() {
        let m = metric(vec![Goal::at_least(1.5)]);
        let mut report = Report::default();
        report.set_note(&m, Column::Elk, "not available");
        report.add_sample(&m, Column::Mfs, 10.0);
        assert_eq!(report.rows[0].target_text(&report.rows), "≥ 1.5×");
        assert_eq!(report.rows[0].ratio(Column::Mfs), None);
    }

    #[test]
    fn table_is_padded_markdown_with_notes_and_dashes() {
        let m = metric(vec![Goal::at_least(2.0)]);
        let mut report = Report::default();
        report.add_sample(&m, Column::Elk, 1000.0);
        report.add_sample(&m, Column::Mfs, 250.0);
        let other = Metric {
            key: "loss",
            label: "back at goal".into(),
            unit: Unit::Seconds,
            goals: vec![],
        };
        report.set_note(&other, Column::Elk, "timed out");
        report.add_sample(&other, Column::Mfs, 3.2);
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("|----"), "{table}");
        assert!(lines[1].contains(":|"), "right-aligned columns: {table}");
        assert!(
            lines[2].contains("1 000 MiB/s") && lines[2].contains("4.00×"),
            "{table}"
        );
        assert!(lines[2].contains("≥ 2.0×: met"), "{table}");
        assert!(lines[3].contains("timed out") && lines[3].contains("3.20 s"));
        assert!(lines[3].contains("—"), "empty DIRECT cell: {table}");
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
    }

    #[test]
    fn samples_list_every_run() {
        let m = metric(vec![]);
        let mut report = Report::default();
        report.add_sample(&m, Column::Elk, 1.0);
        report.add_sample(&m, Column::Elk, 2.0);
        assert_eq!(report.samples(), "- seq write: ElkFS: 1 MiB/s, 2 MiB/s\n");
    }
}
