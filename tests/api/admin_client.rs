//! A client for the admin API in tests: every answer it receives is checked against the
//! schema the served OpenAPI document declares for that operation and status, so the
//! document cannot drift from what the handlers send.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestAppBuilder};

/// The bootstrap admin token the admin tests configure.
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// The app with a known bootstrap admin token.
pub fn admin_app(backend: Backend) -> TestAppBuilder {
    TestAppBuilder::new(backend).setting("admin.token", ADMIN_TOKEN)
}

/// An answer: its status and its body as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// Asserts the status and, for an error, the envelope's code; returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        if status >= 400 {
            let code = match status {
                400 => "bad_request",
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                413 => "payload_too_large",
                415 => "unsupported_media_type",
                422 => "validation_failed",
                _ => "",
            };
            assert_eq!(self.body["code"], code, "{}", self.body);
        }
        self.body
    }
}

/// The served OpenAPI document, and the checks of answers against it.
pub struct OpenApiDocument {
    document: Value,
}

impl OpenApiDocument {
    pub async fn fetch(app: &TestApp) -> OpenApiDocument {
        let response = app.get("/api/v1/openapi.json").await;
        assert_eq!(
            response.status(),
            200,
            "the document is served without a token"
        );
        OpenApiDocument {
            document: response.json().await.expect("the document is JSON"),
        }
    }

    /// The document's path template for a concrete path and method, literal paths first.
    fn template(&self, method: &Method, path: &str) -> Option<String> {
        let paths = self.document["paths"].as_object()?;
        let mut templates: Vec<&String> = paths.keys().collect();
        templates.sort_by_key(|t| t.matches('{').count());
        let method = method.as_str().to_lowercase();
        templates
            .into_iter()
            .find(|template| {
                matches_template(template, path) && paths[template.as_str()].get(&method).is_some()
            })
            .cloned()
    }

    /// Panics unless `answer` is declared for `method path` and matches its schema.
    pub fn check(&self, method: &Method, path: &str, answer: &Answer) {
        let path = path.split('?').next().unwrap_or(path);
        let template = self
            .template(method, path)
            .unwrap_or_else(|| panic!("{method} {path} is not in the OpenAPI document"));
        let operation = &self.document["paths"][&template][method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let declared = &operation["responses"][answer.status.as_str()];
        assert!(
            declared.is_object(),
            "{method} {template} answered {} which the document does not declare",
            answer.status
        );
        let Some(schema) = declared["content"]["application/json"]["schema"].as_object() else {
            assert!(
                answer.body.is_null(),
                "{method} {template} {} declares no body but sent {}",
                answer.status,
                answer.body
            );
            return;
        };
        let mut schema = Value::Object(schema.clone());
        schema["components"] = self.document["components"].clone();
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("the schema of {method} {template} is invalid: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&answer.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {} does not match its schema: {errors:?}\n{}",
            answer.status,
            answer.body
        );
    }
}

/// `/api/v1/rules/{id}` matches `/api/v1/rules/manual`; `{name}` of files spans slashes.
fn matches_template(template: &str, path: &str) -> bool {
    let pattern = template
        .split('/')
        .map(|segment| match segment {
            "{name}" => ".+".to_string(),
            s if s.starts_with('{') => "[^/]+".to_string(),
            s => regex::escape(s),
        })
        .collect::<Vec<_>>()
        .join("/");
    regex::Regex::new(&format!("^{pattern}$")).is_ok_and(|re| re.is_match(path))
}

/// Sends admin requests with a token and checks each answer against the document.
#[derive(Clone)]
pub struct AdminClient {
    pub address: String,
    pub token: Option<String>,
    client: reqwest::Client,
    document: Arc<OpenApiDocument>,
}

impl AdminClient {
    pub async fn new(app: &TestApp, token: Option<&str>) -> AdminClient {
        AdminClient {
            address: app.address.clone(),
            token: token.map(str::to_string),
            client: app.client.clone(),
            document: Arc::new(OpenApiDocument::fetch(app).await),
        }
    }

    /// The same client with another token.
    pub fn with_token(&self, token: Option<&str>) -> AdminClient {
        AdminClient {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        method: Method,
        path: &str,
    ) -> Answer {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.expect("the app answers");
        let status = response.status();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{method} {path} answered {status} with non-JSON ({e}): {bytes:?}")
            })
        };
        let answer = Answer { status, body };
        self.document.check(&method, path, &answer);
        answer
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> Answer {
        let request = self.client.get(self.url(path));
        self.send(request, Method::GET, &format!("/api/v1{path}"))
            .await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        let request = self.client.delete(self.url(path));
        self.send(request, Method::DELETE, &format!("/api/v1{path}"))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        let request = self.client.post(self.url(path)).json(body);
        self.send(request, Method::POST, &format!("/api/v1{path}"))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        let request = self.client.put(self.url(path)).json(body);
        self.send(request, Method::PUT, &format!("/api/v1{path}"))
            .await
    }

    /// Uploads `bytes` as the `file` part, named `name` when given.
    pub async fn upload(&self, name: Option<&str>, filename: &str, bytes: &[u8]) -> Answer {
        let (content_type, body) = multipart_form(name, filename, bytes);
        let request = self
            .client
            .post(self.url("/files"))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(request, Method::POST, "/api/v1/files").await
    }

    /// Creates a token with `role` and returns its secret.
    pub async fn token_with_role(&self, role: &str) -> String {
        let created = self
            .post(
                "/tokens",
                &json!({"name": format!("{role}-user"), "role": role}),
            )
            .await
            .expect(201);
        created["secret"].as_str().expect("a secret").to_string()
    }
}

/// A `multipart/form-data` body with an optional `name` part and a `file` part declared
/// as `application/pdf` whatever it holds (the server must sniff, not trust it).
pub fn multipart_form(name: Option<&str>, filename: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "wtsbot-test-boundary-7d1f";
    let mut body = Vec::new();
    if let Some(name) = name {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/pdf\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}
