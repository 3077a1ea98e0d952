//! What a `type = "elasticsearch"` table in a pipeline file says, and its
//! check.
//!
//! The struct is plain serde data with its defaults in one `Default` impl;
//! [`ElasticsearchOutputConfig::build`] reads the local files it names (the
//! index template, the CA certificate), checks every option and builds the
//! [`ElasticsearchOutput`] without contacting the cluster, so `eventstash
//! validate` works on any machine.

use std::path::PathBuf;
use std::time::Duration;

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::Url;
use eventstash_plugin_api::{Backoff, DeadLetterFile, FieldTemplate, PluginContext};
use serde::Deserialize;

use crate::bulk::{BulkAction, BulkEncoder};
use crate::cluster::{Cluster, ClusterSettings};
use crate::error::ElasticsearchOutputError;
use crate::index_template::IndexTemplate;
use crate::sink::ElasticsearchOutput;

/// The options of the Elasticsearch output.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchOutputConfig {
    /// The nodes to send requests to, round-robin: `http://` or `https://`
    /// URLs, optionally with a path prefix for a cluster behind a proxy. An
    /// entry may hold several URLs separated by commas.
    pub hosts: Vec<String>,
    /// The index of each event: a field template such as HFXEventStash's
    /// `evt-%{index}-%{+xxxx-MM-ww}` (week-based year, month, ISO week).
    pub index: String,
    /// The `_id` of each event's document. The event id by default, so a
    /// retried or replayed event overwrites itself instead of duplicating.
    pub document_id: String,
    /// The bulk action: `index` (create or overwrite) or `create` (keep the
    /// stored document; a conflict counts as already stored).
    pub action: BulkAction,
    /// Install `template` before the first write. Defaults to true when
    /// `template` is set; an `Option` only because of that dependency.
    pub manage_template: Option<bool>,
    /// An index template JSON file, legacy (`index_patterns` with
    /// `settings`/`mappings`) or composable (`template: {...}`).
    pub template: Option<PathBuf>,
    /// The name the template is installed under.
    pub template_name: String,
    /// Replace a template of that name that is already installed.
    pub template_overwrite: bool,
    /// User for basic authentication; needs `password`.
    pub user: Option<String>,
    /// Password for basic authentication.
    pub password: Option<String>,
    /// A file holding the password (a mounted secret); its trailing line
    /// break is not part of it. Instead of `password`.
    pub password_file: Option<PathBuf>,
    /// API key, either `id:key` or the base64 form Kibana shows.
    pub api_key: Option<String>,
    /// A file holding the API key. Instead of `api_key`.
    pub api_key_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the cluster's certificate, trusted
    /// in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. For diagnosis only.
    pub tls_skip_verify: bool,
    /// Gzip request bodies: less network, more CPU.
    pub gzip: bool,
    /// The longest one request may take, connecting included.
    pub request_timeout_ms: u64,
    /// Where rejected events go; default
    /// `data/dead_letter/<pipeline>/<output id>.jsonl`.
    pub dead_letter_path: Option<PathBuf>,
    /// First wait before a retry; it doubles at each retry of a batch.
    pub retry_initial_backoff_ms: u64,
    /// Longest wait between retries.
    pub retry_max_backoff_ms: u64,
    /// How often a continuing outage is logged again (with the number of
    /// failures held back since the last line).
    pub failure_log_interval_ms: u64,
}

impl Default for ElasticsearchOutputConfig {
    fn default() -> Self {
        ElasticsearchOutputConfig {
            hosts: vec!["http://localhost:9200".to_owned()],
            index: "evt-%{index}-%{+xxxx-MM-ww}".to_owned(),
            document_id: "%{id}".to_owned(),
            action: BulkAction::Index,
            manage_template: None,
            template: None,
            template_name: "evt".to_owned(),
            template_overwrite: false,
            user: None,
            password: None,
            password_file: None,
            api_key: None,
            api_key_file: None,
            ca_file: None,
            tls_skip_verify: false,
            gzip: false,
            request_timeout_ms: 60_000,
            dead_letter_path: None,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 10_000,
            failure_log_interval_ms: 10_000,
        }
    }
}

impl std::fmt::Debug for ElasticsearchOutputConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs and `validate` output.
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("ElasticsearchOutputConfig")
            .field("hosts", &self.hosts)
            .field("index", &self.index)
            .field("document_id", &self.document_id)
            .field("action", &self.action)
            .field("manage_template", &self.manage_template)
            .field("template", &self.template)
            .field("template_name", &self.template_name)
            .field("template_overwrite", &self.template_overwrite)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("password_file", &self.password_file)
            .field("api_key", &redacted(&self.api_key))
            .field("api_key_file", &self.api_key_file)
            .field("ca_file", &self.ca_file)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .field("gzip", &self.gzip)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("dead_letter_path", &self.dead_letter_path)
            .field("retry_initial_backoff_ms", &self.retry_initial_backoff_ms)
            .field("retry_max_backoff_ms", &self.retry_max_backoff_ms)
            .field("failure_log_interval_ms", &self.failure_log_interval_ms)
            .finish()
    }
}

/// A secret given as `key` or read from the file `file_key` names (without
/// its trailing line break); not both.
fn secret(
    key: &'static str,
    value: &Option<String>,
    file_key: &'static str,
    file: &Option<PathBuf>,
) -> Result<Option<String>, ElasticsearchOutputError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(invalid(
            file_key,
            format!("cannot be combined with `{key}`: choose one"),
        )),
        (Some(value), None) => Ok(Some(value.clone())),
        (None, None) => Ok(None),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|error| ElasticsearchOutputError::ReadFile {
                key: file_key,
                path: path.clone(),
                error,
            })?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                return Err(invalid(file_key, format!("{} is empty", path.display())));
            }
            Ok(Some(text.to_owned()))
        }
    }
}

impl ElasticsearchOutputConfig {
    /// Checks the options, reads the template and CA files and builds the
    /// output. Sends nothing to the cluster: the template is installed, and
    /// an unreachable cluster reported, at the first write.
    pub fn build(self, ctx: &PluginContext) -> Result<ElasticsearchOutput, ElasticsearchOutputError> {
        let config = self.normalized();
        config.build_normalized(ctx)
    }

    /// Reads values that come from variables the way operators mean them:
    /// an empty optional value is unset (`user = "${ES_USER:}"`), and a
    /// `hosts` entry may list several URLs separated by commas
    /// (`hosts = ["${ES_HOSTS}"]`).
    pub(crate) fn normalized(mut self) -> ElasticsearchOutputConfig {
        fn unset_if_empty<T: AsRef<std::ffi::OsStr>>(value: &mut Option<T>) {
            if value.as_ref().is_some_and(|v| v.as_ref().is_empty()) {
                *value = None;
            }
        }
        unset_if_empty(&mut self.template);
        unset_if_empty(&mut self.user);
        unset_if_empty(&mut self.password);
        unset_if_empty(&mut self.api_key);
        unset_if_empty(&mut self.password_file);
        unset_if_empty(&mut self.api_key_file);
        unset_if_empty(&mut self.ca_file);
        unset_if_empty(&mut self.dead_letter_path);
        self.hosts = self
            .hosts
            .iter()
            .flat_map(|entry| entry.split(','))
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(str::to_owned)
            .collect();
        self
    }

    fn build_normalized(self, ctx: &PluginContext) -> Result<ElasticsearchOutput, ElasticsearchOutputError> {
        let encoder = BulkEncoder::new(
            self.action,
            field_template("index", &self.index)?,
            field_template("document_id", &self.document_id)?,
        );
        let template = self.index_template()?;
        let backoff = self.backoff()?;
        let log_interval = positive_millis("failure_log_interval_ms", self.failure_log_interval_ms)?;
        let dead_letters = DeadLetterFile::for_output(self.dead_letter_path.as_deref(), ctx);
        let cluster = Cluster::new(self.cluster_settings()?)?;
        Ok(ElasticsearchOutput::new(
            ctx,
            cluster,
            encoder,
            template,
            dead_letters,
            backoff,
            log_interval,
        ))
    }

    /// How to reach the cluster: hosts, credentials, TLS, timeout.
    pub(crate) fn cluster_settings(&self) -> Result<ClusterSettings, ElasticsearchOutputError> {
        Ok(ClusterSettings {
            hosts: self.host_urls()?,
            credentials: self.credentials()?,
            certificates: self.certificate_validation()?,
            gzip: self.gzip,
            timeout: positive_millis("request_timeout_ms", self.request_timeout_ms)?,
        })
    }

    fn host_urls(&self) -> Result<Vec<Url>, ElasticsearchOutputError> {
        if self.hosts.is_empty() {
            return Err(invalid("hosts", "must list at least one URL".to_owned()));
        }
        self.hosts.iter().map(|host| host_url(host)).collect()
    }

    fn index_template(&self) -> Result<Option<IndexTemplate>, ElasticsearchOutputError> {
        let manage = self.manage_template.unwrap_or(self.template.is_some());
        let path = match (&self.template, manage) {
            (_, false) => return Ok(None),
            (Some(path), true) => path,
            (None, true) => {
                return Err(invalid(
                    "manage_template",
                    "is true but no `template` file is set".to_owned(),
                ));
            }
        };
        if self.template_name.is_empty()
            || self
                .template_name
                .contains(|c: char| c.is_whitespace() || "/\\?#%*,\"<>|".contains(c))
        {
            return Err(invalid(
                "template_name",
                "must be a non-empty name without spaces or any of / \\ ? # % * , \" < > |".to_owned(),
            ));
        }
        IndexTemplate::load(path, &self.template_name, self.template_overwrite).map(Some)
    }

    fn credentials(&self) -> Result<Option<Credentials>, ElasticsearchOutputError> {
        let password = secret("password", &self.password, "password_file", &self.password_file)?;
        let api_key = secret("api_key", &self.api_key, "api_key_file", &self.api_key_file)?;
        match (&self.user, &password, &api_key) {
            (None, None, None) => Ok(None),
            (Some(user), Some(password), None) => Ok(Some(Credentials::Basic(user.clone(), password.clone()))),
            (None, None, Some(key)) => Ok(Some(match key.split_once(':') {
                Some((id, secret)) => Credentials::ApiKey(id.to_owned(), secret.to_owned()),
                None => Credentials::EncodedApiKey(key.clone()),
            })),
            (Some(_), None, None) => Err(invalid("user", "needs `password`".to_owned())),
            (None, Some(_), None) => Err(invalid("password", "needs `user`".to_owned())),
            (_, _, Some(_)) => Err(invalid(
                "api_key",
                "cannot be combined with `user`/`password`: choose one".to_owned(),
            )),
        }
    }

    fn certificate_validation(&self) -> Result<CertificateValidation, ElasticsearchOutputError> {
        match (&self.ca_file, self.tls_skip_verify) {
            (None, false) => Ok(CertificateValidation::Default),
            (None, true) => Ok(CertificateValidation::None),
            (Some(_), true) => Err(invalid(
                "tls_skip_verify",
                "cannot be combined with `ca_file`: a CA is only useful when verifying".to_owned(),
            )),
            (Some(path), false) => {
                let pem = std::fs::read(path).map_err(|error| ElasticsearchOutputError::ReadFile {
                    key: "ca_file",
                    path: path.clone(),
                    error,
                })?;
                let certificate = Certificate::from_pem(&pem)
                    .map_err(|error| invalid("ca_file", format!("{}: {error}", path.display())))?;
                Ok(CertificateValidation::Full(certificate))
            }
        }
    }

    fn backoff(&self) -> Result<Backoff, ElasticsearchOutputError> {
        let initial = positive_millis("retry_initial_backoff_ms", self.retry_initial_backoff_ms)?;
        let max = positive_millis("retry_max_backoff_ms", self.retry_max_backoff_ms)?;
        if max < initial {
            return Err(invalid(
                "retry_max_backoff_ms",
                "must not be less than `retry_initial_backoff_ms`".to_owned(),
            ));
        }
        Ok(Backoff::new(initial, max))
    }
}

/// Parses one `hosts` entry. The path gets a trailing slash so that API
/// paths are appended to a proxy prefix instead of replacing its last part.
fn host_url(host: &str) -> Result<Url, ElasticsearchOutputError> {
    let mut url =
        Url::parse(host).map_err(|error| invalid("hosts", format!("entry `{host}` is not a URL: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(
            "hosts",
            format!("entry `{host}` must be an http:// or https:// URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid(
            "hosts",
            format!(
                "entry `{host}` must not carry a query, fragment or credentials \
                 (use `user`/`password` or `api_key`)"
            ),
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

pub(crate) fn field_template(key: &'static str, text: &str) -> Result<FieldTemplate, ElasticsearchOutputError> {
    if text.is_empty() {
        return Err(invalid(key, "must not be empty".to_owned()));
    }
    FieldTemplate::parse(text).map_err(|error| ElasticsearchOutputError::FieldTemplate { key, error })
}

fn positive_millis(key: &'static str, millis: u64) -> Result<Duration, ElasticsearchOutputError> {
    if millis == 0 {
        return Err(invalid(key, "must be at least 1".to_owned()));
    }
    Ok(Duration::from_millis(millis))
}

fn invalid(key: &'static str, problem: String) -> ElasticsearchOutputError {
    ElasticsearchOutputError::InvalidOption { key, problem }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx() -> PluginContext {
        PluginContext::new("main", "elasticsearch#0")
    }

    fn parse(json: &str) -> ElasticsearchOutputConfig {
        serde_json::from_str(json).unwrap()
    }

    fn build_error(json: &str) -> String {
        parse(json).build(&ctx()).unwrap_err().to_string()
    }

    #[test]
    fn an_empty_table_builds_with_hfx_defaults() {
        let config = parse("{}");
        assert_eq!(config.hosts, ["http://localhost:9200"]);
        assert_eq!(config.index, "evt-%{index}-%{+xxxx-MM-ww}");
        assert_eq!(config.document_id, "%{id}");
        assert_eq!(config.action, BulkAction::Index);
        assert_eq!(config.template_name, "evt");
        assert!(!config.template_overwrite);
        assert_eq!(
            DeadLetterFile::for_output(config.dead_letter_path.as_deref(), &ctx()).path(),
            Path::new("data/dead_letter/main/elasticsearch_0.jsonl")
        );
        assert!(config.build(&ctx()).is_ok());
    }

    #[test]
    fn empty_values_from_unset_variables_count_as_unset() {
        let config = parse(
            r#"{"user": "", "password": "", "api_key": "", "ca_file": "", "template": "",
                "dead_letter_path": "", "hosts": ["http://a:9200, http://b:9200", ""]}"#,
        )
        .normalized();
        assert!(config.credentials().unwrap().is_none());
        assert!(config.ca_file.is_none() && config.template.is_none());
        assert_eq!(config.hosts, ["http://a:9200", "http://b:9200"]);
        assert_eq!(
            DeadLetterFile::for_output(config.dead_letter_path.as_deref(), &ctx()).path(),
            Path::new("data/dead_letter/main/elasticsearch_0.jsonl")
        );
        assert!(config.build(&ctx()).is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = serde_json::from_str::<ElasticsearchOutputConfig>(r#"{"host": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("host"), "{error}");
    }

    #[test]
    fn hosts_must_be_http_urls() {
        assert!(build_error(r#"{"hosts": []}"#).contains("`hosts`"));
        assert!(build_error(r#"{"hosts": ["localhost:9200"]}"#).contains("http://"));
        assert!(build_error(r#"{"hosts": ["ftp://es:21"]}"#).contains("http://"));
        let error = build_error(r#"{"hosts": ["http://u:p@es:9200"]}"#);
        assert!(error.contains("credentials"), "{error}");
        assert_eq!(
            host_url("https://proxy:8443/es").unwrap().as_str(),
            "https://proxy:8443/es/"
        );
    }

    #[test]
    fn bad_field_templates_name_their_key() {
        assert!(build_error(r#"{"index": "evt-%{index"}"#).contains("`index`"));
        assert!(build_error(r#"{"document_id": "%{+qq}"}"#).contains("`document_id`"));
        assert!(build_error(r#"{"index": ""}"#).contains("`index`"));
    }

    #[test]
    fn manage_template_follows_template_and_needs_a_file() {
        let error = build_error(r#"{"manage_template": true}"#);
        assert!(error.contains("`manage_template`"), "{error}");
        let error = build_error(r#"{"template": "/nonexistent/evt.json"}"#);
        assert!(error.contains("/nonexistent/evt.json"), "{error}");
        // Not managed: the file is not even read.
        let config = parse(r#"{"template": "/nonexistent/evt.json", "manage_template": false}"#);
        assert!(config.build(&ctx()).is_ok());
    }

    #[test]
    fn the_template_file_must_be_a_template() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, "{not json").unwrap();
        let json = format!(r#"{{"template": {:?}}}"#, path.to_str().unwrap());
        assert!(build_error(&json).contains("JSON"), "{}", build_error(&json));
        std::fs::write(&path, r#"{"aliases": {}}"#).unwrap();
        assert!(build_error(&json).contains("index_patterns"));
        std::fs::write(&path, r#"{"index_patterns": ["evt-*"], "mappings": {}}"#).unwrap();
        assert!(parse(&json).build(&ctx()).is_ok());
        let bad_name = format!(
            r#"{{"template": {:?}, "template_name": "a/b"}}"#,
            path.to_str().unwrap()
        );
        assert!(build_error(&bad_name).contains("`template_name`"));
    }

    #[test]
    fn credentials_are_basic_or_api_key() {
        assert!(build_error(r#"{"user": "u"}"#).contains("`user`"));
        assert!(build_error(r#"{"password": "p"}"#).contains("`password`"));
        let both = build_error(r#"{"user": "u", "password": "p", "api_key": "k"}"#);
        assert!(both.contains("`api_key`"), "{both}");
        let config = parse(r#"{"api_key": "id:secret"}"#);
        assert!(matches!(
            config.credentials(),
            Ok(Some(Credentials::ApiKey(id, secret))) if id == "id" && secret == "secret"
        ));
        let config = parse(r#"{"api_key": "aWQ6c2VjcmV0"}"#);
        assert!(matches!(config.credentials(), Ok(Some(Credentials::EncodedApiKey(_)))));
        assert!(parse(r#"{"user": "u", "password": "p"}"#).build(&ctx()).is_ok());
    }

    #[test]
    fn secrets_may_come_from_files_and_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let config = parse(&format!(
            r#"{{"user": "u", "password_file": {:?}}}"#,
            file.display().to_string()
        ));
        assert!(matches!(
            config.credentials(),
            Ok(Some(Credentials::Basic(user, password))) if user == "u" && password == "s3cret"
        ));
        let both = parse(&format!(
            r#"{{"user": "u", "password": "p", "password_file": {:?}}}"#,
            file.display().to_string()
        ));
        let error = both.credentials().unwrap_err();
        assert!(
            matches!(
                error,
                ElasticsearchOutputError::InvalidOption {
                    key: "password_file",
                    ..
                }
            ),
            "{error}"
        );
        let missing = parse(r#"{"api_key_file": "/nonexistent/key"}"#);
        let error = missing.credentials().unwrap_err();
        assert!(
            matches!(&error, ElasticsearchOutputError::ReadFile { key: "api_key_file", path, .. }
                if path == std::path::Path::new("/nonexistent/key")),
            "{error}"
        );
        let shown = format!(
            "{:?}",
            parse(r#"{"user": "u", "password": "hunter2", "api_key": "id:key2"}"#)
        );
        assert!(!shown.contains("hunter2") && !shown.contains("key2"), "{shown}");
    }

    #[test]
    fn tls_options_are_checked() {
        let error = build_error(r#"{"ca_file": "/nonexistent/ca.pem"}"#);
        assert!(error.contains("`ca_file`"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let json = format!(r#"{{"ca_file": {:?}}}"#, path.to_str().unwrap());
        assert!(build_error(&json).contains("`ca_file`"));
        let both = format!(
            r#"{{"ca_file": {:?}, "tls_skip_verify": true}}"#,
            path.to_str().unwrap()
        );
        assert!(build_error(&both).contains("`tls_skip_verify`"));
        assert!(parse(r#"{"tls_skip_verify": true}"#).build(&ctx()).is_ok());
    }

    #[test]
    fn durations_must_be_positive_and_ordered() {
        assert!(build_error(r#"{"request_timeout_ms": 0}"#).contains("`request_timeout_ms`"));
        assert!(build_error(r#"{"failure_log_interval_ms": 0}"#).contains("`failure_log_interval_ms`"));
        let error = build_error(r#"{"retry_initial_backoff_ms": 500, "retry_max_backoff_ms": 100}"#);
        assert!(error.contains("`retry_max_backoff_ms`"), "{error}");
    }
}
