//! End-to-end tests of the `shmbox` binary: every test creates a region of
//! its own (named from the pid and the clock, removed on drop), and
//! everything that could block runs under a timeout.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest any single command may take.
const LIMIT: Duration = Duration::from_secs(30);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shmbox")
}

/// `shmbox ARGS...`, killed after [`LIMIT`].
fn shmbox<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(bin());
    cmd.args(args).timeout(LIMIT);
    cmd
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("cli-{tag}-{}-{nanos}", std::process::id())
}

/// A region made with `shmbox create`, removed when dropped.
struct Region(String);

impl Region {
    fn create(tag: &str, extra: &[&str]) -> Region {
        let name = unique(tag);
        shmbox(["create", name.as_str()])
            .args(extra)
            .assert()
            .success()
            .stdout(predicate::str::contains(format!("created region '{name}'")));
        Region(name)
    }

    fn name(&self) -> &str {
        &self.0
    }

    fn info(&self) -> Value {
        let out = shmbox(["info", self.name(), "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("info --json prints JSON")
    }

    /// Waits until participant `who` shows in `info` as alive (or dead).
    fn wait_for(&self, who: &str, alive: bool) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let info = self.info();
            let found = info["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == who && p["alive"] == alive);
            if found {
                return;
            }
            assert!(Instant::now() < deadline, "{who} never showed: {info:#}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = std::process::Command::new(bin())
            .args(["rm", "--force", &self.0])
            .stdout(Stdio::null())
            .status();
    }
}

/// A background process, killed when dropped.
struct Background(Child);

impl Background {
    fn spawn(args: &[&str]) -> Background {
        Background(
            std::process::Command::new(bin())
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    /// Stops it (`SIGSTOP`) and waits until it is stopped; its pid.
    fn stop(&self) -> libc::pid_t {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: plain kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let deadline = Instant::now() + LIMIT;
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('T')
        {
            assert!(Instant::now() < deadline, "SIGSTOP did not stop it");
            std::thread::sleep(Duration::from_millis(5));
        }
        pid
    }

    /// Waits for it to exit (at most [`LIMIT`]); its status, stdout, stderr.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<u8>, String) {
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "background shmbox did not exit");
            std::thread::sleep(Duration::from_millis(10));
        };
        // (Empty if the test took the pipe itself.)
        let mut stdout = Vec::new();
        if let Some(mut pipe) = self.0.stdout.take() {
            pipe.read_to_end(&mut stdout).unwrap();
        }
        let mut stderr = String::new();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stdout, stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn create_then_info_json_follows_the_schema() {
    let r = Region::create(
        "schema",
        &[
            "--class",
            "1K:8",
            "--class",
            "64:16",
            "--participants",
            "8",
            "--mailbox",
            "16",
            "--mode",
            "0660",
        ],
    );
    let info = r.info();
    assert_eq!(info["schema"], 1);
    assert_eq!(info["name"], r.name());

    let h = &info["header"];
    assert!(h["size"].as_u64().unwrap() > 0);
    assert!(h["version"].as_u64().unwrap() >= 1);
    assert!(h["created"].as_str().unwrap().ends_with('Z'));
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let created = h["created_unix_ms"].as_u64().unwrap();
    assert!(created <= now_ms && now_ms - created < 60_000, "{h}");
    assert!(h["creator_pid"].as_u64().unwrap() > 0);

    let c = &info["config"];
    assert_eq!(
        c["classes"],
        serde_json::json!([{"size": 64, "count": 16}, {"size": 1024, "count": 8}])
    );
    assert_eq!(c["max_participants"], 8);
    assert_eq!(c["mailbox_capacity"], 16);
    assert_eq!(c["mode"], "0660");
    assert_eq!(c["max_message_size"], 1024);

    assert_eq!(info["participants"], serde_json::json!([]));
    let pool = info["pool"].as_array().unwrap();
    assert_eq!(pool.len(), 2);
    for (class, count) in pool.iter().zip([16, 8]) {
        assert_eq!(class["count"], count);
        assert_eq!(class["free"], count);
        assert_eq!(class["used"], 0);
        assert_eq!(class["held_by_dead"], 0);
    }
    let s = &info["summary"];
    assert_eq!(
        *s,
        serde_json::json!({"live": 0, "dead": 0, "chunks_total": 24, "chunks_used": 0, "chunks_held_by_dead": 0})
    );

    // The mode reached the object, and inspecting joined nobody.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(format!("/dev/shm/shmbox.{}", r.name())).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(r.info()["participants"], serde_json::json!([]));

    // The human form shows the same facts.
    shmbox(["info", r.name()])
        .assert()
        .success()
        .stdout(predicate::str::contains("64:16,1K:8"))
        .stdout(predicate::str::contains("mode          0660"))
        .stdout(predicate::str::contains("participants: none"));
}

/// Runs `shmbox recv <region> <recv...>` in the background, pipes `input`
/// into `shmbox send <region> <send...>`, and returns what the receiver
/// printed; both must succeed (their stderr is shown if not).
fn exchange(r: &Region, recv: &[&str], send: &[&str], input: &[u8]) -> Vec<u8> {
    let rx = Background::spawn(&[&["recv", r.name()], recv].concat());
    shmbox([&["send", r.name()], send].concat())
        .write_stdin(input.to_vec())
        .assert()
        .success()
        .stdout("")
        .stderr("");
    let (status, out, err) = rx.finish();
    assert!(status.success(), "recv {recv:?} failed: {err}");
    out
}

#[test]
fn send_and_recv_carry_exact_bytes() {
    let r = Region::create("bytes", &[]);
    // Every byte value, NULs and no trailing newline.
    let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let once = ["--count", "1", "--timeout", "20s"];
    let out = exchange(
        &r,
        &[&["--as", "server"][..], &once].concat(),
        &["--to", "server", "--wait", "20s"],
        &data,
    );
    assert_eq!(out, data);

    // Empty input is one empty message.
    let out = exchange(
        &r,
        &[&["--as", "server", "--lines"][..], &once].concat(),
        &["--to", "server", "--as", "me", "--wait", "20s"],
        b"",
    );
    assert_eq!(out, b"\n");
}

#[test]
fn send_and_recv_lines() {
    let r = Region::create("lines", &[]);
    let out = exchange(
        &r,
        &[
            "--as",
            "logger",
            "--lines",
            "--count",
            "5",
            "--timeout",
            "20s",
        ],
        &["--to", "logger", "--lines", "--wait", "20s"],
        b"one\ntwo\n\nthree\r\nlast without newline",
    );
    assert_eq!(out, b"one\ntwo\n\nthree\r\nlast without newline\n");

    // Stopped by the timeout after some messages: still a success.
    let out = exchange(
        &r,
        &["--as", "idle", "--lines", "--timeout", "5s"],
        &["--to", "idle", "--lines", "--wait", "20s"],
        b"only\n",
    );
    assert_eq!(out, b"only\n");

    // Each line is one message: a receiver without --lines gets the three
    // messages' bytes back to back.
    let out = exchange(
        &r,
        &["--as", "raw", "--count", "3"],
        &["--to", "raw", "--lines", "--wait", "20s"],
        b"a\nbb\nccc\n",
    );
    assert_eq!(out, b"abbccc");
}

/// `recv | head -1`: once the reader has gone, `recv` ends before it takes
/// another message (which would be lost), so the next send is told its
/// receiver left instead of succeeding into the void.
#[test]
fn recv_ends_before_taking_a_message_nobody_would_read() {
    let r = Region::create("headone", &[]);
    let mut recv = Background::spawn(&["recv", r.name(), "--as", "reader", "--lines"]);
    r.wait_for("reader", true);
    shmbox(["send", r.name(), "--to", "reader"])
        .write_stdin("one")
        .assert()
        .success();
    // Read the first line, then go away as `head -1` does (the pipe's
    // read end is dropped with the thread); at most LIMIT.
    let mut stdout = recv.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = [0u8; 4];
        let _ = tx.send(stdout.read_exact(&mut first).map(|()| first));
    });
    let first = rx.recv_timeout(LIMIT).expect("recv wrote its first line");
    assert_eq!(&first.unwrap(), b"one\n");
    let (status, _, stderr) = recv.finish();
    assert!(status.success(), "{status:?} {stderr}");
    shmbox(["send", r.name(), "--to", "reader"])
        .write_stdin("two")
        .assert()
        .failure()
        .stderr(predicate::str::contains("no participant named 'reader'"));
}

/// A batch sent with the library arrives as its records, one per line.
#[test]
fn recv_writes_a_batch_record_by_record() {
    let r = Region::create("batch", &[]);
    let recv = Background::spawn(&["recv", r.name(), "--as", "rx", "--lines", "--count", "2"]);
    r.wait_for("rx", true);
    let region = shmbox::Region::open(r.name()).unwrap();
    let me = region.join("batcher").unwrap();
    let to = region.address("rx").unwrap();
    let mut batch = me.batch(256).unwrap();
    for record in [&b"one"[..], b"two", b"", b"three"] {
        assert!(batch.push_copy(record));
    }
    me.send(batch.finish(), &to)
        .map_err(|e| e.to_string())
        .unwrap();
    me.send_copy(b"single", &to).unwrap();
    let (status, out, stderr) = recv.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(out, b"one\ntwo\n\nthree\nsingle\n");
}

/// A region larger than the process may make a file (`ulimit -f`) is
/// refused before the object grows (growing it would raise `SIGXFSZ`,
/// which kills the process and leaves the object behind); and an object
/// left behind by a `create` killed half-way is replaced by the next
/// `create` and removed by `gc`.
#[test]
fn create_refuses_the_file_size_limit_and_replaces_what_a_killed_create_left() {
    let name = unique("fsize");
    let path = format!("/dev/shm/shmbox.{name}");
    let _cleanup = Region(name.clone());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -f 1000 && exec "$0" create "$1" --class 1M:64"#)
        .args([bin(), name.as_str()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("file size limit"), "{stderr}");
    assert!(std::fs::metadata(&path).is_err(), "no object left");

    // What a create killed right after making its object leaves.
    std::fs::write(&path, b"").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    shmbox(["create", name.as_str()])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "left half-initialised by a creator that died",
        ));
    shmbox(["rm", name.as_str()]).assert().success();
    std::fs::write(&path, b"").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    shmbox(["gc", name.as_str()])
        .assert()
        .success()
        .stdout(predicate::str::contains("removed: left half-initialised"));
    assert!(std::fs::metadata(&path).is_err(), "removed by gc");
}

#[test]
fn ls_lists_the_region() {
    let r = Region::create("ls", &["--class", "256:4"]);
    shmbox(["ls"])
        .assert()
        .success()
        .stdout(predicate::str::contains("NAME"))
        .stdout(
            predicate::str::is_match(format!(r"(?m)^{}\s+\S+ KiB\s+0\s+0\s+0/4 ", r.name()))
                .unwrap(),
        );
    let out = shmbox(["ls", "--json"]).output().unwrap();
    assert!(out.status.success());
    let ls: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ls["schema"], 1);
    let entry = ls["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == r.name())
        .expect("region listed")
        .clone();
    assert_eq!(entry["ok"], true);
    assert_eq!(entry["error"], Value::Null);
    assert_eq!(entry["live"], 0);
    assert_eq!(entry["dead"], 0);
    assert_eq!(entry["chunks_used"], 0);
    assert_eq!(entry["chunks_total"], 4);
    assert_eq!(entry["size"], r.info()["header"]["size"]);
    assert!(entry["created"].is_string());
}

/// A FIFO named like a region (anyone may make one in `/dev/shm`) is
/// listed with an error and removed, and nothing waits on it: `ls` and
/// `rm` used to hang, opening it for reading.
#[test]
fn a_fifo_named_like_a_region_is_listed_and_removed_without_waiting() {
    let name = unique("fifo");
    let path = format!("/dev/shm/shmbox.{name}");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let _fifo = Region(name.clone());
    let expected = format!("'{name}' is not a shmbox region: it is a FIFO");
    shmbox(["ls"])
        .assert()
        .success()
        .stdout(predicate::str::contains(expected.as_str()));
    for command in ["info", "gc", "watch"] {
        shmbox([command, name.as_str()])
            .assert()
            .failure()
            .stderr(predicate::str::contains(expected.as_str()));
    }
    shmbox(["rm", name.as_str()]).assert().success();
    assert!(std::fs::symlink_metadata(&path).is_err(), "{path} removed");
}

/// A send without --timeout waits for a chunk only as long as its peer
/// lives: here every chunk is queued for a stopped receiver, and the
/// peer the sender waits to send to is killed.
#[test]
fn send_waiting_for_a_chunk_ends_when_its_peer_dies() {
    let r = Region::create("peerdies", &["--class", "64:2"]);
    let stopped = Background::spawn(&["recv", r.name(), "--as", "stopped"]);
    r.wait_for("stopped", true);
    stopped.stop();
    for m in ["a", "b"] {
        shmbox(["send", r.name(), "--to", "stopped"])
            .write_stdin(m)
            .assert()
            .success();
    }
    let peer = Background::spawn(&["recv", r.name(), "--as", "peer"]);
    r.wait_for("peer", true);
    let sender = Background::spawn(&["send", r.name(), "--to", "peer", "--as", "waiting"]);
    r.wait_for("waiting", true);
    drop(peer); // SIGKILL
    let (status, _, stderr) = sender.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("'peer' left region"), "{stderr}");
}

/// `send --to X --as X` is refused: it never receives, so its messages to
/// itself would be dropped when it exits (or fill its mailbox for ever).
#[test]
fn send_to_itself_is_refused() {
    let r = Region::create("self", &[]);
    shmbox(["send", r.name(), "--to", "me", "--as", "me", "--lines"])
        .write_stdin("a\nb\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--to and --as both name 'me'"));
    assert_eq!(r.info()["summary"]["live"], 0);
}

#[test]
fn gc_reclaims_a_killed_participant_then_rm() {
    let r = Region::create("gc", &[]);
    let mut victim = Background::spawn(&["recv", r.name(), "--as", "victim"]);
    r.wait_for("victim", true);
    // Stopped, so that a message sent to it stays queued, unread.
    let pid = victim.stop();
    shmbox(["send", r.name(), "--to", "victim", "--as", "sender"])
        .write_stdin("x")
        .assert()
        .success();
    assert_eq!(r.info()["participants"][0]["queued"], 1);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    victim.0.wait().unwrap();

    // Inspecting shows it dead, and changes nothing.
    r.wait_for("victim", false);
    let info = r.info();
    assert_eq!(info["summary"]["live"], 0);
    assert_eq!(info["summary"]["dead"], 1);
    shmbox(["info", r.name()])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"victim\s+\d+\s+\d+\s+dead").unwrap())
        .stdout(predicate::str::contains(format!(
            "`shmbox gc {}`",
            r.name()
        )));
    shmbox(["ls"]).assert().success().stdout(
        predicate::str::is_match(format!(r"(?m)^{}\s+\S+ MiB\s+0\s+1\s", r.name())).unwrap(),
    );
    assert_eq!(r.info()["summary"]["dead"], 1);

    shmbox(["gc", r.name()]).assert().success().stdout(format!(
        "{}: reclaimed 1 participant, 1 queued message, 1 chunk\n",
        r.name()
    ));
    let out = shmbox(["gc", r.name(), "--json"]).output().unwrap();
    let gc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gc["schema"], 1);
    assert_eq!(gc["regions"][0]["name"], r.name());
    assert_eq!(gc["regions"][0]["participants"], 0);
    let info = r.info();
    assert_eq!(info["participants"], serde_json::json!([]));
    assert_eq!(info["summary"]["chunks_used"], 0);

    shmbox(["rm", r.name()])
        .assert()
        .success()
        .stdout(format!("removed region '{}'\n", r.name()));
    shmbox(["info", r.name()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not found"));
    drop(victim);
}

#[test]
fn missing_regions_and_bad_arguments() {
    let name = unique("missing");
    for cmd in ["info", "watch", "gc", "rm"] {
        shmbox([cmd, name.as_str()])
            .assert()
            .code(1)
            .stdout("")
            .stderr(format!(
                "error: region '{name}' not found; `shmbox ls` lists regions{}\n",
                if cmd == "rm" {
                    " (--force ignores missing ones)".to_string()
                } else {
                    format!(", `shmbox create {name}` makes one")
                }
            ));
    }
    shmbox(["rm", "--force", name.as_str()]).assert().success();
    shmbox(["send", name.as_str(), "--to", "x"])
        .write_stdin("hi")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("`shmbox ls` lists regions"));

    // Usage errors: status 2.
    let usage = |args: &[&str], says: &str| {
        shmbox(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says.to_string()));
    };
    usage(&[], "Usage: shmbox <COMMAND>");
    usage(&["frobnicate"], "unrecognized subcommand");
    usage(&["create"], "<REGION>");
    usage(&["create", "x", "--class", "1K"], "write SIZE:COUNT");
    usage(&["create", "x", "--class", "1Q:4"], "unknown unit");
    usage(
        &["create", "x", "--mailbox", "3"],
        "--mailbox must be a power of two",
    );
    usage(
        &["create", "x", "--mode", "0700"],
        "--mode must include 0600",
    );
    usage(
        &["create", "x", "--participants", "65"],
        "--participants must be 1 to 64",
    );
    usage(
        &["create", "x", "--class", "64:1,64:2"],
        "give each size once",
    );
    usage(&["create", "a/b"], "invalid region name 'a/b'");
    usage(&["info", "a b"], "invalid region name 'a b'");
    usage(&["recv", "x"], "--as <NAME>");
    usage(
        &["recv", "x", "--as", "y", "--timeout", "soon"],
        "not a duration",
    );
    usage(&["send", "x"], "--to <PEER>");
    usage(&["gc"], "<REGION|--all>");
    usage(&["gc", "x", "--all"], "cannot be used with");
    usage(&["watch", "x", "--interval", "0"], "--interval");
    usage(&["bench", "--repeat", "0"], "--repeat");

    // The help documents the exit statuses.
    shmbox(["--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit status:"))
        .stdout(predicate::str::contains("2  usage error"));
}

#[test]
fn send_and_recv_errors() {
    let r = Region::create("errors", &["--class", "64:4,1K:4"]);
    // recv with nothing to receive: status 3.
    shmbox(["recv", r.name(), "--as", "idle", "--timeout", "200ms"])
        .assert()
        .code(3)
        .stdout("")
        .stderr(format!(
            "error: no message for 'idle' in region '{}' within 200ms\n",
            r.name()
        ));
    // An unknown peer.
    shmbox(["send", r.name(), "--to", "nobody"])
        .write_stdin("hi")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no participant named 'nobody'"));
    shmbox(["send", r.name(), "--to", "nobody", "--wait", "100ms"])
        .write_stdin("hi")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("joined region"))
        .stderr(predicate::str::contains("within 100ms"));
    // Too large: the limit is named.
    let _rx = Background::spawn(&["recv", r.name(), "--as", "big"]);
    r.wait_for("big", true);
    shmbox(["send", r.name(), "--to", "big"])
        .write_stdin(vec![b'x'; 1025])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "the input is larger than 1 KiB (1024 bytes), the largest message region",
        ));
    shmbox(["send", r.name(), "--to", "big", "--lines"])
        .write_stdin(format!("ok\n{}\n", "y".repeat(2000)))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "line 2 is larger than 1 KiB (1024 bytes)",
        ))
        .stderr(predicate::str::contains("(1 earlier message was sent)"));
    // A name in use.
    shmbox(["recv", r.name(), "--as", "big", "--timeout", "100ms"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("participant name 'big' is taken"));
    // rm says who is still attached.
    shmbox(["rm", r.name()])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "1 live participant keeps its memory",
        ));
}

/// `send --lines` refuses a line once it passes the largest message: input
/// without line breaks is not read to its end (an endless stream was read
/// into memory until the memory ran out).
#[test]
fn an_endless_line_is_refused_without_reading_it_all() {
    let r = Region::create("endless", &["--class", "64:4,1K:4"]);
    let _rx = Background::spawn(&["recv", r.name(), "--as", "rx"]);
    r.wait_for("rx", true);
    let mut child = std::process::Command::new(bin())
        .args(["send", r.name(), "--to", "rx", "--lines"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Writes until the reader goes away.
    let writer = std::thread::spawn(move || {
        let block = [b'y'; 1 << 16];
        while stdin.write_all(&block).is_ok() {}
    });
    let (status, _, stderr) = Background(child).finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 1 is larger than 1 KiB (1024 bytes)"),
        "{stderr}"
    );
    writer.join().unwrap();
}

/// A scribble on the receiver's own mailbox: a cell the library can
/// repair is reported once and the messages after it arrive, and the
/// timeout still counts; one it cannot (its head scribbled too) stops
/// `recv` at once with an error, instead of a warning per poll for ever.
#[test]
fn recv_reports_a_scribbled_mailbox_once_or_stops() {
    use std::os::unix::fs::FileExt;
    let r = Region::create(
        "scribble",
        &["--class", "64:16", "--participants", "4", "--mailbox", "4"],
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/shmbox.{}", r.name()))
        .unwrap();
    // The layout (src/layout.rs): a 4096-byte header, 4 slots of 256
    // bytes, then slot 0's mailbox: its head at +128, its cells at +256.
    let (head_at, cells_at) = (4096 + 4 * 256 + 128, 4096 + 4 * 256 + 256);
    let head = || {
        let mut word = [0u8; 8];
        file.read_exact_at(&mut word, head_at).unwrap();
        u64::from_le_bytes(word)
    };

    let started = Instant::now();
    let rx = Background::spawn(&["recv", r.name(), "--as", "rx", "--timeout", "2s"]);
    r.wait_for("rx", true);
    let cell = cells_at + 8 * (head() % 4);
    file.write_at(&u64::MAX.to_le_bytes(), cell).unwrap();
    shmbox(["send", r.name(), "--to", "rx"])
        .write_stdin("after")
        .assert()
        .success();
    let (status, stdout, stderr) = rx.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, b"after");
    assert_eq!(
        stderr.matches("warning: corrupt mailbox").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("it is empty again"), "{stderr}");
    // It waited its 2 s for a second message, no more.
    assert!(started.elapsed() < Duration::from_secs(10));

    // A corruption reported 1.5 s into a 2 s wait does not start the wait
    // again (it would end after 3.5 s or more).
    let started = Instant::now();
    let rx = Background::spawn(&["recv", r.name(), "--as", "rx", "--timeout", "2s"]);
    r.wait_for("rx", true);
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(started.elapsed()));
    let cell = cells_at + 8 * (head() % 4);
    file.write_at(&u64::MAX.to_le_bytes(), cell).unwrap();
    let (status, _, stderr) = rx.finish();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("it is empty again"), "{stderr}");
    assert!(took < Duration::from_millis(3200), "{took:?}: {stderr}");

    let started = Instant::now();
    let rx = Background::spawn(&["recv", r.name(), "--as", "rx", "--timeout", "20s"]);
    r.wait_for("rx", true);
    file.write_at(&(head() + 1000).to_le_bytes(), head_at)
        .unwrap();
    let (status, _, stderr) = rx.finish();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot be repaired"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "{stderr}");
}

/// Someone shrinks the region's object under `watch`, whose view then
/// lost pages: it ends with an error (status 1), not a bus error.
#[test]
fn watch_ends_with_an_error_when_the_region_is_shrunk() {
    let r = Region::create("shrunk", &["--class", "64:4"]);
    let watch = Background::spawn(&["watch", r.name(), "--interval", "20", "--count", "1000"]);
    std::thread::sleep(Duration::from_millis(200));
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm/shmbox.{}", r.name()))
        .unwrap()
        .set_len(4096)
        .unwrap();
    let (status, _, stderr) = watch.finish();
    assert_eq!(status.code(), Some(1), "{status:?}: {stderr}");
    assert!(
        stderr.contains("was shrunk while being watched"),
        "{stderr}"
    );
}

#[test]
fn corrupt_region_is_reported_not_fatal() {
    let r = Region::create("corrupt", &["--class", "64:4"]);
    let path = format!("/dev/shm/shmbox.{}", r.name());
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all(b"this is not a shmbox header").unwrap();
    drop(file);

    shmbox(["info", r.name()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "'{}' is not a shmbox region",
            r.name()
        )))
        .stderr(predicate::str::contains(format!(
            "`shmbox rm {}` removes it",
            r.name()
        )));
    shmbox(["watch", r.name(), "--count", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is not a shmbox region"));
    // The listing goes on, with the error in place of the figures.
    shmbox(["ls"]).assert().success().stdout(
        predicate::str::is_match(format!(
            r"(?m)^{}\s.*error: .*not a shmbox region",
            r.name()
        ))
        .unwrap(),
    );
    let out = shmbox(["ls", "--json"]).output().unwrap();
    assert!(out.status.success());
    let ls: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = ls["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == r.name())
        .unwrap()
        .clone();
    assert_eq!(entry["ok"], false);
    assert!(entry["error"]
        .as_str()
        .unwrap()
        .contains("not a shmbox region"));
    assert!(entry["size"].as_u64().unwrap() > 0);
    assert_eq!(entry["live"], Value::Null);
    shmbox(["gc", r.name()]).assert().code(1);
    shmbox(["rm", r.name()]).assert().success();
}

#[test]
fn watch_without_a_terminal_stops_after_count() {
    let r = Region::create("watchcount", &[]);
    let _rx = Background::spawn(&["recv", r.name(), "--as", "sink"]);
    r.wait_for("sink", true);
    let out = shmbox(["watch", r.name(), "--interval", "50", "--count", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("shmbox watch '").count(), 3, "{text}");
    assert!(!text.contains('\x1b'), "no escapes when not on a terminal");
    assert!(text.contains("sink"));
    assert!(text.contains("TX/S"));
    assert_eq!(r.info()["summary"]["live"], 1, "watch joined nobody");
}

/// `tmux -L SOCKET ARGS...` (a private server for this test).
fn tmux(socket: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("tmux")
        .arg("-L")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

struct TmuxServer(String);

impl Drop for TmuxServer {
    fn drop(&mut self) {
        let _ = tmux(&self.0, &["kill-server"]);
    }
}

#[test]
fn watch_in_tmux_shows_participants_and_quits_on_q() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: tmux not installed (apt-get install -y tmux)");
        return;
    }
    let r = Region::create("watchtmux", &[]);
    let _alpha = Background::spawn(&["recv", r.name(), "--as", "alpha"]);
    let _beta = Background::spawn(&["recv", r.name(), "--as", "beta"]);
    r.wait_for("alpha", true);
    r.wait_for("beta", true);
    let server = TmuxServer(unique("tmux"));
    let command = format!("{} watch {} --interval 200", bin(), r.name());
    let out = tmux(
        &server.0,
        &[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            "watch",
            &command,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let capture = || {
        String::from_utf8_lossy(&tmux(&server.0, &["capture-pane", "-p", "-t", "watch"]).stdout)
            .into_owned()
    };
    let deadline = Instant::now() + LIMIT;
    let mut screen = capture();
    // A few refreshes: until the rates (known from the second frame on) show.
    while !(screen.contains("alpha") && screen.contains("beta") && screen.contains("0 B/s")) {
        assert!(Instant::now() < deadline, "watch never drew:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
        screen = capture();
    }
    assert!(
        screen.contains(&format!("shmbox watch '{}'", r.name())),
        "{screen}"
    );
    assert!(screen.contains("(q to quit)"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("alpha") && l.contains("live")),
        "{screen}"
    );

    tmux(&server.0, &["send-keys", "-t", "watch", "q"]);
    let deadline = Instant::now() + LIMIT;
    while tmux(&server.0, &["has-session", "-t", "watch"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "watch did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    }
}
