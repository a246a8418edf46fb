//! Differential runner.
