//! Unit tests of the attention functions.
