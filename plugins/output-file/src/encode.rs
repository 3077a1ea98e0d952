//! Turns a batch into one buffer of JSON lines per destination file, so that
//! each file gets a single write however many events go to it.
//!
//! The buffers, the path lookup table and the string each event's path is
//! rendered into are kept from batch to batch: in the steady state encoding
//! allocates nothing per event.

use std::collections::HashMap;

use eventstash_plugin_api::{DocumentWriter, Event, FieldTemplate, OutputBatch, path_segment_escape};

use crate::error::FileOutputError;

/// Buffers kept for the next batch even when the last one needed fewer.
const SPARE_BUFFERS: usize = 16;

/// The documents of the current batch bound for one file.
#[derive(Debug, Default)]
pub(crate) struct PendingFile {
    /// The rendered path of the file.
    pub(crate) path: String,
    /// Newline-terminated JSON documents, in batch order.
    pub(crate) lines: Vec<u8>,
    /// The batch positions of those documents' events, to find them again
    /// if the file refuses them.
    pub(crate) events: Vec<usize>,
}

/// Reusable per-file buffers for one batch at a time.
#[derive(Debug, Default)]
pub(crate) struct BatchBuffers {
    /// Buffers in use for the current batch (the first `used`), then spares.
    files: Vec<PendingFile>,
    /// How many of `files` hold documents of the current batch.
    used: usize,
    /// The position in `files` of each path of the current batch.
    by_path: HashMap<String, usize>,
    /// The path of the event being encoded, rendered in place.
    rendered: String,
    /// Writes the documents, keeping what repeats between events.
    documents: DocumentWriter,
}

impl BatchBuffers {
    /// Encodes `batch`, replacing the previous batch's contents.
    pub(crate) fn encode(&mut self, template: &FieldTemplate, batch: &OutputBatch) -> Result<(), FileOutputError> {
        self.clear();
        if template.is_constant() {
            let slot = self.slot_for(template.as_str());
            let file = &mut self.files[slot];
            file.events.extend(0..batch.len());
            let documents = &mut self.documents;
            return batch
                .iter()
                .try_for_each(|event| push_line(documents, &mut file.lines, event));
        }
        // A path made of `index` and `kind` only is rendered again only when
        // they change, which in a stream is seldom.
        let by_kind = template.depends_only_on_kind();
        let mut current: Option<(usize, &Event)> = None;
        for (position, event) in batch.iter().enumerate() {
            let slot = match current {
                Some((slot, last)) if by_kind && last.index == event.index && last.kind == event.kind => slot,
                _ => self.render_slot(template, event, current.map(|(slot, _)| slot)),
            };
            current = Some((slot, event));
            let file = &mut self.files[slot];
            file.events.push(position);
            push_line(&mut self.documents, &mut file.lines, event)?;
        }
        Ok(())
    }

    /// The buffer of the file `event` goes to, its path rendered.
    fn render_slot(&mut self, template: &FieldTemplate, event: &Event, current: Option<usize>) -> usize {
        template.render_into(event, &mut self.rendered, path_segment_escape);
        // Neighbouring events usually share a file: compare before hashing.
        match current {
            Some(slot) if self.files[slot].path == self.rendered => slot,
            _ => {
                // Moved out and back (no copy) so `slot_for` may borrow `self`.
                let path = std::mem::take(&mut self.rendered);
                let slot = self.slot_for(&path);
                self.rendered = path;
                slot
            }
        }
    }

    /// The files of the current batch with their documents.
    pub(crate) fn files(&self) -> &[PendingFile] {
        &self.files[..self.used]
    }

    /// The bytes its document buffers hold on to.
    pub(crate) fn capacity(&self) -> usize {
        self.files.iter().map(|file| file.lines.capacity()).sum()
    }

    fn clear(&mut self) {
        // Keep what the last batch needed, so a steady spread of files
        // allocates nothing, but free the excess of an unusually wide batch.
        self.files.truncate(self.used.max(SPARE_BUFFERS));
        self.used = 0;
        self.by_path.clear();
    }

    /// The buffer of `path` in the current batch, taking a spare for a path
    /// the batch has not used yet.
    fn slot_for(&mut self, path: &str) -> usize {
        if let Some(&slot) = self.by_path.get(path) {
            return slot;
        }
        let slot = self.used;
        if slot == self.files.len() {
            self.files.push(PendingFile::default());
        }
        let file = &mut self.files[slot];
        file.path.clear();
        file.path.push_str(path);
        file.lines.clear();
        file.events.clear();
        self.by_path.insert(path.to_owned(), slot);
        self.used += 1;
        slot
    }
}

/// Appends `event`'s document and a newline; on failure leaves `lines` as it was.
fn push_line(documents: &mut DocumentWriter, lines: &mut Vec<u8>, event: &Event) -> Result<(), FileOutputError> {
    let start = lines.len();
    if let Err(error) = documents.write(event, lines) {
        lines.truncate(start);
        return Err(FileOutputError::Encode {
            id: event.id.clone(),
            error,
        });
    }
    lines.push(b'\n');
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;
    use eventstash_plugin_api::Format;

    fn event(kind: &str, id: &str) -> Event {
        let data = Bytes::from_static(br#"{"n":1}"#);
        Event::new(Format::Json, data, kind.into(), id.into(), chrono::Utc::now())
    }

    /// The `id` of every JSON line in `lines`, in order.
    pub(crate) fn ids(lines: &[u8]) -> Vec<String> {
        lines
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                let doc: serde_json::Value = serde_json::from_slice(line).unwrap();
                doc["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[test]
    fn groups_documents_by_rendered_path_in_batch_order() {
        let template = FieldTemplate::parse("out/%{index}.jsonl").unwrap();
        let batch = OutputBatch::from(vec![event("a", "1"), event("b", "2"), event("a", "3"), event("a", "4")]);
        let mut buffers = BatchBuffers::default();
        buffers.encode(&template, &batch).unwrap();
        let files = buffers.files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "out/a.jsonl");
        assert_eq!(ids(&files[0].lines), ["1", "3", "4"]);
        assert_eq!(files[0].events, [0, 2, 3]);
        assert_eq!(files[1].path, "out/b.jsonl");
        assert_eq!(ids(&files[1].lines), ["2"]);
        assert_eq!(files[1].events, [1]);
    }

    #[test]
    fn neighbours_of_one_kind_part_when_the_path_names_another_field() {
        let template = FieldTemplate::parse("out/%{index}/%{id}.jsonl").unwrap();
        let batch = OutputBatch::from(vec![event("a", "1"), event("a", "2"), event("a", "2")]);
        let mut buffers = BatchBuffers::default();
        buffers.encode(&template, &batch).unwrap();
        let files = buffers.files();
        assert_eq!(files.len(), 2);
        assert_eq!(
            (files[0].path.as_str(), files[0].events.as_slice()),
            ("out/a/1.jsonl", &[0][..])
        );
        assert_eq!(
            (files[1].path.as_str(), files[1].events.as_slice()),
            ("out/a/2.jsonl", &[1, 2][..])
        );
    }

    #[test]
    fn a_new_batch_replaces_the_previous_one() {
        let template = FieldTemplate::parse("out/%{index}.jsonl").unwrap();
        let mut buffers = BatchBuffers::default();
        let first = OutputBatch::from(vec![event("a", "1"), event("b", "2")]);
        buffers.encode(&template, &first).unwrap();
        let second = OutputBatch::from(vec![event("b", "3")]);
        buffers.encode(&template, &second).unwrap();
        let files = buffers.files();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "out/b.jsonl");
        assert_eq!(ids(&files[0].lines), ["3"]);
        assert_eq!(files[0].events, [0]);
    }

    #[test]
    fn a_constant_template_puts_everything_in_one_file() {
        let template = FieldTemplate::parse("all.jsonl").unwrap();
        let batch = OutputBatch::from(vec![event("a", "1"), event("b", "2")]);
        let mut buffers = BatchBuffers::default();
        buffers.encode(&template, &batch).unwrap();
        assert_eq!(buffers.files().len(), 1);
        assert_eq!(buffers.files()[0].path, "all.jsonl");
        assert_eq!(ids(&buffers.files()[0].lines), ["1", "2"]);
        assert_eq!(buffers.files()[0].events, [0, 1]);
    }
}
