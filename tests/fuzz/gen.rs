//! Seeded generators of hostile input: random JSON values, odd numbers, and mutations of a JSON
//! document (as a value: keys deleted, renamed, duplicated, values replaced, tags changed) or
//! of its text (truncated, random bytes, invalid UTF-8). Each mutation says what it did.

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Map, Value};

/// A string value that is written into the JSON text as is, unquoted (numbers serde_json
/// cannot hold, a duplicated key): see [`to_text`].
const RAW: &str = "\u{1}RAW:";

/// `v` as JSON text, each `RAW` string replaced by its raw text.
pub fn to_text(v: &Value) -> String {
    let mut text = serde_json::to_string_pretty(v).unwrap();
    let marker = "\"\\u0001RAW:";
    while let Some(start) = text.find(marker) {
        let body = start + marker.len();
        let mut end = body;
        let bytes = text.as_bytes();
        while bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let raw: String = serde_json::from_str(&format!("\"{}\"", &text[body..end])).unwrap();
        text.replace_range(start..=end, &raw);
    }
    text
}

fn raw(text: &str) -> Value {
    Value::String(format!("{RAW}{text}"))
}

/// One of `items`.
pub fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// A number at or past some limit: huge, negative, zero, fractional, or beyond what a JSON
/// parser may hold.
pub fn wild_number(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..22) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(i64::MIN),
        4 => json!(1e308),
        5 => json!(-1e308),
        6 => raw("-0.0"),
        7 => json!(0.5),
        8 => json!(1e-300),
        9 => raw("18446744073709551616"),
        10 => raw("1e400"),
        11 => raw("-1e400"),
        12 => raw("1e-400"),
        13 => json!(4_294_967_296u64),
        14 => json!(1_000_000_000),
        15 => json!(f32::MAX as f64 * 2.0),
        16 => json!(2.5),
        17 => raw("123456789012345678901234567890"),
        18 => json!(u32::MAX),
        19 => json!(i32::MAX as i64 + 1),
        20 => json!(rng.gen_range(-1000..1000)),
        _ => json!(rng.gen::<f64>() * 10f64.powi(rng.gen_range(-20..20))),
    }
}

/// A string that is odd somehow.
pub fn wild_string(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0 => String::new(),
        1 => "x".repeat(rng.gen_range(1000..70_000)),
        2 => " ".into(),
        3 => "\u{0}".into(),
        4 => "../../../../etc/passwd".into(),
        5 => "é✓\u{202e}🦀".into(),
        6 => "/dev/null".into(),
        7 => "NaN".into(),
        8 => "-1".into(),
        _ => (0..rng.gen_range(1..12))
            .map(|_| rng.gen_range(b'a'..=b'z') as char)
            .collect(),
    }
}

/// A random JSON value of any type, nested at most `depth` deep.
pub fn wild_value(rng: &mut StdRng, depth: u32) -> Value {
    let top = if depth == 0 { 5 } else { 8 };
    match rng.gen_range(0..top) {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 | 3 => wild_number(rng),
        4 => Value::String(wild_string(rng)),
        5 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| wild_value(rng, depth - 1))
                .collect(),
        ),
        6 => {
            let mut m = Map::new();
            for _ in 0..rng.gen_range(0..4) {
                m.insert(wild_string(rng), wild_value(rng, depth - 1));
            }
            Value::Object(m)
        }
        _ => {
            // Deep nesting.
            let mut v = json!(1);
            for _ in 0..rng.gen_range(10..200) {
                v = if rng.gen() {
                    json!([v])
                } else {
                    json!({ "a": v })
                };
            }
            v
        }
    }
}

/// JSON pointers of every value in `v` (the root included, as "").
pub fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    walk(
                        c,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

/// Pointers of the values that `keep` accepts.
pub fn pointers_where(v: &Value, keep: impl Fn(&str, &Value) -> bool) -> Vec<String> {
    pointers(v)
        .into_iter()
        .filter(|p| keep(p, v.pointer(p).unwrap()))
        .collect()
}

/// Names that are, or are near, plugin and tag names.
const TAGS: &[&str] = &[
    "",
    "unknown",
    "MLP_ENCODER",
    "mlp_encoder ",
    "gaussian",
    "mlp_decoder",
    "mlp_encoder",
    "transformer_encoder",
    "transformer_decoder",
    "nvib",
    "gaussian_vib",
    "standard_normal",
    "dirichlet_process",
    "bernoulli",
    "categorical",
    "per_epoch",
    "per_step",
    "denoising",
    "sdpa",
    "none",
    "identity",
    "ae",
    "beta_vae",
    "vt_pooled",
    "learned_memory",
];

/// Applies one random structural mutation to `doc`; returns what it did.
pub fn mutate_value(rng: &mut StdRng, doc: &mut Value) -> String {
    let objects = pointers_where(doc, |_, v| v.as_object().is_some_and(|m| !m.is_empty()));
    let tags = pointers_where(doc, |p, v| {
        v.is_string() && (p.ends_with("/type") || p.ends_with("/kind"))
    });
    match rng.gen_range(0..6) {
        0 if !objects.is_empty() => {
            let at = pick(rng, &objects).clone();
            let m = doc.pointer_mut(&at).unwrap().as_object_mut().unwrap();
            let key = m.keys().nth(rng.gen_range(0..m.len())).unwrap().clone();
            m.remove(&key);
            format!("deleted {at}/{key}")
        }
        1 if !objects.is_empty() => {
            let at = pick(rng, &objects).clone();
            let m = doc.pointer_mut(&at).unwrap().as_object_mut().unwrap();
            let key = m.keys().nth(rng.gen_range(0..m.len())).unwrap().clone();
            let value = m.remove(&key).unwrap();
            let new = match rng.gen_range(0..4) {
                0 => key.to_uppercase(),
                1 => format!("{key}_"),
                2 => key.replace('_', "-"),
                _ => wild_string(rng),
            };
            m.insert(new.clone(), value);
            format!("renamed {at}/{key} to {:?}", short(&new))
        }
        2 if !objects.is_empty() => {
            // `{"k": a, …, "k": b}`: a second value under the same key, written raw.
            let at = pick(rng, &objects).clone();
            let m = doc.pointer_mut(&at).unwrap().as_object_mut().unwrap();
            let key = m.keys().nth(rng.gen_range(0..m.len())).unwrap().clone();
            let second = if rng.gen() {
                m[&key].clone()
            } else {
                wild_value(rng, 2)
            };
            let dup = format!("{RAW}{}", serde_json::to_string(&key).unwrap());
            m.insert(dup, second);
            format!("duplicated key {at}/{key}")
        }
        3 if !tags.is_empty() => {
            let at = pick(rng, &tags).clone();
            let name = if rng.gen_range(0..4) == 0 {
                wild_string(rng)
            } else {
                pick(rng, TAGS).to_string()
            };
            *doc.pointer_mut(&at).unwrap() = Value::String(name.clone());
            format!("tag {at} set to {:?}", short(&name))
        }
        _ => {
            let all = pointers(doc);
            let at = pick(rng, &all).clone();
            let value = wild_value(rng, 3);
            let shown = short(&to_text(&value));
            *doc.pointer_mut(&at).unwrap() = value;
            format!("value {at:?} replaced with {shown}")
        }
    }
}

/// At most 80 characters of `s`, on one line.
pub fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 80 {
        format!("{}…", one.chars().take(80).collect::<String>())
    } else {
        one
    }
}

/// Byte sequences that are not UTF-8.
const BAD_UTF8: &[&[u8]] = &[b"\xff", b"\xc3", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80"];

/// Pieces of JSON syntax, and other bytes, out of place.
const PIECES: &[&[u8]] = &[
    b"\0", b"{", b"}", b"[", b"\"", b",", b"\\u", b"\\ud800", b"/*", b"NaN",
];

/// Applies one random mutation to the bytes of a text file; returns what it did.
pub fn mutate_bytes(rng: &mut StdRng, bytes: &mut Vec<u8>) -> String {
    let at = rng.gen_range(0..=bytes.len());
    match rng.gen_range(0..5) {
        0 => {
            bytes.truncate(at);
            format!("truncated at byte {at}")
        }
        1 => {
            let n = rng.gen_range(1..16);
            let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            bytes.splice(at..at, junk.iter().copied());
            format!("inserted bytes {junk:02x?} at {at}")
        }
        2 => {
            let bad = *pick(rng, BAD_UTF8);
            // Inside a string value where there is one, so that only the encoding is wrong.
            let quote = bytes
                .iter()
                .skip(at)
                .position(|&b| b == b'"')
                .map(|p| p + at + 1);
            let pos = quote.filter(|&p| p <= bytes.len()).unwrap_or(at);
            bytes.splice(pos..pos, bad.iter().copied());
            format!("inserted invalid UTF-8 {bad:02x?} at {pos}")
        }
        3 if !bytes.is_empty() => {
            let i = rng.gen_range(0..bytes.len());
            let bit = rng.gen_range(0..8);
            bytes[i] ^= 1 << bit;
            format!("flipped bit {bit} of byte {i}")
        }
        _ => {
            let piece = *pick(rng, PIECES);
            bytes.splice(at..at, piece.iter().copied());
            format!("inserted {:?} at {at}", String::from_utf8_lossy(piece))
        }
    }
}
