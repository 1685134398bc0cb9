//! report.html (being written).
use crate::history::Op;
use crate::results::Results;

pub fn render(_history: &[Op], _results: &Results) -> String {
    String::new()
}
