//! STUB: JSON Lines codec.
