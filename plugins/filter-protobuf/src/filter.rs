//! The running filter: decodes PROTOBUF events, reloads its proto set.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use eventstash_plugin_api::{BoxError, Event, Filter, Payload, PluginContext};
use metrics::{Counter, counter};
use prost_reflect::SerializeOptions;
use tracing::{debug, info, warn};

use crate::config::{JsonNames, JsonShape};
use crate::decode::{BatchDecoder, DecodeError, FallbackJson};
use crate::nesting::{MaxDepth, NestingWalker};
use crate::proto_set::{ProtoSet, ProtoSetError, ProtoSource};
use crate::transcode::Transcoder;
use crate::transcode_schema::Fallback;
use crate::watch::ProtoWatcher;

/// Kinds remembered for the one-warning-per-kind rule; past this, unknown
/// kinds are only logged at DEBUG, so a producer sending random kinds
/// cannot grow memory.
const WARNED_KINDS_LIMIT: usize = 1024;

/// Payloads the direct transcoder left to prost-reflect, by reason (see
/// `transcode_schema::Fallback`).
const FALLBACKS: &str = "eventstash_protobuf_fallbacks_total";

/// Decodes PROTOBUF payloads with the current proto set, and reloads it.
pub(crate) struct ProtoDecoder {
    source: ProtoSource,
    /// The current set; swapped whole by `reload`, read once per batch.
    set: RwLock<Arc<ProtoSet>>,
    options: SerializeOptions,
    /// JSON names as written in the `.proto` files (`json_names = "proto"`).
    proto_names: bool,
    /// Canonical JSON or protobufjs' `toJSON()` shape (`json`).
    shape: JsonShape,
    /// Payloads nesting deeper are kept undecoded: the stack stays bounded.
    max_depth: MaxDepth,
    /// Kinds already warned about since the last reload.
    warned: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for ProtoDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtoDecoder")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ProtoDecoder {
    pub(crate) fn new(
        source: ProtoSource,
        set: ProtoSet,
        json_names: JsonNames,
        shape: JsonShape,
        max_depth: MaxDepth,
    ) -> ProtoDecoder {
        let options = SerializeOptions::new()
            .use_proto_field_name(json_names == JsonNames::Proto)
            .skip_default_fields(true)
            .stringify_64_bit_integers(true)
            .use_enum_numbers(false);
        ProtoDecoder {
            source,
            set: RwLock::new(Arc::new(set)),
            options,
            proto_names: json_names == JsonNames::Proto,
            shape,
            max_depth,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The proto set in use.
    pub(crate) fn current(&self) -> Arc<ProtoSet> {
        self.set.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn decode_event(&self, decoder: &mut BatchDecoder<'_>, event: &mut Event) {
        let Payload::Protobuf(bytes) = &event.payload else {
            return;
        };
        match decoder.decode_to_json(&event.kind, bytes) {
            Ok(json) => event.payload = Payload::Json(json),
            Err(error) => {
                self.report(&event.kind, &error);
                event.payload = Payload::InvalidProto(bytes.clone());
            }
        }
    }

    /// One warning per kind, then DEBUG: never a log line per event.
    fn report(&self, kind: &str, error: &DecodeError) {
        let mut warned = self.warned.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned.len() < WARNED_KINDS_LIMIT && warned.insert(kind.to_owned()) {
            warn!(%kind, %error, "protobuf events of this kind are kept undecoded with invalidProto (warned once per kind)");
        } else {
            debug!(%kind, %error, "protobuf event kept undecoded");
        }
    }

    /// Decodes the batch; returns how many payloads each
    /// [`Fallback`] reason left to prost-reflect.
    pub(crate) fn apply(&self, events: &mut [Event]) -> [u64; Fallback::ALL.len()] {
        let set = self.current();
        let mut transcoder = Transcoder::new(&set.transcode, self.proto_names, self.max_depth.get());
        let json = match self.shape {
            JsonShape::Canonical => FallbackJson::Canonical(&self.options),
            JsonShape::Protobufjs => {
                transcoder = transcoder.with_protobufjs(&set.schema);
                FallbackJson::Protobufjs {
                    proto_names: self.proto_names,
                }
            }
        };
        let mut decoder = BatchDecoder::new(&set, json, transcoder, NestingWalker::new(self.max_depth));
        for event in events {
            self.decode_event(&mut decoder, event);
        }
        decoder.fallbacks
    }

    /// Compiles the files again; on error the current set stays.
    pub(crate) fn reload(&self) -> Result<(), ProtoSetError> {
        let set = ProtoSet::load(&self.source)?;
        let (files, messages) = (set.files.len(), set.pool.all_messages().count());
        *self.set.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(set);
        self.warned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        info!(files, messages, "proto files reloaded");
        Ok(())
    }

    /// Where the files come from, for the watcher.
    pub(crate) fn source(&self) -> &ProtoSource {
        &self.source
    }
}

/// The protobuf filter: a decoder, and optionally a watcher that reloads it
/// when `.proto` files change on disk.
#[derive(Debug)]
pub struct ProtobufFilter {
    decoder: Arc<ProtoDecoder>,
    /// `watch = true`: the watcher is started with the pipeline
    /// ([`Filter::start`]), never by building (`validate`).
    watch: bool,
    /// Kept alive for as long as the filter; dropping it stops the watch.
    watcher: Mutex<Option<ProtoWatcher>>,
    /// The fallback counter of each [`Fallback::ALL`] reason, labelled with
    /// `pipeline` and `plugin` once [`ProtobufFilter::in_context`] names them.
    fallbacks: Vec<Counter>,
}

impl ProtobufFilter {
    pub(crate) fn new(decoder: ProtoDecoder, watch: bool) -> Result<ProtobufFilter, ProtoSetError> {
        Ok(ProtobufFilter {
            decoder: Arc::new(decoder),
            watch,
            watcher: Mutex::new(None),
            fallbacks: fallback_counters(&[]),
        })
    }

    /// The filter, its metrics labelled with its pipeline and id.
    pub fn in_context(mut self, context: &PluginContext) -> ProtobufFilter {
        self.fallbacks = fallback_counters(&[
            ("pipeline", context.pipeline.clone()),
            ("plugin", context.plugin.clone()),
        ]);
        self
    }

    /// Whether the `.proto` files are being watched.
    pub fn is_watching(&self) -> bool {
        self.lock_watcher().is_some()
    }

    fn lock_watcher(&self) -> std::sync::MutexGuard<'_, Option<ProtoWatcher>> {
        self.watcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The proto set in use.
    pub fn current(&self) -> Arc<ProtoSet> {
        self.decoder.current()
    }
}

/// The fallback counters, one per [`Fallback::ALL`] reason, registered once
/// rather than looked up for every batch.
fn fallback_counters(labels: &[(&'static str, String)]) -> Vec<Counter> {
    Fallback::ALL
        .iter()
        .map(|reason| {
            let mut labels = labels.to_vec();
            labels.push(("reason", reason.label().to_owned()));
            counter!(FALLBACKS, &labels)
        })
        .collect()
}

impl Filter for ProtobufFilter {
    fn apply(&self, events: &mut [Event]) {
        let fallbacks = self.decoder.apply(events);
        for (counter, &count) in self.fallbacks.iter().zip(&fallbacks) {
            if count > 0 {
                counter.increment(count);
            }
        }
    }

    /// Starts the watcher (`watch = true`); starting twice starts one.
    fn start(&self) -> Result<(), BoxError> {
        let mut watcher = self.lock_watcher();
        if self.watch && watcher.is_none() {
            *watcher = Some(ProtoWatcher::start(&self.decoder)?);
        }
        Ok(())
    }

    fn reload(&self) -> Result<(), BoxError> {
        Ok(self.decoder.reload()?)
    }
}
