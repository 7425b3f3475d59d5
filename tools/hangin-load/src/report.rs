//! Scenario results: named figures against the targets, plus free-form details.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(t) => value <= t,
            Target::AtLeast(t) => value >= t,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtMost(t) => write!(f, "≤ {t}"),
            Target::AtLeast(t) => write!(f, "≥ {t}"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub key: String,
    pub label: String,
    pub value: f64,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub figures: Vec<Figure>,
    pub details: Value,
    /// `plain`, `pi`, or the hand-set server conditions (pinning, fsync delay).
    pub profile: String,
    /// Lines printed under the figures (e.g. published figures to compare with).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// `/proc/loadavg` when the scenario started and ended: other work on the machine.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.into(),
            figures: Vec::new(),
            details: Value::Object(Default::default()),
            profile: "plain".into(),
            notes: Vec::new(),
            loadavg_start: crate::server::loadavg(),
            loadavg_end: String::new(),
        }
    }

    pub fn figure(
        &mut self,
        key: &str,
        label: &str,
        value: f64,
        unit: &str,
        target: Option<Target>,
    ) {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            value,
            unit: unit.into(),
            target,
            met: target.map(|t| t.met(value)),
        });
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        if let Value::Object(map) = &mut self.details {
            map.insert(
                key.into(),
                serde_json::to_value(value).unwrap_or(Value::Null),
            );
        }
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    pub fn finish(mut self) -> Report {
        self.loadavg_end = crate::server::loadavg();
        self
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut out = format!(
            "== {} [{}] (loadavg {} → {})\n",
            self.scenario, self.profile, self.loadavg_start, self.loadavg_end
        );
        for f in &self.figures {
            let verdict = match (f.target, f.met) {
                (Some(t), Some(true)) => format!("target {t} {}: met", f.unit),
                (Some(t), Some(false)) => format!("target {t} {}: NOT met", f.unit),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<44} {:>12} {:<8} {}\n",
                f.label,
                format_value(f.value),
                f.unit,
                verdict
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("  · {n}\n"));
        }
        out
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_judge_values() {
        let mut r = Report::new("x");
        r.figure("a", "A", 10.0, "MB", Some(Target::AtMost(12.0)));
        r.figure("b", "B", 150.0, "/s", Some(Target::AtLeast(200.0)));
        assert_eq!(r.figures[0].met, Some(true));
        assert_eq!(r.figures[1].met, Some(false));
        let text = r.finish().render();
        assert!(text.contains("NOT met"), "{text}");
    }
}
