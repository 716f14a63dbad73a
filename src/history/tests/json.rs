//! The JSON-lines format: exact output, round trips, and refusal of bad input.

use super::generate::{linearizable_history, Shape};
use super::*;
use crate::raft::rng::Rng;

#[test]
fn writes_the_documented_format() {
    let op = cas_failed(3, "k1", Some("a"), "b", Some("c"), 12_003_000, 12_104_000);
    assert_eq!(
        op_to_json_line(&op),
        r#"{"client":3,"key":"k1","op":"cas","expected":"a","new":"b","call":12003000,"ret":12104000,"outcome":"ok","result":"failed","current":"c"}"#
    );
    let op = info(Op { key: Bytes::from_static(b"q\"\\\x00\xff"), ..delete(1, "", true, 5, 6) });
    assert_eq!(
        op_to_json_line(&op),
        r#"{"client":1,"key":"q\"\\\u0000\u00ff","op":"delete","call":5,"ret":null,"outcome":"info"}"#
    );
    assert_eq!(
        op_to_json_line(&get(2, "k", None, 1, 2)),
        r#"{"client":2,"key":"k","op":"get","call":1,"ret":2,"outcome":"ok","value":null}"#
    );
}

#[test]
fn accepts_any_field_order_whitespace_and_json_escapes() {
    let line =
        r#" { "outcome" : "ok", "existed":true ,"ret":9,"call":8,"op":"delete","key":"\u00e9\/\n","client":0 } "#;
    let op = op_from_json_line(line).unwrap();
    assert_eq!(op, Op { key: Bytes::from_static(b"\xe9/\n"), ..delete(0, "", true, 8, 9) });
    // A raw character up to U+00FF is its byte too.
    assert_eq!(op_from_json_line(&line.replace(r"\u00e9", "é")).unwrap(), op);
    // `ret` may be left out.
    let pending = op_from_json_line(r#"{"client":1,"key":"k","op":"get","call":3,"outcome":"info"}"#).unwrap();
    assert_eq!(pending, info(get(1, "k", None, 3, 3)));
}

/// An operation of random kind and outcome with random bytes (all 256 values likely).
fn random_op(rng: &mut Rng) -> Op {
    let bytes = |rng: &mut Rng| {
        let len = rng.range(0, 6) as usize;
        Bytes::from((0..len).map(|_| rng.range(0, 256) as u8).collect::<Vec<u8>>())
    };
    let maybe = |rng: &mut Rng, value: Bytes| if rng.chance(1, 3) { None } else { Some(value) };
    let (kind, result) = match rng.range(0, 4) {
        0 => (OpKind::Set { value: bytes(rng) }, OpResult::Set),
        1 => {
            let value = bytes(rng);
            (OpKind::Get, OpResult::Get { value: maybe(rng, value) })
        }
        2 => (OpKind::Delete, OpResult::Delete { existed: rng.chance(1, 2) }),
        _ => {
            let (expected, new, current) = (bytes(rng), bytes(rng), bytes(rng));
            let expected = maybe(rng, expected);
            let result =
                if rng.chance(1, 2) { CasResult::Ok } else { CasResult::Failed { current: maybe(rng, current) } };
            (OpKind::Cas { expected, new }, OpResult::Cas(result))
        }
    };
    let outcome = match rng.range(0, 4) {
        0 => Outcome::Fail,
        1 => Outcome::Info,
        _ => Outcome::Ok(result),
    };
    let call = if rng.chance(1, 4) { u64::MAX - rng.range(0, 2) } else { rng.next_u64() >> 1 };
    let ret = if rng.chance(1, 5) { None } else { Some(call.saturating_add(rng.range(0, 1000))) };
    Op { client: rng.next_u64(), key: bytes(rng), call, ret, kind, outcome }
}

#[test]
fn random_operations_round_trip() {
    let mut rng = Rng::new(11);
    let history: Vec<Op> = (0..2000).map(|_| random_op(&mut rng)).collect();
    let text = to_json_lines(&history);
    assert_eq!(text.lines().count(), history.len());
    assert!(text.is_ascii(), "the writer only emits ASCII");
    assert_eq!(parse_json_lines(&text).unwrap(), history);
}

#[test]
fn generated_history_round_trips_with_the_same_verdict() {
    let mut rng = Rng::new(5);
    let history = linearizable_history(
        &mut rng,
        &Shape { keys: 3, clients: 4, ops: 300, info_percent: 5, fail_percent: 5, unique_values: false },
    );
    let parsed = parse_json_lines(&format!("\n{}\n\n", to_json_lines(&history))).unwrap();
    assert_eq!(parsed, history);
    assert_eq!(verdict(&parsed), Verdict::Linearizable);
}

/// The error for `bad` placed as the third line after two good ones.
fn error_on_line_3(bad: &str) -> ParseError {
    let good = op_to_json_line(&set(1, "k", "v", 1, 2));
    let text = format!("{good}\n\n{bad}\n{good}\n");
    parse_json_lines(&text).expect_err(bad)
}

#[test]
fn garbage_is_refused_with_its_line_number() {
    let valid = r#"{"client":1,"key":"k","op":"set","value":"v","call":1,"ret":2,"outcome":"ok"}"#;
    let bad_lines = [
        ("not json", "expected '{'"),
        ("{", "found end of line"),
        ("[1,2]", "expected '{'"),
        (&valid[..valid.len() - 1], "expected ',' or '}'"),
        (&format!("{valid} trailing"), "unexpected text"),
        (&valid.replace("\"client\":1", "\"client\":-1"), "unexpected '-'"),
        (&valid.replace("\"client\":1", "\"client\":1.5"), "only integers"),
        (&valid.replace("\"client\":1", "\"client\":01"), "leading zero"),
        (&valid.replace("\"client\":1", "\"client\":18446744073709551616"), "does not fit in 64 bits"),
        (&valid.replace("\"client\":1", "\"client\":\"1\""), "must be a non-negative integer"),
        (&valid.replace("\"client\":1,", ""), "missing field \"client\""),
        (&valid.replace("\"client\":1", "\"client\":1,\"client\":2"), "duplicate field"),
        (&valid.replace("}", ",\"colour\":\"red\"}"), "unexpected field \"colour\""),
        (&valid.replace("\"set\"", "\"put\""), "unknown op"),
        (&valid.replace("\"ok\"", "\"maybe\""), "unknown outcome"),
        (&valid.replace("\"ret\":2", "\"ret\":0"), "before its call"),
        (&valid.replace("\"v\"", "\"\\q\""), "unknown escape"),
        (&valid.replace("\"v\"", "\"\\u00g1\""), "four hex digits"),
        (&valid.replace("\"v\"", "\"\\u01\""), "four hex digits"),
        (&valid.replace("\"v\"", "\"\\u0100\""), "above U+00FF"),
        (&valid.replace("\"v\"", "\"\\ud800\""), "surrogate"),
        (&valid.replace("\"v\"", "\"€\""), "above U+00FF"),
        (&valid.replace("\"v\"", "\"a\tb\""), "raw control character"),
        (r#"{"client":1,"key":"abc"#, "unterminated string"),
        (&valid.replace("\"v\"", "nul"), "unknown literal"),
        (&valid.replace("\"v\"", "null"), "must be a string"),
        (&valid.replace("}", ",\"existed\":true}"), "unexpected field \"existed\""),
        (r#"{"client":1,"key":"k","op":"get","call":1,"ret":2,"outcome":"ok"}"#, "missing field \"value\""),
        (r#"{"client":1,"key":"k","op":"get","call":1,"ret":2,"outcome":"fail","value":"v"}"#, "unexpected field"),
        (r#"{"client":1,"key":"k","op":"cas","new":"n","call":1,"outcome":"info"}"#, "missing field \"expected\""),
        (
            r#"{"client":1,"key":"k","op":"cas","expected":null,"new":"n","call":1,"outcome":"ok","result":"meh"}"#,
            "unknown cas result",
        ),
    ];
    for (bad, message) in bad_lines {
        let error = error_on_line_3(bad);
        assert_eq!(error.line, 3, "{bad}: {error}");
        assert!(error.message.contains(message), "{bad}: got {error}, expected {message:?}");
        assert!(error.to_string().starts_with("line 3: "));
    }
}

#[test]
fn mangled_lines_never_panic() {
    let mut rng = Rng::new(99);
    let lines: Vec<String> = (0..200).map(|_| op_to_json_line(&random_op(&mut rng))).collect();
    for line in &lines {
        let bytes = line.as_bytes();
        for _ in 0..20 {
            let mut mangled = bytes.to_vec();
            match rng.range(0, 3) {
                0 => mangled.truncate(rng.range(0, bytes.len() as u64) as usize),
                1 => {
                    let at = rng.range(0, bytes.len() as u64) as usize;
                    mangled[at] = rng.range(0, 256) as u8;
                }
                _ => {
                    let at = rng.range(0, bytes.len() as u64) as usize;
                    mangled.insert(at, b"{}[]\",:\\u0-9e"[rng.range(0, 13) as usize]);
                }
            }
            let text = String::from_utf8_lossy(&mangled);
            if let Err(error) = parse_json_lines(&text) {
                // A mangled byte may have become a line break.
                assert!((1..=text.lines().count()).contains(&error.line), "{error}");
            }
        }
    }
}

#[test]
fn the_documented_example_parses() {
    let text = r#"{"client":3,"key":"k1","op":"set","value":"a","call":100,"ret":250,"outcome":"ok"}
{"client":4,"key":"k1","op":"get","call":120,"ret":300,"outcome":"ok","value":null}
{"client":3,"key":"k1","op":"delete","call":260,"ret":null,"outcome":"info"}
{"client":5,"key":"k1","op":"cas","expected":"a","new":"b","call":12003000,"ret":12104000,"outcome":"ok","result":"failed","current":"c"}
"#;
    let history = parse_json_lines(text).unwrap();
    assert_eq!(history[1], get(4, "k1", None, 120, 300));
    assert_eq!(history[2], info(delete(3, "k1", true, 260, 0)));
    assert_eq!(to_json_lines(&history), text);
}
