//! Field templates: the one renderer of `%{field}`, `%{[data][path]}` and
//! `%{+DATE}` patterns in paths, index names and ids.
//!
//! The syntax is Logstash's sprintf, so pipelines ported from HFXEventStash
//! keep their meaning: `evt-%{index}-%{+xxxx-MM-ww}` names the same indices.
//! A date pattern is a Joda pattern (`xxxx` week-based year, `ww` ISO week,
//! `yyyy`, `MM`, `dd`, `HH`, ...) unless it starts with `%`, in which case it
//! is strftime (`%{+%Y.%m.%d}`). Dates come from the event's `@timestamp`, in
//! UTC. A field the event lacks is left in place as written, as Logstash does.

use chrono::format::{Item, StrftimeItems};

use crate::event::Event;

/// A template that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// A `%{` without its closing `}`.
    #[error("unclosed `%{{` at byte {position} in `{template}`")]
    Unclosed {
        /// The whole template.
        template: String,
        /// Where the reference starts.
        position: usize,
    },
    /// A `%{}` or a malformed `[a][b]` path.
    #[error("bad field reference `%{{{reference}}}`: use `%{{name}}` or `%{{[data][name]}}`")]
    BadField {
        /// The text between the braces.
        reference: String,
    },
    /// A date pattern chrono or the Joda translation cannot handle.
    #[error("bad date pattern `{pattern}`: {reason}")]
    BadDate {
        /// The pattern after `+`.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Field { path: Vec<String>, source: String },
    Date(Vec<Item<'static>>),
}

/// A parsed template, rendered once per event.
#[derive(Debug, Clone)]
pub struct FieldTemplate {
    source: String,
    parts: Vec<Part>,
}

impl FieldTemplate {
    /// Parses a template; fails on an unclosed reference or a bad date pattern.
    pub fn parse(template: &str) -> Result<FieldTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("%{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| TemplateError::Unclosed {
                template: template.to_owned(),
                position: template.len() - rest.len() + start,
            })?;
            parts.push(parse_reference(&after[..end])?);
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(FieldTemplate {
            source: template.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the template names no field or date: every event renders the same.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|part| matches!(part, Part::Literal(_)))
    }

    /// True when the template names no field but `index` and `kind` (and no
    /// date): two events with the same `index` and `kind` render the same.
    pub fn depends_only_on_kind(&self) -> bool {
        self.parts.iter().all(|part| match part {
            Part::Literal(_) => true,
            Part::Field { path, .. } => matches!(path.as_slice(), [field] if field == "index" || field == "kind"),
            Part::Date(_) => false,
        })
    }

    /// Renders the template for `event`.
    pub fn render(&self, event: &Event) -> String {
        let mut out = String::new();
        self.render_into(event, &mut out, |value, out| out.push_str(value));
        out
    }

    /// Renders into `out` (which is cleared first), passing every field value
    /// through `escape`, so that a value cannot change the shape of the result
    /// (see [`path_segment_escape`]). Literal parts are copied as they are.
    pub fn render_into(&self, event: &Event, out: &mut String, escape: impl Fn(&str, &mut String)) {
        use std::fmt::Write as _;
        out.clear();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field { path, source } => match event.field(path) {
                    Some(value) => escape(&value, out),
                    None => {
                        out.push_str("%{");
                        out.push_str(source);
                        out.push('}');
                    }
                },
                Part::Date(items) => {
                    let _ = write!(out, "{}", event.received_at.format_with_items(items.iter()));
                }
            }
        }
    }
}

/// An escape for templates that render file paths: a field value becomes one
/// safe path segment, so a producer's `kind` can never climb out of the output
/// directory. Characters other than ASCII letters, digits, `-`, `_` and `.`
/// become `_`, and a value of `.` or `..` becomes `_`.
pub fn path_segment_escape(value: &str, out: &mut String) {
    if value == "." || value == ".." || value.is_empty() {
        out.push('_');
        return;
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    // Kinds are nearly always safe already: one pass over the bytes, then a
    // plain copy, instead of pushing character by character.
    if value.bytes().all(|b| safe(char::from(b))) {
        out.push_str(value);
        return;
    }
    out.extend(value.chars().map(|c| if safe(c) { c } else { '_' }));
}

fn parse_reference(reference: &str) -> Result<Part, TemplateError> {
    if let Some(pattern) = reference.strip_prefix('+') {
        return parse_date(pattern).map(Part::Date);
    }
    let bad = || TemplateError::BadField {
        reference: reference.to_owned(),
    };
    let path = if reference.starts_with('[') {
        let inner = reference
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(bad)?;
        inner.split("][").map(str::to_owned).collect::<Vec<_>>()
    } else {
        vec![reference.to_owned()]
    };
    if path
        .iter()
        .any(|segment| segment.is_empty() || segment.contains(['[', ']']))
    {
        return Err(bad());
    }
    Ok(Part::Field {
        path,
        source: reference.to_owned(),
    })
}

fn parse_date(pattern: &str) -> Result<Vec<Item<'static>>, TemplateError> {
    let bad = |reason: String| TemplateError::BadDate {
        pattern: pattern.to_owned(),
        reason,
    };
    let strftime = if pattern.starts_with('%') {
        pattern.to_owned()
    } else {
        joda_to_strftime(pattern).map_err(bad)?
    };
    StrftimeItems::new(&strftime)
        .parse_to_owned()
        .map_err(|_| bad("not a valid strftime pattern".to_owned()))
}

/// Translates a Joda-Time pattern (Logstash's `%{+...}`) to strftime.
fn joda_to_strftime(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        if c == '\'' {
            let close = chars[i + 1..].iter().position(|&d| d == '\'').ok_or("unclosed quote")?;
            if close == 0 {
                out.push('\'');
            }
            chars[i + 1..i + 1 + close]
                .iter()
                .for_each(|&d| push_literal(&mut out, d));
            i += close + 2;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let spec = match (c, run) {
            ('y' | 'Y', 2) => "%y",
            ('y' | 'Y', _) => "%Y",
            ('x', 2) => "%g",
            ('x', _) => "%G",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('w', 1) => "%-V",
            ('w', _) => "%V",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('D', _) => "%j",
            ('e', _) => "%u",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', _) => "%I",
            ('a', _) => "%p",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', 9) => "%9f",
            ('Z', 1) => "%z",
            ('Z', _) => "%:z",
            _ => {
                return Err(format!("unsupported Joda token `{}`", c.to_string().repeat(run)));
            }
        };
        out.push_str(spec);
        i += run;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Format;
    use bytes::Bytes;
    use chrono::{TimeZone, Utc};

    fn event_at(y: i32, m: u32, d: u32) -> Event {
        let at = Utc.with_ymd_and_hms(y, m, d, 12, 30, 5).unwrap();
        let data = Bytes::from_static(br#"{"requestId":"r/1"}"#);
        Event::new(Format::Json, data, "contact.AddressBook".into(), "id-1".into(), at)
    }

    fn render(template: &str, event: &Event) -> String {
        FieldTemplate::parse(template).unwrap().render(event)
    }

    #[test]
    fn renders_the_hfx_index_name() {
        let event = event_at(2026, 11, 23);
        assert_eq!(
            render("evt-%{index}-%{+xxxx-MM-ww}", &event),
            "evt-contact-address-book-2026-11-48"
        );
    }

    #[test]
    fn week_year_differs_from_calendar_year_at_year_boundaries() {
        // 2021-01-01 is in ISO week 53 of 2020.
        assert_eq!(render("%{+xxxx-MM-ww}", &event_at(2021, 1, 1)), "2020-01-53");
        // 2023-01-01 (a Sunday) is in week 52 of 2022.
        assert_eq!(render("%{+xxxx-ww}|%{+yyyy}", &event_at(2023, 1, 1)), "2022-52|2023");
        // 2024-12-30 (a Monday) already belongs to week 1 of 2025.
        assert_eq!(render("%{+xxxx-MM-ww}", &event_at(2024, 12, 30)), "2025-12-01");
    }

    #[test]
    fn strftime_and_joda_agree() {
        let event = event_at(2026, 3, 9);
        assert_eq!(render("%{+%Y.%m.%d}", &event), "2026.03.09");
        assert_eq!(render("%{+yyyy.MM.dd'T'HH:mm:ss}", &event), "2026.03.09T12:30:05");
    }

    #[test]
    fn data_paths_and_missing_fields() {
        let event = event_at(2026, 1, 5);
        assert_eq!(render("%{[data][requestId]}", &event), "r/1");
        assert_eq!(
            render("%{kind}/%{[data][nope]}", &event),
            "contact.AddressBook/%{[data][nope]}"
        );
        assert!(FieldTemplate::parse("plain").unwrap().is_constant());
        assert!(!FieldTemplate::parse("%{id}").unwrap().is_constant());
        let by_kind = |template: &str| FieldTemplate::parse(template).unwrap().depends_only_on_kind();
        assert!(by_kind("out/%{index}/%{kind}.jsonl"));
        assert!(by_kind("plain"));
        assert!(!by_kind("%{index}-%{+yyyy.MM.dd}"));
        assert!(!by_kind("%{[data][kind]}"));
        assert!(!by_kind("%{index}/%{id}"));
    }

    #[test]
    fn path_escape_keeps_values_inside_one_segment() {
        let event = event_at(2026, 1, 5);
        let template = FieldTemplate::parse("out/%{[data][requestId]}.jsonl").unwrap();
        let mut path = String::new();
        template.render_into(&event, &mut path, path_segment_escape);
        assert_eq!(path, "out/r_1.jsonl");
        let escaped = |value: &str| {
            let mut out = String::new();
            path_segment_escape(value, &mut out);
            out
        };
        assert_eq!(escaped(".."), "_");
        assert_eq!(escaped(""), "_");
        assert_eq!(escaped("contact.address-book_2"), "contact.address-book_2");
        // One `_` per character, whatever its width in UTF-8.
        assert_eq!(escaped("é/x\\y z\0"), "__x_y_z_");
    }

    #[test]
    fn rejects_malformed_templates() {
        assert!(matches!(
            FieldTemplate::parse("data/%{index"),
            Err(TemplateError::Unclosed { position: 5, .. })
        ));
        assert!(matches!(
            FieldTemplate::parse("%{}"),
            Err(TemplateError::BadField { .. })
        ));
        assert!(matches!(
            FieldTemplate::parse("%{[data]x]}"),
            Err(TemplateError::BadField { .. })
        ));
        assert!(matches!(
            FieldTemplate::parse("%{+qqq}"),
            Err(TemplateError::BadDate { .. })
        ));
        assert!(matches!(
            FieldTemplate::parse("%{+%Q}"),
            Err(TemplateError::BadDate { .. })
        ));
    }
}
