//! What a `[[filters]] type = "protobuf"` table says.

use serde::Deserialize;

use crate::filter::{ProtoDecoder, ProtobufFilter};
use crate::proto_set::{ProtoSet, ProtoSetError, ProtoSource};

/// How JSON field names are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum JsonNames {
    /// lowerCamelCase, the proto3 JSON mapping (and protobufjs) default.
    #[default]
    Camel,
    /// The names as written in the `.proto` file.
    Proto,
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
    /// Also reload when a `.proto` file under the include directories
    /// changes on disk (inotify), not only on SIGHUP.
    #[serde(default)]
    pub watch: bool,
}

fn default_protos() -> String {
    std::env::var("PROTOS_GLOB")
        .ok()
        .filter(|glob| !glob.is_empty())
        .unwrap_or_else(|| "protos/**/*.proto".to_owned())
}

impl ProtobufFilterConfig {
    /// Compiles the proto files; fails if none match or any does not compile.
    pub fn build(self) -> Result<ProtobufFilter, ProtoSetError> {
        let source = ProtoSource::new(self.protos, self.include)?;
        let set = ProtoSet::load(&source)?;
        ProtobufFilter::new(ProtoDecoder::new(source, set, self.json_names), self.watch)
    }
}
