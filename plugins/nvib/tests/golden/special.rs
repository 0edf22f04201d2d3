//! Golden cases of `special` (being written).

use crate::harness::{Golden, Produced};

/// The port's outputs for the cases of this family.
pub fn run(_g: &Golden) -> Option<Result<Produced, String>> {
    None
}
