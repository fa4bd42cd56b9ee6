//! A small reader for the subset of Gherkin the flagd-testbed uses: feature and scenario tags,
//! `Background`, `Scenario`, `Scenario Outline` with tagged `Examples` tables, steps, and data
//! tables under steps. Outlines are expanded into one [`Row`] per example line.

/// One runnable row: a plain scenario, or one line of an outline's examples.
#[derive(Debug, Clone)]
pub struct Row {
    /// The feature file's name (`targeting.feature`).
    pub file: String,
    /// Scenario title, with the example values for outlines.
    pub name: String,
    /// Feature, scenario and examples tags together, without the `@`.
    pub tags: Vec<String>,
    /// Background steps first, then the scenario's, with `<placeholders>` substituted.
    pub steps: Vec<Step>,
}

/// One step, with its keyword dropped (`Given`/`And`/... carry no meaning for the runner).
#[derive(Debug, Clone)]
pub struct Step {
    /// The step text after the keyword.
    pub text: String,
    /// A data table under the step, header row first, cells unescaped.
    pub table: Vec<Vec<String>>,
}

#[derive(Default)]
struct Scenario {
    name: String,
    tags: Vec<String>,
    steps: Vec<Step>,
    outline: bool,
    examples: Vec<(Vec<String>, Vec<Vec<String>>)>,
}

/// Parses one feature file into rows.
pub fn parse(file: &str, text: &str) -> Vec<Row> {
    let mut feature_tags: Vec<String> = Vec::new();
    let mut background: Vec<Step> = Vec::new();
    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut pending_tags: Vec<String> = Vec::new();
    // Where steps and tables go: the background, a scenario, or an examples block.
    enum Sink {
        Nothing,
        Background,
        Scenario,
        Examples,
    }
    let mut sink = Sink::Nothing;

    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            pending_tags.extend(
                line.split_whitespace()
                    .take_while(|t| !t.starts_with('#'))
                    .map(|t| t.trim_start_matches('@').to_owned()),
            );
            continue;
        }
        if line.starts_with("Feature:") {
            feature_tags = std::mem::take(&mut pending_tags);
            continue;
        }
        if line.starts_with("Background:") {
            pending_tags.clear();
            sink = Sink::Background;
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("Scenario Outline:")
            .or_else(|| line.strip_prefix("Scenario Template:"))
        {
            scenarios.push(Scenario {
                name: rest.trim().to_owned(),
                tags: std::mem::take(&mut pending_tags),
                outline: true,
                ..Scenario::default()
            });
            sink = Sink::Scenario;
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("Scenario:")
            .or_else(|| line.strip_prefix("Example:"))
        {
            scenarios.push(Scenario {
                name: rest.trim().to_owned(),
                tags: std::mem::take(&mut pending_tags),
                ..Scenario::default()
            });
            sink = Sink::Scenario;
            continue;
        }
        if line.starts_with("Examples:") || line.starts_with("Scenarios:") {
            if let Some(s) = scenarios.last_mut() {
                // A scenario with examples is an outline even when written `Scenario:`.
                s.outline = true;
                s.examples
                    .push((std::mem::take(&mut pending_tags), Vec::new()));
            }
            sink = Sink::Examples;
            continue;
        }
        if line.starts_with('|') {
            let cells = split_row(line);
            match sink {
                Sink::Examples => {
                    if let Some((_, rows)) =
                        scenarios.last_mut().and_then(|s| s.examples.last_mut())
                    {
                        rows.push(cells);
                    }
                }
                Sink::Scenario => {
                    if let Some(step) = scenarios.last_mut().and_then(|s| s.steps.last_mut()) {
                        step.table.push(cells);
                    }
                }
                Sink::Background => {
                    if let Some(step) = background.last_mut() {
                        step.table.push(cells);
                    }
                }
                Sink::Nothing => {}
            }
            continue;
        }
        let text = ["Given ", "When ", "Then ", "And ", "But ", "* "]
            .iter()
            .find_map(|k| line.strip_prefix(k));
        if let Some(text) = text {
            let step = Step {
                text: text.trim().to_owned(),
                table: Vec::new(),
            };
            match sink {
                Sink::Background => background.push(step),
                Sink::Scenario | Sink::Examples => {
                    if let Some(s) = scenarios.last_mut() {
                        s.steps.push(step);
                        sink = Sink::Scenario;
                    }
                }
                Sink::Nothing => {}
            }
        }
    }

    let mut rows = Vec::new();
    for s in scenarios {
        let mut tags = feature_tags.clone();
        tags.extend(s.tags.iter().cloned());
        let steps: Vec<Step> = background.iter().chain(s.steps.iter()).cloned().collect();
        if !s.outline {
            rows.push(Row {
                file: file.to_owned(),
                name: s.name.clone(),
                tags,
                steps,
            });
            continue;
        }
        for (ex_tags, table) in &s.examples {
            let Some((header, lines)) = table.split_first() else {
                continue;
            };
            for line in lines {
                let sub = |t: &str| {
                    header.iter().zip(line).fold(t.to_owned(), |acc, (h, v)| {
                        acc.replace(&format!("<{h}>"), v)
                    })
                };
                let mut row_tags = tags.clone();
                row_tags.extend(ex_tags.iter().cloned());
                rows.push(Row {
                    file: file.to_owned(),
                    name: format!("{} [{}]", s.name, line.join(" | ")),
                    tags: row_tags,
                    steps: steps
                        .iter()
                        .map(|st| Step {
                            text: sub(&st.text),
                            table: st
                                .table
                                .iter()
                                .map(|r| r.iter().map(|c| sub(c)).collect())
                                .collect(),
                        })
                        .collect(),
                });
            }
        }
    }
    rows
}

/// Splits `| a | b\|c |` into cells, trimming each and undoing Gherkin's escapes (`\|`, `\\`,
/// `\n`) and the `\"` that the testbed writes inside JSON cells.
fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|');
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('|') => cur.push('|'),
                Some('n') => cur.push('\n'),
                Some('\\') => cur.push('\\'),
                Some('"') => cur.push('"'),
                Some(other) => {
                    cur.push('\\');
                    cur.push(other);
                }
                None => cur.push('\\'),
            },
            '|' => cells.push(std::mem::take(&mut cur).trim().to_owned()),
            other => cur.push(other),
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlines_expand_per_example_line_with_all_tags() {
        let text = "@f\nFeature: x\n  Background:\n    Given base\n  @s\n  Scenario Outline: o\n    Given a \"<k>\"\n    Then v <v>\n    @e1\n    Examples: one\n      | k | v |\n      | a | 1 |\n      | b\\|c | 2 |\n";
        let rows = parse("x.feature", text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].tags, vec!["f", "s", "e1"]);
        assert_eq!(rows[1].steps[0].text, "base");
        assert_eq!(rows[1].steps[1].text, "a \"b|c\"");
        assert_eq!(rows[1].steps[2].text, "v 2");
    }

    #[test]
    fn step_tables_attach_to_their_step() {
        let text = "Feature: x\n  Scenario: s\n    Then t\n      | k | v |\n      | a | {\\\"x\\\": 1} |\n";
        let rows = parse("x.feature", text);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].steps[0].table[1], vec!["a", "{\"x\": 1}"]);
    }
}
