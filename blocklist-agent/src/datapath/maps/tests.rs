use std::{cell::RefCell, collections::BTreeMap, os::fd::OwnedFd, rc::Rc};

use super::*;
use crate::datapath::{
    batch::BatchAttr,
    sys::{Command, fake},
};

/// A map whose single-element calls go to `entries` and whose batch
/// calls the fake kernel answers.
struct FakeMap {
    fd: OwnedFd,
    entries: Rc<RefCell<BTreeMap<u32, EntryValue>>>,
    max: u32,
}

impl FakeMap {
    fn new(entries: &Rc<RefCell<BTreeMap<u32, EntryValue>>>) -> Self {
        Self {
            fd: std::fs::File::open("/dev/null").unwrap().into(),
            entries: Rc::clone(entries),
            max: 4,
        }
    }
}

fn syscall_error(errno: i32) -> MapError {
    MapError::SyscallError(aya::sys::SyscallError {
        call: "bpf_map_update_elem",
        io_error: std::io::Error::from_raw_os_error(errno),
    })
}

impl EntryMap<u32> for FakeMap {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn put(&mut self, key: &u32, value: &EntryValue) -> Result<(), MapError> {
        let mut m = self.entries.borrow_mut();
        if m.len() as u32 >= self.max && !m.contains_key(key) {
            return Err(syscall_error(libc::E2BIG));
        }
        m.insert(*key, *value);
        Ok(())
    }
    fn del(&mut self, key: &u32) -> Result<(), MapError> {
        match self.entries.borrow_mut().remove(key) {
            Some(_) => Ok(()),
            None => Err(MapError::KeyNotFound),
        }
    }
    fn max_entries(&self) -> u32 {
        self.max
    }
}

fn value(id: u32) -> EntryValue {
    EntryValue {
        prefix_len: 32,
        id,
        ..Default::default()
    }
}

#[test]
fn without_batch_support_inserts_and_deletes_go_one_by_one() {
    let entries = Rc::new(RefCell::new(BTreeMap::new()));
    let mut map = FakeMap::new(&entries);
    let no_batches = |_, _| fake::errno(524);
    fake::with(no_batches, || {
        insert_batched(
            &mut map,
            "BLOCK_V4",
            &[1, 2, 3],
            &[value(1), value(2), value(3)],
        )
    })
    .unwrap();
    assert_eq!(entries.borrow().len(), 3);
    // A key that is not there is no error one by one either.
    fake::with(no_batches, || {
        delete_batched(&mut map, "BLOCK_V4", &[2, 9, 3])
    })
    .unwrap();
    assert_eq!(entries.borrow().keys().copied().collect::<Vec<_>>(), [1]);
    // A full map says which map and its size, one by one too.
    let e = fake::with(no_batches, || {
        insert_batched(&mut map, "BLOCK_V4", &[5, 6, 7, 8], &[value(5); 4])
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            DatapathError::Full {
                map: "BLOCK_V4",
                max: 4,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_batch_delete_skips_each_missing_key_and_goes_on() {
    let kernel_map = Rc::new(RefCell::new(
        [1u32, 2, 4, 6]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
    ));
    let calls = Rc::new(RefCell::new(0));
    let (k, c) = (Rc::clone(&kernel_map), Rc::clone(&calls));
    let kernel = move |cmd, attr: *mut u8| {
        assert_eq!(cmd, Command::MapDeleteBatch);
        *c.borrow_mut() += 1;
        // SAFETY: a delete batch of `count` u32 keys.
        let a = unsafe { &mut *attr.cast::<BatchAttr>() };
        // SAFETY: as above.
        let keys = unsafe { std::slice::from_raw_parts(a.keys as *const u32, a.count as usize) };
        for (i, key) in keys.iter().enumerate() {
            if !k.borrow_mut().remove(key) {
                a.count = i as u32;
                return fake::errno(libc::ENOENT);
            }
        }
        Ok(0)
    };
    let entries = Rc::new(RefCell::new(BTreeMap::new()));
    let mut map = FakeMap::new(&entries);
    fake::with(kernel, || {
        delete_batched(&mut map, "BLOCK_V4", &[1, 3, 2, 5, 7, 4, 6])
    })
    .unwrap();
    assert!(kernel_map.borrow().is_empty());
    // [1 3..] stops at 3, [2 5..] at 5, [7..] at 7, then [4 6].
    assert_eq!(*calls.borrow(), 4);
}

#[test]
fn a_full_batch_insert_is_reported_as_full() {
    let entries = Rc::new(RefCell::new(BTreeMap::new()));
    let mut map = FakeMap::new(&entries);
    let e = fake::with(
        |_, _| fake::errno(libc::E2BIG),
        || insert_batched(&mut map, "EXACT_V4", &[1], &[value(1)]),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DatapathError::Full {
                map: "EXACT_V4",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn ip_of_round_trips() {
    let key = IpKey {
        addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        family: FAMILY_V4,
        direction: 1,
        _pad: [0; 2],
    };
    assert_eq!(ip_of(&key), "10.0.0.1".parse::<IpAddr>().unwrap());
}
