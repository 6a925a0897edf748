//! Personal data in text: found by pattern, confirmed by check digit where
//! the format has one (Luhn for cards, ISO 7064 for Chinese resident ids),
//! and masked with a placeholder naming its kind.

use regex::Regex;
use shared::guardrails::PiiKind;
use std::borrow::Cow;
use std::sync::LazyLock;

struct Detector {
    kind: PiiKind,
    pattern: Regex,
    /// Whether a match really is of the kind (a check digit, a digit count).
    confirm: fn(&str) -> bool,
}

fn always(_: &str) -> bool {
    true
}

/// In order: the longer digit runs (cards, ids) before phone numbers,
/// which would otherwise take their digits.
static DETECTORS: LazyLock<Vec<Detector>> = LazyLock::new(|| {
    let detector = |kind, pattern: &str, confirm| Detector {
        kind,
        // The patterns are constants: a bad one is a bug caught by the tests.
        pattern: Regex::new(pattern).unwrap_or_else(|_| Regex::new("$^").expect("empty")),
        confirm,
    };
    vec![
        detector(
            PiiKind::Email,
            r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
            always,
        ),
        detector(PiiKind::Card, r"\b\d(?:[ -]?\d){12,18}\b", luhn),
        detector(PiiKind::NationalId, r"\b\d{3}-\d{2}-\d{4}\b", always),
        detector(PiiKind::NationalId, r"\b\d{17}[\dXx]\b", resident_id),
        detector(
            PiiKind::Phone,
            // Groups of 3 or 4 after the first: dates (2026-12-06) are not numbers to call.
            r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\b\d{2,4})(?:[\s.-]?\d{3,4}){2,4}\b",
            phone_digits,
        ),
    ]
});

pub fn placeholder(kind: PiiKind) -> &'static str {
    match kind {
        PiiKind::Email => "[EMAIL]",
        PiiKind::Phone => "[PHONE]",
        PiiKind::Card => "[CARD]",
        PiiKind::NationalId => "[NATIONAL_ID]",
    }
}

/// The first kind of `kinds` found in `text`.
pub fn find(text: &str, kinds: &[PiiKind]) -> Option<PiiKind> {
    DETECTORS
        .iter()
        .filter(|d| kinds.contains(&d.kind))
        .find(|d| d.pattern.find_iter(text).any(|m| (d.confirm)(m.as_str())))
        .map(|d| d.kind)
}

/// `text` with every instance of `kinds` replaced by its placeholder;
/// borrowed when there was none.
pub fn mask<'t>(text: &'t str, kinds: &[PiiKind]) -> Cow<'t, str> {
    let mut text = Cow::Borrowed(text);
    for detector in DETECTORS.iter().filter(|d| kinds.contains(&d.kind)) {
        if !detector
            .pattern
            .find_iter(&text)
            .any(|m| (detector.confirm)(m.as_str()))
        {
            continue;
        }
        let masked = detector
            .pattern
            .replace_all(&text, |found: &regex::Captures| {
                let found = &found[0];
                if (detector.confirm)(found) {
                    placeholder(detector.kind).to_owned()
                } else {
                    found.to_owned()
                }
            })
            .into_owned();
        text = Cow::Owned(masked);
    }
    text
}

fn digits(text: &str) -> Vec<u32> {
    text.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn luhn(text: &str) -> bool {
    let digits = digits(text);
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

/// GB 11643: the 18th character checks the first 17 (ISO 7064 MOD 11-2).
fn resident_id(text: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let digits = digits(&text[..17]);
    let sum: u32 = digits.iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    let expected = CHECK[(sum % 11) as usize];
    text[17..].eq_ignore_ascii_case(&expected.to_string())
}

fn phone_digits(text: &str) -> bool {
    (7..=15).contains(&digits(text).len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_each_kind_and_leaves_lookalikes() {
        let all = PiiKind::ALL;
        let text = "Mail ada@example.co.uk or call +1 415-555-0100; card 4111 1111 1111 1111, \
                    SSN 078-05-1120, id 11010519491231002X. Order 2026-12-06, card 4111 1111 1111 1112.";
        assert_eq!(
            mask(text, &all),
            "Mail [EMAIL] or call [PHONE]; card [CARD], SSN [NATIONAL_ID], id [NATIONAL_ID]. \
             Order 2026-12-06, card 4111 1111 1111 1112."
        );
        assert_eq!(find("call 555-123-4567", &all), Some(PiiKind::Phone));
        assert_eq!(find("call 555-123-4567", &[PiiKind::Email]), None);
        assert_eq!(
            find("id 110105194912310021", &all),
            None,
            "a bad check digit"
        );
        assert!(matches!(mask("nothing here", &all), Cow::Borrowed(_)));
    }
}
