//! The index template the output installs before its first write, as
//! Logstash's `manage_template` does.
//!
//! The file's shape picks the API: a legacy template (`index_patterns` with
//! `settings`/`mappings` at the top, as HFXEventStash's `template.json`) goes
//! to `_template/<name>`, a composable one (`template: {...}` at the top) to
//! `_index_template/<name>`. The file is read and checked when the output is
//! built; the cluster sees it only at the first write.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;

use crate::error::ElasticsearchOutputError;

/// Which of Elasticsearch's two template APIs a template file is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplateApi {
    /// `_template`: deprecated since Elasticsearch 7.8, still what
    /// HFXEventStash's Logstash installed.
    Legacy,
    /// `_index_template`: composable templates.
    Composable,
}

impl TemplateApi {
    /// Tells the API from the top-level keys of a template document.
    pub(crate) fn detect(document: &Value) -> Result<TemplateApi, &'static str> {
        let Value::Object(top) = document else {
            return Err("is not a JSON object");
        };
        match top.get("template") {
            // Composable: `{"index_patterns": [...], "template": {"settings", "mappings"}}`.
            Some(Value::Object(_)) => Ok(TemplateApi::Composable),
            // Elasticsearch 5 wrote the index pattern as `"template": "evt-*"`.
            Some(Value::String(_)) => Ok(TemplateApi::Legacy),
            Some(_) => Err("has a `template` key that is neither an object nor a pattern"),
            None if top.contains_key("index_patterns") => Ok(TemplateApi::Legacy),
            None => Err("is not an index template: it has neither `index_patterns` nor `template`"),
        }
    }

    /// The API path of the template `name`.
    pub(crate) fn path(self, name: &str) -> String {
        match self {
            TemplateApi::Legacy => format!("_template/{name}"),
            TemplateApi::Composable => format!("_index_template/{name}"),
        }
    }
}

/// A checked template file, ready to install.
#[derive(Debug, Clone)]
pub(crate) struct IndexTemplate {
    /// The name it is installed under (`template_name`).
    pub(crate) name: String,
    /// The API its shape calls for.
    pub(crate) api: TemplateApi,
    /// The file's bytes, sent as they are.
    pub(crate) body: Bytes,
    /// Replace an installed template of the same name.
    pub(crate) overwrite: bool,
    /// The file, for messages.
    pub(crate) source: PathBuf,
}

impl IndexTemplate {
    /// Reads and checks the template file at `path`.
    pub(crate) fn load(path: &Path, name: &str, overwrite: bool) -> Result<IndexTemplate, ElasticsearchOutputError> {
        let body = std::fs::read(path).map_err(|error| ElasticsearchOutputError::ReadFile {
            key: "template",
            path: path.to_owned(),
            error,
        })?;
        let problem = |problem: String| ElasticsearchOutputError::TemplateFile {
            path: path.to_owned(),
            problem,
        };
        let document: Value =
            serde_json::from_slice(&body).map_err(|error| problem(format!("is not valid JSON: {error}")))?;
        let api = TemplateApi::detect(&document).map_err(|reason| problem(reason.to_owned()))?;
        Ok(IndexTemplate {
            name: name.to_owned(),
            api,
            body: Bytes::from(body),
            overwrite,
            source: path.to_owned(),
        })
    }

    /// The template's API path.
    pub(crate) fn path(&self) -> String {
        self.api.path(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hfx_template_is_legacy() {
        let hfx = json!({
            "index_patterns": ["evt-*"],
            "settings": {"index": {"number_of_shards": 1}},
            "mappings": {"properties": {"format": {"type": "keyword"}}}
        });
        assert_eq!(TemplateApi::detect(&hfx), Ok(TemplateApi::Legacy));
        assert_eq!(TemplateApi::Legacy.path("evt"), "_template/evt");
    }

    #[test]
    fn a_template_object_at_the_top_is_composable() {
        let composable = json!({
            "index_patterns": ["evt-*"],
            "priority": 200,
            "template": {"settings": {}, "mappings": {}}
        });
        assert_eq!(TemplateApi::detect(&composable), Ok(TemplateApi::Composable));
        assert_eq!(TemplateApi::Composable.path("evt"), "_index_template/evt");
    }

    #[test]
    fn elasticsearch_5_pattern_key_is_legacy() {
        let old = json!({"template": "evt-*", "mappings": {}});
        assert_eq!(TemplateApi::detect(&old), Ok(TemplateApi::Legacy));
    }

    #[test]
    fn other_documents_are_not_templates() {
        assert_eq!(TemplateApi::detect(&json!([1, 2])), Err("is not a JSON object"));
        let untyped = TemplateApi::detect(&json!({"mappings": {}})).unwrap_err();
        assert!(untyped.contains("neither `index_patterns` nor `template`"), "{untyped}");
        let odd = TemplateApi::detect(&json!({"template": 3})).unwrap_err();
        assert!(odd.contains("`template` key"), "{odd}");
    }

    #[test]
    fn the_shipped_template_loads_as_legacy() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/evt.json");
        let template = IndexTemplate::load(&path, "evt", false).unwrap();
        assert_eq!(template.api, TemplateApi::Legacy);
        assert_eq!(template.path(), "_template/evt");
    }
}
