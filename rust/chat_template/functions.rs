//! The functions and filters Hugging Face gives chat templates beyond Jinja's builtins.

use minijinja::value::{from_args, Kwargs, Value, ValueKind};
use minijinja::{ErrorKind, State};

/// Python's `str.isspace`: Rust's Unicode whitespace plus the separators U+001C..U+001F, which
/// Python's `strip()` (and so jinja2's `trim`) removes too.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn strip(s: &str, chars: Option<&str>, left: bool, right: bool) -> String {
    let strip_char = |c: char| chars.map_or_else(|| py_space(c), |set| set.contains(c));
    let s = if left {
        s.trim_start_matches(strip_char)
    } else {
        s
    };
    let s = if right {
        s.trim_end_matches(strip_char)
    } else {
        s
    };
    s.to_string()
}

/// The `trim` filter as jinja2 has it: Python's `str.strip(chars)`.
pub(super) fn trim(s: &str, chars: Option<&str>) -> String {
    strip(s, chars, true, true)
}

/// Python methods on values (minijinja-contrib's pycompat), with `strip`/`lstrip`/`rstrip` on
/// strings using Python's whitespace.
pub(super) fn methods(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    if let (Some(s), "strip" | "lstrip" | "rstrip") = (value.as_str(), method) {
        let (chars,): (Option<&str>,) = from_args(args)?;
        let (left, right) = (method != "rstrip", method != "lstrip");
        return Ok(Value::from(strip(s, chars, left, right)));
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// `strftime_now(format)`: the current UTC time, formatted with the strftime directives Hugging
/// Face templates use (`%d %b %Y` in Llama 3.1's).
pub(super) fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Format seconds since the Unix epoch (UTC) with C strftime directives.
pub(super) fn strftime(format: &str, secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let before = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334][(m - 1) as usize];
    let yday = before + d + i64::from(leap && m > 2);
    let month = MONTHS[(m - 1) as usize];
    let day = DAYS[weekday];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out += &format!("{d:02}"),
            Some('e') => out += &format!("{d:2}"),
            Some('m') => out += &format!("{m:02}"),
            Some('Y') => out += &y.to_string(),
            Some('y') => out += &format!("{:02}", y.rem_euclid(100)),
            Some('b') => out += &month[..3],
            Some('B') => out += month,
            Some('a') => out += &day[..3],
            Some('A') => out += day,
            Some('j') => out += &format!("{yday:03}"),
            Some('H') => out += &format!("{h:02}"),
            Some('I') => out += &format!("{:02}", (h + 11) % 12 + 1),
            Some('p') => out += if h < 12 { "AM" } else { "PM" },
            Some('M') => out += &format!("{mi:02}"),
            Some('S') => out += &format!("{s:02}"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson` as Hugging Face defines it for chat templates: Python's `json.dumps` with
/// `ensure_ascii=False` (no HTML escaping, unlike minijinja's own), `indent` and `separators` as
/// there.
pub(super) fn tojson(
    value: &Value,
    indent: Option<usize>,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, value, indent, 0)?;
    Ok(Value::from(out))
}

fn write_json(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    if depth > 128 {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let (item_sep, key_sep) = if indent.is_some() {
        (",", ": ")
    } else {
        (", ", ": ")
    };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let s = v.to_string();
            out.push_str(match s.as_str() {
                "inf" => "Infinity",
                "-inf" => "-Infinity",
                "NaN" | "nan" => "NaN",
                _ => &s,
            });
        }
        ValueKind::String | ValueKind::Plain | ValueKind::Invalid => {
            json_string(out, &v.to_string())
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            let mut first = true;
            for item in v.try_iter()? {
                if !first {
                    out.push_str(item_sep);
                }
                first = false;
                newline(out, depth + 1);
                write_json(out, &item, indent, depth + 1)?;
            }
            if !first {
                newline(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            let mut first = true;
            for key in v.try_iter()? {
                if !first {
                    out.push_str(item_sep);
                }
                first = false;
                newline(out, depth + 1);
                json_string(out, &key.to_string());
                out.push_str(key_sep);
                write_json(out, &v.get_item(&key)?, indent, depth + 1)?;
            }
            if !first {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => json_string(out, &v.to_string()),
    }
    Ok(())
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
