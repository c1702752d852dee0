//! The real-asset suite (being written).
