//! The access log: one line per answered request, written by a thread of its own.
//!
//! The request path ([`AccessLog::record`]) takes a lock, appends the line to a pre-sized
//! buffer with a few byte copies and integer conversions (no `format!`, no allocation), and
//! lets go. The writer thread swaps that buffer for its spare and writes the batch with one
//! `write` (per ~20 ms at most, [`LINGER`]), so the sink's speed never reaches a request.
//!
//! Architecture invariant: memory is bounded. A line is appended only while the buffer holds
//! less than `capacity` bytes; past it (the sink is slower than the requests: a full disk, a
//! pipe nobody reads) the line is dropped and counted in
//! `schemagate_access_log_dropped_total`, and so is every line of a batch the sink refused.
//! The two buffers together never hold much more than twice `capacity`.
//!
//! Architecture invariant: nothing is lost at a graceful shutdown: [`Writer::finish`] writes
//! what is buffered and flushes the sink before the process exits (bounded by a timeout, so
//! a sink that never drains cannot hold the exit forever).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

use crate::config::LogFormat;

/// Where the access log goes (`logging.access`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    Stdout,
    Stderr,
    Off,
    /// A file, opened for appending (created when missing) at startup.
    File(PathBuf),
}

/// The default `logging.access_buffer`: ~5 000 lines of a typical request.
pub const DEFAULT_BUFFER: usize = 1 << 20;
/// The smallest `logging.access_buffer`: a few lines of the longest request.
pub const MIN_BUFFER: usize = 64 << 10;
/// Room a line may take past `capacity` without the buffer growing: the longest request
/// target the default limits let through (8 KiB), with the other fields.
const LINE_SLACK: usize = 16 << 10;
/// How long the writer lets lines gather after it is woken, so that a busy gateway writes a
/// batch per interval rather than a line per request (and requests rarely need to wake it).
const LINGER: Duration = Duration::from_millis(20);

/// What one access line says. Strings are written quoted and escaped as JSON strings (in the
/// text format too), so a client-chosen value (tenant, request id) cannot forge a field or
/// a line.
pub struct Entry<'a> {
    pub route: &'a str,
    pub tenant: &'a str,
    /// A token (RFC 9110 `tchar`s only): written as is.
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub upstream_us: u64,
    pub request_id: &'a str,
    /// A rejection reason (a `'static` identifier) or `-`: written as is.
    pub reason: &'a str,
}

/// The request path's handle on the access log. Off, it costs one branch.
pub struct AccessLog {
    channel: Option<Arc<Channel>>,
    dropped: Counter,
}

struct Channel {
    state: Mutex<State>,
    /// Signalled when the first line arrives in an empty buffer while the writer waits, and
    /// at close.
    wake: Condvar,
    format: LogFormat,
    capacity: usize,
}

struct State {
    lines: Vec<u8>,
    /// The timestamp up to its seconds (`2026-12-04T16:17:35`), for the second it was made.
    clock: SecondStamp,
    /// The writer is blocked on `wake` (so the next line must notify it).
    writer_waiting: bool,
    /// `Writer::finish` began: no more lines are taken.
    closed: bool,
    /// A `Reopen::request` is pending: the writer opens its sink again after the lines
    /// buffered so far (they go to the old one).
    reopen: bool,
}

/// Opens the access log's sink again (a file after log rotation moved it away).
pub type Open = Box<dyn Fn() -> std::io::Result<Box<dyn Write + Send>> + Send>;

impl AccessLog {
    /// No access log: `record` does nothing.
    pub fn off() -> AccessLog {
        AccessLog {
            channel: None,
            dropped: Counter::default(),
        }
    }

    /// Starts the writer thread over `sink`, with a buffer of `capacity` bytes; `reopen`
    /// opens the sink again when a [`Reopen`] asks (files; `None` for stdout and stderr).
    pub fn start(
        sink: Box<dyn Write + Send>,
        reopen: Option<Open>,
        format: LogFormat,
        capacity: usize,
    ) -> std::io::Result<(AccessLog, Writer)> {
        let channel = Arc::new(Channel {
            state: Mutex::new(State {
                lines: Vec::with_capacity(capacity + LINE_SLACK),
                clock: SecondStamp::default(),
                writer_waiting: false,
                closed: false,
                reopen: false,
            }),
            wake: Condvar::new(),
            format,
            capacity,
        });
        let dropped = Counter::default();
        let (done, finished) = mpsc::channel();
        let thread_channel = Arc::clone(&channel);
        let thread_dropped = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                write_batches(&thread_channel, sink, reopen, &thread_dropped);
                let _ = done.send(());
            })?;
        let writer = Writer {
            channel: Arc::clone(&channel),
            finished,
        };
        Ok((
            AccessLog {
                channel: Some(channel),
                dropped,
            },
            writer,
        ))
    }

    pub fn is_on(&self) -> bool {
        self.channel.is_some()
    }

    /// Lines dropped: the buffer was full, or the sink refused the batch holding them. The
    /// metrics register this counter as `schemagate_access_log_dropped_total`.
    pub fn dropped(&self) -> &Counter {
        &self.dropped
    }

    /// Appends one line, or counts it dropped when the buffer is full (or the log closed).
    pub fn record(&self, entry: &Entry<'_>) {
        let Some(channel) = &self.channel else {
            return;
        };
        let now = SystemTime::now();
        let mut state = channel.lock();
        if state.closed || state.lines.len() >= channel.capacity {
            drop(state);
            self.dropped.inc();
            return;
        }
        let state_ref = &mut *state;
        push_line(
            &mut state_ref.lines,
            &mut state_ref.clock,
            channel.format,
            now,
            entry,
        );
        let wake = std::mem::take(&mut state.writer_waiting);
        drop(state);
        if wake {
            channel.wake.notify_one();
        }
    }
}

impl Channel {
    /// The state, also after a panic elsewhere while it was held (nothing here leaves it
    /// half-changed: a line is appended whole or the buffer is swapped whole).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread's owner: finishing it writes everything buffered.
pub struct Writer {
    channel: Arc<Channel>,
    finished: mpsc::Receiver<()>,
}

impl Writer {
    /// A handle that asks the writer to open its sink again (log rotation: SIGHUP).
    pub fn reopener(&self) -> Reopen {
        Reopen(Arc::clone(&self.channel))
    }

    /// Stops taking lines, writes what is buffered, flushes the sink, and waits up to
    /// `timeout` for that. `false` when the sink did not take it all in time (a pipe nobody
    /// reads): the process may exit anyway.
    pub fn finish(self, timeout: Duration) -> bool {
        self.channel.lock().closed = true;
        self.channel.wake.notify_one();
        self.finished.recv_timeout(timeout).is_ok()
    }
}

/// Asks the access log's writer to open its sink again, after the lines already buffered.
#[derive(Clone)]
pub struct Reopen(Arc<Channel>);

impl Reopen {
    pub fn request(&self) {
        self.0.lock().reopen = true;
        self.0.wake.notify_one();
    }
}

/// The writer thread: waits for lines, lets more gather for [`LINGER`], swaps the buffer
/// and writes the batch; opens the sink again when asked; until closed and empty.
fn write_batches(
    channel: &Channel,
    mut sink: Box<dyn Write + Send>,
    open: Option<Open>,
    dropped: &Counter,
) {
    let mut batch: Vec<u8> = Vec::with_capacity(channel.capacity + LINE_SLACK);
    let mut failing = false;
    loop {
        let mut state = channel.lock();
        while state.lines.is_empty() && !state.closed && !state.reopen {
            state.writer_waiting = true;
            state = channel
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.writer_waiting = false;
        if !state.closed && !state.reopen {
            drop(state);
            std::thread::sleep(LINGER);
            state = channel.lock();
        }
        let closed = state.closed;
        let reopen = std::mem::take(&mut state.reopen);
        std::mem::swap(&mut state.lines, &mut batch);
        drop(state);
        if !batch.is_empty() {
            match sink.write_all(&batch).and_then(|()| sink.flush()) {
                Ok(()) => failing = false,
                Err(error) => {
                    // What part of the batch reached the sink is unknown: all of it counts.
                    let lost = batch.iter().filter(|&&b| b == b'\n').count();
                    dropped.inc_by(lost as u64);
                    if !failing {
                        tracing::warn!(%error, lost, "cannot write the access log; dropping lines");
                    }
                    failing = true;
                }
            }
            batch.clear();
        }
        if let (true, Some(open)) = (reopen && !closed, &open) {
            match open() {
                Ok(new) => {
                    sink = new;
                    failing = false;
                    tracing::info!("access log reopened");
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot reopen the access log; still writing to the old file");
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// The keys, with what separates each from the value before it, in the order written.
const TEXT_KEYS: [&[u8]; 9] = [
    b" route=",
    b" tenant=",
    b" method=",
    b" path=",
    b" status=",
    b" latency_us=",
    b" upstream_us=",
    b" request_id=",
    b" reason=",
];
const JSON_KEYS: [&[u8]; 9] = [
    b"\",\"route\":",
    b",\"tenant\":",
    b",\"method\":",
    b",\"path\":",
    b",\"status\":",
    b",\"latency_us\":",
    b",\"upstream_us\":",
    b",\"request_id\":",
    b",\"reason\":",
];

/// Appends one line of `format` for `entry` at `now` to `out`: the same fields in the same
/// order in both formats, which differ only in the separators (and in quoting the two bare
/// words, method and reason, in JSON).
fn push_line(
    out: &mut Vec<u8>,
    clock: &mut SecondStamp,
    format: LogFormat,
    now: SystemTime,
    entry: &Entry<'_>,
) {
    let json = format == LogFormat::Json;
    // One reservation for the whole line (the fixed part is under 200 bytes; escapes may
    // need more, and then the vector grows).
    out.reserve(
        200 + entry.route.len() + entry.tenant.len() + entry.path.len() + entry.request_id.len(),
    );
    let keys = if json { &JSON_KEYS } else { &TEXT_KEYS };
    let word = |out: &mut Vec<u8>, word: &str| {
        if json {
            push_quoted(out, word);
        } else {
            out.extend_from_slice(word.as_bytes());
        }
    };
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
    }
    clock.push(out, now);
    out.extend_from_slice(keys[0]);
    push_quoted(out, entry.route);
    out.extend_from_slice(keys[1]);
    push_quoted(out, entry.tenant);
    out.extend_from_slice(keys[2]);
    word(out, entry.method);
    out.extend_from_slice(keys[3]);
    push_quoted(out, entry.path);
    out.extend_from_slice(keys[4]);
    push_int(out, u64::from(entry.status));
    out.extend_from_slice(keys[5]);
    push_int(out, entry.latency_us);
    out.extend_from_slice(keys[6]);
    push_int(out, entry.upstream_us);
    out.extend_from_slice(keys[7]);
    push_quoted(out, entry.request_id);
    out.extend_from_slice(keys[8]);
    word(out, entry.reason);
    out.extend_from_slice(if json { b"}\n" } else { b"\n" });
}

fn push_int(out: &mut Vec<u8>, value: u64) {
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(value).as_bytes());
}

/// `s` as a JSON string literal: `"` and `\` escaped, control characters as `\n`, `\r`,
/// `\t` or `\u00XX`; everything else (UTF-8 included) as is. Most values need no escape and
/// are copied in one piece.
fn push_quoted(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    // The common case: nothing to escape, copied in one piece.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any byte of `bytes` is a control character, `"`, `\\` or DEL: eight bytes at a
/// time (SWAR, the classic "has a zero byte" / "has a byte less than n" bit tricks, exact
/// for the question "any?"), so a value of ordinary characters costs about two instructions
/// a byte rather than eight.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// A byte of `x` is zero.
    fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGH
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let special = zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            | zero_byte(x ^ (ONES * 0x7f));
        if control | special != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
}

/// `now` as RFC 3339 in UTC with microseconds (`2026-12-04T16:17:35.123456Z`), as the
/// diagnostics' timestamps. Written by hand: humantime's and chrono's formatters go through
/// `fmt::Write` (a `format!`'s cost per line); a unit test pins this one to humantime's.
fn push_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, month, 2);
    out.push(b'-');
    push_digits(out, day, 2);
    out.push(b'T');
    push_digits(out, of_day / 3600, 2);
    out.push(b':');
    push_digits(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_digits(out, of_day % 60, 2);
    out.push(b'.');
    push_digits(out, u64::from(since.subsec_micros()), 6);
    out.push(b'Z');
}

/// The timestamp's first 19 bytes (`2026-12-04T16:17:35`), made once per second: a line
/// then costs a comparison, a copy and six digits.
#[derive(Default)]
struct SecondStamp {
    /// Seconds since the epoch that `text` is for (`None`: none yet).
    secs: Option<u64>,
    text: [u8; 19],
}

impl SecondStamp {
    /// Appends `now` as [`push_timestamp`] writes it.
    fn push(&mut self, out: &mut Vec<u8>, now: SystemTime) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        if self.secs != Some(secs) {
            let mut text = Vec::with_capacity(32);
            push_timestamp(&mut text, now);
            if let Some(prefix) = text.get(..19) {
                self.text.copy_from_slice(prefix);
                self.secs = Some(secs);
            }
        }
        out.extend_from_slice(&self.text);
        let mut micros = since.subsec_micros();
        let mut digits = *b".000000Z";
        for slot in digits[1..7].iter_mut().rev() {
            *slot = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        out.extend_from_slice(&digits);
    }
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// (year, month, day) of the day `days` after 1970-01-01, in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry<'a>(tenant: &'a str, request_id: &'a str) -> Entry<'a> {
        Entry {
            route: "flextell.create",
            tenant,
            method: "POST",
            path: "/v1/conversations",
            status: 422,
            latency_us: 1234,
            upstream_us: 0,
            request_id,
            reason: "minimum",
        }
    }

    #[test]
    fn timestamps_match_humantime() {
        // Leap days, year ends, the epoch, far futures.
        let secs = [
            0u64,
            951_782_400,
            951_868_799,
            1_709_164_800,
            1_735_689_599,
            1_798_761_599,
            4_102_444_800,
            253_402_300_799,
        ];
        for s in secs {
            for micros in [0u32, 1, 999_999] {
                let t = UNIX_EPOCH + Duration::new(s, micros * 1000);
                let mut out = Vec::new();
                push_timestamp(&mut out, t);
                let expected = humantime::format_rfc3339_micros(t).to_string();
                assert_eq!(String::from_utf8(out).unwrap(), expected);
            }
        }
        // Every day over eight years, leap years and a century rule included.
        for day in 10_950..13_900u64 {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 3_723);
            let mut out = Vec::new();
            push_timestamp(&mut out, t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                humantime::format_rfc3339_micros(t).to_string()
            );
        }
    }

    #[test]
    fn needs_escape_finds_every_special_byte_at_every_position() {
        let naive = |b: u8| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f;
        for len in [1usize, 7, 8, 9, 17, 24] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut value = vec![b'a'; len];
                    value[at] = b;
                    assert_eq!(
                        needs_escape(&value),
                        naive(b),
                        "byte {b:#x} at {at} of {len}"
                    );
                }
            }
        }
        // Non-ASCII neighbours (UTF-8 continuation bytes) are no false alarm.
        assert!(!needs_escape("éééééééé/ü".as_bytes()));
        assert!(!needs_escape(b""));
    }

    #[test]
    fn the_cached_second_writes_what_the_full_timestamp_writes() {
        let mut clock = SecondStamp::default();
        let start = 1_735_689_598u64; // 2024-12-31T23:59:58
        for step in 0..40u64 {
            let t = UNIX_EPOCH + Duration::from_micros(start * 1_000_000 + step * 97_001);
            let (mut cached, mut full) = (Vec::new(), Vec::new());
            clock.push(&mut cached, t);
            push_timestamp(&mut full, t);
            assert_eq!(cached, full);
        }
    }

    #[test]
    fn json_lines_parse_back_with_every_field_and_hostile_values() {
        let tenant = "a\"b\\c\nd\u{1}é";
        let request_id = "x\" injected=\"y";
        let mut out = Vec::new();
        push_line(
            &mut out,
            &mut SecondStamp::default(),
            LogFormat::Json,
            SystemTime::now(),
            &entry(tenant, request_id),
        );
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["tenant"], tenant);
        assert_eq!(line["request_id"], request_id);
        assert_eq!(line["route"], "flextell.create");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/v1/conversations");
        assert_eq!(line["status"], 422);
        assert_eq!(line["latency_us"], 1234);
        assert_eq!(line["upstream_us"], 0);
        assert_eq!(line["reason"], "minimum");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn text_lines_quote_what_a_client_chose() {
        let mut out = Vec::new();
        push_line(
            &mut out,
            &mut SecondStamp::default(),
            LogFormat::Text,
            UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_001),
            &entry("7", "id\" status=\"200"),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2023-11-14T22:13:20.000001Z route=\"flextell.create\" tenant=\"7\" method=POST \
             path=\"/v1/conversations\" status=422 latency_us=1234 upstream_us=0 \
             request_id=\"id\\\" status=\\\"200\" reason=minimum\n"
        );
    }

    /// A sink that takes nothing until the test opens it, then keeps everything.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, opened) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_sink_bounds_the_buffer_and_counts_what_is_dropped() {
        let gate = Gate::default();
        let (log, writer) =
            AccessLog::start(Box::new(gate.clone()), None, LogFormat::Text, MIN_BUFFER).unwrap();
        let line_len = {
            let mut out = Vec::new();
            push_line(
                &mut out,
                &mut SecondStamp::default(),
                LogFormat::Text,
                SystemTime::now(),
                &entry("7", "r"),
            );
            out.len()
        };
        // Enough lines for the writer's batch (blocked in `write`) and a full buffer, twice.
        let sent = 4 * MIN_BUFFER / line_len;
        for _ in 0..sent {
            log.record(&entry("7", "r"));
        }
        let dropped = log.dropped().get();
        assert!(dropped > 0, "nothing dropped with the sink blocked");
        {
            let state = log.channel.as_ref().unwrap().lock();
            assert!(state.lines.len() < MIN_BUFFER + line_len);
        }
        // Opened, the sink gets every line that was not counted dropped, and nothing else.
        let (lock, opened) = &*gate.open;
        *lock.lock().unwrap() = true;
        opened.notify_all();
        assert!(writer.finish(Duration::from_secs(10)));
        let written = gate.written.lock().unwrap();
        let lines = written.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(lines + dropped, sent as u64);
        // Closed, the log takes no more lines and counts them.
        log.record(&entry("7", "r"));
        assert_eq!(log.dropped().get(), dropped + 1);
    }

    #[test]
    fn finish_writes_every_buffered_line() {
        let gate = Gate::default();
        *gate.open.0.lock().unwrap() = true;
        let (log, writer) = AccessLog::start(
            Box::new(gate.clone()),
            None,
            LogFormat::Json,
            DEFAULT_BUFFER,
        )
        .unwrap();
        for _ in 0..500 {
            log.record(&entry("7", "r"));
        }
        assert!(writer.finish(Duration::from_secs(10)));
        let written = gate.written.lock().unwrap();
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 500);
        assert_eq!(log.dropped().get(), 0);
    }
}
