//! The tiers' rules, checked by the compiler: each file under
//! `tests/compile_fail/` is one anti-pattern that must not compile, with the
//! error it must give next to it (`.stderr`). Regenerate those after a
//! toolchain change with `TRYBUILD=overwrite cargo test --test compile_fail`.

#[test]
fn tier_rules_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
