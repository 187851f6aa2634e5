//! Fuzzes `shmbox::fuzzing::check_region_image`: header validation, then
//! closing every mailbox and decoding every entry the way a receiver would.
//!
//! Every input is tried twice:
//!
//! 1. **raw**: the bytes themselves as a region image (only an input that is
//!    exactly a valid region gets past the header checks; the `raw-*` seeds
//!    are such images);
//! 2. **patched**: byte 0 picks a config, and the rest is a list of patches
//!    applied to a freshly created region image of that config, so that
//!    most inputs pass validation and reach the mailbox and chunk code.
//!
//! Patch records, until the input runs out (`off` is little-endian `u16`,
//! taken modulo the image size):
//!
//! | op % 4 | operands        | effect                                   |
//! |--------|-----------------|------------------------------------------|
//! | 0      | off, u8         | store a byte                             |
//! | 1      | off, u32 (LE)   | store a word at `off & !3`               |
//! | 2      | off, u64 (LE)   | store a word at `off & !7`               |
//! | 3      | a, b, c, d      | layout-aware patch, by `(op >> 2) % 4`:  |
//!
//! * 0: mailbox `a`, cell `b` := stamp `c`, value = the entry naming chunk
//!   number `d` (a well-formed entry when `c` is the right stamp);
//! * 1: the same with value + 2^20 (another chunk, or none);
//! * 2: mailbox `a`'s head and tail's position := `b | c << 8 | d << 16`
//!   (the tail's owner is zeroed);
//! * 3: chunk number `d`'s length := its capacity + `a | b << 8` (too long)
//!   or, when `c` is even, `a` (in range).
//!
//! Properties checked besides "no panic, no hang, no out-of-bounds access":
//! an image whose header page (first 4096 bytes) was not patched must be
//! accepted, and it cannot report more entries than its mailboxes hold.
#![no_main]

mod common;

use common::{Layout, HEADER_SIZE};
use libfuzzer_sys::fuzz_target;
use shmbox::fuzzing::{check_region_image, fresh_region_image};
use shmbox::Config;
use std::sync::OnceLock;

struct Base {
    layout: Layout,
    image: Vec<u8>,
}

fn bases() -> &'static [Base; 2] {
    static BASES: OnceLock<[Base; 2]> = OnceLock::new();
    BASES.get_or_init(|| [base(&common::small_config()), base(&common::odd_config())])
}

fn base(config: &Config) -> Base {
    let layout = Layout::compute(config);
    let image = fresh_region_image(config);
    assert_eq!(image.len() as u64, layout.total_size, "layout model is off");
    // Creation time and creator pid stay as created: the header checksum
    // covers them.
    Base { layout, image }
}

fn put(image: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = image.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Applies the patch records in `ops` to `image`; returns whether any
/// touched the header page.
fn apply(layout: &Layout, image: &mut [u8], mut ops: &[u8]) -> bool {
    let len = image.len();
    let mut header_touched = false;
    let mut touch = |at: usize| {
        header_touched |= at < HEADER_SIZE as usize;
        at
    };
    while let Some((&op, rest)) = ops.split_first() {
        let need = match op % 4 {
            0 => 3,
            1 => 6,
            2 => 10,
            _ => 4,
        };
        if rest.len() < need {
            break;
        }
        let (args, tail) = rest.split_at(need);
        ops = tail;
        let off = usize::from(u16::from_le_bytes([args[0], args[1]])) % len;
        match op % 4 {
            0 => image[touch(off)] = args[2],
            1 => put(image, touch(off & !3), &args[2..6]),
            2 => put(image, touch(off & !7), &args[2..10]),
            _ => {
                let [a, b, c, d] = [args[0], args[1], args[2], args[3]];
                let slot = u32::from(a) % layout.participants;
                let (class, index) = layout.nth_chunk(u64::from(d));
                let chunk = layout.chunk(class, index);
                match (op >> 2) % 4 {
                    v @ (0 | 1) => {
                        let cell = u32::from(b) % layout.capacity;
                        let value = Layout::entry(class, index) + u32::from(v) * (1 << 20);
                        let word = (u64::from(c) << 32) | u64::from(value);
                        put(image, layout.cell(slot, cell) as usize, &word.to_le_bytes());
                    }
                    2 => {
                        let pos = u64::from(b) | u64::from(c) << 8 | u64::from(d) << 16;
                        let at = layout.mailbox(slot) as usize;
                        // tail: position << 32 | owner
                        put(image, at, &(pos << 32).to_le_bytes());
                        put(image, at + 128, &pos.to_le_bytes()); // head
                    }
                    _ => {
                        let capacity = layout.classes[class].size;
                        let len = if c % 2 == 0 {
                            u64::from(a)
                        } else {
                            capacity + (u64::from(a) | u64::from(b) << 8)
                        };
                        put(image, chunk as usize + 8, &len.to_le_bytes());
                    }
                }
            }
        }
    }
    header_touched
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let [small, odd] = bases();
    let mut s = vec![
        ("fresh-small", vec![0]),
        ("fresh-odd", vec![1]),
        // A well-formed entry (stamp 1 at head 0) in mailbox 0: chunk 0.
        ("entry", vec![0, 3, 0, 0, 1, 0]),
        // Entries in two mailboxes of the odd config, one of them misaligned.
        ("entries-odd", vec![1, 3, 1, 0, 1, 71, 3 | 4, 2, 0, 1, 70]),
        // An entry whose chunk says it is longer than its capacity.
        ("long-entry", vec![0, 3, 0, 0, 1, 9, 3 | 12, 1, 0, 1, 9]),
        // Queue indices moved, then an entry at the new head position.
        ("moved-head", vec![0, 3 | 8, 1, 5, 0, 0, 3, 1, 1, 6, 2]),
        // One header byte changed (the class count).
        ("header-byte", vec![0, 0, 0x5c, 0, 7]),
        ("raw-small", small.image.clone()),
        ("raw-odd", odd.image.clone()),
    ];
    // A raw image carrying one well-formed entry.
    let mut raw = small.image.clone();
    apply(&small.layout, &mut raw, &[3, 2, 0, 1, 3]);
    s.push(("raw-small-entry", raw));
    s
}

fuzz_target!(init: common::write_seeds(&seeds()), |data: &[u8]| {
    let _ = check_region_image(data);

    let Some((&which, ops)) = data.split_first() else {
        return;
    };
    let base = &bases()[usize::from(which % 2)];
    let mut image = base.image.clone();
    let header_touched = apply(&base.layout, &mut image, ops);
    match check_region_image(&image) {
        Ok(entries) => {
            let most = u64::from(base.layout.participants) * u64::from(base.layout.capacity);
            assert!(entries as u64 <= most, "{entries} entries in {most} cells");
        }
        Err(e) => assert!(
            header_touched,
            "a region whose header was not touched was refused: {e}"
        ),
    }
});
