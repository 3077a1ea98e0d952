//! Finding and compiling the `.proto` files into one descriptor pool.

use std::path::{Component, Path, PathBuf};

use prost_reflect::DescriptorPool;

use crate::transcode_schema::TranscodeSchema;
use crate::wire_schema::WireSchema;

/// Why the filter cannot be built: its settings, or the proto files.
#[derive(Debug, thiserror::Error)]
pub enum ProtoSetError {
    /// `max_depth` is out of range.
    #[error("`max_depth` = {value} is out of range: use 1 to {ceiling} (the default, prost's own nesting limit)")]
    MaxDepth {
        /// The value given.
        value: u32,
        /// The highest value accepted.
        ceiling: u32,
    },
    /// The `protos` glob is malformed.
    #[error("`protos` = {pattern:?} is not a valid glob: {reason}")]
    BadGlob {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// The glob matches nothing.
    #[error("`protos` = {pattern:?} matches no file (relative paths start at the working directory)")]
    NoFiles {
        /// The pattern.
        pattern: String,
    },
    /// A matched file is not under any include directory.
    #[error("{file} is not under any `include` directory ({include})")]
    NotIncluded {
        /// The file.
        file: PathBuf,
        /// The include directories.
        include: String,
    },
    /// The proto directories cannot be watched.
    #[error("cannot watch {dir} for .proto changes: {reason}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file does not compile.
    #[error("{detail}")]
    Compile {
        /// The file (or the one the error is in).
        file: String,
        /// The error, starting with the file, its line and column.
        detail: String,
    },
}

/// Where the proto files come from: a glob and the include directories.
#[derive(Debug, Clone)]
pub(crate) struct ProtoSource {
    pattern: String,
    include: Vec<PathBuf>,
}

/// A compiled set of proto files.
#[derive(Debug, Clone)]
pub struct ProtoSet {
    /// Every message of every file, and their imports.
    pub pool: DescriptorPool,
    /// The files compiled.
    pub files: Vec<PathBuf>,
    /// The pool's messages indexed for walks over the wire format.
    pub(crate) schema: WireSchema,
    /// The pool's messages and enums indexed for the transcoder.
    pub(crate) transcode: TranscodeSchema,
}

impl ProtoSource {
    pub(crate) fn new(pattern: String, include: Vec<String>) -> Result<ProtoSource, ProtoSetError> {
        glob::Pattern::new(&pattern).map_err(|e| ProtoSetError::BadGlob {
            pattern: pattern.clone(),
            reason: e.to_string(),
        })?;
        let include = if include.is_empty() {
            vec![fixed_prefix(&pattern)]
        } else {
            include.into_iter().map(PathBuf::from).collect()
        };
        Ok(ProtoSource { pattern, include })
    }

    /// The include directories: where changes to the files can come from.
    pub(crate) fn directories(&self) -> &[PathBuf] {
        &self.include
    }

    fn files(&self) -> Result<Vec<PathBuf>, ProtoSetError> {
        let bad = |reason: String| ProtoSetError::BadGlob {
            pattern: self.pattern.clone(),
            reason,
        };
        let mut files = Vec::new();
        for entry in glob::glob(&self.pattern).map_err(|e| bad(e.to_string()))? {
            let path = entry.map_err(|e| bad(e.to_string()))?;
            if path.is_file() && !crate::watch::is_configmap_internal(&path) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(ProtoSetError::NoFiles {
                pattern: self.pattern.clone(),
            });
        }
        Ok(files)
    }
}

impl ProtoSet {
    /// Finds and compiles the files of `source`.
    pub(crate) fn load(source: &ProtoSource) -> Result<ProtoSet, ProtoSetError> {
        let files = source.files()?;
        let compile_error = |error: protox::Error| ProtoSetError::Compile {
            file: error.file().unwrap_or("proto files").to_owned(),
            // protox's Debug form carries the line and column.
            detail: format!("{error:?}"),
        };
        let mut compiler = protox::Compiler::new(&source.include).map_err(compile_error)?;
        compiler.include_imports(true);
        for file in &files {
            if !source.include.iter().any(|dir| file.starts_with(dir)) {
                return Err(ProtoSetError::NotIncluded {
                    file: file.clone(),
                    include: source
                        .include
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            compiler.open_file(file).map_err(compile_error)?;
        }
        let pool = compiler.descriptor_pool();
        Ok(ProtoSet {
            schema: WireSchema::new(&pool),
            transcode: TranscodeSchema::new(&pool),
            pool,
            files,
        })
    }
}

/// The leading directories of a glob before its first wildcard:
/// `protos/**/*.proto` → `protos`; a plain file → its directory.
fn fixed_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    for component in Path::new(pattern).components() {
        let text = component.as_os_str().to_string_lossy();
        if text.contains(['*', '?', '[', '{']) {
            return if prefix.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                prefix
            };
        }
        prefix.push(component);
    }
    match Path::new(pattern).parent() {
        Some(parent) if !parent.as_os_str().is_empty() && parent.components().all(|c| c != Component::ParentDir) => {
            parent.to_owned()
        }
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_prefix_stops_at_the_first_wildcard() {
        assert_eq!(fixed_prefix("protos/**/*.proto"), PathBuf::from("protos"));
        assert_eq!(
            fixed_prefix("/etc/app/protos/*.proto"),
            PathBuf::from("/etc/app/protos")
        );
        assert_eq!(fixed_prefix("*.proto"), PathBuf::from("."));
        assert_eq!(fixed_prefix("protos/a.proto"), PathBuf::from("protos"));
    }
}
