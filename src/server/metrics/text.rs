//! Text of the exposition format: name validation, escaping, and exact decimal numbers.
//!
//! Every number is rendered from integers (a value and a power-of-ten divisor), so the text is
//! exact — no float rounding, no exponent — and always parses as a Prometheus float.

use std::fmt::Write;

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, and not `__`-prefixed (reserved for Prometheus itself).
pub(crate) fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') && !name.starts_with("__")
}

/// HELP text escaping: backslash and newline only (a `\"` in HELP is a parse error).
pub(crate) fn escape_help(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Label value escaping: backslash, double quote and newline.
pub(crate) fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `name="value",...` for parallel slices of names and values, escaped, without braces.
pub(crate) fn render_label_pairs(names: &[String], values: &[&str]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(value, &mut out);
        out.push('"');
    }
    out
}

/// Appends `value / 10^fraction_digits` as an exact decimal without trailing zeros: (1_500, 3)
/// is `1.5`, (2_000, 3) is `2`, (5, 9) is `0.000000005`.
pub(crate) fn write_decimal(out: &mut String, value: u64, fraction_digits: u32) {
    let divisor = 10u64.pow(fraction_digits);
    let _ = write!(out, "{}", value / divisor);
    let mut fraction = value % divisor;
    if fraction == 0 {
        return;
    }
    let mut digits = fraction_digits as usize;
    while fraction.is_multiple_of(10) {
        fraction /= 10;
        digits -= 1;
    }
    let _ = write!(out, ".{fraction:0digits$}");
}

pub(crate) fn write_u64(out: &mut String, value: u64) {
    let _ = write!(out, "{value}");
}

pub(crate) fn write_i64(out: &mut String, value: i64) {
    let _ = write!(out, "{value}");
}
