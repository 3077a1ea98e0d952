//! The running file output: each batch is encoded into per-file buffers and
//! appended, one write and one sync per file, on tokio's blocking pool.
//!
//! All state (the buffers and the open files) sits behind one mutex that only
//! the blocking task takes, never across an `.await`. Writes are therefore
//! one at a time, which also keeps each batch's lines together in its files.
//! A failed batch is reported, not retried: the engine fails the producers'
//! acknowledgements and they send again.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use eventstash_plugin_api::{BoxError, FieldTemplate, Output, OutputBatch};

use crate::encode::BatchBuffers;
use crate::error::FileOutputError;
use crate::open_files::OpenFiles;

/// The file output, built by [`FileOutputConfig::build`](crate::FileOutputConfig::build).
#[derive(Debug)]
pub struct FileOutput {
    writer: Arc<Mutex<FileWriter>>,
}

/// The blocking half of the output.
#[derive(Debug)]
struct FileWriter {
    /// Renders each event's file path.
    template: FieldTemplate,
    /// The documents of the batch being written, by file.
    buffers: BatchBuffers,
    /// Handles kept open between batches.
    files: OpenFiles,
}

impl FileOutput {
    pub(crate) fn new(template: FieldTemplate, sync: bool, max_open_files: usize) -> FileOutput {
        let writer = FileWriter {
            template,
            buffers: BatchBuffers::default(),
            files: OpenFiles::new(max_open_files, sync),
        };
        FileOutput {
            writer: Arc::new(Mutex::new(writer)),
        }
    }

    /// Runs `work` on the writer in the blocking pool.
    async fn with_writer<F>(&self, work: F) -> Result<(), FileOutputError>
    where
        F: FnOnce(&mut FileWriter) -> Result<(), FileOutputError> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier write leaves nothing half-done that
            // matters here: buffers are reset per batch and handles are
            // append-only, so a poisoned lock is still usable.
            let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut writer)
        })
        .await
        .map_err(FileOutputError::Task)?
    }
}

impl FileWriter {
    fn write(&mut self, batch: &OutputBatch) -> Result<(), FileOutputError> {
        self.buffers.encode(&self.template, batch)?;
        for pending in self.buffers.files() {
            self.files.append(&pending.path, &pending.lines)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Output for FileOutput {
    async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.with_writer(move |writer| writer.write(&batch)).await?;
        Ok(())
    }

    async fn close(&self) -> Result<(), BoxError> {
        self.with_writer(|writer| writer.files.close_all()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use bytes::Bytes;
    use eventstash_plugin_api::{Event, Format};

    use super::*;
    use crate::FileOutputConfig;

    fn event(kind: &str, id: &str) -> Event {
        let data = Bytes::from_static(br#"{"user":"ada","n":[1,2]}"#);
        Event::new(Format::Json, data, kind.into(), id.into(), chrono::Utc::now())
    }

    fn output(template: &Path) -> FileOutput {
        let config = FileOutputConfig {
            path: template.to_str().unwrap().to_owned(),
            sync: true,
            max_open_files: 256,
        };
        config.build().unwrap()
    }

    fn documents(path: &Path) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(path).unwrap();
        assert!(text.ends_with('\n'), "last line is not terminated");
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    #[tokio::test]
    async fn writes_one_document_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let out = output(&path);
        let batch = vec![event("contact.AddressBook", "1"), event("x", "2")];
        out.write(batch.into()).await.unwrap();

        let docs = documents(&path);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["index"], "contact-address-book");
        assert_eq!(docs[0]["kind"], "contact.AddressBook");
        assert_eq!(docs[0]["format"], "JSON");
        assert_eq!(docs[0]["data"], serde_json::json!({"user": "ada", "n": [1, 2]}));
        assert_eq!(docs[0]["id"], "1");
        assert!(docs[0]["@timestamp"].is_string());
        assert_eq!(docs[1]["id"], "2");
    }

    #[tokio::test]
    async fn the_index_field_picks_a_directory_and_file_per_index() {
        let dir = tempfile::tempdir().unwrap();
        let out = output(&dir.path().join("%{index}/events-%{index}.jsonl"));
        let batch = vec![event("a.One", "1"), event("b.Two", "2"), event("a.One", "3")];
        out.write(batch.into()).await.unwrap();

        let one = documents(&dir.path().join("a-one/events-a-one.jsonl"));
        let ids: Vec<_> = one.iter().map(|doc| doc["id"].clone()).collect();
        assert_eq!(ids, ["1", "3"]);
        let two = documents(&dir.path().join("b-two/events-b-two.jsonl"));
        assert_eq!(two.len(), 1);
        assert_eq!(two[0]["id"], "2");
    }

    #[tokio::test]
    async fn a_producer_kind_cannot_climb_out_of_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        let out = output(&dir.join("%{kind}.jsonl"));
        out.write(vec![event("../../x", "1")].into()).await.unwrap();

        let entries: Vec<_> = fs::read_dir(root.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["out"], "wrote outside the output directory");
        assert_eq!(documents(&dir.join(".._.._x.jsonl")).len(), 1);
    }

    #[tokio::test]
    async fn an_unwritable_path_fails_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("regular");
        fs::write(&regular, "not a directory").unwrap();
        let out = output(&regular.join("%{index}/events.jsonl"));
        let error = out.write(vec![event("a", "1")].into()).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("regular"), "{message}");
    }

    #[tokio::test]
    async fn later_batches_append_even_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let out = output(&path);
        out.write(vec![event("a", "1")].into()).await.unwrap();
        out.write(vec![event("a", "2")].into()).await.unwrap();
        out.close().await.unwrap();
        output(&path).write(vec![event("a", "3")].into()).await.unwrap();

        let ids: Vec<_> = documents(&path).iter().map(|doc| doc["id"].clone()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
    }
}
