//! SQL shared by the stores: parameter lists of bulk statements, and lists
//! as they are stored.

/// `$1, $2, ... $n`.
pub(super) fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VALUES of a multi-row INSERT: `rows` tuples of `columns` parameters
/// each, numbered after the first `shared`, which end every tuple (bound
/// first, once, then each row's values). `value_rows(2, 2, 1)` is
/// `($2, $3, $1), ($4, $5, $1)`.
pub(super) fn value_rows(rows: usize, columns: usize, shared: usize) -> String {
    (0..rows)
        .map(|row| {
            let own = (1..=columns).map(|c| format!("${}", shared + row * columns + c));
            let common = (1..=shared).map(|c| format!("${c}"));
            format!("({})", own.chain(common).collect::<Vec<_>>().join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A list as stored: a JSON array of strings.
pub fn string_list_json(items: &[String]) -> String {
    serde_json::Value::from(items).to_string()
}

/// A JSON array of strings as stored (models, audiences, ...).
pub fn string_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_number_each_rows_parameters_after_the_shared_ones() {
        assert_eq!(value_rows(2, 2, 1), "($2, $3, $1), ($4, $5, $1)");
        assert_eq!(value_rows(2, 1, 0), "($1), ($2)");
        assert_eq!(placeholders(3), "$1, $2, $3");
    }
}
