//! Fuzzes `shmbox::fuzzing::decode_entry`: the check every value read from
//! a mailbox cell goes through before the chunk it names is touched.
//!
//! Byte 0 picks the config: one of three fixed ones, or (`% 4 == 3`) one
//! built from the following bytes (1 to 8 classes of odd sizes and counts,
//! 1 to 64 participants, mailboxes of 2 to 256 cells). The remaining bytes
//! are little-endian `u32` mailbox values (at most 32 per input).
//!
//! Properties: when a value decodes to `Some((class, index))`, `class` is
//! below the number of classes and `index` below that class's chunk count,
//! and the value is exactly that chunk's entry (round trip);
//! the answer, `Some` or `None`, agrees with an independent model of the
//! layout (`common::Layout`). A built config also has its edges checked:
//! the first and last chunk of every class, and their neighbours.
#![no_main]

mod common;

use common::Layout;
use libfuzzer_sys::fuzz_target;
use shmbox::fuzzing::decode_entry;
use shmbox::{Config, SizeClass};
use std::sync::OnceLock;

/// Keeps a built config's region (allocated by `decode_entry` on each call)
/// small enough for thousands of executions per second.
const MAX_BUILT_SIZE: u64 = 1 << 20;

fn fixed() -> &'static [(Config, Layout); 3] {
    static FIXED: OnceLock<[(Config, Layout); 3]> = OnceLock::new();
    FIXED.get_or_init(|| {
        let wide = Config::default()
            .with_classes(&[
                SizeClass::new(8, 100),
                SizeClass::new(64, 65),
                SizeClass::new(100, 64),
                SizeClass::new(1000, 7),
                SizeClass::new(4096, 3),
                SizeClass::new(4097, 2),
                SizeClass::new(65536, 2),
                SizeClass::new(100_000, 1),
            ])
            .with_max_participants(64)
            .with_mailbox_capacity(256);
        [common::small_config(), common::odd_config(), wide].map(|c| {
            let l = Layout::compute(&c);
            (c, l)
        })
    })
}

/// A config described by `bytes` (consumed from the front), if it is
/// valid and small.
fn build(bytes: &mut &[u8]) -> Option<(Config, Layout)> {
    let mut next = || {
        let (&b, rest) = bytes.split_first().unwrap_or((&0, &[]));
        *bytes = rest;
        b
    };
    let n = 1 + usize::from(next() % 8);
    let mut size = 0u64;
    let mut classes = Vec::with_capacity(n);
    for _ in 0..n {
        size += 1 + u64::from(u16::from_le_bytes([next(), next()]));
        let count = 1 + u32::from(u16::from_le_bytes([next(), next()]) % 600);
        classes.push(SizeClass::new(size, count));
    }
    let config = Config::default()
        .with_classes(&classes)
        .with_max_participants(1 + u32::from(next() % 64))
        .with_mailbox_capacity(2 << (next() % 8));
    config.validate().ok()?;
    let layout = Layout::compute(&config);
    assert_eq!(
        layout.total_size,
        config.total_size(),
        "layout model is off"
    );
    (layout.total_size <= MAX_BUILT_SIZE).then_some((config, layout))
}

fn check(config: &Config, layout: &Layout, value: u32) {
    let got = decode_entry(config, value);
    if let Some((class, index)) = got {
        let classes = config.classes();
        assert!(
            usize::from(class) < classes.len(),
            "{value:#x}: class {class} of {}",
            classes.len()
        );
        let count = classes[usize::from(class)].count;
        assert!(index < count, "{value:#x}: index {index} of {count}");
        let back = Layout::entry(usize::from(class), index);
        assert_eq!(value, back, "({class}, {index}) does not round-trip");
    }
    assert_eq!(
        got,
        layout.decode(value),
        "{value:#x} with {config}: library and model disagree"
    );
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let values = |config: u8, vs: &[u32]| {
        let mut v = vec![config];
        for x in vs {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    };
    let first = Layout::entry(0, 0);
    let second = Layout::entry(1, 0);
    vec![
        (
            "small",
            values(0, &[0, first, first + 1, second, second + 17, u32::MAX]),
        ),
        ("odd", values(1, &[1, 64, 92, 93, 94, 1 << 20])),
        ("wide", values(2, &[0x100, 0x1000, 0x10000, 0xffff_fffe])),
        // Three classes of 1, 65 and 130 bytes, 2, 3 and 4 chunks, 8
        // participants, 4 cells; then two values.
        (
            "built",
            vec![
                3, 2, 0, 0, 1, 0, 63, 0, 2, 0, 64, 0, 3, 0, 7, 1, 0x60, 0, 0, 0, 0x61, 0, 0, 0,
            ],
        ),
    ]
}

fuzz_target!(init: common::write_seeds(&seeds()), |data: &[u8]| {
    let Some((&which, mut rest)) = data.split_first() else {
        return;
    };
    let built;
    let (config, layout) = if which % 4 == 3 {
        match build(&mut rest) {
            Some(b) => {
                built = b;
                let (config, layout) = (&built.0, &built.1);
                for (class, c) in layout.classes.iter().enumerate() {
                    for index in [0, c.count - 1] {
                        let v = Layout::entry(class, index);
                        for value in [v.wrapping_sub(1), v, v + 1] {
                            check(config, layout, value);
                        }
                    }
                    check(config, layout, Layout::entry(class, c.count));
                }
                (config, layout)
            }
            None => return,
        }
    } else {
        let (c, l) = &fixed()[usize::from(which % 4)];
        (c, l)
    };
    for word in rest.chunks_exact(4).take(32) {
        let value = u32::from_le_bytes(word.try_into().unwrap());
        check(config, layout, value);
    }
});
