//! Entry points for the fuzz targets in `fuzz/`. Not part of the API:
//! hidden from the docs and free to change.

use crate::layout::{self, Backing, HeapBuf, Mapped};

/// Validates `bytes` as a whole region image, as [`Region::open`] does with
/// a mapped object, and when it passes, decodes every mailbox cell and
/// reads every chunk header the way a receiver would. Returns what it
/// found wrong; must never panic, loop or touch memory out of bounds.
///
/// [`Region::open`]: crate::Region::open
pub fn check_region_image(bytes: &[u8]) -> Result<usize, String> {
    let buf = HeapBuf::new(bytes.len().max(1));
    let backing = Backing::Heap(buf);
    backing.copy_from(bytes);
    let layout = layout::validate(&backing, bytes.len() as u64).map_err(|e| e.to_string())?;
    let mapped = Mapped::new(backing, layout);
    let mut entries = 0;
    for slot in 0..mapped.layout.config.max_participants {
        let queue = &mapped.mailbox(slot).queue;
        let mut drained = Vec::new();
        queue.close(|v| drained.push(v));
        for value in drained {
            if let Ok(chunk) = mapped.entry(value) {
                let word = chunk.header.len.load(std::sync::atomic::Ordering::Relaxed);
                // As `Mailbox::accept` reads it: the length, with the batch
                // flag masked off.
                if word & !crate::layout::BATCH_FLAG <= chunk.capacity as u64 {
                    entries += 1;
                }
            }
        }
        queue.reopen(0);
    }
    Ok(entries)
}

/// Decodes `value` as a mailbox entry of a region with `config`'s layout.
pub fn decode_entry(config: &crate::Config, value: u32) -> Option<(u8, u32)> {
    let layout = layout::Layout::compute(config);
    layout.decode(value).ok().map(|c| (c.class, c.index))
}

/// The bytes of a freshly created region with `config`, as a seed.
pub fn fresh_region_image(config: &crate::Config) -> Vec<u8> {
    let layout = layout::Layout::compute(config);
    let size = layout.total_size as usize;
    let mapped = layout::create_in(Backing::Heap(HeapBuf::new(size)), layout);
    mapped.to_vec()
}
