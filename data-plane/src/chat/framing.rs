//! Cutting a provider's byte stream into messages: Server-Sent Events as the
//! WHATWG spec (and the SDK decoders) read them, or newline-delimited JSON.

use bytes::{Buf, BytesMut};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Sse,
    Ndjson,
}

/// One message: an SSE event (its name, and its data lines joined by `\n`) or
/// one NDJSON line (as `data`, with no name).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub event: Option<String>,
    pub data: String,
}

pub struct FrameDecoder {
    framing: Framing,
    buffer: BytesMut,
    event: Option<String>,
    data: Vec<String>,
}

impl FrameDecoder {
    pub fn new(framing: Framing) -> Self {
        FrameDecoder {
            framing,
            buffer: BytesMut::new(),
            event: None,
            data: Vec::new(),
        }
    }

    /// Feeds bytes; pushes every message they complete.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        self.buffer.extend_from_slice(bytes);
        while let Some(line) = self.next_line() {
            self.line(&line, out);
        }
    }

    /// The stream ended: a last line or event without its terminator still counts.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if !self.buffer.is_empty() {
            let rest = String::from_utf8_lossy(&self.buffer).into_owned();
            self.buffer.clear();
            self.line(&rest, out);
        }
        if self.framing == Framing::Sse {
            self.line("", out);
        }
    }

    /// A line ends at `\r\n`, `\n` or `\r`; a `\r` at the buffer's end waits
    /// for the next byte, which may be its `\n`.
    fn next_line(&mut self) -> Option<String> {
        let end = self
            .buffer
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')?;
        let terminator = match (self.buffer[end], self.buffer.get(end + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) => return None,
            _ => 1,
        };
        let line = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.buffer.advance(end + terminator);
        Some(line)
    }

    fn line(&mut self, line: &str, out: &mut Vec<Frame>) {
        if self.framing == Framing::Ndjson {
            if !line.trim().is_empty() {
                out.push(Frame {
                    event: None,
                    data: line.to_owned(),
                });
            }
            return;
        }
        if line.is_empty() {
            if !self.data.is_empty() {
                out.push(Frame {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data).join("\n"),
                });
            }
            self.event = None;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => self.data.push(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framing: Framing, pieces: &[&str]) -> Vec<Frame> {
        let mut decoder = FrameDecoder::new(framing);
        let mut out = Vec::new();
        for piece in pieces {
            decoder.push(piece.as_bytes(), &mut out);
        }
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn reads_sse_as_the_sdks_do() {
        let got = frames(
            Framing::Sse,
            &[
                "id:1\nevent:result\n:HTTP_STATUS/200\ndata:{\"a\"",
                ":1}\n\nevent: ping\r",
                "\ndata: {}\r\n\r\ndata: x\ndata: y\n\n: keep-alive\n\ndata: tail",
            ],
        );
        assert_eq!(
            got,
            vec![
                Frame {
                    event: Some("result".into()),
                    data: "{\"a\":1}".into()
                },
                Frame {
                    event: Some("ping".into()),
                    data: "{}".into()
                },
                Frame {
                    event: None,
                    data: "x\ny".into()
                },
                Frame {
                    event: None,
                    data: "tail".into()
                },
            ]
        );
    }

    #[test]
    fn reads_ndjson_lines() {
        let got = frames(
            Framing::Ndjson,
            &["{\"a\":1}\n{\"b\"", ":2}\n\n{\"done\":true}"],
        );
        let data: Vec<&str> = got.iter().map(|f| f.data.as_str()).collect();
        assert_eq!(data, vec!["{\"a\":1}", "{\"b\":2}", "{\"done\":true}"]);
    }
}
