//! `/openapi.json`: every JSON endpoint is described, and real answers of a real server (success
//! and error bodies alike) validate against the schemas it gives for their status; `/api/docs`
//! renders it.

use crate::helpers::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// The served document and the operations a test has checked answers of.
struct Contract {
    doc: Value,
    checked: BTreeSet<(String, String)>,
}

impl Contract {
    async fn fetch(app: &TestApp) -> Self {
        let response = app.get("/openapi.json").await;
        assert_eq!(response.status(), 200);
        let doc: Value = response.json().await.expect("json");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut contract = Self {
            doc: doc.clone(),
            checked: BTreeSet::new(),
        };
        // The document describes itself.
        contract.check_body("get", "/openapi.json", 200, &doc);
        contract
    }

    /// Checks a real answer: its status is documented for the operation and its body (JSON, or
    /// the documented content type) matches the schema given for that status.
    async fn check(&mut self, method: &str, template: &str, response: reqwest::Response) -> Value {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.expect("body");
        let documented = &self.doc["paths"][template][method]["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {template} answered {status}, which the document does not list: {text}"
        );
        if content_type.starts_with("application/json") {
            let body: Value = serde_json::from_str(&text).expect("a JSON body");
            self.check_body(method, template, status, &body);
            body
        } else {
            assert!(
                documented["content"][&content_type].is_object(),
                "{method} {template} {status}: {content_type} is not documented"
            );
            self.checked.insert((method.into(), template.into()));
            Value::String(text)
        }
    }

    fn check_body(&mut self, method: &str, template: &str, status: u16, body: &Value) {
        let errors = self.errors(method, template, status, body);
        assert!(
            errors.is_empty(),
            "{method} {template} {status} does not match its schema: {errors:?}\n{body}"
        );
        self.checked.insert((method.into(), template.into()));
    }

    /// Why `body` does not match the schema documented for this answer (empty when it does).
    fn errors(&self, method: &str, template: &str, status: u16, body: &Value) -> Vec<String> {
        let schema = &self.doc["paths"][template][method]["responses"][status.to_string()]["content"]
            ["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: no JSON schema documented"
        );
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        closed(&mut root);
        let validator = jsonschema::draft202012::new(&root).expect("the schema compiles");
        validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    /// Every operation the document lists.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                all.insert((method.clone(), path.clone()));
            }
        }
        all
    }
}

/// Forbids fields a schema does not list, so an undocumented field fails the check too.
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if object.contains_key("properties") && !object.contains_key("additionalProperties") {
                object.insert("additionalProperties".into(), Value::Bool(false));
            }
            object.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

#[tokio::test]
async fn real_answers_match_the_openapi_document_for_every_operation() {
    let app = spawn_app(&format!(
        "{}{}",
        demo_model("demo", &["--tokens-per-second", "5"], &["weights_mib:2"]),
        demo_model("legacy", &["--status-unimplemented"], &["weights_mib:1"]),
    ))
    .await;
    for model in ["demo", "legacy"] {
        app.wait_for_lifecycle(model, "running", LIMIT).await;
    }
    // Wait for observations, so their schemas are exercised too.
    for model in ["demo", "legacy"] {
        let start = std::time::Instant::now();
        while app.backend(model).await["observation"].is_null() {
            assert!(start.elapsed() < LIMIT, "{model} is never observed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut contract = Contract::fetch(&app).await;
    let json_body = |model: &str| json!({ "model": model }).to_string();
    let send = |method: Method, path: &'static str, body: String| {
        let app = &app;
        async move {
            app.send(method, path, Some("application/json"), &body)
                .await
        }
    };

    // LocalAI's monitor: Status, the fallback, and its errors, under both paths and methods.
    let status = contract
        .check("get", "/backend/monitor", app.monitor("demo").await)
        .await;
    assert_eq!(status["state"], 2);
    let fallback = contract
        .check(
            "post",
            "/v1/backend/monitor",
            send(Method::POST, "/v1/backend/monitor", json_body("legacy")).await,
        )
        .await;
    assert!(fallback["memory_info"]["rss"].as_u64() > Some(0));
    contract
        .check(
            "post",
            "/backend/monitor",
            send(Method::POST, "/backend/monitor", "{}".into()).await,
        )
        .await;
    let unknown = contract
        .check(
            "get",
            "/v1/backend/monitor",
            send(Method::GET, "/v1/backend/monitor", json_body("nope")).await,
        )
        .await;
    assert_eq!(unknown["error"]["type"], "model_not_found");

    // The check can fail: a field the document does not list, or a wrong type, is refused.
    assert!(
        !contract
            .errors("get", "/healthz", 200, &json!({"status": "ok", "extra": 1}))
            .is_empty()
    );
    let mut wrong = status.clone();
    wrong["state"] = json!("ready");
    assert!(
        !contract
            .errors("get", "/backend/monitor", 200, &wrong)
            .is_empty()
    );

    // The read endpoints.
    for path in ["/system", "/version", "/healthz", "/api/backends"] {
        contract.check("get", path, app.get(path).await).await;
    }
    let detail = contract
        .check(
            "get",
            "/api/backends/{name}",
            app.get("/api/backends/demo").await,
        )
        .await;
    assert_eq!(detail["summary"]["name"], "demo");
    contract
        .check(
            "get",
            "/api/backends/{name}",
            app.get("/api/backends/nope").await,
        )
        .await;
    let logs = contract
        .check(
            "get",
            "/api/backends/{name}/logs",
            app.get("/api/backends/demo/logs?since=0").await,
        )
        .await;
    assert!(logs["next"].as_u64() > Some(0), "{logs}");
    contract
        .check(
            "get",
            "/api/backends/{name}/logs",
            app.get("/api/backends/demo/logs?since=x").await,
        )
        .await;
    let metrics = contract
        .check("get", "/metrics", app.get("/metrics").await)
        .await;
    assert!(
        metrics
            .as_str()
            .is_some_and(|m| m.contains("backend_monitor_up"))
    );

    // Control: stop, stop again (not loaded), start, under both paths; a body too large; a
    // cross-site browser request.
    for (path, want) in [
        ("/backend/shutdown", 200),
        ("/v1/backend/shutdown", 500),
        ("/backend/load", 200),
        ("/v1/backend/load", 200),
    ] {
        let response = send(Method::POST, path, json_body("legacy")).await;
        assert_eq!(response.status(), want, "{path}");
        contract.check("post", path, response).await;
    }
    let huge = json!({ "model": "x".repeat(100 * 1024) }).to_string();
    let response = send(Method::POST, "/backend/shutdown", huge).await;
    assert_eq!(response.status(), 413);
    contract.check("post", "/backend/shutdown", response).await;
    let cross_site = app
        .http
        .post(app.url("/backend/shutdown"))
        .header("Sec-Fetch-Site", "cross-site")
        .json(&json!({ "model": "demo" }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(cross_site.status(), 403);
    contract
        .check("post", "/backend/shutdown", cross_site)
        .await;

    // Every documented operation was checked against a real answer.
    let unchecked: Vec<_> = contract
        .operations()
        .difference(&contract.checked)
        .cloned()
        .collect();
    assert!(unchecked.is_empty(), "not exercised: {unchecked:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_api_reference_page_lists_every_operation_and_schema_without_scripts() {
    let app = spawn_app(&demo_model("demo", &[], &["weights_mib:1"])).await;
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    let response = app.get("/api/docs").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|ct| ct.starts_with("text/html"))
    );
    let page = response.text().await.expect("html");
    assert!(!page.contains("<script"), "the page runs no script");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for operation in item.as_object().expect("item").values() {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(page.contains(&format!("id=\"{id}\"")), "{path}: {id}");
        }
        let shown = path.replace('{', "&#123;");
        assert!(
            page.contains(&format!("<code>{path}</code>")) || page.contains(&shown),
            "{path}"
        );
    }
    for schema in doc["components"]["schemas"]
        .as_object()
        .expect("schemas")
        .keys()
    {
        assert!(
            page.contains(&format!("id=\"schema-{schema}\"")),
            "{schema}"
        );
    }
    app.stop().await;
}
