//! vexil-core's integration tests: flagd-testbed conformance, the flagd schema fixtures, and
//! property tests of bucketing and bad input.

mod conformance;
mod fixtures;
mod properties;
