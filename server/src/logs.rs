//! A bounded buffer of the lines a managed backend wrote, kept for the panel and error messages.

use app::snapshot::{LogLine, LogStream};
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

/// Longest line kept; the rest of a longer line is cut.
const MAX_LINE_BYTES: usize = 4096;

/// The last `capacity` lines of a backend's stdout and stderr.
#[derive(Debug)]
pub struct LogBuffer {
    lines: Mutex<VecDeque<LogLine>>,
    capacity: usize,
}

impl LogBuffer {
    /// An empty buffer keeping at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(VecDeque::with_capacity(capacity)),
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
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(LogLine {
            at_unix_ms: crate::clock::unix_ms(),
            stream,
            text,
        });
    }

    /// Every kept line, oldest first.
    pub fn all(&self) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().cloned().collect()
    }

    /// The last `n` lines of one stream, oldest first.
    pub fn tail(&self, stream: LogStream, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tail: Vec<String> = lines
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
        assert_eq!(buffer.all().len(), 2);
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let buffer = LogBuffer::new(1);
        buffer.push(LogStream::Stdout, "é".repeat(MAX_LINE_BYTES));
        let line = &buffer.all()[0].text;
        assert!(line.len() <= MAX_LINE_BYTES + '…'.len_utf8());
    }
}
