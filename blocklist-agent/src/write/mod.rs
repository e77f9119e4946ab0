//! The write side: from the feeds' lists, the hand-made entries and the
//! guards to the entries installed in the kernel.
//!
//! - [`manual`]: hand-made entries: parse, edit, load, expire.
//! - [`policy`]: feeds, hand-made entries and protected ranges into the
//!   desired set (drop wins over monitor).
//! - [`sync`]: plan (pure), apply (the write order that never unblocks a
//!   kept address), the delta path, the memo between syncs.

pub mod manual;
pub mod policy;
pub mod sync;
