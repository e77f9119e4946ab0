//! Everything that touches the kernel: loading the embedded XDP object,
//! attaching it, pinning, typed access to the pinned maps, the compiled
//! lookup table, and running the program on crafted frames.

pub mod attach;
pub mod batch;
pub mod cgroup;
pub mod error;
pub mod grow;
pub mod hit_ids;
pub mod ids;
pub mod loader;
pub mod maps;
pub mod mirror;
pub mod mmap;
pub mod mode;
pub mod percpu;
pub mod pin;
pub mod room;
pub(crate) mod sys;
pub mod table;
pub mod tc;
pub mod test_run;

pub use error::DatapathError;
