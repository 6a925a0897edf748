//! The proof a store write asks for. Only `Admin::write` makes one: after
//! the caller's role was checked, and with the audit entries it records once
//! the write commits. A write that skips either does not compile.

pub struct Grant(());

impl Grant {
    pub(super) fn new() -> Self {
        Grant(())
    }

    /// For the store's own tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Grant(())
    }
}
