//! What a `[[filters]] type = "protobuf"` table says.

use serde::Deserialize;

use crate::filter::{ProtoDecoder, ProtobufFilter};
use crate::nesting::MaxDepth;
use crate::proto_set::{ProtoSet, ProtoSetError, ProtoSource};

/// How JSON field names are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum JsonNames {
    /// camelCase: protoc's `json_name` in the canonical shape, protobufjs'
    /// own camelCase of the `.proto` name in its shape.
    #[default]
    Camel,
    /// The names as written in the `.proto` file.
    Proto,
}

/// Which JSON shape messages are written in.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum JsonShape {
    /// What HFXEventStash stored: protobufjs' `toJSON()` after `decode`.
    /// Well-known types are objects of their fields (`Timestamp` as
    /// `{"seconds":"…","nanos":…}`) but for `Any`, which is its message's
    /// fields and `"@type"`; a field sent with its default value is written;
    /// `float` is printed as the double it widens to.
    #[default]
    Protobufjs,
    /// The proto3 canonical JSON mapping (prost-reflect): `Timestamp` as an
    /// RFC 3339 string, `Struct` as a plain object, wrappers as their value.
    Canonical,
}

/// The `[[filters]]` table of a protobuf filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtobufFilterConfig {
    /// Glob of the `.proto` files to load; HFXEventStash's `PROTOS_GLOB`.
    #[serde(default = "default_protos")]
    pub protos: String,
    /// Directories imports are resolved against; default: the glob's fixed
    /// leading directory (`protos` for `protos/**/*.proto`).
    #[serde(default)]
    pub include: Vec<String>,
    /// Field naming in the JSON.
    #[serde(default)]
    pub json_names: JsonNames,
    /// The JSON shape: `"protobufjs"` (HFXEventStash's) or `"canonical"`.
    #[serde(default)]
    pub json: JsonShape,
    /// Also reload when a `.proto` file under the include directories
    /// changes on disk (inotify), not only on SIGHUP.
    #[serde(default)]
    pub watch: bool,
    /// How deep messages may nest (through `Any`, `Struct`/`Value`,
    /// recursive messages, groups) before an event is kept undecoded with
    /// `invalidProto`; 1 to 100. Bounds the decoder's stack, time and memory.
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
}

/// The engine's pipeline files default `protos` to
/// `"${PROTOS_GLOB:protos/**/*.proto}"` before this is consulted, so the
/// environment is read by interpolation only.
fn default_protos() -> String {
    "protos/**/*.proto".to_owned()
}

fn default_max_depth() -> u32 {
    MaxDepth::CEILING
}

impl ProtobufFilterConfig {
    /// Checks `max_depth` and compiles the proto files; fails if none match
    /// or any does not compile.
    pub fn build(self) -> Result<ProtobufFilter, ProtoSetError> {
        let max_depth = MaxDepth::new(self.max_depth).ok_or(ProtoSetError::MaxDepth {
            value: self.max_depth,
            ceiling: MaxDepth::CEILING,
        })?;
        let source = ProtoSource::new(self.protos, self.include)?;
        let set = ProtoSet::load(&source)?;
        let decoder = ProtoDecoder::new(source, set, self.json_names, self.json, max_depth);
        ProtobufFilter::new(decoder, self.watch)
    }
}
