//! A bounded buffer of the lines a managed backend wrote, kept for the panel and error messages.

use app::snapshot::{LogLine, LogPage, LogStream};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// Longest line kept; the rest of a longer line is cut.
const MAX_LINE_BYTES: usize = 4096;

/// The last `capacity` lines of a backend's stdout and stderr, numbered from 1.
#[derive(Debug)]
pub struct LogBuffer {
    lines: Mutex<Lines>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Lines {
    kept: VecDeque<LogLine>,
    last_seq: u64,
}

impl LogBuffer {
    /// An empty buffer keeping at most `capacity` lines. Nothing is allocated before the first
    /// line (external backends never write any), then room for all `capacity` at once.
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(Lines::default()),
            capacity,
        }
    }

    /// Appends a line, dropping the oldest when full.
    pub fn push(&self, stream: LogStream, mut text: String) {
        if text.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let mut lines = self.lock();
        if lines.kept.capacity() == 0 {
            lines.kept.reserve_exact(self.capacity);
        }
        if lines.kept.len() == self.capacity {
            lines.kept.pop_front();
        }
        lines.last_seq += 1;
        let seq = lines.last_seq;
        lines.kept.push_back(LogLine {
            seq,
            at_unix_ms: crate::clock::unix_ms(),
            stream,
            text,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of the last line written (0 before the first): it changes with every line.
    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// The kept lines after `since` (every kept line for 0), and the cursors.
    pub fn since(&self, since: u64) -> LogPage {
        let lines = self.lock();
        let after: Vec<LogLine> = lines
            .kept
            .iter()
            .filter(|l| l.seq > since)
            .cloned()
            .collect();
        LogPage {
            next: after.last().map_or(since, |l| l.seq),
            first: lines.kept.front().map_or(0, |l| l.seq),
            lines: after,
        }
    }

    /// The last `n` lines of one stream, oldest first.
    pub fn tail(&self, stream: LogStream, n: usize) -> Vec<String> {
        let lines = self.lock();
        let mut tail: Vec<String> = lines
            .kept
            .iter()
            .rev()
            .filter(|l| l.stream == stream && !l.text.trim().is_empty())
            .take(n)
            .map(|l| l.text.clone())
            .collect();
        tail.reverse();
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_lines_are_dropped_when_full() {
        let buffer = LogBuffer::new(2);
        for text in ["a", "b", "c"] {
            buffer.push(LogStream::Stderr, text.into());
        }
        buffer.push(LogStream::Stdout, "d".into());
        assert_eq!(buffer.tail(LogStream::Stderr, 5), vec!["c".to_string()]);
        assert_eq!(buffer.since(0).lines.len(), 2);
    }

    #[test]
    fn a_cursor_returns_only_newer_lines_and_tells_what_was_dropped() {
        let buffer = LogBuffer::new(3);
        for text in ["a", "b", "c", "d", "e"] {
            buffer.push(LogStream::Stdout, text.into());
        }
        let all = buffer.since(0);
        assert_eq!(all.first, 3);
        assert_eq!(all.next, 5);
        let texts = |page: &LogPage| {
            page.lines
                .iter()
                .map(|l| l.text.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&all), ["c", "d", "e"]);
        assert_eq!(texts(&buffer.since(4)), ["e"]);
        let none = buffer.since(5);
        assert!(none.lines.is_empty());
        assert_eq!(none.next, 5, "the cursor stays");
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let buffer = LogBuffer::new(1);
        buffer.push(LogStream::Stdout, "é".repeat(MAX_LINE_BYTES));
        let line = &buffer.since(0).lines[0].text;
        assert!(line.len() <= MAX_LINE_BYTES + '…'.len_utf8());
    }
}
