//! The synthetic suite (being written).
