//! What the run prints at the end: every check with its expected and observed outcome, and the
//! figures.

use crate::LS;
use crate::bed::Row;

pub(crate) fn print_summary(rows: &[Row], figures: &[(String, String)]) {
    let width = |column: &dyn Fn(&Row) -> usize, header: usize| {
        rows.iter().map(column).max().unwrap_or(0).max(header)
    };
    let check_width = width(&|row| row.check.chars().count(), 5);
    let expected_width = width(&|row| row.expected.chars().count(), 8);
    println!();
    println!(
        "[proof] summary ({} checks, 2 nodes, lockspace {LS}):",
        rows.len()
    );
    println!(
        "  {:<4}  {:<check_width$}  {:<expected_width$}  observed",
        "", "check", "expected"
    );
    for row in rows {
        println!(
            "  {:<4}  {:<check_width$}  {:<expected_width$}  {}",
            if row.pass { "PASS" } else { "FAIL" },
            row.check,
            row.expected,
            row.observed
        );
    }
    println!(
        "[proof] figures (TCG virtual machines on this build machine; for sizing timeouts only):"
    );
    for (name, value) in figures {
        println!("    {name}: {value}");
    }
    let passed = rows.iter().filter(|row| row.pass).count();
    println!("proof: {passed} passed, {} failed", rows.len() - passed);
}
