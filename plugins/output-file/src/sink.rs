//! The running file output: each batch is encoded into per-file buffers on
//! the engine's task, in queue order, and handed to the output's writer
//! thread ([`crate::writer`]), which appends it and syncs it with the other
//! batches of its round before the batch counts as stored.
//!
//! Encoding happens when the engine starts the write
//! ([`Output::start_write`]), so batches reach the files in queue order
//! whatever the output's `concurrency`, and encoding the next batch overlaps
//! syncing the last.
//!
//! A file that can never be opened because of the path its events render
//! (see [`crate::path_fault`]) does not fail the batch: the batch's other
//! files are written and synced, and that file's events go to the
//! dead-letter file with the reason. Any other failure, and a dead-letter
//! file that cannot be written, fails the batch; it is reported, not
//! retried: the engine fails the producers' acknowledgements and the events
//! are sent again (files already written get them twice: delivery is at
//! least once).

use std::sync::Arc;

use async_trait::async_trait;
use eventstash_plugin_api::{
    BoxError, DeadLetterFile, Event, FieldTemplate, Output, OutputBatch, OutputMetrics, PluginContext, WriteFuture,
};
use tracing::warn;

use crate::error::FileOutputError;
use crate::open_files::OpenFiles;
use crate::path_fault::PathFaults;
use crate::writer::{RefusedEvent, WriteOutcome, WriterHandle};

/// Writes in flight by default: one syncing, the next ones encoded and
/// waiting for the following round.
const DEFAULT_CONCURRENCY: usize = 4;

/// The file output, built by [`FileOutputConfig::build_in`](crate::FileOutputConfig::build_in).
#[derive(Debug)]
pub struct FileOutput {
    /// Renders each event's file path.
    template: FieldTemplate,
    /// The writer thread.
    writer: WriterHandle,
    /// Where events go whose file can never be written.
    dead_letters: DeadLetterFile,
    /// The dead-lettered counter (the engine counts the rest).
    metrics: OutputMetrics,
    /// The output's id, for logs.
    id: String,
}

impl FileOutput {
    pub(crate) fn new(
        ctx: &PluginContext,
        template: FieldTemplate,
        sync: bool,
        max_open_files: usize,
        dead_letters: DeadLetterFile,
    ) -> Result<FileOutput, FileOutputError> {
        let files = OpenFiles::new(max_open_files, sync);
        let writer = WriterHandle::spawn(files, PathFaults::new(&template)).map_err(FileOutputError::Thread)?;
        Ok(FileOutput {
            template,
            writer,
            dead_letters,
            metrics: ctx.output_metrics(),
            id: ctx.plugin.clone(),
        })
    }

    /// Encodes `batch` and hands it to the writer thread, which appends
    /// batches in the order of these calls.
    fn submit(&self, batch: &OutputBatch) -> Result<tokio::sync::oneshot::Receiver<WriteOutcome>, FileOutputError> {
        let mut buffers = self.writer.buffers();
        buffers.encode(&self.template, batch)?;
        Ok(self.writer.write(buffers))
    }

    /// Waits for the writer's answer, then dead-letters what the files refused.
    async fn finish(
        &self,
        answer: tokio::sync::oneshot::Receiver<WriteOutcome>,
        batch: &OutputBatch,
    ) -> Result<(), FileOutputError> {
        let refused = answer.await.map_err(|_| FileOutputError::WriterGone)??;
        self.dead_letter(batch, refused).await
    }

    /// Writes the refused events of `batch` to the dead-letter file; only
    /// then do they count as finished.
    async fn dead_letter(&self, batch: &OutputBatch, mut refused: Vec<RefusedEvent>) -> Result<(), FileOutputError> {
        if refused.is_empty() {
            return Ok(());
        }
        refused.sort_unstable_by_key(|event| event.position);
        let mut refused = refused.into_iter().peekable();
        let letters: Vec<(&Event, String)> = batch
            .iter()
            .enumerate()
            .filter_map(|(position, event)| {
                let refused = refused.next_if(|refused| refused.position == position)?;
                Some((event, refused.reason))
            })
            .collect();
        self.dead_letters
            .write(&letters)
            .await
            .map_err(|error| FileOutputError::DeadLetter {
                events: letters.len(),
                error,
            })?;
        self.metrics.dead_lettered.increment(letters.len() as u64);
        warn!(
            output = %self.id,
            events = letters.len(),
            first_reason = %letters[0].1,
            path = %self.dead_letters.path().display(),
            "events whose file cannot be written are in the dead-letter file"
        );
        Ok(())
    }
}

#[async_trait]
impl Output for FileOutput {
    async fn write(&self, batch: OutputBatch) -> Result<(), BoxError> {
        if batch.is_empty() {
            return Ok(());
        }
        let answer = self.submit(&batch)?;
        self.finish(answer, &batch).await?;
        Ok(())
    }

    /// Encodes and hands over the batch now, so that concurrent writes
    /// still reach the files in queue order.
    fn start_write(self: Arc<Self>, batch: OutputBatch) -> WriteFuture {
        let answer = (!batch.is_empty()).then(|| self.submit(&batch));
        Box::pin(async move {
            match answer {
                None => Ok(()),
                Some(answer) => Ok(self.finish(answer?, &batch).await?),
            }
        })
    }

    fn default_concurrency(&self) -> usize {
        DEFAULT_CONCURRENCY
    }

    async fn close(&self) -> Result<(), BoxError> {
        self.writer.close().await.map_err(|_| FileOutputError::WriterGone)??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use bytes::Bytes;
    use eventstash_plugin_api::Format;

    use super::*;
    use crate::FileOutputConfig;

    fn event(kind: &str, id: &str) -> Event {
        let data = Bytes::from_static(br#"{"user":"ada","n":[1,2]}"#);
        Event::new(Format::Json, data, kind.into(), id.into(), chrono::Utc::now())
    }

    /// An output whose dead letters, if any, go next to the test's files.
    fn output(template: &Path) -> FileOutput {
        let dead_letters = template.with_file_name("dead_letter.jsonl");
        output_with_dead_letters(template, &dead_letters)
    }

    fn output_with_dead_letters(template: &Path, dead_letters: &Path) -> FileOutput {
        let config = FileOutputConfig {
            path: template.to_str().unwrap().to_owned(),
            sync: true,
            max_open_files: 256,
            dead_letter_path: Some(dead_letters.to_owned()),
        };
        config.build_in(&PluginContext::new("main", "file#0")).unwrap()
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
    async fn an_event_whose_file_name_is_too_long_is_dead_lettered_and_its_batch_stored() {
        let dir = tempfile::tempdir().unwrap();
        let dead_letters = dir.path().join("dlq/file.jsonl");
        let out = output_with_dead_letters(&dir.path().join("out/%{index}.jsonl"), &dead_letters);
        let long_kind = "k".repeat(300);
        let batch = vec![event("a", "1"), event(&long_kind, "2"), event("b", "3")];

        out.write(batch.into())
            .await
            .expect("one unstorable event must not fail its batch");

        assert_eq!(documents(&dir.path().join("out/a.jsonl"))[0]["id"], "1");
        assert_eq!(documents(&dir.path().join("out/b.jsonl"))[0]["id"], "3");
        let letters = documents(&dead_letters);
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0]["output"], "file#0");
        assert_eq!(letters[0]["event"]["id"], "2");
        assert_eq!(letters[0]["event"]["kind"], long_kind.as_str());
        let reason = letters[0]["reason"].as_str().unwrap();
        assert!(reason.contains("name too long"), "{reason}");
    }

    #[tokio::test]
    async fn an_event_whose_directory_is_a_file_is_dead_lettered_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dead_letters = dir.path().join("dead_letter.jsonl");
        let out = output_with_dead_letters(&dir.path().join("%{index}/events.jsonl"), &dead_letters);
        // A file where the events of kind `taken` need their directory.
        fs::write(dir.path().join("taken"), "").unwrap();
        let batch = vec![event("taken", "1"), event("free", "2"), event("taken", "3")];

        out.write(batch.into()).await.unwrap();

        assert_eq!(documents(&dir.path().join("free/events.jsonl")).len(), 1);
        let letters = documents(&dead_letters);
        let ids: Vec<_> = letters.iter().map(|letter| letter["event"]["id"].clone()).collect();
        assert_eq!(ids, ["1", "3"]);
        let reason = letters[0]["reason"].as_str().unwrap();
        assert!(reason.contains("taken"), "{reason}");
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_batch_rather_than_dead_lettering() {
        // `/dev/full` opens like a file and answers every write with ENOSPC.
        let dir = tempfile::tempdir().unwrap();
        let dead_letters = dir.path().join("dead_letter.jsonl");
        let out = output_with_dead_letters(Path::new("/dev/%{kind}"), &dead_letters);

        let error = out.write(vec![event("full", "1")].into()).await.unwrap_err();

        let message = error.to_string();
        assert!(message.contains("/dev/full"), "{message}");
        assert!(!dead_letters.exists(), "a disk fault is not the event's fault");
    }

    #[tokio::test]
    async fn refused_events_fail_their_batch_when_the_dead_letter_file_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("regular");
        fs::write(&regular, "not a directory").unwrap();
        let out = output_with_dead_letters(&dir.path().join("%{index}.jsonl"), &regular.join("dlq.jsonl"));
        let batch = vec![event("a", "1"), event(&"k".repeat(300), "2")];

        let error = out.write(batch.into()).await.expect_err("a refused event was lost");

        let message = error.to_string();
        assert!(message.contains("could not keep them"), "{message}");
        assert!(message.contains("dlq.jsonl"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_started_together_reach_the_file_in_the_order_they_were_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let out = Arc::new(output(&path));
        let ids: Vec<String> = (0..200).map(|n| n.to_string()).collect();
        let writes: Vec<_> = ids
            .iter()
            .map(|id| out.clone().start_write(vec![event("a", id)].into()))
            .collect();
        // Run them all at once, each on a task of its own, the last first.
        let tasks: Vec<_> = writes.into_iter().rev().map(tokio::spawn).collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stored: Vec<_> = documents(&path)
            .iter()
            .map(|doc| doc["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(stored, ids);
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
