//! Fuzzes `Message::records`: the parsing of a received batch, whose bytes
//! a sender (or a scribble on shared memory) controls entirely.
//!
//! The input's bytes become the payload of a message marked as a batch (up
//! to 16 KiB), sent to the receiver itself through an in-process region.
//! Properties: iteration ends; every record yielded lies inside the
//! message, after the previous one, 8-byte aligned, with the length its
//! header says; an error ends the iteration; a batch built with
//! `Batch::push` from the same lengths reads back exactly.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use shmbox::{Config, Region, RECORD_HEADER};
use std::sync::OnceLock;

fn region() -> &'static Region {
    static REGION: OnceLock<Region> = OnceLock::new();
    REGION.get_or_init(|| Region::in_process(&Config::default()).expect("default config"))
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let record = |len: u32, fill: u8| {
        let mut r = len.to_le_bytes().to_vec();
        r.extend([0; 4]);
        r.extend(std::iter::repeat_n(
            fill,
            (len as usize).next_multiple_of(8),
        ));
        r
    };
    vec![
        ("empty", Vec::new()),
        ("two", [record(3, 1), record(8, 2)].concat()),
        (
            "past-end",
            [record(8, 1), 1000u32.to_le_bytes().to_vec()].concat(),
        ),
        ("short-header", vec![5, 0, 0]),
    ]
}

fuzz_target!(init: common::write_seeds(&seeds()), |data: &[u8]| {
    let data = &data[..data.len().min(16 << 10)];
    let me = region().join("fuzz").expect("join");
    // The raw bytes, marked as a batch.
    let mut batch = me.try_batch(data.len()).expect("a chunk");
    let _ = batch.push(0);
    let mut loan = batch.finish();
    loan.resize(data.len());
    loan.copy_from_slice(data);
    me.try_send(loan, &me.address()).expect("send to self");
    let msg = me.try_recv().expect("receive");
    assert!(msg.is_batch());
    let (start, end) = (msg.as_ptr() as usize, msg.as_ptr() as usize + msg.len());
    let mut next = start;
    let mut lens = Vec::new();
    let mut records = msg.records();
    for _ in 0..=data.len() / RECORD_HEADER {
        match records.next() {
            None => break,
            Some(Err(_)) => {
                assert!(records.next().is_none(), "an error ends the iteration");
                break;
            }
            Some(Ok(record)) => {
                let at = record.as_ptr() as usize;
                assert_eq!(at, next + RECORD_HEADER, "records follow each other");
                assert_eq!(at % 8, 0, "records are 8-byte aligned");
                assert!(at + record.len() <= end, "a record runs past the message");
                let header = &msg[next - start..next - start + 4];
                assert_eq!(u32::from_le_bytes(header.try_into().unwrap()) as usize, record.len());
                next = at + record.len().next_multiple_of(8);
                lens.push(record.len());
            }
        }
    }
    assert!(records.next().is_none(), "iteration ends");
    drop(msg);
    // The same lengths, built with the API, read back exactly.
    let mut batch = me.try_batch(16 << 10).expect("a chunk");
    for (i, &len) in lens.iter().enumerate() {
        batch.push(len).expect("fits: the input held it").fill(i as u8);
    }
    me.try_send(batch.finish(), &me.address()).expect("send to self");
    let msg = me.try_recv().expect("receive");
    let back: Vec<_> = msg.records().map(|r| r.expect("well formed")).collect();
    assert_eq!(back.len(), lens.len());
    for (i, r) in back.iter().enumerate() {
        assert_eq!(r.len(), lens[i]);
        assert!(r.iter().all(|&b| b == i as u8));
    }
});
