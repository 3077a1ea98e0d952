//! `eventstash queue inspect`: a persisted queue read without changing it.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::config::PipelineConfig;
use crate::queue_log::{QueueLog, QueueLogError};

/// A persisted queue that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot inspect {}: {source}", path.display())]
pub struct InspectError {
    /// The queue directory.
    path: PathBuf,
    /// Why.
    source: QueueLogError,
}

/// `eventstash queue inspect`: the depth and per-output positions of a
/// pipeline's persisted queue, read without changing anything. `None` for a
/// pipeline with the memory queue.
pub fn inspect_queue(config: &PipelineConfig) -> Result<Option<String>, InspectError> {
    let Some(settings) = &config.persisted else {
        return Ok(None);
    };
    let outputs: Vec<String> = config.outputs.iter().map(|o| o.id.clone()).collect();
    let inspection = QueueLog::inspect(&settings.path, &outputs).map_err(|source| InspectError {
        path: settings.path.clone(),
        source,
    })?;
    let stats = &inspection.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {:?}: queue {}\n  unfinished: {} events in {} records, {} bytes\n  on disk: {} segment(s), {} bytes; next seq {}",
        config.id,
        settings.path.display(),
        stats.unfinished.events,
        stats.unfinished.records,
        stats.unfinished.bytes,
        stats.segments,
        stats.disk_bytes,
        stats.next_seq
    );
    for output in &stats.outputs {
        let _ = writeln!(
            out,
            "  output {}: finished up to seq {}, pending {} events in {} records",
            output.id, output.watermark, output.pending.events, output.pending.records
        );
    }
    for skipped in &inspection.skipped {
        let _ = writeln!(out, "  damaged: {skipped}");
    }
    if let Some(reset) = &inspection.progress_reset {
        let _ = writeln!(out, "  progress file unusable, everything would be replayed: {reset:?}");
    }
    Ok(Some(out))
}
