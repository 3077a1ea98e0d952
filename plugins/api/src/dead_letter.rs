//! The dead-letter file: where an output puts events it rejects for good
//! (a mapping error, an item too large), with the reason, instead of
//! dropping them. One JSON line per event:
//! `{"@timestamp":..., "output":..., "reason":..., "event":{document}}`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::event::Event;
use crate::metrics::PluginContext;
use crate::template::path_segment_escape;

/// Why dead letters could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write dead letters to {path}: {source}")]
pub struct DeadLetterError {
    /// The dead-letter file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// An append-only JSON-lines file of rejected events, synced on every write.
#[derive(Debug, Clone)]
pub struct DeadLetterFile {
    path: PathBuf,
    /// Which output rejected the events.
    output: String,
    /// Opened on first use, so an output that never rejects creates nothing.
    file: Arc<Mutex<Option<File>>>,
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    #[serde(rename = "@timestamp")]
    at: String,
    output: &'a str,
    reason: &'a str,
    event: &'a Event,
}

impl DeadLetterFile {
    /// A dead-letter file at `path` for the output `output`.
    pub fn new(path: impl Into<PathBuf>, output: impl Into<String>) -> DeadLetterFile {
        DeadLetterFile {
            path: path.into(),
            output: output.into(),
            file: Arc::new(Mutex::new(None)),
        }
    }

    /// The dead-letter file of an output: `configured` if set (and not
    /// empty), else `data/dead_letter/<pipeline>/<output id>.jsonl`, the ids
    /// made file-name safe (`file#0` → `file_0`), one directory per pipeline.
    pub fn for_output(configured: Option<&Path>, ctx: &PluginContext) -> DeadLetterFile {
        let path = match configured.filter(|path| !path.as_os_str().is_empty()) {
            Some(path) => path.to_path_buf(),
            None => {
                let (mut pipeline, mut plugin) = (String::new(), String::new());
                path_segment_escape(&ctx.pipeline, &mut pipeline);
                path_segment_escape(&ctx.plugin, &mut plugin);
                PathBuf::from("data/dead_letter")
                    .join(pipeline)
                    .join(format!("{plugin}.jsonl"))
            }
        };
        DeadLetterFile::new(path, ctx.plugin.clone())
    }

    /// Where the dead letters go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `rejected` (event and reason) and syncs the file. Returns once
    /// they are on disk: only then may the events count as finished.
    pub async fn write(&self, rejected: &[(&Event, String)]) -> Result<(), DeadLetterError> {
        if rejected.is_empty() {
            return Ok(());
        }
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut lines = Vec::new();
        for (event, reason) in rejected {
            let letter = DeadLetter {
                at: at.clone(),
                output: &self.output,
                reason,
                event,
            };
            serde_json::to_writer(&mut lines, &letter).map_err(|e| self.error(std::io::Error::other(e)))?;
            lines.push(b'\n');
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.append(&lines))
            .await
            .map_err(|e| self.error(std::io::Error::other(e)))?
    }

    fn append(&self, lines: &[u8]) -> Result<(), DeadLetterError> {
        let mut guard = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.error(e))?;
            *guard = Some(file);
        }
        let file = guard.as_mut().expect("opened above");
        let written = file.write_all(lines).and_then(|()| file.sync_data());
        if let Err(error) = written {
            // Reopen next time rather than trusting a handle that failed.
            *guard = None;
            return Err(self.error(error));
        }
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> DeadLetterError {
        DeadLetterError {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Format;
    use bytes::Bytes;

    #[tokio::test]
    async fn writes_one_line_per_event_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let dead = DeadLetterFile::new(dir.path().join("dlq/es.jsonl"), "elasticsearch#0");
        let event = Event::new(
            Format::Json,
            Bytes::from_static(b"{\"a\":1}"),
            "k".into(),
            "e1".into(),
            chrono::Utc::now(),
        );
        dead.write(&[(&event, "mapper_parsing_exception".into())])
            .await
            .unwrap();
        dead.write(&[(&event, "again".into())]).await.unwrap();
        let text = std::fs::read_to_string(dead.path()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "mapper_parsing_exception");
        assert_eq!(lines[0]["output"], "elasticsearch#0");
        assert_eq!(lines[0]["event"]["id"], "e1");
        assert_eq!(lines[0]["event"]["data"]["a"], 1);
    }

    #[tokio::test]
    async fn an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let dead = DeadLetterFile::new(dir.path().join("file/dlq.jsonl"), "o");
        let event = Event::new(
            Format::Json,
            Bytes::from_static(b"1"),
            "k".into(),
            "e".into(),
            chrono::Utc::now(),
        );
        let error = dead.write(&[(&event, "r".into())]).await.unwrap_err();
        // The error names the file it could not write, for the operator.
        assert_eq!(error.path, dir.path().join("file/dlq.jsonl"), "{error}");
        assert!(error.to_string().contains("file/dlq.jsonl"), "{error}");
    }
}
