//! `shmbox send NAME --to PEER [--as NAME] [--lines] [--wait D] [--timeout D]`

use super::{join, open_region};
use crate::cli::SendArgs;
use crate::output::{self, exact_bytes};
use crate::{Failure, Result};
use shmbox::{Address, Loan, LoanError, LookupError, Mailbox, Region, SendError, SendTimeoutError};
use std::io::{BufRead, IsTerminal, Read};
use std::time::Duration;

/// How often a send without `--timeout` that waits for a chunk checks
/// that its peer is still there.
const PEER_CHECK: Duration = Duration::from_millis(100);

pub fn run(args: SendArgs) -> Result {
    let region = open_region(&args.name)?;
    let max = region.config().max_message_size();
    let mut stdin = std::io::stdin().lock();
    // The whole input is read (and checked) before joining.
    let whole = if args.lines {
        None
    } else {
        if std::io::stdin().is_terminal() {
            eprintln!("reading the message from the terminal; end it with Ctrl-D");
        }
        let mut data = Vec::new();
        stdin
            .by_ref()
            .take(max.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| Failure::error(format!("reading standard input failed: {e}")))?;
        if data.len() as u64 > max {
            return Err(too_large(&args.name, max, "the input is", None));
        }
        Some(data)
    };
    let as_name = args
        .as_name
        .clone()
        .unwrap_or_else(|| format!("send-{}", std::process::id()));
    if as_name == args.to {
        return Err(Failure::usage(format!(
            "--to and --as both name '{as_name}': `shmbox send` never receives, so messages \
             to itself would be dropped when it exits"
        )));
    }
    let me = join(&region, &args.name, &as_name)?;
    let to = peer(&region, &args)?;
    let sender = Sender {
        region: &region,
        me: &me,
        to,
        args: &args,
        sent: 0,
    };
    match whole {
        Some(data) => sender.run(std::iter::once(Ok(data)), max),
        None => sender.run(Lines { input: stdin, max }, max),
    }
}

/// The lines of a reader as byte vectors, without their `\n`. A line
/// longer than `max` bytes is cut after `max + 1` bytes (enough to refuse
/// it), so that input without line breaks does not fill the memory.
struct Lines<R> {
    input: R,
    max: u64,
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = std::io::Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::new();
        // `max` bytes and the `\n`, or one byte too many.
        let mut input = (&mut self.input).take(self.max.saturating_add(1));
        match input.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Some(Ok(line))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

struct Sender<'a> {
    region: &'a Region,
    me: &'a Mailbox,
    to: Address,
    args: &'a SendArgs,
    sent: u64,
}

impl Sender<'_> {
    fn run(mut self, messages: impl Iterator<Item = std::io::Result<Vec<u8>>>, max: u64) -> Result {
        for (i, message) in messages.enumerate() {
            let message = message
                .map_err(|e| Failure::error(format!("reading standard input failed: {e}")))?;
            if message.len() as u64 > max {
                return Err(too_large(
                    &self.args.name,
                    max,
                    &format!("line {} is", i + 1),
                    Some(self.sent),
                ));
            }
            self.send(&message)?;
            self.sent += 1;
        }
        Ok(())
    }

    fn send(&self, data: &[u8]) -> Result {
        let me = self.me;
        let args = self.args;
        let left = || {
            Failure::error(format!(
                "'{}' left region '{}'{}",
                args.to,
                args.name,
                self.progress()
            ))
        };
        let loan = match args.timeout {
            Some(t) => me.loan_timeout(data.len(), t),
            None => self.loan_while_peer_lives(data.len()),
        };
        let mut loan = loan.map_err(|e| match e {
            LoanError::TooLarge { max, .. } => too_large(&args.name, max, "a message is", Some(self.sent)),
            // Not met: `send` holds one loan at a time, and never sends
            // to itself.
            e @ LoanError::HeldByCaller { .. } => Failure::error(format!("{e}{}", self.progress())),
            // Without --timeout, the wait ends only when the peer is gone.
            LoanError::Timeout { .. } if args.timeout.is_none() => left(),
            LoanError::Timeout { class_size } => Failure::error(format!(
                "no free {}-byte chunk in region '{}' within {}{}; `shmbox info {}` shows who holds them",
                class_size,
                args.name,
                output::duration_fine(args.timeout.unwrap_or_default()),
                self.progress(),
                super::command_arg(&args.name)
            )),
        })?;
        loan.copy_from_slice(data);
        match args.timeout {
            Some(t) => me.send_timeout(loan, &self.to, t).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => Failure::error(format!(
                    "the mailbox of '{}' stayed full for {}{}; is it receiving?",
                    args.to,
                    output::duration_fine(t),
                    self.progress()
                )),
                SendTimeoutError::Disconnected(_) => left(),
            }),
            None => me.send(loan, &self.to).map_err(|e| match e {
                SendError::Disconnected(_) => left(),
                // Not met: --to is never --as (refused above).
                e @ SendError::OwnMailboxFull(_) => {
                    Failure::error(format!("{e}{}", self.progress()))
                }
            }),
        }
    }

    /// Waits for a chunk as long as `--to` lives (there is no `--timeout`):
    /// `Timeout` once it is gone. The loan itself does not know whom the
    /// chunk is for.
    fn loan_while_peer_lives(&self, len: usize) -> std::result::Result<Loan<'_>, LoanError> {
        loop {
            match self.me.loan_timeout(len, PEER_CHECK) {
                Err(LoanError::Timeout { .. }) if self.region.is_alive(&self.to) => {}
                done => return done,
            }
        }
    }

    fn progress(&self) -> String {
        match self.sent {
            0 => String::new(),
            1 => " after 1 message was sent (queued for it, not necessarily read)".into(),
            n => format!(" after {n} messages were sent (queued for it, not necessarily read)"),
        }
    }
}

/// The address of `--to`, waiting up to `--wait` for it to join.
fn peer(region: &Region, args: &SendArgs) -> Result<Address> {
    let found = match args.wait {
        Some(wait) => region.wait_for(&args.to, wait),
        None => region.address(&args.to),
    };
    found.map_err(|e| match e {
        LookupError::InvalidName(n) => {
            Failure::usage(format!("invalid participant name '{}': {n}", args.to))
        }
        LookupError::Timeout { .. } => Failure::error(format!(
            "no participant named '{}' joined region '{}' within {}; `shmbox info {}` lists participants",
            args.to,
            args.name,
            output::duration_fine(args.wait.unwrap_or_default()),
            super::command_arg(&args.name)
        )),
        LookupError::NotFound(_) => Failure::error(format!(
            "no participant named '{}' in region '{}'; `shmbox info {}` lists participants (--wait D waits for it to join)",
            args.to,
            args.name,
            super::command_arg(&args.name)
        )),
    })
}

fn too_large(region: &str, max: u64, what: &str, sent: Option<u64>) -> Failure {
    let (sent, pieces) = match sent {
        None => (String::new(), "send it in pieces (--lines)"),
        Some(0) => (String::new(), "split it"),
        Some(1) => (" (1 earlier message was sent)".to_string(), "split it"),
        Some(n) => (format!(" ({n} earlier messages were sent)"), "split it"),
    };
    Failure::error(format!(
        "{what} larger than {} ({max} bytes), the largest message region '{region}' carries{sent}; {pieces}, or create the region with a larger --class",
        exact_bytes(max)
    ))
}
