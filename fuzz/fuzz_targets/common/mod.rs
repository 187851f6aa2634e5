//! Shared by the fuzz targets: an independent re-implementation of the
//! region layout documented at the top of `crates/shmbox/src/layout.rs`
//! (`Layout::compute`), and the seed-corpus writer.
#![allow(dead_code)]

use shmbox::{Config, SizeClass};
use std::path::Path;

pub const HEADER_SIZE: u64 = 4096;
pub const INFO_OFFSET: u64 = 64;
pub const LINE: u64 = 64;
/// Bits of a mailbox entry below its class.
pub const ENTRY_SHIFT: u32 = 24;
pub const SLOT_SIZE: u64 = 256;
pub const CHUNK_HEADER: u64 = 32;
pub const MAILBOX_CELLS: u64 = 4 * LINE;
pub const PAIR: u64 = 2 * LINE;

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// Where one size class lives.
#[derive(Debug, Clone, Copy)]
pub struct ClassLayout {
    pub size: u64,
    pub count: u32,
    pub pool_offset: u64,
    pub bitmap_words: u64,
    pub chunks_offset: u64,
    pub stride: u64,
}

/// Offsets of every section of a region with a given config.
#[derive(Debug, Clone)]
pub struct Layout {
    pub total_size: u64,
    pub participants: u32,
    pub capacity: u32,
    pub slots_offset: u64,
    pub mailboxes_offset: u64,
    pub mailbox_stride: u64,
    pub classes: Vec<ClassLayout>,
}

impl Layout {
    pub fn compute(config: &Config) -> Layout {
        let n = u64::from(config.max_participants());
        let slots_offset = HEADER_SIZE;
        let mailboxes_offset = slots_offset + n * SLOT_SIZE;
        let mailbox_stride =
            MAILBOX_CELLS + round_up(u64::from(config.mailbox_capacity()) * 8, PAIR);
        let mut at = mailboxes_offset + n * mailbox_stride;
        let mut classes: Vec<ClassLayout> = Vec::new();
        for c in config.classes() {
            let bitmap_words = u64::from(c.count).div_ceil(64);
            classes.push(ClassLayout {
                size: c.size,
                count: c.count,
                pool_offset: at,
                bitmap_words,
                chunks_offset: 0,
                stride: round_up(CHUNK_HEADER + c.size, LINE),
            });
            at += round_up(LINE + bitmap_words * 8, PAIR);
        }
        for c in &mut classes {
            c.chunks_offset = at;
            at += u64::from(c.count) * c.stride;
        }
        Layout {
            total_size: round_up(at, 4096),
            participants: config.max_participants(),
            capacity: config.mailbox_capacity(),
            slots_offset,
            mailboxes_offset,
            mailbox_stride,
            classes,
        }
    }

    /// Offset of slot `slot`'s mailbox (its tail word).
    pub fn mailbox(&self, slot: u32) -> u64 {
        self.mailboxes_offset + u64::from(slot) * self.mailbox_stride
    }

    /// Offset of cell `cell` of slot `slot`'s mailbox.
    pub fn cell(&self, slot: u32, cell: u32) -> u64 {
        self.mailbox(slot) + MAILBOX_CELLS + 8 * u64::from(cell)
    }

    /// Offset of chunk `index`'s header in class `class`.
    pub fn chunk(&self, class: usize, index: u32) -> u64 {
        let c = &self.classes[class];
        c.chunks_offset + u64::from(index) * c.stride
    }

    /// Total chunks over all classes.
    pub fn chunk_count(&self) -> u64 {
        self.classes.iter().map(|c| u64::from(c.count)).sum()
    }

    /// The `n`-th chunk over all classes (modulo their number), as
    /// (class, index).
    pub fn nth_chunk(&self, n: u64) -> (usize, u32) {
        let mut n = n % self.chunk_count().max(1);
        for (class, c) in self.classes.iter().enumerate() {
            if n < u64::from(c.count) {
                return (class, n as u32);
            }
            n -= u64::from(c.count);
        }
        (0, 0)
    }

    /// What a mailbox entry decodes to: `Some((class, index))` when the
    /// value is `(class + 1) << 24 | index` of an existing chunk.
    pub fn decode(&self, value: u32) -> Option<(u8, u32)> {
        let class = (value >> ENTRY_SHIFT).checked_sub(1)? as usize;
        let index = value & ((1 << ENTRY_SHIFT) - 1);
        let c = self.classes.get(class)?;
        (u64::from(index) < u64::from(c.count)).then_some((class as u8, index))
    }

    /// The mailbox value naming chunk `index` of `class`.
    pub fn entry(class: usize, index: u32) -> u32 {
        ((class as u32 + 1) << ENTRY_SHIFT) | index
    }
}

/// The small config the brief asks for: classes [64x8, 1024x4], 4
/// participants, mailbox capacity 4.
pub fn small_config() -> Config {
    Config::default()
        .with_classes(&[SizeClass::new(64, 8), SizeClass::new(1024, 4)])
        .with_max_participants(4)
        .with_mailbox_capacity(4)
}

/// A second shape: three classes with sizes that are not multiples of 64,
/// a class of more than 64 chunks (two bitmap words), 2-cell mailboxes.
pub fn odd_config() -> Config {
    Config::default()
        .with_classes(&[
            SizeClass::new(1, 70),
            SizeClass::new(65, 3),
            SizeClass::new(1000, 1),
        ])
        .with_max_participants(3)
        .with_mailbox_capacity(2)
}

/// Writes `seeds` as files `seed-<name>` into the first corpus directory
/// on the command line (libFuzzer's positional arguments), unless they are
/// there already. Called from the targets' `init`, so the seed corpus is
/// generated by the targets themselves instead of being committed.
pub fn write_seeds(seeds: &[(&str, Vec<u8>)]) {
    let Some(dir) = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && Path::new(a).is_dir())
    else {
        return;
    };
    for (name, bytes) in seeds {
        let path = Path::new(&dir).join(format!("seed-{name}"));
        if !path.exists() {
            let _ = std::fs::write(path, bytes);
        }
    }
}
