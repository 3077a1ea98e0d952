//! The running stdout output: each batch becomes one buffer of documents,
//! written to the locked standard output and flushed on tokio's blocking pool.
//!
//! The buffer is kept between batches behind a mutex taken only inside the
//! blocking task; holding it for the write also keeps concurrent batches from
//! interleaving their lines.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use eventstash_plugin_api::{BoxError, Event, Output, OutputBatch};

use crate::error::StdoutOutputError;

/// The stdout output, built by [`StdoutOutputConfig::build`](crate::StdoutOutputConfig::build).
#[derive(Debug)]
pub struct StdoutOutput {
    /// Indent documents instead of one per line.
    pretty: bool,
    /// The encoded batch, reused so that steady writing allocates nothing.
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl StdoutOutput {
    pub(crate) fn new(pretty: bool) -> StdoutOutput {
        StdoutOutput {
            pretty,
            buffer: Arc::default(),
        }
    }
}

#[async_trait]
impl Output for StdoutOutput {
    async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (pretty, buffer) = (self.pretty, Arc::clone(&self.buffer));
        tokio::task::spawn_blocking(move || {
            // The buffer is cleared before use, so a panic that poisoned the
            // lock left nothing behind that matters.
            let mut buffer = buffer.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.clear();
            write_documents(batch.iter(), pretty, &mut *buffer)?;
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(&buffer)
                .and_then(|()| stdout.flush())
                .map_err(StdoutOutputError::Write)
        })
        .await
        .map_err(StdoutOutputError::Task)??;
        Ok(())
    }
}

/// Writes each event's document followed by a newline to `out`.
fn write_documents<'a>(
    events: impl Iterator<Item = &'a Event>,
    pretty: bool,
    mut out: impl Write,
) -> Result<(), StdoutOutputError> {
    for event in events {
        let written = if pretty {
            serde_json::to_writer_pretty(&mut out, event)
        } else {
            serde_json::to_writer(&mut out, event)
        };
        let encode_error = |error| StdoutOutputError::Encode {
            id: event.id.clone(),
            error,
        };
        written.map_err(encode_error)?;
        out.write_all(b"\n").map_err(StdoutOutputError::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use eventstash_plugin_api::Format;

    use super::*;

    fn events() -> Vec<Event> {
        ["1", "2"]
            .into_iter()
            .map(|id| {
                let data = Bytes::from_static(br#"{"a":1}"#);
                Event::new(Format::Json, data, "k".into(), id.into(), chrono::Utc::now())
            })
            .collect()
    }

    #[test]
    fn compact_output_is_one_document_per_line() {
        let events = events();
        let mut out = Vec::new();
        write_documents(events.iter(), false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        for (line, event) in lines.iter().zip(&events) {
            assert_eq!(*line, serde_json::to_string(event).unwrap());
        }
    }

    #[test]
    fn pretty_output_still_separates_documents_with_newlines() {
        let events = events();
        let mut out = Vec::new();
        write_documents(events.iter(), true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["id"], "2");
        assert!(text.lines().count() > 2);
    }
}
