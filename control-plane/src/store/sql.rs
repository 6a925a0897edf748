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

/// A WHERE clause of only the filters that are set, numbered from `$1`.
/// One statement for every combination (`$n IS NULL OR column = $n`) hides
/// each column's index from SQLite, which plans before it sees the values:
/// every lookup scanned the table.
#[derive(Default)]
pub(super) struct Conditions<'q> {
    terms: Vec<String>,
    values: Vec<Parameter<'q>>,
}

enum Parameter<'q> {
    Text(&'q str),
    Int(i64),
}

impl<'q> Conditions<'q> {
    /// `term` with its parameter written `{}` (every `{}` is the same one), if `value` is set.
    pub fn text(self, term: &str, value: Option<&'q str>) -> Self {
        self.with(term, value.map(Parameter::Text))
    }

    pub fn int(self, term: &str, value: Option<i64>) -> Self {
        self.with(term, value.map(Parameter::Int))
    }

    fn with(mut self, term: &str, value: Option<Parameter<'q>>) -> Self {
        if let Some(value) = value {
            self.values.push(value);
            self.terms
                .push(term.replace("{}", &format!("${}", self.values.len())));
        }
        self
    }

    /// The conditions joined, or one that always holds.
    pub fn sql(&self) -> String {
        if self.terms.is_empty() {
            return "1 = 1".to_owned();
        }
        self.terms.join(" AND ")
    }

    pub fn bind<'a>(
        &self,
        mut query: sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>>,
    ) -> sqlx::query::Query<'a, sqlx::Any, sqlx::any::AnyArguments<'a>>
    where
        'q: 'a,
    {
        for value in &self.values {
            query = match *value {
                Parameter::Text(text) => query.bind(text),
                Parameter::Int(int) => query.bind(int),
            };
        }
        query
    }
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

    #[test]
    fn conditions_number_only_the_filters_that_are_set() {
        let conditions = Conditions::default()
            .text("a = {}", None)
            .text("(b = {} OR c = {})", Some("x"))
            .int("d >= {}", Some(3));
        assert_eq!(conditions.sql(), "(b = $1 OR c = $1) AND d >= $2");
        assert_eq!(Conditions::default().sql(), "1 = 1");
    }
}
