//! Finding things in JSON the gateway relays without parsing all of it:
//! strings are skipped with memchr, nesting by counting brackets. What is
//! found is parsed by serde_json; what is skipped is not checked.

/// The raw value of `key` in the top-level object `json`: how an answer's
/// `usage` is read without walking its text, which is most of the answer
/// (serde skipping `choices` was 8% of a request's instructions). Keys are
/// compared as written, escapes unread. `None` when `json` is not an object
/// or has no such key before it stops making sense.
pub fn top_level_value<'a>(json: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut at = skip_space(json, 0);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_space(json, at);
        if json.get(at) != Some(&b'"') {
            return None;
        }
        let name_end = string_end(json, at + 1)?;
        let name = &json[at + 1..name_end];
        at = skip_space(json, name_end + 1);
        if json.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_space(json, at + 1);
        let end = value_end(json, start)?;
        if name == key {
            return Some(&json[start..end]);
        }
        at = skip_space(json, end);
        if json.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    }
}

/// Just past the JSON value that starts at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start + 1).map(|end| end + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            while let Some(byte) = json.get(at) {
                match byte {
                    b'"' => at = string_end(json, at + 1)?,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
            None
        }
        _ => json[start..]
            .iter()
            .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
            .map(|len| start + len),
    }
}

/// The index of the quote that closes the JSON string starting at `start`.
pub fn string_end(json: &[u8], mut start: usize) -> Option<usize> {
    loop {
        let found = start + memchr::memchr2(b'"', b'\\', json.get(start..)?)?;
        if json[found] == b'"' {
            return Some(found);
        }
        start = found + 2;
    }
}

pub fn skip_space(json: &[u8], at: usize) -> usize {
    at + json
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .count()
}

#[cfg(test)]
mod tests {
    use super::top_level_value;

    fn usage(json: &str) -> Option<&str> {
        top_level_value(json.as_bytes(), b"usage")
            .map(|raw| std::str::from_utf8(raw).expect("a slice of a str"))
    }

    #[test]
    fn finds_the_top_level_value_past_nested_keys_of_the_same_name() {
        let answer = r#"{"id":"x","choices":[{"message":{"content":"usage: \"}{][\\","usage":1}}],
            "usage" : {"prompt_tokens":3,"completion_tokens":4} ,"system_fingerprint":null}"#;
        assert_eq!(
            usage(answer),
            Some(r#"{"prompt_tokens":3,"completion_tokens":4}"#)
        );
        assert_eq!(
            usage(r#" {"a": [1, {"b": "]"}], "usage":null}"#),
            Some("null")
        );
        assert_eq!(usage(r#"{"created":1700000000,"usage":12}"#), Some("12"));
        assert_eq!(usage(r#"{"usage":"text"}"#), Some(r#""text""#));
    }

    #[test]
    fn finds_nothing_where_there_is_nothing_to_find() {
        assert_eq!(usage(r#"{"choices":[{"usage":{}}]}"#), None);
        assert_eq!(usage(r#"[{"usage":{}}]"#), None);
        assert_eq!(usage("{}"), None);
        assert_eq!(usage(""), None);
        assert_eq!(usage(r#"{"a":"unterminated, "usage":{}}"#), None);
        assert_eq!(usage(r#"{"a":[1,2, "usage":{}}"#), None);
        assert_eq!(usage(r#"{"a" 1, "usage":{}}"#), None);
        assert_eq!(usage(r#"{"usage":{"prompt_tokens":3"#), None);
    }
}
